"""Film colorization speed: frames per second at 480p and 1080p with the default model.

For each size a short gray clip (a slow pan across ``examples/einstein_beach.jpg``) is written
to a temp folder, then colorized end to end by :func:`colorcli.video.colorize_film` (decode,
L, network with mirror averaging, temporal smoothing, refinement, recombination, H.264 encode)
with the shipped ``mcl`` weights. The first frame is a warm-up; frames/s counts the rest.
Torch runs with ``--cores`` threads (default 2, the issue's figure).

    python benchmarks/bench_video.py                 # 480p and 1080p, 12 frames each
    python benchmarks/bench_video.py --frames 6      # a quicker run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"480p": (854, 480), "1080p": (1920, 1080)}


def make_clip(path: Path, w: int, h: int, frames: int, rate: int = 24) -> Path:
    import av
    from PIL import Image

    with Image.open(ROOT / "examples" / "einstein_beach.jpg") as img:
        gray = img.convert("L")
        scale = max((w + 2 * frames) / gray.width, h / gray.height)
        gray = gray.resize((int(np.ceil(gray.width * scale)), int(np.ceil(gray.height * scale))))
        wide = np.asarray(gray)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": "18", "preset": "veryfast"}
        for i in range(frames):
            g = wide[:h, 2 * i : 2 * i + w]
            f = av.VideoFrame.from_ndarray(np.repeat(g[..., None], 3, axis=2), format="rgb24")
            f.pts = i
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--model", default="mcl")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = ap.parse_args()

    import torch

    from colorcli.pipeline import Colorizer
    from colorcli.video import colorize_film

    torch.set_num_threads(args.cores)
    colorizer = Colorizer.from_name(args.model, device=args.device)
    print(f"model {args.model}, device {args.device}, {args.cores} torch threads, "
          f"{args.frames} frames per clip (first one a warm-up)")
    print(f"{'size':>6} {'frames/s':>9} {'s/frame':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sizes:
            w, h = SIZES[name]
            src = make_clip(Path(tmp) / f"{name}.mp4", w, h, args.frames)
            marks: list[float] = []
            colorize_film(colorizer, src, Path(tmp) / f"{name}_color.mp4",
                          on_frame=lambda done, total: marks.append(time.perf_counter()))
            # From the end of the warm-up frame to the last frame (encoder flush not counted).
            fps = (len(marks) - 1) / (marks[-1] - marks[0])
            print(f"{name:>6} {fps:9.2f} {1 / fps:8.2f}", flush=True)


if __name__ == "__main__":
    main()
