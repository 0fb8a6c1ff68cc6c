"""Colorizing many files: input discovery, output naming, skip/overwrite, per-file errors.

The library half of ``colorcli colorize``; the CLI adds the progress bar and the summary.

A batch is planned first (:func:`plan_jobs`): folders are walked (symlink loops are visited
once), every input gets one output name, and inputs whose output would replace an input or
another job's output fail right there. :func:`run_jobs` then colorizes: a small thread pool
decodes the next photos and encodes finished ones while the main thread runs the network, so
IO overlaps inference. One bad file is recorded with its one-line reason and the rest still get
done; Ctrl-C stops cleanly, keeping every finished output and never a partial one.
"""

from __future__ import annotations

import os
import stat
import sys
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from colorcli.errors import ColorcliError, ImageWriteError, OutputExistsError
from colorcli.files import clean_stale_parts
from colorcli.imageio import IMAGE_SUFFIXES, OUTPUT_FORMATS, Photo, read_photo, read_provenance, write_image

if TYPE_CHECKING:  # torch stays unimported: the onnx backend runs without it
    from colorcli.onnx_runtime import OnnxColorizer
    from colorcli.pipeline import Colorizer

FORMATS = ("png", "jpg", "webp", "tiff", "same")
BIT_DEPTHS = ("8", "16", "auto")
DEFAULT_WORKERS = 2
OTHER_RUN = "finished meanwhile by another run"


@dataclass(frozen=True)
class Job:
    """One input file and the output it becomes."""

    source: Path
    target: Path


@dataclass
class Plan:
    """What :func:`plan_jobs` found: jobs to run and inputs that failed before running."""

    jobs: list[Job] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    # Files found in folders that are the outputs of other inputs (an earlier run's results).
    previous_outputs: list[Path] = field(default_factory=list)


@dataclass
class BatchResult:
    """Outcome of :func:`run_jobs`; ``done`` holds output paths, the others input paths."""

    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    interrupted: bool = False
    not_started: list[Path] = field(default_factory=list)


# on_event(job, status, detail): status is "done" (detail: notes or None), "skipped" (detail:
# None, or OTHER_RUN when the output appeared while this run was working) or "failed" (detail:
# the one-line reason). Always called from the calling thread.
EventCallback = Callable[[Job, str, "str | None"], None]


# ---------------------------------------------------------------------------------------------
# planning


def collect_inputs(
    inputs: Iterable[Path], *, recursive: bool = False, exclude: Path | None = None
) -> tuple[list[tuple[Path, Path, bool]], list[tuple[Path, str]]]:
    """Expand files and folders into ``(file, base folder, found in a folder)`` triples.

    Folders give their files with an image suffix, sorted, hidden ones left out; sub-folders
    only with ``recursive``, never the sub-folder ``exclude`` (the output folder: earlier
    results are not inputs). Named files are taken whatever their suffix (the reader judges
    them). Missing inputs and unreadable folders come back as ``(path, reason)`` errors.
    """
    found: list[tuple[Path, Path, bool]] = []
    errors: list[tuple[Path, str]] = []
    skip = _real(exclude) if exclude is not None else None
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found.extend((p, item, True) for p in _walk(item, recursive, errors, skip))
        elif os.path.lexists(item):
            found.append((item, item.parent, False))
        else:
            errors.append((item, f"{item}: no such file or folder"))
    return found, errors


def _walk(folder: Path, recursive: bool, errors: list[tuple[Path, str]], skip: str | None = None) -> list[Path]:
    """Image files under ``folder``; each real folder is visited once, so symlink loops end.
    The sub-folder whose real path is ``skip`` is not entered."""
    files: list[Path] = []
    visited: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        d = stack.pop()
        try:
            st = d.stat()
            key = (st.st_dev, st.st_ino)
            if key in visited:
                continue
            visited.add(key)
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            errors.append((d, f"{d}: cannot list folder ({(exc.strerror or str(exc)).lower()})"))
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files, our own .part temp files, macOS ._ resource forks
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows symlinks; a looping or broken one is not a dir
            except OSError:
                is_dir = False
            if is_dir:
                if recursive and (skip is None or _real(path) != skip):
                    subdirs.append(path)
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)  # even a broken link: the reader says what is wrong with it
        stack.extend(reversed(subdirs))
    return files


def output_path(source: Path, base: Path, out_dir: Path | None, *, suffix: str, fmt: str) -> Path:
    """Where ``source`` (found under ``base``) is written: beside it, or mirrored under ``out_dir``."""
    ext = source.suffix.lower() if fmt == "same" else f".{fmt}"
    if ext not in OUTPUT_FORMATS:
        ext = ".png"  # inputs we can read but not write (GIF, PNM): lossless PNG
    if out_dir is None:
        return source.with_name(f"{source.stem}{suffix}{ext}")
    try:
        rel = source.relative_to(base)
    except ValueError:
        rel = Path(source.name)
    return Path(out_dir) / rel.with_name(f"{rel.stem}{suffix}{ext}")


def _real(path: Path) -> str:
    # os.path.realpath, unlike Path.resolve in Python 3.11, does not raise on a symlink loop.
    return os.path.realpath(path)


