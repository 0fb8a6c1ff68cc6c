"""The shipped models: each ``weights/NAME.safetensors`` has its ONNX twin ``weights/NAME.onnx``
(what the torch-free install runs), made from exactly that file.

A twin is out of date when the safetensors changed after it was exported: rebuild it with
``colorcli export --shipped NAME``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from colorcli.inference import OnnxBackend
from colorcli.files import sha256_file
from colorcli.paths import REPO_WEIGHTS

SHIPPED = sorted(p.stem for p in REPO_WEIGHTS.glob("*.safetensors"))


def test_there_are_shipped_models():
    assert "mcl" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_onnx_twin_exists_and_matches_its_safetensors(name):
    twin = REPO_WEIGHTS / f"{name}.onnx"
    assert twin.is_file(), f"{twin} is missing: make it with `colorcli export --shipped {name}`"
    backend = OnnxBackend(twin, device="cpu", threads=1)
    meta = backend.info.meta
    assert backend.info.model == name
    source = json.loads(meta["weights"])
    assert source["file"] == f"{name}.safetensors"
    assert source["sha256"] == sha256_file(REPO_WEIGHTS / f"{name}.safetensors"), (
        f"{twin} was exported from another {name}.safetensors: rebuild it with `colorcli export --shipped {name}`"
    )
    assert "fp16 weights" in backend.info.precision
    out = backend.predict(np.full((1, 1, 64, 96), 50.0, np.float32))
    assert out.shape[:2] == (1, 2) and out.dtype == np.float32 and np.isfinite(out).all()
