"""Colorize on a Ray cluster: the same jobs, outputs and rules as :func:`colorcli.batch.run_jobs`.

The driver (where ``colorcli colorize --engine ray`` runs) plans the jobs as the local engine
does and skips the ones already finished. Ray Data then streams the remaining ``(source,
target)`` path pairs, in small blocks, to a fixed pool of actors. Each actor builds its
colorizer once from a :class:`~colorcli.batch.ColorizerSpec` and runs every photo through
:func:`~colorcli.batch.run_jobs` (so through :func:`~colorcli.batch.process_job`): it reads the
photo, colorizes it, writes the output atomically and sends back only a status line. Decoded
photos and results never leave the actor that made them, so the driver's memory grows with
the number of paths, not with the photos.

Every node must see the inputs, the output folder and the weights at the same paths (a shared
file system), and have colorcli installed. Ray is imported lazily: it is the optional extra
``colorcli[ray]``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colorcli.batch import (
    BatchResult, ColorizerSpec, EventCallback, Job, check_output_options, is_finished, run_jobs,
)
from colorcli.errors import ColorcliError

INSTALL_HINT = "--engine ray needs Ray, which is not installed: pip install 'colorcli[ray]'"
# Rows per block of the streamed file list: small enough that the pool shares the work out
# evenly and progress comes often, large enough that 10^6 inputs stay a few thousand blocks.
MAX_BLOCK_ROWS = 256


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run: ``address`` None starts a Ray runtime on this machine (or
    joins the cluster in ``RAY_ADDRESS``), ``"auto"`` joins the one running here, ``HOST:PORT``
    a head node. ``workers`` actors, each with its own colorizer, ``cpus_per_worker`` CPUs
    (also its torch threads) and ``gpus_per_worker`` GPUs."""

    address: str | None = None
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    batch_size: int = 4  # photos an actor takes at a time


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or :class:`ColorcliError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the ray[data] part of the extra
    except ImportError:
        raise ColorcliError(INSTALL_HINT) from None
    return ray


class _ColorizeActor:
    """One Ray actor: builds its colorizer once, then colorizes batches of path pairs."""

    def __init__(self, spec: ColorizerSpec, options: dict, device: str, threads: int) -> None:
        if spec.backend == "torch":
            import torch

            torch.set_num_threads(threads)  # its CPU share, not every core of the node
        self.colorizer = spec.load(device=device)
        self.options = options

    def __call__(self, batch: dict) -> dict:
        jobs = [Job(Path(s), Path(t)) for s, t in zip(batch["source"], batch["target"])]
        events: list[tuple[Job, str, str | None]] = []
        # workers=1: one thread reads and writes while the network runs, within the actor.
        run_jobs(self.colorizer, jobs, workers=1, on_event=lambda j, s, d: events.append((j, s, d)),
                 **self.options)
        return {
            "source": [str(j.source) for j, _, _ in events],
            "target": [str(j.target) for j, _, _ in events],
            "status": [s for _, s, _ in events],
            "detail": [d or "" for _, _, d in events],
        }


def _blocks(jobs: list[Job], rows: int) -> Iterator[Any]:
    import pyarrow as pa  # comes with ray[data]

    for i in range(0, len(jobs), rows):
        chunk = jobs[i:i + rows]
        yield pa.table({"source": [str(j.source) for j in chunk], "target": [str(j.target) for j in chunk]})


def _device(spec: ColorizerSpec, options: RayOptions) -> str:
    if options.gpus_per_worker > 0:
        return spec.device if spec.device != "auto" else "cuda"
    if spec.device == "cuda":
        raise ColorcliError("--device cuda with --engine ray needs --gpus-per-worker (e.g. 1)")
    return "cpu"  # an actor without a reserved GPU never takes one


def run_jobs_ray(
    spec: ColorizerSpec,
    jobs: list[Job],
    *,
    ray_options: RayOptions = RayOptions(),
    overwrite: bool = False,
    quality: int = 95,
    bit_depth: str = "auto",
    on_event: EventCallback | None = None,
) -> BatchResult:
    """:func:`colorcli.batch.run_jobs` on a Ray cluster: same outcomes, same events (in the
    order photos finish, not in the order of ``jobs``). Films are not colorized here: each one
    fails with a line saying so.

    ``spec`` is loaded once here first, so a bad model or weights file is one clear error
    before any actor starts. A Ray runtime started here is shut down at the end; one that was
    already running (``ray.init`` by the caller) is left running. Ctrl-C comes back as
    ``interrupted``, as with the local engine.
    """
    check_output_options(quality=quality, bit_depth=bit_depth)
    opts = ray_options
    if opts.workers < 1:
        raise ColorcliError(f"--workers must be at least 1 with --engine ray, got {opts.workers}")
    if opts.cpus_per_worker <= 0 or opts.gpus_per_worker < 0:
        raise ColorcliError("--cpus-per-worker must be above 0 and --gpus-per-worker at least 0")
    device = _device(spec, opts)
    ray = import_ray()
    res = BatchResult()

    def record(job: Job, status: str, detail: str | None) -> None:
        res.record(job, status, detail)
        if on_event:
            on_event(job, status, detail)

    todo: list[Job] = []
    for job in jobs:
        if is_finished(job, overwrite=overwrite):
            record(job, "skipped", None)
        elif job.film:
            record(job, "failed", f"{job.source}: a film; --engine ray colorizes photos only (use the local engine)")
        else:
            todo.append(job)
    if not todo:
        return res  # a re-run of a finished batch starts nothing
    spec.load(device="cpu")  # fails here, once, on a bad model name or weights file

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=opts.address, include_dashboard=False, log_to_driver=False,
                     logging_level="warning")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = opts.address or "a local runtime"
            raise ColorcliError(f"cannot start or reach Ray at {where}: {str(exc).splitlines()[0]}") from None
    reported: set[str] = set()
    # Ray Data's INFO lines (and its warning that its bars are off) would interleave with the
    # per-file lines; its errors still show.
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    data_logger.setLevel(logging.ERROR)
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < opts.workers * opts.cpus_per_worker:
            raise ColorcliError(
                f"the Ray cluster has {cpus:g} CPUs; --workers {opts.workers} x --cpus-per-worker "
                f"{opts.cpus_per_worker:g} needs {opts.workers * opts.cpus_per_worker:g}"
            )
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the CLI draws its own bar, on stderr
        # About 4 blocks per actor at least, so each one has work from the start to the end.
        rows = max(1, min(MAX_BLOCK_ROWS, math.ceil(len(todo) / (4 * opts.workers))))
        ds = ray.data.from_arrow(list(_blocks(todo, rows)))
        out = ds.map_batches(
            _ColorizeActor,
            fn_constructor_kwargs=dict(
                spec=spec, device=device, threads=max(1, int(opts.cpus_per_worker)),
                options=dict(overwrite=overwrite, quality=quality, bit_depth=bit_depth),
            ),
            compute=ray.data.ActorPoolStrategy(size=opts.workers),
            batch_size=min(opts.batch_size, rows),
            batch_format="numpy",
            num_cpus=opts.cpus_per_worker,
            num_gpus=opts.gpus_per_worker,
        )
        for row in out.iter_rows():
            reported.add(row["source"])
            record(Job(Path(row["source"]), Path(row["target"])), str(row["status"]), row["detail"] or None)
    except KeyboardInterrupt:
        res.interrupted = True
        res.not_started.extend(j.source for j in todo if str(j.source) not in reported)
    finally:
        data_logger.setLevel(level)
        if started_here:
            ray.shutdown()
    return res


__all__ = ["INSTALL_HINT", "RayOptions", "import_ray", "run_jobs_ray"]