def plan_jobs(
    inputs: Iterable[Path],
    out_dir: Path | None,
    *,
    suffix: str = "_color",
    fmt: str = "png",
    recursive: bool = False,
    also_suffixes: Iterable[str] = (),
) -> Plan:
    """Find the inputs and name their outputs; never plans an output over an input.

    A file found in a folder that is the output of another input (a previous run's result,
    ``a_color.png`` or ``a_color.jpg`` beside ``a.jpg``; with ``also_suffixes``, also the names
    other settings give, ``a_color_l2.png``) is not taken as an input, so re-running a command
    only finishes what is left. Nothing inside ``out_dir`` is an input either. Two inputs with the same output name: the first (sorted) gets it,
    the second fails with a reason.
    """
    if fmt not in FORMATS:
        raise ColorcliError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
    if "/" in suffix or os.sep in suffix or "\0" in suffix:
        raise ColorcliError(f"--suffix {suffix!r} must not contain a path separator")
    files, errors = collect_inputs(inputs, recursive=recursive, exclude=out_dir)
    plan = Plan(failed=errors)
    # The same file named twice (or named and inside a named folder) is one input.
    unique: dict[str, tuple[Path, Path, bool]] = {}
    for src, base, in_folder in files:
        unique.setdefault(_real(src), (src, base, in_folder))
    targets = {real: output_path(src, base, out_dir, suffix=suffix, fmt=fmt)
               for real, (src, base, _) in unique.items()}
    # Outputs of any format, and of the other models' names (``also_suffixes``), by folder and stem.
    made: dict[tuple[str, str], str] = {}
    for real, (src, base, _) in unique.items():
        for sfx in dict.fromkeys([suffix, *also_suffixes]):
            if sfx:
                t = output_path(src, base, out_dir, suffix=sfx, fmt="png")
                made[(_real(t.parent), t.stem)] = real
    sources: dict[str, Path] = {}
    for real, (src, _, in_folder) in unique.items():
        producer = made.get((_real(src.parent), src.stem)) if in_folder else None
        if producer is not None and producer != real:
            plan.previous_outputs.append(src)
        else:
            sources[real] = src
    claimed: dict[str, Path] = {}
    for real, src in sources.items():
        target = targets[real]
        key = _real(target)
        if key in sources:
            plan.failed.append((src, f"{src}: output {target} would replace an input; use -o or another --suffix"))
        elif key in claimed:
            plan.failed.append(
                (src, f"{src}: output {target} is already the output of {claimed[key]}; "
                      f"rename one or use --format same")
            )
        else:
            claimed[key] = src
            plan.jobs.append(Job(src, target))
    return plan


def prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and check that it can be written; :class:`ImageWriteError` if not."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ImageWriteError(f"output folder {out_dir}: exists and is not a folder") from None
    except OSError as exc:
        raise ImageWriteError(
            f"output folder {out_dir}: cannot create ({(exc.strerror or str(exc)).lower()})"
        ) from None
    if not stat.S_ISDIR(out_dir.stat().st_mode):
        raise ImageWriteError(f"output folder {out_dir}: exists and is not a folder")
    # os.access answers for the real user, so as root it (rightly) says yes to a 0o555 folder.
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ImageWriteError(f"output folder {out_dir}: not writable (permission denied)")


# ---------------------------------------------------------------------------------------------
# running


class _InlineExecutor:
    """An executor that runs each call at once in the calling thread (``workers=0``)."""

    def submit(self, fn: Callable, *args, **kwargs) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - delivered through the future, as a pool would
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def _output_depth(bit_depth: str, photo: Photo) -> int:
    if bit_depth == "auto":
        return photo.bit_depth
    return int(bit_depth)


def _write(job: Job, photo: Photo, rgb, *, bit_depth: str, quality: int, overwrite: bool,
           provenance: dict | None = None) -> list[str]:
    notes = write_image(
        job.target, rgb, alpha=photo.alpha, bit_depth=_output_depth(bit_depth, photo), quality=quality,
        icc_profile=photo.icc_profile, exif=photo.exif, overwrite=overwrite, provenance=provenance,
    )
    return photo.notes + notes


# What must match for an existing output to be what this run would make.
_SAME_MAKING = ("model", "weights_sha256", "backend", "settings")


def made_otherwise(target: Path, provenance: dict | None) -> str | None:
    """If ``target`` records (in its provenance) being made by another model or with other
    settings than ``provenance``, a short phrase saying by what; else None."""
    if provenance is None:
        return None
    theirs = read_provenance(target)
    if theirs is None:
        return "made by something else than colorcli (no provenance)"
    if all(theirs.get(k) == provenance.get(k) for k in _SAME_MAKING):
        return None
    settings = theirs.get("settings") if isinstance(theirs.get("settings"), dict) else {}
    how = ", ".join(f"{k} {v}" for k, v in settings.items() if v is not None)
    return f"made by model {theirs.get('model', '?')} ({how or 'settings unknown'}), not with this run's settings"


