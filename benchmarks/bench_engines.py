"""Colorize throughput of the local engine and of Ray at 1 and 2 workers, and Ray's overhead.

Colorizes ``--photos`` validation photos (default 120 from ``../shared/data/val``) with the
shipped model (default ``mcl``) into fresh temporary folders, through the same library calls
as ``colorcli colorize``: :func:`colorcli.batch.run_jobs` (the local engine, with 1 and 2
torch threads and its 2 IO threads) and :func:`colorcli.engines.ray_engine.run_jobs_ray` on a
local Ray runtime with ``--cpus`` CPUs (workers with 1 CPU and 1 torch thread each).

Ray's overhead: each Ray configuration runs twice on one runtime, on ``--small`` photos and
on all of them, and a straight line through the two run times splits it into a fixed part (the
driver's model check, Ray Data planning, actors starting and each loading its model) and
seconds per photo. Start-up is ``ray.init`` plus that fixed part; the per-photo overhead is
Ray's seconds per photo at 1 worker minus the local engine's at 1 thread (fitted the same way),
the cost of streaming paths and statuses through Ray. Ray hands results back a block at a
time, so its first result comes only after a block; the totals include that.

    python benchmarks/bench_engines.py --data ../shared/data/val       # 120 photos, mcl
    python benchmarks/bench_engines.py --data ../shared/data/val --photos 40
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "val"


def _jobs(photos: list[Path], out: Path):
    from colorcli.batch import plan_jobs

    plan = plan_jobs(photos, out)
    assert not plan.failed, plan.failed
    return plan.jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="Folder of photos.")
    ap.add_argument("--photos", type=int, default=120, help="Photos per timed run.")
    ap.add_argument("--small", type=int, default=8, help="Photos of the short run of the overhead fit.")
    ap.add_argument("--model", default="mcl")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray runtime.")
    args = ap.parse_args()

    import torch

    from colorcli.batch import ColorizerSpec, run_jobs
    from colorcli.engines.ray_engine import RayOptions, import_ray, run_jobs_ray

    ray = import_ray()
    photos = sorted(p for p in args.data.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[: args.photos]
    if len(photos) <= args.small:
        raise SystemExit(f"need more than --small {args.small} photos in {args.data}, found {len(photos)}")
    sizes = (args.small, len(photos))
    spec = ColorizerSpec(model=args.model, device="cpu")
    tmp = Path(tempfile.mkdtemp(prefix="bench_engines_"))
    rows: list[tuple[str, float, float, float, float | None]] = []  # name, total s, s/photo, fixed s, init s

    def timed(name: str, run, init: float | None = None) -> None:
        secs = []
        for n in sizes:
            jobs = _jobs(photos[:n], tmp / f"{name}-{n}".replace(" ", "_"))
            t0 = time.perf_counter()
            res = run(jobs)
            secs.append(time.perf_counter() - t0)
            assert len(res.done) == n, res.failed
        slope = (secs[1] - secs[0]) / (sizes[1] - sizes[0])
        rows.append((name, secs[1], slope, secs[1] - slope * sizes[1], init))

    try:
        colorizer = spec.load()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            timed(f"local, {threads} torch thread(s)", lambda jobs: run_jobs(colorizer, jobs, workers=2))
        del colorizer
        for workers in (1, 2):
            t0 = time.perf_counter()
            ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="warning")
            init = time.perf_counter() - t0
            try:
                timed(f"ray, {workers} worker(s) x 1 CPU",
                      lambda jobs: run_jobs_ray(spec, jobs, ray_options=RayOptions(workers=workers)), init)
            finally:
                ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"colorize throughput, model {args.model}, {len(photos)} photos from {args.data}, "
          f"{os.cpu_count()} CPUs shared with other jobs (a loaded machine: compare rows, not absolute figures)")
    print(f"{'engine':<28} {'total s':>8} {'photos/s':>9} {'s/photo (fit)':>14} {'fixed s (fit)':>14} {'ray.init s':>11}")
    for name, total, slope, fixed, init in rows:
        print(f"{name:<28} {total:>8.1f} {len(photos) / total:>9.2f} {slope:>14.3f} {fixed:>14.1f} "
              f"{'' if init is None else f'{init:.1f}':>11}")
    local1, ray1 = rows[0], rows[2]
    print(f"\nRay overhead: start-up {ray1[4] + ray1[3]:.1f} s (ray.init + fixed part, 1 worker); per photo "
          f"{(ray1[2] - local1[2]) * 1000:+.0f} ms (ray 1 worker vs local 1 thread, fitted)")


if __name__ == "__main__":
    main()
