"""Make docs/film_strip.jpg and measure flicker with the default model, through the CLI.

Two short gray "films" are made from ``examples/einstein_beach.jpg`` with film grain (fresh
noise in every frame, sigma 5 of 255) and a slight exposure flicker: a still shot and a slow pan
(2 px a frame). Each is colorized by ``colorcli colorize`` twice, with ``--temporal`` (the
default) and ``--no-temporal`` (each frame on its own); the flicker (mean |Δab| between
consecutive output frames once the camera's motion is left out, :func:`colorcli.metrics.flicker`;
and with it counted) of each is printed. The strip shows
every fourth frame of the pan: the input above, the colorized film below.

    python docs/make_film_strip.py                   # writes docs/film_strip.jpg
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
W, H, FRAMES, RATE = 320, 240, 16, 24


def make_film(path: Path, *, pan: int, seed: int) -> Path:
    import av
    from PIL import Image

    rng = np.random.default_rng(seed)
    with Image.open(ROOT / "examples" / "einstein_beach.jpg") as img:
        gray = img.convert("L")
        scale = max((W + pan * FRAMES) / gray.width, H / gray.height)
        gray = gray.resize((int(np.ceil(gray.width * scale)), int(np.ceil(gray.height * scale))))
        wide = np.asarray(gray, dtype=np.float32)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=RATE)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.options = {"crf": "12"}
        for i in range(FRAMES):
            g = wide[:H, pan * i : pan * i + W] * rng.uniform(0.96, 1.04) + rng.normal(0, 5, (H, W))
            g8 = np.clip(np.round(g), 0, 255).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(np.repeat(g8[..., None], 3, axis=2), format="rgb24")
            f.pts = i
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
    return path


def colorize(src: Path, out_dir: Path, *extra: str) -> Path:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    subprocess.run([sys.executable, "-m", "colorcli", "colorize", str(src), "-o", str(out_dir), *extra],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return out_dir / f"{src.stem}_color.mp4"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "film_strip.jpg")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from PIL import Image

    from colorcli.metrics import flicker
    from colorcli.video import film_frames

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {}
        for shot, pan in (("still", 0), ("pan", 2)):
            src = make_film(tmp / f"{shot}.mp4", pan=pan, seed=pan)
            smooth = colorize(src, tmp / "temporal")
            per_frame = colorize(src, tmp / "per_frame", "--no-temporal")
            for follow in (True, False):
                results[shot] = (flicker(film_frames(per_frame), follow_camera=follow),
                                 flicker(film_frames(smooth), follow_camera=follow))
                print(f"{shot:>5}: flicker{'' if follow else ' (camera motion counted)'} per-frame "
                      f"{results[shot][0]:.2f}, temporal {results[shot][1]:.2f} "
                      f"({results[shot][1] / results[shot][0]:.0%})", flush=True)
            if shot == "pan":
                pick = range(0, FRAMES, 4)
                before = [f for i, f in enumerate(film_frames(src)) if i in pick]
                after = [f for i, f in enumerate(film_frames(smooth)) if i in pick]
        gap = 4
        sheet = np.full((2 * H + gap, len(before) * (W + gap) - gap, 3), 255, np.uint8)
        for k, (b, a) in enumerate(zip(before, after)):
            x = k * (W + gap)
            sheet[:H, x : x + W] = np.round(b * 255)
            sheet[H + gap :, x : x + W] = np.round(a * 255)
        Image.fromarray(sheet).save(args.out, quality=88)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
