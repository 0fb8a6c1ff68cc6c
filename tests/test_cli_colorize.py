"""``colorcli colorize`` on real files: folders, bad files, skip/overwrite, options, naming."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from colorcli.batch import Job, plan_jobs, run_jobs
from colorcli.cli import app
from colorcli.imageio import read_photo
from colorcli.inference import Colorizer, InferenceSettings


def _run(*args: str):
    return CliRunner().invoke(app, ["colorize", *map(str, args)])


def _tiny(weights: Path) -> list[str]:
    return ["--model", "test_mcl", "--weights", str(weights), "--suffix", "_color"]  # names as for mcl


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_folder_with_bad_files(photo_dir, tiny_weights, tmp_path):
    """A corrupt, a text-with-.jpg, a zero-byte file: the rest is done, exit 1, no partial file."""
    data = (photo_dir / "a.jpg").read_bytes()
    (photo_dir / "corrupt.jpg").write_bytes(data[: len(data) // 3])
    (photo_dir / "text.jpg").write_text("not a photo\n")
    (photo_dir / "notes.txt").write_text("ignored: not an image suffix\n")
    (photo_dir / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    res = _run(photo_dir, "-o", out, *_tiny(tiny_weights))
    assert res.exit_code == 1
    assert _files(out) == ["a_color.png", "b_color.png", "c_color.png"]
    for name in _files(out):
        with Image.open(out / name) as img:
            img.load()
    # stdout: the result paths only; stderr: one line per bad file and the summary.
    assert sorted(res.stdout.splitlines()) == [str(out / n) for n in _files(out)]
    err = res.stderr.splitlines()
    assert f"failed: {photo_dir / 'corrupt.jpg'}: corrupt or truncated image" in "\n".join(err)
    assert f"failed: {photo_dir / 'text.jpg'}: not an image" in "\n".join(err)
    assert f"failed: {photo_dir / 'empty.png'}: empty file (0 bytes)" in err
    assert err[-1] == "done 3, skipped 0, failed 3"
    assert len([line for line in err if line.startswith("failed: ")]) == 3


def test_outputs_keep_size_and_L(photo_dir, tiny_weights, tmp_path):
    res = _run(photo_dir / "b.png", "-o", tmp_path, *_tiny(tiny_weights))
    assert res.exit_code == 0, res.stderr
    src, out = read_photo(photo_dir / "b.png"), read_photo(tmp_path / "b_color.png")
    assert out.size == src.size == (53, 37)
    from colorcli.inference.render import rgb_to_l

    assert np.abs(rgb_to_l(src.rgb) - rgb_to_l(out.rgb)).mean() < 0.5
    assert np.abs(out.rgb[..., 0] - out.rgb[..., 2]).mean() > 0.005  # it has colour now


def test_skip_then_overwrite(photo_dir, tiny_weights, tmp_path):
    res = _run(photo_dir, "-o", tmp_path, *_tiny(tiny_weights))
    assert res.exit_code == 0
    stamp = (tmp_path / "a_color.png").stat().st_mtime_ns
    (tmp_path / "a_color.png").write_bytes(b"stale")
    res = _run(photo_dir, "-o", tmp_path, *_tiny(tiny_weights))
    assert res.exit_code == 0 and res.stdout == ""
    assert "done 0, skipped 3, failed 0" in res.stderr
    assert (tmp_path / "a_color.png").read_bytes() == b"stale"
    res = _run(photo_dir, "-o", tmp_path, "--overwrite", *_tiny(tiny_weights))
    assert res.exit_code == 0
    assert "done 3, skipped 0, failed 0" in res.stderr
    with Image.open(tmp_path / "a_color.png") as img:
        assert img.size == (64, 48)
    assert (tmp_path / "a_color.png").stat().st_mtime_ns >= stamp


def test_beside_inputs_and_rerun_does_not_colorize_outputs(photo_dir, tiny_weights):
    res = _run(photo_dir, *_tiny(tiny_weights))
    assert res.exit_code == 0, res.stderr
    assert _files(photo_dir) == ["a.jpg", "a_color.png", "b.png", "b_color.png", "c.png", "c_color.png"]
    res = _run(photo_dir, *_tiny(tiny_weights))
    assert res.exit_code == 0
    assert "done 0, skipped 3, failed 0" in res.stderr
    assert "3 file(s) named like outputs of other inputs" in res.stderr
    assert len(_files(photo_dir)) == 6


def test_unknown_model_lists_valid_ones(photo_dir, tiny_weights):
    for extra in ([], ["--weights", str(tiny_weights)]):
        res = _run(photo_dir, "--model", "nosuch", *extra)
        assert res.exit_code == 2
        assert res.stderr.startswith("error: unknown model 'nosuch'; valid models: ")
        assert "mcl" in res.stderr and "Traceback" not in res.stderr


def test_default_model_without_weights_is_a_clear_error(photo_dir, monkeypatch, tmp_path):
    import colorcli.paths

    # A model with no weights file in any weights folder.
    monkeypatch.setattr(colorcli.paths, "REPO_WEIGHTS", tmp_path / "none")
    monkeypatch.delenv("COLORCLI_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    res = _run(photo_dir)
    assert res.exit_code == 2
    assert "model 'mcl' has no weights: mcl.safetensors is in none of" in res.stderr


def test_one_pixel_image_rejected_clearly(tmp_path, tiny_weights):
    Image.new("L", (1, 1), 90).save(tmp_path / "dot.png")
    res = _run(tmp_path / "dot.png", *_tiny(tiny_weights))
    assert res.exit_code == 1
    assert res.stderr.splitlines()[0] == (
        f"failed: {tmp_path / 'dot.png'}: image too small (1x1); both sides must be at least 2 px")
    assert not (tmp_path / "dot_color.png").exists()


def test_missing_input_and_empty_folder(tmp_path, tiny_weights):
    res = _run(tmp_path / "nope.jpg", *_tiny(tiny_weights))
    assert res.exit_code == 1
    assert f"failed: {tmp_path / 'nope.jpg'}: no such file or folder" in res.stderr
    (tmp_path / "empty").mkdir()
    res = _run(tmp_path / "empty", *_tiny(tiny_weights))
    assert res.exit_code == 2
    assert f"error: no image files found in {tmp_path / 'empty'}" in res.stderr


def test_format_quality_and_bit_depth_options(photo_dir, tiny_weights, tmp_path):
    res = _run(photo_dir / "a.jpg", "-o", tmp_path / "hi", "--format", "jpg", "--quality", "95", *_tiny(tiny_weights))
    assert res.exit_code == 0
    res = _run(photo_dir / "a.jpg", "-o", tmp_path / "lo", "--format", "jpg", "--quality", "10", *_tiny(tiny_weights))
    assert res.exit_code == 0
    assert (tmp_path / "lo" / "a_color.jpg").stat().st_size < (tmp_path / "hi" / "a_color.jpg").stat().st_size
    res = _run(photo_dir / "b.png", "-o", tmp_path / "d16", "--bit-depth", "16", *_tiny(tiny_weights))
    assert res.exit_code == 0
    assert read_photo(tmp_path / "d16" / "b_color.png").bit_depth == 16
    res = _run(photo_dir, "--bit-depth", "16", "--format", "jpg", *_tiny(tiny_weights))
    assert res.exit_code == 2 and "JPEG is 8-bit only" in res.stderr
    res = _run(photo_dir, "--format", "gif", *_tiny(tiny_weights))
    assert res.exit_code == 2


def test_sixteen_bit_input_gives_sixteen_bit_output_unless_asked(tmp_path, tiny_weights):
    g16 = (np.arange(40 * 30, dtype=np.uint32).reshape(30, 40) * 50).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g.png")
    assert _run(tmp_path / "g.png", "-o", tmp_path / "auto", *_tiny(tiny_weights)).exit_code == 0
    assert _run(tmp_path / "g.png", "-o", tmp_path / "8", "--bit-depth", "8", *_tiny(tiny_weights)).exit_code == 0
    assert read_photo(tmp_path / "auto" / "g_color.png").bit_depth == 16
    assert read_photo(tmp_path / "8" / "g_color.png").bit_depth == 8


def test_same_format_and_names_with_markup(tmp_path, tiny_weights, make_photo):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(make_photo(20, 24)).save(d / "[bold]x[red].webp", quality=90)
    Image.fromarray(make_photo(20, 24)).convert("L").save(d / "scan.gif")
    res = _run(d, "-o", tmp_path / "o", "--format", "same", *_tiny(tiny_weights))
    assert res.exit_code == 0, res.stderr
    assert _files(tmp_path / "o") == ["[bold]x[red]_color.webp", "scan_color.png"]
    assert str(tmp_path / "o" / "[bold]x[red]_color.webp") in res.stdout.splitlines()


def test_recursive_mirrors_folders(photo_dir, tiny_weights, tmp_path):
    sub = photo_dir / "sub" / "deeper"
    sub.mkdir(parents=True)
    (photo_dir / "a.jpg").rename(sub / "a.jpg")
    out = tmp_path / "out"
    res = _run(photo_dir, "-o", out, *_tiny(tiny_weights))
    assert _files(out) == ["b_color.png", "c_color.png"]
    res = _run(photo_dir, "-o", out, "--recursive", *_tiny(tiny_weights))
    assert res.exit_code == 0
    assert "done 1, skipped 2, failed 0" in res.stderr
    assert _files(out) == ["b_color.png", "c_color.png", "sub/deeper/a_color.png"]


def test_device_cuda_without_gpu_is_clear(photo_dir, tiny_weights):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    res = _run(photo_dir, "--device", "cuda", *_tiny(tiny_weights))
    assert res.exit_code == 2 and "no CUDA GPU is available" in res.stderr


# --- the library half: planning and the threaded runner ----------------------------------------


def test_plan_names_and_conflicts(tmp_path):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    for name in ("a.jpg", "a.png", "b.tif", "sub/c.png", "a_color.png", ".hidden.png"):
        (d / name).write_bytes(b"x")
    os.symlink("..", d / "sub" / "loop")
    # Beside the inputs: a_color.png is a.jpg's output from an earlier run, not an input; b.tif
    # named twice is one input; the symlink loop is walked once.
    plan = plan_jobs([d, d / "b.tif"], None, recursive=True)
    assert [(j.source.relative_to(d).as_posix(), j.target.relative_to(d).as_posix()) for j in plan.jobs] == [
        ("a.jpg", "a_color.png"), ("b.tif", "b_color.png"), ("sub/c.png", "sub/c_color.png")]
    assert [str(p.relative_to(d)) for p, _ in plan.failed] == ["a.png"]
    assert "is already the output of" in plan.failed[0][1]
    assert [p.name for p in plan.previous_outputs] == ["a_color.png"]
    # Into another folder, the same file is an input like any other, mirrored below -o.
    plan = plan_jobs([d], tmp_path / "out", recursive=True, fmt="same")
    assert [j.target.relative_to(tmp_path / "out").as_posix() for j in plan.jobs] == [
        "a_color.jpg", "a_color.png", "a_color_color.png", "b_color.tif", "sub/c_color.png"]
    assert plan.failed == [] and plan.previous_outputs == []


def test_unreadable_subfolder_is_one_failure(tmp_path):
    d = tmp_path / "in"
    (d / "locked").mkdir(parents=True)
    (d / "locked" / "x.png").write_bytes(b"x")
    (d / "ok.png").write_bytes(b"x")
    (d / "locked").chmod(0)
    try:
        try:
            os.listdir(d / "locked")
            pytest.skip("running as root: chmod 000 does not stop listing a folder")
        except PermissionError:
            pass
        plan = plan_jobs([d], None, recursive=True)
    finally:
        (d / "locked").chmod(0o755)
    assert [j.source.name for j in plan.jobs] == ["ok.png"]
    assert plan.failed == [(d / "locked", f"{d / 'locked'}: cannot list folder (permission denied)")]


def test_same_output_for_every_worker_count(photo_dir, tiny_weights, tmp_path):
    outs = {}
    for workers in (0, 1, 3):
        res = _run(photo_dir, "-o", tmp_path / str(workers), "--workers", str(workers), *_tiny(tiny_weights))
        assert res.exit_code == 0
        outs[workers] = {n: np.asarray(Image.open(tmp_path / str(workers) / n)) for n in _files(tmp_path / str(workers))}
    for workers in (1, 3):
        assert outs[workers].keys() == outs[0].keys()
        for name in outs[0]:
            assert np.array_equal(outs[workers][name], outs[0][name])


@pytest.mark.parametrize("workers", [0, 2])
def test_ctrl_c_while_a_result_is_reported_still_reports_it(photo_dir, tiny_weights, tmp_path, workers):
    """Ctrl-C landing while a finished photo is being reported (its path printed) is held until
    the report is whole: every output written is reported, none counted as not started."""
    colorizer = Colorizer.from_name("test_mcl", weights=tiny_weights, settings=InferenceSettings(device="cpu"))
    out = tmp_path / "out"
    jobs = [Job(photo_dir / n, out / f"{Path(n).stem}_color.png") for n in ("a.jpg", "b.png", "c.png")]
    reported = []

    def report(job, status, detail):
        if not reported:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the signal is due here; without the hold it interrupts the report
        reported.append(job.target.name)

    res = run_jobs(colorizer, jobs, workers=workers, on_event=report)
    assert res.interrupted
    written = sorted(p.name for p in out.iterdir())
    assert sorted(reported) == sorted(p.name for p in res.done) == written
    assert len(res.done) + len(res.not_started) == 3


def test_runner_keeps_errors_per_file(photo_dir, tiny_weights, tmp_path):
    """A read error and a write error (target is a folder) fail alone; events come in full."""
    colorizer = Colorizer.from_name("test_mcl", weights=tiny_weights, settings=InferenceSettings(device="cpu"))
    out = tmp_path / "out"
    (out / "b_color.png").mkdir(parents=True)
    (photo_dir / "bad.jpg").write_text("x")
    jobs = [Job(photo_dir / n, out / f"{Path(n).stem}_color.png") for n in ("a.jpg", "bad.jpg", "b.png", "c.png")]
    events = []
    res = run_jobs(colorizer, jobs, overwrite=True, workers=2, on_event=lambda j, s, d: events.append((j.source.name, s)))
    assert sorted(events) == [("a.jpg", "done"), ("b.png", "failed"), ("bad.jpg", "failed"), ("c.png", "done")]
    assert [p.name for p in res.done] == ["a_color.png", "c_color.png"]
    reasons = dict((p.name, why) for p, why in res.failed)
    assert "not an image" in reasons["bad.jpg"]
    assert reasons["b.png"] == f"{photo_dir / 'b.png'}: output {out / 'b_color.png'}: cannot write (is a directory)"
    assert sorted(p.name for p in out.iterdir()) == ["a_color.png", "b_color.png", "c_color.png"]
