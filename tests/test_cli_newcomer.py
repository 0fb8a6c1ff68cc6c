"""The CLI a newcomer expects (issue 13): bounds, version/verbosity, pipes, JSON, provenance,
model names in outputs, consistent options, devices, where weights are looked for."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from colorcli import __version__
from colorcli.cli import app
from colorcli.imageio import read_provenance
from colorcli.sizing import network_size

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run(*args, input=None):
    return CliRunner().invoke(app, [*map(str, args)], input=input)


def _tiny(weights: Path) -> list[str]:
    return ["--weights", f"test_mcl={weights}"]


def test_size_bounds(photo_dir, tiny_weights, tmp_path):
    res = _run("colorize", photo_dir, "-o", tmp_path, *_tiny(tiny_weights), "--size", 100000)
    assert res.exit_code == 2
    assert res.stderr.strip() == "error: --size must be at most 1024, got 100000"
    # 4096 -> 1024 max; and a 527-px photo is never seen larger than its own short side.
    assert network_size(527, 700, 1024, default=160)[0] == 544
    assert network_size(100, 120, 1024, default=160)[0] == 160  # never below the default
    assert network_size(527, 700, 128, default=160)[0] == 128  # smaller sizes as asked


def test_temperature_checks(photo_dir, tiny_weights, tmp_path):
    res = _run("colorize", photo_dir, "-o", tmp_path, *_tiny(tiny_weights), "--temperature", -1)
    assert res.exit_code == 2 and "--temperature must be greater than 0, got -1" in res.stderr
    torch.manual_seed(0)
    from colorcli.models import create_model
    from colorcli.weights import save_weights

    l2 = save_weights(create_model("test_l2"), tmp_path / "l2.safetensors")
    res = _run("colorize", photo_dir / "a.jpg", "-o", tmp_path / "o", "--weights", f"test_l2={l2}",
               "--temperature", 0.3)
    assert res.exit_code == 0, res.stderr
    assert "warning: model test_l2 regresses its colours directly: --temperature is ignored" in res.stderr


def test_version_quiet_verbose_completion(photo_dir, tiny_weights, tmp_path):
    res = _run("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"colorcli {__version__}"
    quiet = _run("colorize", photo_dir, "-o", tmp_path / "q", *_tiny(tiny_weights), "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    verbose = _run("colorize", photo_dir, "-o", tmp_path / "q", *_tiny(tiny_weights), "-v")
    assert "settings: " in verbose.stderr and sum(line.startswith("skipped: ") for line in verbose.stderr.splitlines()) == 3
    assert "--install-completion" in _run("--help").stdout


def test_quiet_and_verbose_on_prepare_train_and_export(tmp_path, make_photo, tiny_weights):
    """-q leaves stderr empty (results still on stdout); -v adds the settings."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        Image.fromarray(make_photo(40, 40, i)).save(photos / f"p{i}.png")
    cache = tmp_path / "c.npz"
    res = _run("prepare", photos, "-o", cache, "--size", "32", "-q")
    assert res.exit_code == 0 and res.stderr == "" and "6 photos" in res.stdout
    out = tmp_path / "m.safetensors"
    base = ["train", "--model", "test_mcl", "--data", cache, "--out", out, "--max-steps", "1",
            "--batch-size", "2", "--size", "32", "--device", "cpu", "--cache-dir", tmp_path]
    res = _run(*base, "-q")
    assert res.exit_code == 0 and res.stderr == "" and str(out) in res.stdout
    res = _run(*base, "-v")
    assert res.exit_code == 0 and "settings: " in res.stderr and "training on cpu" in res.stderr
    onnx = tmp_path / "m.onnx"
    res = _run("export", "--weights", f"test_mcl={tiny_weights}", "-o", onnx, "-q")
    assert res.exit_code == 0 and res.stderr == "" and res.stdout.strip() == str(onnx)
    res = _run("export", "--weights", f"test_mcl={tiny_weights}", "-o", onnx, "--overwrite")
    assert res.exit_code == 0 and "parity " in res.stderr  # the default still shows the parity check


