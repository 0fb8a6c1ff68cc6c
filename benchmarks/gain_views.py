"""How well ``train --calibrate-only`` predicts what ``colorize`` renders with ``mcl``'s gain.

``colorize`` runs the network on the photo and its mirror image; each view gets the gain the
head reads from that view, and the two gained chromas are averaged. The calibration reads each
photo's colourfulness off a curve measured at a grid of gains (:mod:`colorcli.calibrate`). This
script colorizes photos both ways, through the real inference path, and prints a table:

- how far apart the two views' log gains are;
- how much the mean of the views' gains (what ``colorize`` applies) exceeds the gain of their
  mean input (what the calibration read before 2026-12-06);
- the mean |read − rendered| colourfulness for each reading (``rendered_log_gain``, today's,
  and the gain of the mean input);
- the gain ``colorize`` applied (min, mean, max) and the photos whose gain is near the bound.

The two readings compare renders with each other, not with the photo's colours, so with
``--keep-gray`` a folder of black-and-white photos works too.

    python benchmarks/gain_views.py ../shared/data/train --photos 300
    python benchmarks/gain_views.py ../shared/data/historical --keep-gray --photos 40
    python benchmarks/gain_views.py DIR --weights FILE --photos 100 --seed 1
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

import numpy as np
import torch

from colorcli import metrics
from colorcli.calibrate import GainRecorder, curve_at, log_gain_grid, measure_photo, rendered_log_gain
from colorcli.data import PhotoFiles
from colorcli.inference import Colorizer, InferenceSettings
from colorcli.weights import load_named


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="a folder of photos (searched like --data FOLDER)")
    ap.add_argument("--keep-gray", action="store_true", help="use gray photos too (skipped by default, as calibration does)")
    ap.add_argument("--weights", type=Path, default=None, help="an mcl file with a gain head (default: the shipped one)")
    ap.add_argument("--photos", type=int, default=40, help="how many photos, chosen at random (default 40)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = load_named("mcl" if args.weights is None else None, args.weights).eval()
    head = model.gain_head()
    if head is None:
        print(f"{args.weights or 'mcl'}: has no per-photo gain head", file=sys.stderr)
        return 2
    photos = PhotoFiles([args.folder])  # read as the calibration reads them (gray ones: None)
    order = list(range(len(photos)))
    random.Random(args.seed).shuffle(order)
    col = Colorizer.from_model(model, InferenceSettings())
    grid = log_gain_grid(model)
    spread, excess, err_views, err_mean, gains = [], [], [], [], {}
    for i in order:
        if len(gains) == args.photos:
            break
        rgb8 = photos.read(i, keep_gray=args.keep_gray)
        if rgb8 is None:
            continue  # a gray photo: calibration skips it
        recorder = GainRecorder(head)
        try:
            with torch.no_grad():
                features, curve, _ = measure_photo(col, recorder, rgb8, grid)
        finally:
            recorder.close()
        with torch.no_grad():
            per_view = model.clamp_log_gain(head(features))[:, 0]
            applied = rendered_log_gain(model, features[None])
            of_mean = model.clamp_log_gain(head(features.mean(dim=0, keepdim=True)))[:, 0]
        rendered = metrics.colourfulness(col.colorize_rgb(rgb8.astype(np.float32) / 255))
        spread.append(float(per_view.max() - per_view.min()))
        excess.append(float(torch.exp(applied - of_mean)) - 1)
        err_views.append(abs(float(curve_at(applied.double(), curve[None], grid)) - rendered))
        err_mean.append(abs(float(curve_at(of_mean.double(), curve[None], grid)) - rendered))
        gains[photos.paths[i].name] = float(torch.exp(applied))
    if not gains:
        print(f"{args.folder}: no colour photos (--keep-gray uses gray ones too)", file=sys.stderr)
        return 2
    print(f"{len(gains)} photos of {args.folder}, weights {args.weights or 'shipped mcl'}\n")
    print("| figure | mean | max |")
    print("|---|---|---|")
    for label, vals in (("log-gain spread between the views", spread),
                        ("mean of the views' gains over the gain of their mean input, %", [100 * e for e in excess]),
                        ("abs(read - rendered) CF, each view its own gain (today's fit)", err_views),
                        ("abs(read - rendered) CF, the gain of the mean input (before)", err_mean)):
        print(f"| {label} | {np.mean(vals):.3f} | {np.max(vals):.3f} |")
    bound = math.exp(float(model.clamp_log_gain(torch.tensor(1e6))))
    near = sorted(name for name, g in gains.items() if g >= 0.97 * bound)
    values = list(gains.values())
    print(f"\ngain applied: mean {np.mean(values):.2f}, min {min(values):.2f}, max {max(values):.2f} "
          f"(bound {bound:.2f}); {len(near)} within 3 % of the bound{': ' + ', '.join(near) if near else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
