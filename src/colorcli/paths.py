"""Where shipped files (weights, ONNX twins) are looked for: torch-free, shared by every backend.

The shipped models are package data: setuptools maps the repository's ``weights/`` folder to
the package ``colorcli.shipped`` (see ``setup.py``), so a wheel carries them inside
``colorcli/shipped/``. A source checkout (``pip install -e .`` or ``PYTHONPATH=src``) reads
``weights/`` itself.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "shipped"  # in an installed wheel
REPO_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"  # in a source checkout


def weights_dirs() -> list[Path]:
    """$COLORCLI_WEIGHTS, the package's shipped models, the repo's weights/, ./weights: first
    match wins."""
    dirs = []
    if os.environ.get("COLORCLI_WEIGHTS"):
        dirs.append(Path(os.environ["COLORCLI_WEIGHTS"]))
    if PACKAGE_WEIGHTS.is_dir():
        dirs.append(PACKAGE_WEIGHTS)
    dirs += [REPO_WEIGHTS, Path.cwd() / "weights"]
    return list(dict.fromkeys(dirs))


def find_shipped(filename: str) -> Path | None:
    """``filename`` in the first weights folder that has it, or None."""
    for d in weights_dirs():
        p = d / filename
        if p.is_file():
            return p
    return None


def shipped_names(suffix: str) -> list[str]:
    """Model names with a ``NAME<suffix>`` file in the weights folders, sorted."""
    names: set[str] = set()
    for d in weights_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob(f"*{suffix}") if p.is_file() and not p.name.startswith("."))
    return sorted(names)