def test_stdin_to_stdout_through_a_real_process(photo_dir, tiny_weights):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    data = (photo_dir / "a.jpg").read_bytes()
    res = subprocess.run([sys.executable, "-m", "colorcli", "colorize", "-", "-o", "-", *_tiny(tiny_weights)],
                         input=data, capture_output=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    img = Image.open(io.BytesIO(res.stdout))
    assert img.format == "PNG" and img.size == (64, 48)
    assert not Path("-").exists()
    res = subprocess.run([sys.executable, "-m", "colorcli", "colorize", "-", "-o", "-", "--format", "jpg",
                          *_tiny(tiny_weights)], input=data, capture_output=True, env=env, timeout=120)
    assert Image.open(io.BytesIO(res.stdout)).format == "JPEG"


def test_json_outputs_and_plain_tables(photo_dir, tiny_weights, tmp_path, monkeypatch):
    res = _run("models", "--json")
    doc = json.loads(res.stdout)
    assert {m["model"] for m in doc["models"]} >= {"mcl", "l2"} and doc["weights_folders"]
    table = _run("models").stdout
    assert "\x1b[" not in table and not set("│┃━┏") & set(table)
    # The headline figures of eval, from each file's metadata: mcl's row shows its CF gap.
    mcl = next(m for m in doc["models"] if m["model"] == "mcl")
    assert "CF gap" in table and "neutral" in table
    row = next(line for line in table.splitlines() if line.startswith("mcl "))
    assert f"{mcl['metrics']['cf_gap']:.2f}" in row.split() and f"{mcl['metrics']['neutral_chroma']:.2f}" in row.split()
    summary = tmp_path / "run.json"
    (photo_dir / "bad.png").write_bytes(b"nope")
    res = _run("colorize", photo_dir, "-o", tmp_path / "o", *_tiny(tiny_weights), "--summary", summary)
    doc = json.loads(summary.read_text())
    status = {Path(f["input"]).name: f["status"] for f in doc["files"]}
    assert status == {"a.jpg": "done", "b.png": "done", "c.png": "done", "bad.png": "failed"}
    assert doc["settings"]["model"] == "test_mcl" and doc["failed"] == 1
    ev = _run("eval", photo_dir, *_tiny(tiny_weights), "--json", "--limit", 2)
    assert json.loads(ev.stdout)["photos"] == 2


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp", "tiff"])
def test_provenance_in_every_output(photo_dir, tiny_weights, tmp_path, fmt):
    res = _run("colorize", photo_dir / "a.jpg", "-o", tmp_path / "o", *_tiny(tiny_weights), "--format", fmt)
    assert res.exit_code == 0, res.stderr
    (out,) = (tmp_path / "o").iterdir()
    prov = read_provenance(out)
    assert prov["colorized"] is True and prov["model"] == "test_mcl"
    assert prov["software"] == f"colorcli {__version__}" and len(prov["weights_sha256"]) == 64
    assert prov["settings"]["tta"] is True and read_provenance(photo_dir / "a.jpg") is None


def test_sixteen_bit_outputs_carry_provenance(tmp_path, tiny_weights):
    src = tmp_path / "in.png"
    Image.fromarray(np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)).save(src)
    for fmt in ("png", "tiff"):
        res = _run("colorize", src, "-o", tmp_path / fmt, *_tiny(tiny_weights), "--format", fmt, "--bit-depth", 16)
        assert res.exit_code == 0, res.stderr
        (out,) = (tmp_path / fmt).iterdir()
        assert read_provenance(out)["model"] == "test_mcl"


def test_model_in_names_and_skip_says_who_made_it(photo_dir, tiny_weights, tmp_path):
    res = _run("colorize", photo_dir / "a.jpg", "-o", tmp_path, *_tiny(tiny_weights))
    assert (tmp_path / "a_color_test_mcl.png").is_file()  # not the default model: named
    res = _run("colorize", photo_dir / "a.jpg", "-o", tmp_path, *_tiny(tiny_weights), "--no-tta")
    assert "exists, made by model test_mcl" in res.stderr and "tta True" in res.stderr
    # Earlier outputs with another model's name are not inputs in a folder run.
    res = _run("colorize", photo_dir, *_tiny(tiny_weights))
    assert res.exit_code == 0
    assert not list(photo_dir.glob("*_color_test_mcl_color*"))


def test_eval_defaults_to_mcl_and_threads(photo_dir, monkeypatch, tmp_path):
    from colorcli import evaluate

    seen = {}

    def fake(folder, **kw):
        seen.update(kw)
        raise evaluate.ColorcliError("stop here")

    monkeypatch.setattr(evaluate, "evaluate", fake)
    res = _run("eval", photo_dir)
    assert res.exit_code == 2 and seen["models"] == ["mcl"]
    from colorcli.cli.common import available_cores

    assert seen["threads"] == available_cores()
    _run("eval", photo_dir, "--threads", 1)
    assert seen["threads"] == 1


def test_device_mps_is_offered_and_clear_when_absent(photo_dir, tiny_weights, tmp_path):
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    res = _run("colorize", photo_dir, "-o", tmp_path, *_tiny(tiny_weights), "--device", "mps")
    assert res.exit_code == 2
    assert "--device mps was asked for but this torch has no usable MPS" in res.stderr


def test_missing_weights_lists_the_folders(photo_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("COLORCLI_WEIGHTS", str(tmp_path / "mine"))
    monkeypatch.setattr("colorcli.paths.REPO_WEIGHTS", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    res = _run("colorize", photo_dir, "-o", tmp_path / "o")
    assert res.exit_code == 2
    assert str(tmp_path / "mine") in res.stderr and str(tmp_path / "repo") in res.stderr
    assert "COLORCLI_WEIGHTS" in _run("--help").stdout
