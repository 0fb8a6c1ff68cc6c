"""Colorizing many files: input discovery, output naming, skip/overwrite, per-file errors.

The library half of ``colorcli colorize``; the CLI adds the progress bar and the summary.

A batch is planned first (:func:`plan_jobs`): folders are walked (symlink loops are visited
once), every input gets one output name, and inputs whose output would replace an input or
another job's output fail right there. :func:`run_jobs` then colorizes: each photo goes
through :func:`process_job` (skip rule, read, colorize, atomic write) in a small thread pool,
one thread at a time in the network, so IO overlaps inference. Films (told from photos by their
content, :func:`colorcli.video.sniff_film`) go through :func:`process_job` too, one at a time in
the calling thread, streamed frame by frame. One bad file is recorded with its one-line reason
and the rest still get done; Ctrl-C stops cleanly, keeping every finished output and never a
partial one. The Ray engine (:mod:`colorcli.engines.ray_engine`) runs the same
:func:`process_job` in its actors, with the colorizer each one builds from a
:class:`ColorizerSpec`.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from colorcli.errors import ColorcliError, ImageWriteError, InferenceError, OutputExistsError, SteeringError
from colorcli.files import clean_stale_parts
from colorcli.imageio import IMAGE_SUFFIXES, OUTPUT_FORMATS, Photo, read_photo, read_provenance, write_image
from colorcli.interrupts import sigint_deferred
from colorcli.video import FILM_SUFFIXES, FilmSettings, colorize_film, output_suffix, sniff_film

if TYPE_CHECKING:
    from colorcli.inference import Colorizer

FORMATS = ("png", "jpg", "webp", "tiff", "same")
BIT_DEPTHS = ("8", "16", "auto")
DEFAULT_WORKERS = 2
OTHER_RUN = "finished meanwhile by another run"


@dataclass(frozen=True)
class ColorizerSpec:
    """How to build the colorizer: one place for the CLI, and for each worker of an engine.

    Plain values only, so it can be sent to other processes and machines, where
    :meth:`load` builds the colorizer once (``weights`` and ``onnx`` must be readable there).
    """

    model: str = "mcl"
    backend: str = "auto"  # "auto", "torch" or "onnx" (see colorcli.inference.make_backend)
    weights: Path | None = None
    onnx: Path | None = None
    device: str = "auto"
    size: int | None = None
    temperature: float | None = None
    tta: bool = True
    refine: bool = True
    saturation: float = 1.0
    reference_strength: float = 1.0

    def load(self, *, device: str | None = None) -> Colorizer:
        """The colorizer, on ``device`` if given (else :attr:`device`); :class:`ColorcliError`
        for an unknown model or a missing or bad weights file."""
        from colorcli.inference import Colorizer, InferenceSettings

        settings = InferenceSettings(size=self.size, temperature=self.temperature, tta=self.tta, refine=self.refine,
                                     device=device or self.device, saturation=self.saturation,
                                     reference_strength=self.reference_strength)
        backend = "onnx" if self.onnx is not None else self.backend
        return Colorizer.from_name(self.model, weights=self.onnx if self.onnx is not None else self.weights,
                                   backend=backend, settings=settings)


@dataclass(frozen=True)
class Job:
    """One input file and the output it becomes."""

    source: Path
    target: Path
    film: bool = False  # a film (see colorcli.video), not a photo


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

    def record(self, job: Job, status: str, detail: str | None) -> None:
        """Count one job's outcome, as :func:`process_job` returns it."""
        if status == "done":
            self.done.append(job.target)
        elif status == "skipped":
            self.skipped.append(job.source)
        else:
            self.failed.append((job.source, detail or str(job.source)))


# on_event(job, status, detail): status is "done" (detail: notes or None), "skipped" (detail:
# None, or OTHER_RUN when the output appeared while this run was working) or "failed" (detail:
# the one-line reason). Always called from the calling thread.
EventCallback = Callable[[Job, str, "str | None"], None]
# on_frames(job, frames done, frames expected or None): a film's progress.
FramesCallback = Callable[[Job, int, "int | None"], None]


# ---------------------------------------------------------------------------------------------
# planning


