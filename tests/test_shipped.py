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


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_metadata_states_the_normalisation_the_model_computes(name):
    """Each shipped file's ``normalisation`` is what its model's code computes (the model
    rebuilt from the file and asked), and its ONNX twin states the same. A file from before the
    field was right is brought up to date, tensors untouched, by
    ``python -m colorcli.weights stamp weights/NAME.safetensors``; then remake the twin with
    ``colorcli export --shipped NAME``."""
    from colorcli.weights import load_weights

    path = REPO_WEIGHTS / f"{name}.safetensors"
    model = load_weights(path)
    want = json.loads(json.dumps(model.normalisation()))
    assert model.weights_meta["normalisation"] == want, (
        f"{path} states another normalisation than model {name!r} computes: "
        f"`python -m colorcli.weights stamp {path}`, then `colorcli export --shipped {name}`"
    )
    twin = OnnxBackend(REPO_WEIGHTS / f"{name}.onnx", device="cpu", threads=1).info.meta
    assert json.loads(twin.get("normalisation", "null")) == want, (
        f"{name}.onnx does not state its model's normalisation: `colorcli export --shipped {name}`"
    )
