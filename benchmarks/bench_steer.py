"""What steering costs: colorize time of one photo, plain vs 2 hints vs a reference.

In one process, on a gray photo of ``--mp`` megapixels (a historical photo resized, or a
synthetic one), the median over ``--repeats`` runs (after a warm-up) of
``Colorizer.colorize_rgb`` with the default settings (mirror averaging, refinement), the model's
shipped weights (random-init weights if none: speed does not depend on weight values):

- plain;
- two hints (``0.3,0.6=#c05070`` and ``0.8,0.2=#4a80b0``);
- a reference given as a :class:`colorcli.steer.Reference` (how a batch uses it: read once);
- a reference given as an array each time (its thumbnail and statistics recomputed per call).

The issue's target: a hint or a reference adds at most 20 % at 1 MP.

    OMP_NUM_THREADS=2 python benchmarks/bench_steer.py --mp 1 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

TARGET = 0.20


def _photo(mp: float, source: Path | None) -> np.ndarray:
    from PIL import Image

    side = int(round((mp * 1e6) ** 0.5))
    if source is not None and source.is_file():
        img = Image.open(source).convert("L").resize((side, side), Image.Resampling.BILINEAR)
    else:
        y, x = np.mgrid[0:side, 0:side].astype(np.float32)
        img = Image.fromarray(np.uint8(127 + 100 * np.sin(x / 37) * np.cos(y / 53)))
    g = np.asarray(img, dtype=np.float32) / 255
    return np.broadcast_to(g[..., None], g.shape + (3,))  # how imageio gives gray photos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mcl")
    ap.add_argument("--mp", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--photo", type=Path, default=Path("../shared/data/historical/40sCouple.jpg"))
    ap.add_argument("--reference", type=Path, default=Path("../shared/data/val/coco-image1537.jpg"))
    args = ap.parse_args()

    import torch

    from colorcli import steer
    from colorcli.models import create_model
    from colorcli.inference import Colorizer, InferenceSettings
    from colorcli.weights import default_weights_path

    if default_weights_path(args.model) is not None:
        colorizer = Colorizer.from_name(args.model, settings=InferenceSettings(device="cpu"))
        note = "shipped weights"
    else:
        colorizer = Colorizer.from_model(create_model(args.model))
        note = "random-init weights"
    rgb = _photo(args.mp, args.photo)
    if args.reference.is_file():
        ref_rgb = steer.Reference.from_file(args.reference).rgb
    else:
        ref_rgb = np.stack([np.full((256, 256), c, np.float32) for c in (0.8, 0.3, 0.2)], axis=-1)
    reference = steer.Reference.from_rgb(ref_rgb)
    hints = ["0.3,0.6=#c05070", "0.8,0.2=#4a80b0"]
    cases = {
        "plain": {},
        "2 hints": {"hints": hints},
        "reference (Reference)": {"reference": reference},
        "reference (array)": {"reference": ref_rgb},
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for name, kw in cases.items():  # warm-up
        colorizer.colorize_rgb(rgb, **kw)
    for _ in range(args.repeats):  # interleaved, so machine load hits every case alike
        for name, kw in cases.items():
            t = time.perf_counter()
            colorizer.colorize_rgb(rgb, **kw)
            times[name].append(time.perf_counter() - t)
    h, w = rgb.shape[:2]
    print(f"{args.model} ({note}), {w}x{h} gray ({w * h / 1e6:.2f} MP), torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats}")
    base = statistics.median(times["plain"])
    for name, ts in times.items():
        med = statistics.median(ts)
        extra = med / base - 1
        flag = "" if name == "plain" else ("  ok" if extra <= TARGET else f"  over the +{TARGET:.0%} target")
        print(f"  {name:24s} {med:.3f} s  {extra:+.1%}{flag}")


if __name__ == "__main__":
    main()
