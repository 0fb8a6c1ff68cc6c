"""The light install: a built wheel, installed into a fresh venv WITHOUT torch, colorizes the
examples from another folder with the shipped models (package data), within 1/255 of the torch
backend.

Builds the wheel from this checkout (needs the ONNX twins in ``weights/``; see
test_shipped.py), makes a venv with ``python -m venv`` and installs the wheel with pip (its
dependencies come from the package index or pip's cache). Takes about a minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colorcli.imageio import read_photo, to_uint8
from colorcli.inference import Colorizer, InferenceSettings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # A clean copy of what the build reads: building in the checkout would leave build/ and
    # *.egg-info there, and a stale build/lib would leak old files into later wheels.
    src = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "weights", src / "weights")
    # Built as pip builds it for a user: in an isolated environment with the declared setuptools.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)], cwd=out)
    (found,) = out.glob("colorcli-*.whl")
    return found


def test_wheel_carries_the_shipped_models(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.name for p in (ROOT / "weights").glob("*.safetensors"))
    assert shipped
    for f in shipped:
        assert f"colorcli/shipped/{f}" in names
        assert f"colorcli/shipped/{f.replace('.safetensors', '.onnx')}" in names
    assert "colorcli/inference/colorizer.py" in names and "colorcli/cli/__init__.py" in names
    assert not [n for n in names if n.startswith("tests/") or "onnx_graphs" in n]


def test_wheel_colorizes_without_torch(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COLORCLI_WEIGHTS", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)], env=env)
    probe = _run([str(py), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"], env=env)
    assert probe.stdout.strip() == "True", "torch must not be installed by the light install"

    work = tmp_path / "elsewhere"  # not the checkout: nothing is found through the working folder
    work.mkdir()
    res = _run([str(bindir / "colorcli"), "colorize", str(EXAMPLES), "-o", "out/"], cwd=work, env=env)
    inputs = sorted(p for p in EXAMPLES.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    assert len(res.stdout.strip().splitlines()) == len(inputs)
    models = _run([str(bindir / "colorcli"), "models"], cwd=work, env=env)
    assert "mcl" in models.stdout and "not trained yet" not in models.stdout

    # The same photos on the torch backend (this environment), from the same shipped weights.
    torch_col = Colorizer.from_name("mcl", backend="torch", settings=InferenceSettings(device="cpu"))
    for src in inputs:
        got = np.asarray(Image.open(work / "out" / f"{src.stem}_color.png"), dtype=np.int16)
        want = to_uint8(torch_col.colorize_rgb(read_photo(src).rgb)).astype(np.int16)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1, src.name
