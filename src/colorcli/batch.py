"""Colorizing many files: input discovery, output naming, skip/overwrite, per-file errors.

The library half of ``colorcli colorize``; the CLI adds the progress bar and the summary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from colorcli.errors import ColorcliError, ImageWriteError
from colorcli.imageio import IMAGE_SUFFIXES, read_photo, write_image
from colorcli.pipeline import Colorizer

OUTPUT_FORMATS = ("png", "jpg", "same")


@dataclass
class Job:
    source: Path
    target: Path


@dataclass
class BatchResult:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def collect_inputs(inputs: Iterable[Path], *, recursive: bool = False) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """Expand files and folders into (file, base folder) pairs; missing paths are errors."""
    found: list[tuple[Path, Path]] = []
    errors: list[tuple[Path, str]] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            it = item.rglob("*") if recursive else item.glob("*")
            try:
                files = sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            except OSError as exc:
                errors.append((item, f"{item}: cannot list folder ({exc})"))
                continue
            found.extend((p, item) for p in files)
        elif item.exists():
            found.append((item, item.parent))
        else:
            errors.append((item, f"{item}: no such file or folder"))
    return found, errors


def output_path(source: Path, base: Path, out_dir: Path | None, *, suffix: str, fmt: str) -> Path:
    ext = source.suffix.lower() if fmt == "same" else f".{fmt}"
    if ext not in (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"):
        ext = ".png"
    if out_dir is None:
        return source.with_name(f"{source.stem}{suffix}{ext}")
    try:
        rel = source.relative_to(base)
    except ValueError:
        rel = Path(source.name)
    return out_dir / rel.with_name(f"{rel.stem}{suffix}{ext}")


def plan_jobs(
    inputs: Iterable[Path], out_dir: Path | None, *, suffix: str = "_color", fmt: str = "png",
    recursive: bool = False,
) -> tuple[list[Job], list[tuple[Path, str]]]:
    if fmt not in OUTPUT_FORMATS:
        raise ColorcliError(f"unknown --format {fmt!r}; use one of {', '.join(OUTPUT_FORMATS)}")
    files, errors = collect_inputs(inputs, recursive=recursive)
    jobs: list[Job] = []
    seen: dict[Path, Path] = {}
    sources = {p.resolve() for p, _ in files}
    for src, base in files:
        target = output_path(src, base, out_dir, suffix=suffix, fmt=fmt)
        key = target.resolve()
        if key in sources:
            errors.append((src, f"{src}: output {target} would overwrite an input; use -o or --suffix"))
            continue
        if key in seen:
            errors.append((src, f"{src}: output {target} is also the output of {seen[key]}; rename one"))
            continue
        seen[key] = src
        jobs.append(Job(src, target))
    return jobs, errors


def run_jobs(
    colorizer: Colorizer,
    jobs: list[Job],
    *,
    overwrite: bool = False,
    quality: int = 95,
    on_done: Callable[[Job, str, str | None], None] | None = None,
) -> BatchResult:
    """Colorize each job; a bad file is recorded and the rest still get done."""
    res = BatchResult()
    for job in jobs:
        if job.target.exists() and not overwrite:
            res.skipped.append(job.source)
            if on_done:
                on_done(job, "skipped", None)
            continue
        try:
            photo = read_photo(job.source)
            rgb = colorizer.colorize_rgb(photo.rgb)
            write_image(job.target, rgb, alpha=photo.alpha, quality=quality,
                        icc_profile=photo.icc_profile, exif=photo.exif, overwrite=overwrite)
        except ColorcliError as exc:
            res.failed.append((job.source, str(exc)))
            if on_done:
                on_done(job, "failed", str(exc))
            continue
        except MemoryError:
            msg = f"{job.source}: out of memory"
            res.failed.append((job.source, msg))
            if on_done:
                on_done(job, "failed", msg)
            continue
        res.done.append(job.target)
        if on_done:
            on_done(job, "done", "; ".join(photo.notes) or None)
    return res


__all__ = ["BatchResult", "ImageWriteError", "Job", "plan_jobs", "run_jobs"]