def _out_of_memory_errors() -> tuple[type[BaseException], ...]:
    # Looked up, never imported: a colorizer can only raise torch's error if torch is loaded.
    torch = sys.modules.get("torch")
    return (MemoryError,) if torch is None else (MemoryError, torch.cuda.OutOfMemoryError)


def run_jobs(
    colorizer: Colorizer | OnnxColorizer,
    jobs: list[Job],
    *,
    overwrite: bool = False,
    quality: int = 95,
    bit_depth: str = "auto",
    workers: int = DEFAULT_WORKERS,
    on_event: EventCallback | None = None,
    provenance: dict | None = None,
) -> BatchResult:
    """Colorize each job; a bad file is recorded and the rest still get done.

    Existing outputs are skipped unless ``overwrite``. ``workers`` threads read ahead and write
    behind the network (0: everything in the calling thread); at most ``workers`` photos wait
    decoded and ``workers`` wait to be written, which bounds memory. On Ctrl-C, reads not yet
    used are dropped, outputs already computed are still written (atomically), and the result
    comes back with ``interrupted`` set instead of the exception. ``provenance`` is recorded
    in each output's metadata; an existing output made otherwise is skipped with a detail
    saying so (:func:`made_otherwise`).
    """
    if bit_depth not in BIT_DEPTHS:
        raise ColorcliError(f"unknown --bit-depth {bit_depth!r}; use one of {', '.join(BIT_DEPTHS)}")
    if not 1 <= quality <= 100:
        raise ColorcliError(f"--quality must be between 1 and 100, got {quality}")
    res = BatchResult()

    def emit(job: Job, status: str, detail: str | None) -> None:
        if on_event:
            on_event(job, status, detail)

    def fail(job: Job, msg: str) -> None:
        res.failed.append((job.source, msg))
        emit(job, "failed", msg)

    # Temp files a killed run left in the output folders (ours only, old enough to be dead).
    for folder in dict.fromkeys(job.target.parent for job in jobs):
        clean_stale_parts(folder)

    def taken(job: Job) -> bool:
        """The output exists (and may not be replaced): perhaps another run just finished it."""
        return not overwrite and os.path.lexists(job.target)

    def skip(job: Job, detail: str | None = None) -> None:
        res.skipped.append(job.source)
        emit(job, "skipped", detail)

    todo: list[Job] = []
    for job in jobs:
        if taken(job):
            skip(job, made_otherwise(job.target, provenance))
        else:
            todo.append(job)

    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="colorcli-io") if workers > 0 else _InlineExecutor()
    depth = max(1, workers)
    reads: deque[tuple[Job, Future]] = deque()
    writes: deque[tuple[Job, Future]] = deque()
    queue = iter(todo)
    current: tuple[Job, Future] | None = None  # the photo in the network when Ctrl-C comes

    def read_next() -> None:
        job = next(queue, None)
        if job is not None:
            # Checked again in the reader thread: another run may have finished it meanwhile.
            reads.append((job, pool.submit(lambda j: None if taken(j) else read_photo(j.source), job)))

    def finish_writes(*, keep: int) -> None:
        """Collect finished writes in order, waiting while more than ``keep`` are in flight."""
        while writes and (len(writes) > keep or writes[0][1].done()):
            job, fut = writes.popleft()
            try:
                notes = fut.result()
            except OutputExistsError:
                skip(job, OTHER_RUN)  # finished by another run between our check and our rename
            except ColorcliError as exc:
                fail(job, f"{job.source}: output {exc}")  # the message names the output file
            except MemoryError:
                fail(job, f"{job.source}: out of memory while writing {job.target}")
            else:
                res.done.append(job.target)
                emit(job, "done", "; ".join(notes) or None)

    try:
        for _ in range(depth):
            read_next()
        while reads:
            job, fut = current = reads.popleft()
            read_next()
            try:
                photo = fut.result()
                if photo is None or taken(job):  # finished elsewhere before we read or computed it
                    current = None
                    skip(job, OTHER_RUN)
                    finish_writes(keep=depth)
                    continue
                rgb = colorizer.colorize_rgb(photo.rgb)
            except ColorcliError as exc:
                current = None
                fail(job, str(exc))
            except _out_of_memory_errors():
                current = None
                fail(job, f"{job.source}: out of memory (try a smaller --size or --device cpu)")
            else:
                writes.append((job, pool.submit(
                    _write, job, photo, rgb, bit_depth=bit_depth, quality=quality, overwrite=overwrite,
                    provenance=provenance)))
                current = None
                del photo, rgb  # the write task holds them now; free them as soon as it is done
            finish_writes(keep=depth)
        finish_writes(keep=0)
    except KeyboardInterrupt:
        res.interrupted = True
        for job, fut in ([current] if current else []) + list(reads):
            fut.cancel()
            res.not_started.append(job.source)
        res.not_started.extend(j.source for j in queue)
        # Outputs already computed are finished: each write is atomic and takes moments.
        finish_writes(keep=0)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return res


__all__ = [
    "BIT_DEPTHS", "BatchResult", "FORMATS", "Job", "OTHER_RUN", "Plan", "collect_inputs", "made_otherwise", "output_path",
    "plan_jobs", "prepare_out_dir", "run_jobs",
]
