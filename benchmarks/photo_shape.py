"""How the shape a photo is seen in changes the colourfulness ``colorize`` renders with ``mcl``.

Why ``train --calibrate-only`` reads photo folders as they are and not the training cache: a
gain fitted on what the network renders from cached crops is fitted to a different input. This
script colorizes the same photos, through the real inference path, in three shapes:

- as they are (own size and shape: what a user colorizes);
- cropped square at their short side (``ImageOps.fit``, as ``colorcli prepare`` crops);
- cropped square to ``--cache-size`` and scaled back up to ``--view`` (how a cache made at
  128 px reaches a calibration at the view size of 160).

It prints the mean colourfulness (``eval``'s form) rendered with the gain held at 1 (the
network's own chroma: what a calibration scales), each shape's ratio to the photos as they are,
and the mean with the file's own gain, beside the photos' own. A file without a gain head
renders its own chroma in both columns.

    python benchmarks/photo_shape.py ../shared/data/val_diverse --photos 110
    python benchmarks/photo_shape.py DIR --weights FILE --photos 200 --seed 1
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from colorcli import metrics
from colorcli.calibrate import GainRecorder
from colorcli.data import PhotoFiles
from colorcli.inference import Colorizer, InferenceSettings
from colorcli.weights import load_named


def shapes(rgb8: np.ndarray, cache_size: int, view: int) -> dict[str, np.ndarray]:
    """The photo in each shape, uint8 RGB."""
    img = Image.fromarray(rgb8)
    side = min(img.size)
    square = ImageOps.fit(img, (side, side), Image.Resampling.BICUBIC)
    cached = ImageOps.fit(img, (cache_size, cache_size), Image.Resampling.BICUBIC)
    upscaled = cached.resize((view, view), Image.Resampling.BICUBIC)
    return {
        "as it is": rgb8,
        "cropped square": np.asarray(square),
        f"cropped to {cache_size}, scaled to {view}": np.asarray(upscaled),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="a folder of colour photos (gray ones are skipped)")
    ap.add_argument("--weights", type=Path, default=None, help="an mcl file (default: the shipped one)")
    ap.add_argument("--photos", type=int, default=110, help="how many photos, chosen at random (default 110)")
    ap.add_argument("--cache-size", type=int, default=128, help="the cache's crop size (default 128)")
    ap.add_argument("--view", type=int, default=160, help="the view size it is scaled to (default 160)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = load_named("mcl" if args.weights is None else None, args.weights).eval()
    head = model.gain_head()
    col = Colorizer.from_model(model, InferenceSettings())
    photos = PhotoFiles([args.folder])
    order = list(range(len(photos)))
    random.Random(args.seed).shuffle(order)

    def render_cf(rgb8: np.ndarray) -> float:
        with torch.no_grad():
            return metrics.colourfulness(col.colorize_rgb(rgb8.astype(np.float32) / 255))

    plain: dict[str, list[float]] = {}
    gained: dict[str, list[float]] = {}
    truth: dict[str, list[float]] = {}
    used = 0
    for i in order:
        if used == args.photos:
            break
        rgb8 = photos.read(i)
        if rgb8 is None:
            continue  # gray
        used += 1
        for name, view in shapes(rgb8, args.cache_size, args.view).items():
            truth.setdefault(name, []).append(metrics.colourfulness(view.astype(np.float32) / 255))
            gained.setdefault(name, []).append(render_cf(view))
            if head is None:  # no per-photo gain: the network's own chroma is what it renders
                plain.setdefault(name, []).append(gained[name][-1])
                continue
            recorder = GainRecorder(head)  # the gain held at 1
            try:
                plain.setdefault(name, []).append(render_cf(view))
            finally:
                recorder.close()
    if not used:
        print(f"{args.folder}: no colour photos", file=sys.stderr)
        return 2
    print(f"{used} photos of {args.folder}, weights {args.weights or 'shipped mcl'}\n")
    base = np.mean(plain["as it is"])
    print("| shape | CF rendered, gain 1 | ratio to as it is | CF rendered, the file's gain | CF of the photos |")
    print("|---|---|---|---|---|")
    for name in truth:
        g1 = np.mean(plain[name])
        print(f"| {name} | {g1:.2f} | {g1 / base:.3f} | {np.mean(gained[name]):.2f} | {np.mean(truth[name]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
