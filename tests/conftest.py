"""Shared fixtures: tiny trained-shape weights and real small image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorcli.models import create_model
from colorcli.weights import save_weights


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful uint8 photo-like image (gradients + blobs)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack(
        [
            0.5 + 0.5 * np.sin(x / max(w, 1) * 6 + rng.random() * 3),
            0.5 + 0.5 * np.cos(y / max(h, 1) * 5 + rng.random() * 3),
            0.5 + 0.5 * np.sin((x + y) / max(h + w, 1) * 7),
        ],
        axis=-1,
    )
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def make_photo():
    return _photo


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A ``test_mcl`` weights file (random init, real format), for fast CLI/pipeline tests."""
    torch.manual_seed(0)
    model = create_model("test_mcl")
    path = tmp_path_factory.mktemp("weights") / "test_mcl.safetensors"
    save_weights(model, path, training={"note": "untrained, for tests"}, metrics={})
    return path


@pytest.fixture()
def photo_dir(tmp_path) -> Path:
    """A folder with three small real JPEG/PNG photos (one grayscale)."""
    d = tmp_path / "photos"
    d.mkdir()
    Image.fromarray(_photo(48, 64, 1)).save(d / "a.jpg", quality=92)
    Image.fromarray(_photo(37, 53, 2)).convert("L").save(d / "b.png")
    Image.fromarray(_photo(64, 40, 3)).save(d / "c.png")
    return d
