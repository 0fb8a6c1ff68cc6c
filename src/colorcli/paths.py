"""Where shipped files (weights, ONNX exports) are looked for: torch-free, shared by the torch
and onnxruntime paths."""

from __future__ import annotations

import os
from pathlib import Path

REPO_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"


def weights_dirs() -> list[Path]:
    """$COLORCLI_WEIGHTS, the repo's weights/, ./weights: first match wins."""
    dirs = []
    if os.environ.get("COLORCLI_WEIGHTS"):
        dirs.append(Path(os.environ["COLORCLI_WEIGHTS"]))
    dirs += [REPO_WEIGHTS, Path.cwd() / "weights"]
    return dirs


def find_shipped(filename: str) -> Path | None:
    """``filename`` in the first weights folder that has it, or None."""
    for d in weights_dirs():
        p = d / filename
        if p.is_file():
            return p
    return None
