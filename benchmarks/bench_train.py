"""CPU training throughput of the flagship ``mcl`` at 128 px, frozen-encoder and full phases.

Runs the real training loop (``colorcli.train.train``: augmentation, Lab conversion, forward,
class-rebalanced loss, backward, AdamW step) on a small cache of photos made once from
``--data``, timing each step through the training callbacks: ``--warmup`` steps are left out,
the next ``--steps`` are timed. The frozen phase keeps the pretrained encoder fixed (as the
first 30 % of a real run does); the full phase trains everything. Prints a table to stdout.

    python benchmarks/bench_train.py            # 3 warm-up + 20 timed steps per phase
    python benchmarks/bench_train.py --quick    # 2 warm-up + 4 timed steps: a smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"


def _synthetic_photos(folder: Path, n: int, size: int) -> None:
    """``n`` smooth colourful JPEGs, for machines without the training data."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(n):
        p = rng.random(6) * 6
        img = np.stack([0.5 + 0.5 * np.sin(x * p[0] + p[3]), 0.5 + 0.5 * np.cos(y * p[1] + p[4]),
                        0.5 + 0.5 * np.sin((x + y) * p[2] + p[5])], axis=-1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"synthetic-{i:04d}.jpg", quality=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 warm-up + 4 timed steps per phase")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per phase (default 20)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of colour photos")
    ap.add_argument("--phases", default="frozen,full")
    args = ap.parse_args()
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 3)
    steps = args.steps or (4 if args.quick else 20)

    import torch

    from colorcli.data import prepare
    from colorcli.train import TrainCallbacks, TrainConfig, train

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="colorcli-bench-train-"))
    # Enough photos that no epoch ends inside the run, and no --val: nothing but training steps is timed.
    need = args.batch_size * (warmup + steps + 1)
    src = work / "photos"
    src.mkdir()
    notes = []
    if args.data.is_dir():
        # A margin: prepare() skips grayscale photos.
        files = sorted(p for p in args.data.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        files = files[: need + need // 5]
        for p in files:
            os.symlink(p, src / p.name)
        notes.append(f"data: first {len(files)} photos of {args.data}")
    if len(list(src.iterdir())) < need:
        _synthetic_photos(src, need + need // 5, 160)
        notes.append(f"data: {need} synthetic photos ({args.data} not found or too small)")
    cache = work / "cache.npz"
    t0 = time.perf_counter()
    res = prepare([src], cache, size=args.size)
    if res.kept < need:
        sys.exit(f"only {res.kept} usable photos in {args.data}; need {need}")
    notes.append(f"cache of {res.kept} photos made in {time.perf_counter() - t0:.1f} s (not timed below)")

    class Timer(TrainCallbacks):
        def __init__(self) -> None:
            self.stamps: list[float] = []
            self.phases: set[str] = set()

        def on_start(self, total_steps, info) -> None:
            self.stamps.append(time.perf_counter())

        def on_step(self, step, total_steps, loss, phase) -> None:
            self.stamps.append(time.perf_counter())
            self.phases.add(phase)

    rows = []
    for phase in args.phases.split(","):
        cfg = TrainConfig(
            model="mcl", data=[str(cache)], out=str(work / f"{phase}.safetensors"), device="cpu",
            batch_size=args.batch_size, size=args.size, max_steps=warmup + steps,
            freeze_frac=1.0 if phase == "frozen" else 0.0, warmup_frac=0.0,
            val_every_minutes=1e9, ckpt_every_minutes=1e9, cache_dir=str(work),
        )
        timer = Timer()
        train(cfg, timer)
        per_step = [b - a for a, b in zip(timer.stamps[warmup:], timer.stamps[warmup + 1:])]
        ips = args.batch_size * len(per_step) / sum(per_step)
        rows.append((phase, "/".join(sorted(timer.phases)), len(per_step), statistics.median(per_step), ips))

    print(f"mcl training throughput: {args.size} px, batch {args.batch_size}, {args.threads} torch thread(s), "
          f"{warmup} warm-up + {steps} timed steps per phase, torch {torch.__version__}")
    header = ("phase", "loop reported", "steps", "s/step (median)", "img/s")
    table = [(p, ph, str(n), f"{s:.3f}", f"{i:.1f}") for p, ph, n, s, i in rows]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    for r in [header, tuple("-" * w for w in widths), *table]:
        print("  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    load = os.getloadavg()
    notes.append(f"load average {load[0]:.2f} on {os.cpu_count()} CPU(s) at the end: figures taken while "
                 "other processes use the CPU are slower than on an idle machine")
    for n in notes:
        print(f"note: {n}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