def collect_inputs(
    inputs: Iterable[Path], *, recursive: bool = False, exclude: Path | None = None
) -> tuple[list[tuple[Path, Path, bool]], list[tuple[Path, str]]]:
    """Expand files and folders into ``(file, base folder, found in a folder)`` triples.

    Folders give their files with an image or film suffix, sorted, hidden ones left out;
    sub-folders only with ``recursive``, never the sub-folder ``exclude`` (the output folder:
    earlier results are not inputs). Named files are taken whatever their suffix (the reader judges
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
            elif path.suffix.lower() in IMAGE_SUFFIXES or path.suffix.lower() in FILM_SUFFIXES:
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
    kinds = {real: sniff_film(src) for real, (src, _, _) in unique.items()}
    targets = {real: output_path(src, base, out_dir, suffix=suffix, fmt=fmt)
               for real, (src, base, _) in unique.items()}
    for real, kind in kinds.items():
        if kind is not None:
            targets[real] = targets[real].with_suffix(output_suffix(kind))
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
            plan.jobs.append(Job(src, target, film=kinds[real] is not None))
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


def is_finished(job: Job, *, overwrite: bool) -> bool:
    """The skip rule: a job whose output exists is done, unless ``overwrite``."""
    return not overwrite and os.path.lexists(job.target)


def check_output_options(*, quality: int, bit_depth: str) -> None:
    """:class:`ColorcliError` for a ``quality`` or ``bit_depth`` no writer accepts."""
    if bit_depth not in BIT_DEPTHS:
        raise ColorcliError(f"unknown --bit-depth {bit_depth!r}; use one of {', '.join(BIT_DEPTHS)}")
    if not 1 <= quality <= 100:
        raise ColorcliError(f"--quality must be between 1 and 100, got {quality}")


def process_job(
    job: Job,
    colorizer: Colorizer,
    *,
    overwrite: bool = False,
    quality: int = 95,
    bit_depth: str = "auto",
    film: FilmSettings | None = None,
    on_frames: FramesCallback | None = None,
    steering: Callable[[Path], dict] | None = None,
    provenance: dict | None = None,
) -> tuple[str, str | None]:
    """Everything for one photo (or film): skip rule, read, colorize, atomic write.

    Returns ``(status, detail)`` as :data:`EventCallback` gets them: ``("done", notes or
    None)``, ``("skipped", None)`` or ``("failed", one-line reason)``. Every engine (the local
    one, each Ray actor) runs each photo through here, so they follow the same rules. An output
    that appears while the photo is being colorized (another run finished it) is skipped, never
    replaced without ``overwrite``.
    """
    if is_finished(job, overwrite=overwrite):
        return "skipped", OTHER_RUN  # the engine checked before handing it out
    if job.film:
        return _process_film(job, colorizer, overwrite=overwrite, film=film, on_frames=on_frames)
    try:
        photo = read_photo(job.source)
        if is_finished(job, overwrite=overwrite):  # finished elsewhere while we read it
            return "skipped", OTHER_RUN
        rgb = colorizer.colorize_rgb(photo.rgb, **(steering(job.source) if steering else {}))
    except (SteeringError, InferenceError) as exc:  # says what is wrong, not which photo
        return "failed", f"{job.source}: {exc}"
    except ColorcliError as exc:
        return "failed", str(exc)
    except _out_of_memory_errors():
        return "failed", f"{job.source}: out of memory (try a smaller --size or --device cpu)"
    try:
        notes = _write(job, photo, rgb, bit_depth=bit_depth, quality=quality, overwrite=overwrite,
                       provenance=provenance)
    except OutputExistsError:
        return "skipped", OTHER_RUN  # finished by another run between our check and our rename
    except ColorcliError as exc:
        if is_finished(job, overwrite=overwrite):
            return "skipped", OTHER_RUN
        return "failed", f"{job.source}: output {exc}"  # the message names the output file
    except MemoryError:
        return "failed", f"{job.source}: out of memory while writing {job.target}"
    return "done", "; ".join(notes) or None


def _process_film(job: Job, colorizer, *, overwrite: bool, film: FilmSettings | None,
                  on_frames: FramesCallback | None) -> tuple[str, str | None]:
    def frames(done: int, total: int | None) -> None:
        if on_frames:
            on_frames(job, done, total)

    try:
        notes = colorize_film(colorizer, job.source, job.target, settings=film or FilmSettings(),
                              overwrite=overwrite, on_frame=frames)
    except ColorcliError as exc:
        return "failed", str(exc)
    except _out_of_memory_errors():
        return "failed", f"{job.source}: out of memory (try a smaller --size or --device cpu)"
    return "done", "; ".join(notes) or None


class _Stopped(Exception):
    """Raised in a worker thread that reaches the network after Ctrl-C: the job never started."""


class _OneAtATime:
    """The colorizer behind a lock: one photo in the network while other threads read and write."""

    def __init__(self, colorizer: Colorizer) -> None:
        self._colorizer = colorizer
        self._lock = threading.Lock()
        self.stop = threading.Event()

    def colorize_rgb(self, rgb, **steering):
        with self._lock:
            if self.stop.is_set():
                raise _Stopped
            try:
                return self._colorizer.colorize_rgb(rgb, **steering)
            except KeyboardInterrupt:  # raised in this thread: no other photo starts after it
                self.stop.set()
                raise


def run_jobs(
    colorizer: Colorizer,
    jobs: list[Job],
    *,
    overwrite: bool = False,
    quality: int = 95,
    bit_depth: str = "auto",
    workers: int = DEFAULT_WORKERS,
    on_event: EventCallback | None = None,
    film: FilmSettings | None = None,
    on_frames: FramesCallback | None = None,
    steering: Callable[[Path], dict] | None = None,
    provenance: dict | None = None,
) -> BatchResult:
    """Colorize each job with :func:`process_job`; a bad file is recorded and the rest still get done.

    Existing outputs are skipped unless ``overwrite``. ``workers`` threads read and write while
    one more runs the network (0: everything in the calling thread); at most ``workers + 1``
    photos are held decoded at once, which bounds memory. Events come in the order of ``jobs``
    (skipped ones first). On Ctrl-C, photos not yet in the network are dropped, those past it
    are still written (atomically), and the result comes back with ``interrupted`` set instead
    of the exception. ``steering(source)`` gives the hints and reference of each photo
    (:class:`colorcli.steer.BatchSteering`; photos only). ``provenance`` is recorded in each
    output's metadata; an existing output made otherwise is skipped with a detail saying so
    (:func:`made_otherwise`).

    Film jobs are colorized in the calling thread with ``film`` settings (default
    :class:`colorcli.video.FilmSettings`), reporting frames through ``on_frames``; an interrupted
    film leaves no output and counts as not started.
    """
    check_output_options(quality=quality, bit_depth=bit_depth)
    res = BatchResult()

    def record(job: Job, status: str, detail: str | None) -> None:
        res.record(job, status, detail)
        if on_event:
            on_event(job, status, detail)

    # Temp files a killed run left in the output folders (ours only, old enough to be dead).
    for folder in dict.fromkeys(job.target.parent for job in jobs):
        clean_stale_parts(folder)

    todo: list[Job] = []
    for job in jobs:
        if is_finished(job, overwrite=overwrite):
            record(job, "skipped", made_otherwise(job.target, provenance))
        else:
            todo.append(job)
    options = dict(overwrite=overwrite, quality=quality, bit_depth=bit_depth, steering=steering, provenance=provenance)
    film_options = dict(film=film, on_frames=on_frames)

    if workers <= 0:
        i = 0
        try:
            while i < len(todo):
                outcome = process_job(todo[i], colorizer, **options, **film_options)
                with sigint_deferred():  # written: it is reported, whatever comes now
                    record(todo[i], *outcome)
                    i += 1
        except KeyboardInterrupt:
            res.interrupted = True
            res.not_started.extend(j.source for j in todo[i:])
        return res

    network = _OneAtATime(colorizer)
    pool = ThreadPoolExecutor(workers + 1, thread_name_prefix="colorcli-job")
    pending: deque[tuple[Job, Future]] = deque()
    next_job = 0
    inline: Job | None = None  # the film running in this thread when Ctrl-C comes

    def collect(fut: Future, job: Job) -> None:
        try:
            outcome = fut.result()
        except _Stopped:
            res.not_started.append(job.source)
            return
        except KeyboardInterrupt:  # raised in the worker's network call, as Ctrl-C in this one would
            res.not_started.append(job.source)
            raise
        record(job, *outcome)

    try:
        while next_job < len(todo) or pending:
            # Twice the threads queued, so a thread never waits for the main one to hand it work.
            while next_job < len(todo) and len(pending) < 2 * (workers + 1) and not todo[next_job].film:
                job = todo[next_job]
                pending.append((job, pool.submit(process_job, job, network, **options)))
                next_job += 1
            if pending:
                job, fut = pending[0]
                wait([fut])  # still in ``pending`` if Ctrl-C comes while waiting
                with sigint_deferred():  # off the queue and reported, or neither
                    pending.popleft()
                    collect(fut, job)
            else:  # a film: the photos before it are finished, so outputs stay in input order
                inline = todo[next_job]
                next_job += 1
                outcome = process_job(inline, colorizer, **options, **film_options)
                with sigint_deferred():
                    record(inline, *outcome)
                    inline = None
    except KeyboardInterrupt:
        res.interrupted = True
        network.stop.set()
        if inline is not None:
            res.not_started.append(inline.source)
        for job, fut in pending:
            if fut.cancel():
                res.not_started.append(job.source)
            else:
                collect(fut, job)  # in the network or writing: finished, atomically
        res.not_started.extend(j.source for j in todo[next_job:])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return res


__all__ = [
    "BIT_DEPTHS", "BatchResult", "ColorizerSpec", "FORMATS", "FramesCallback", "Job", "OTHER_RUN", "Plan",
    "check_output_options", "collect_inputs", "is_finished", "made_otherwise", "output_path", "plan_jobs",
    "prepare_out_dir", "process_job", "run_jobs",
]
