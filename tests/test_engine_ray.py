"""``colorcli colorize --engine ray``: a local 2-CPU Ray runtime gives the local engine's outputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from colorcli.cli import app
from colorcli.engines.ray_engine import INSTALL_HINT


def _run(*args) -> object:
    return CliRunner().invoke(app, ["colorize", *map(str, args)])


def _tiny(weights: Path) -> list[str]:
    return ["--model", "test_mcl", "--weights", str(weights), "--suffix", "_color"]


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    # One runtime for the module: starting Ray takes seconds. The engine uses it and leaves it
    # running (it only shuts down a runtime it started itself).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory, make_photo) -> Path:
    """20 small photos (colour and gray, PNG and JPEG, odd sizes) and one broken file."""
    d = tmp_path_factory.mktemp("archive")
    for i in range(20):
        img = Image.fromarray(make_photo(24 + 3 * i, 56 - i, i))
        if i % 3 == 0:
            img = img.convert("L")
        img.save(d / f"p{i:02d}.{'jpg' if i % 2 else 'png'}")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return d


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p), dtype=np.int16) for p in sorted(folder.iterdir())}


def test_ray_matches_local_engine_and_rerun_does_nothing(ray_runtime, archive, tiny_weights, tmp_path):
    local = _run(archive, "-o", tmp_path / "local", *_tiny(tiny_weights))
    assert local.exit_code == 1, local.stderr
    res = _run(archive, "-o", tmp_path / "ray", "--engine", "ray", "--workers", "2", *_tiny(tiny_weights))
    assert res.exit_code == 1, res.stderr

    # Same per-file lines and summary as the local engine (Ray's come in the order they finish).
    assert sorted(res.stdout.splitlines()) == sorted(
        line.replace(str(tmp_path / "local"), str(tmp_path / "ray")) for line in local.stdout.splitlines())
    assert len(res.stdout.splitlines()) == 20
    err = res.stderr.splitlines()
    failed = [line for line in err if line.startswith("failed: ")]
    assert failed == [line for line in local.stderr.splitlines() if line.startswith("failed: ")]
    assert failed[0].startswith(f"failed: {archive / 'broken.jpg'}: corrupt or truncated image")
    assert err[-1] == "done 20, skipped 0, failed 1"

    # The same pixels, within 1/255 (actors run torch with 1 thread, the local engine with more).
    ours, theirs = _pixels(tmp_path / "ray"), _pixels(tmp_path / "local")
    assert ours.keys() == theirs.keys() and len(ours) == 20
    for name in ours:
        assert ours[name].shape == theirs[name].shape, name
        assert np.abs(ours[name] - theirs[name]).max() <= 1, name
    assert not [p for p in (tmp_path / "ray").iterdir() if p.name.startswith(".")]  # no temp file left

    # A re-run redoes nothing: finished outputs are skipped, untouched; only the broken file fails.
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").iterdir()}
    res = _run(archive, "-o", tmp_path / "ray", "--engine", "ray", "--workers", "2", *_tiny(tiny_weights))
    assert res.exit_code == 1
    assert res.stdout == ""
    assert res.stderr.splitlines()[-1].startswith("done 0, skipped 20, failed 1")
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").iterdir()} == stamps


def test_ray_overwrite_and_output_options(ray_runtime, archive, tiny_weights, tmp_path):
    """--overwrite, --format and --suffix mean the same with Ray; a finished batch starts nothing."""
    one = archive / "p01.jpg"
    args = [one, "-o", tmp_path, *_tiny(tiny_weights), "--format", "jpg", "--suffix", "_c", "--engine", "ray", "--workers", "1"]
    assert _run(*args).stdout.splitlines() == [str(tmp_path / "p01_c.jpg")]
    res = _run(*args)
    assert res.exit_code == 0 and res.stdout == ""
    assert res.stderr.splitlines()[-1].startswith("done 0, skipped 1, failed 0")
    res = _run(*args, "--overwrite")
    assert res.exit_code == 0 and res.stdout.splitlines() == [str(tmp_path / "p01_c.jpg")]


def test_ray_option_errors(archive, tiny_weights, monkeypatch):
    res = _run(archive, "--address", "auto", *_tiny(tiny_weights))
    assert res.exit_code == 2
    assert "--address, --cpus-per-worker and --gpus-per-worker go with --engine ray" in res.stderr
    res = _run(archive, "--engine", "ray", "--no-temporal", *_tiny(tiny_weights))
    assert res.exit_code == 2
    assert "which --engine ray does not colorize; use the local engine" in res.stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    res = _run(archive, "--engine", "ray", *_tiny(tiny_weights))
    assert res.exit_code == 2
    assert res.stderr.strip() == f"error: {INSTALL_HINT}"
