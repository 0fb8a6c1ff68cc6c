"""Data safety of the CLI (issue 13, items 6-11): output folders inside inputs, unreadable named
files, full disks and full stdout, stale temp files, closed pipes, two runs into one folder."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from colorcli.batch import Job, plan_jobs, run_jobs
from colorcli.cli import app
from colorcli.errors import ImageWriteError
from colorcli.files import atomic_write_bytes, clean_stale_parts

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run(*args: str):
    return CliRunner().invoke(app, ["colorize", *map(str, args)])


def _tiny(weights: Path) -> list[str]:
    return ["--model", "test_mcl", "--weights", str(weights), "--suffix", "_color"]  # names as for mcl


def _cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    """``python -m colorcli ARGS`` in a real process (pipes and devices are real there)."""
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    kw.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "colorcli", *map(str, args)], env=env,
                          stderr=subprocess.PIPE, text=True, timeout=120, **kw)


# ---------------------------------------------------------------------------------------------
# 6: -r with the output folder inside the input folder


def test_recursive_never_takes_inputs_from_the_output_folder(photo_dir, tiny_weights):
    out = photo_dir / "out"
    assert _run(photo_dir, "-r", "-o", out, *_tiny(tiny_weights)).exit_code == 0
    first = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert first == ["a_color.png", "b_color.png", "c_color.png"]
    # Another format and --overwrite: the old code took out/*.png as inputs (out/out/x_color_color.jpg).
    res = _run(photo_dir, "-r", "-o", out, "--format", "jpg", "--overwrite", *_tiny(tiny_weights))
    assert res.exit_code == 0, res.stderr
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["a_color.jpg", "a_color.png", "b_color.jpg", "b_color.png", "c_color.jpg", "c_color.png"]


def test_plan_skips_the_output_subtree_only(tmp_path):
    for rel in ("a.jpg", "sub/b.jpg", "res/old.jpg", "res/deeper/x.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    plan = plan_jobs([tmp_path], tmp_path / "res", recursive=True)
    assert sorted(str(j.source.relative_to(tmp_path)) for j in plan.jobs) == ["a.jpg", "sub/b.jpg"]


# ---------------------------------------------------------------------------------------------
# 7: an unreadable file named on the command line


def _without_read_permission() -> list[str] | None:
    """A command prefix under which a 0o000 file cannot be read: nothing for a normal user; as
    root, setpriv dropping the capabilities that let root read anything."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


def test_unreadable_named_file_fails_alone(photo_dir, tiny_weights, tmp_path):
    prefix = _without_read_permission()
    if prefix is None:
        pytest.skip("running as root without setpriv: root reads a 0o000 file")
    bad = photo_dir / "a.jpg"
    bad.chmod(0)
    try:
        env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
        res = subprocess.run(
            [*prefix, sys.executable, "-m", "colorcli", "colorize", str(bad), str(photo_dir / "c.png"),
             "-o", str(tmp_path / "out"), *_tiny(tiny_weights)],
            env=env, capture_output=True, text=True, timeout=120)
    finally:
        bad.chmod(0o644)
    assert res.returncode == 1, res.stderr  # the old code: 2, Typer refused the whole command
    assert f"failed: {bad}: cannot open (permission denied)" in res.stderr.splitlines()
    assert (tmp_path / "out" / "c_color.png").is_file()
    assert "done 1, skipped 0, failed 1" in res.stderr


# ---------------------------------------------------------------------------------------------
# 8: a full disk, a full stdout


@pytest.fixture()
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs (root only), else None."""
    d = tmp_path / "small"
    d.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        yield None
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)],
                      capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _fill_disk_on_write(monkeypatch):
    """Without a tiny file system: every write of a file's data fails as on a full disk."""
    import builtins

    real_open = builtins.open

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

        def __getattr__(self, name):
            return getattr(self.fh, name)

    def fake_open(file, mode="r", *a, **k):
        fh = real_open(file, mode, *a, **k)
        return Full(fh) if "w" in mode and str(file).endswith(".part") else fh

    monkeypatch.setattr(builtins, "open", fake_open)


def test_prepare_on_a_full_disk_is_one_line_and_leaves_nothing(photo_dir, tiny_fs, monkeypatch, tmp_path):
    folder = tiny_fs if tiny_fs is not None else tmp_path / "disk"
    folder.mkdir(exist_ok=True)
    for i in range(6):  # enough photo bytes that the cache cannot fit in 64 KiB
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(
            photo_dir / f"noise{i}.png")
    if tiny_fs is None:
        _fill_disk_on_write(monkeypatch)
    res = CliRunner().invoke(app, ["prepare", str(photo_dir), "-o", str(folder / "cache.npz"), "--size", "96",
                                   "--quality", "100"])
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert f"error: {folder / 'cache.npz'}: cannot write (no space left on device)" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in folder.iterdir()) == []  # no cache, no .tmp, no .part


def test_atomic_writer_on_a_full_disk(tiny_fs, tmp_path):
    if tiny_fs is None:
        pytest.skip("needs root to mount a 64 KiB tmpfs (the monkeypatched case is the test above)")
    with pytest.raises(ImageWriteError, match="no space left on device"):
        atomic_write_bytes(tiny_fs / "big.bin", b"x" * 200_000)
    assert list(tiny_fs.iterdir()) == []


def test_train_checkpoint_uses_the_shared_writer(tiny_fs, tmp_path, monkeypatch):
    import torch

    from colorcli import train

    folder = tiny_fs if tiny_fs is not None else tmp_path / "disk"
    folder.mkdir(exist_ok=True)
    if tiny_fs is None:
        _fill_disk_on_write(monkeypatch)
    with pytest.raises(ImageWriteError, match=r"run\.ckpt: cannot write \(no space left on device\)"):
        train._atomic_torch_save({"w": torch.zeros(100_000)}, folder / "run.ckpt")
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_models_to_a_full_stdout_is_one_line(tmp_path):
    with open("/dev/full", "w") as full:
        res = _cli(["models"], stdout=full)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: stdout: no space left on device"), res.stderr


# ---------------------------------------------------------------------------------------------
# 9: stale temp files of our pattern


def test_stale_part_files_are_cleaned_at_start(photo_dir, tiny_weights, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    old = time.time() - 16 * 60
    stale = out / ".a_color.png.0123abcd.part"
    young = out / ".b_color.png.89abcdef.part"
    theirs = out / ".notes.part"  # not our pattern: never touched
    for p in (stale, young, theirs):
        p.write_bytes(b"partial")
    os.utime(stale, (old, old))
    os.utime(theirs, (old, old))
    # Every output exists already, so nothing is written: cleaning must not wait for a write.
    for name in ("a_color.png", "b_color.png", "c_color.png"):
        (out / name).write_bytes(b"done")
    res = _run(photo_dir, "-o", out, *_tiny(tiny_weights))
    assert res.exit_code == 0, res.stderr
    assert not stale.exists()
    assert young.exists() and theirs.exists()


def test_clean_stale_parts_pattern(tmp_path):
    now = time.time()
    names = [".x.png.0123abcd.part", ".x.png.0123abcg.part", ".x.png.0123abc.part", "x.png.0123abcd.part"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    removed = clean_stale_parts(tmp_path, now=now + 3600)
    assert [p.name for p in removed] == [".x.png.0123abcd.part"]


# ---------------------------------------------------------------------------------------------
# 10: a closed stdout


def test_closed_stdout_finishes_the_batch_and_says_so(photo_dir, tiny_weights, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "colorcli", "colorize", str(photo_dir), "-o", str(out),
                             *_tiny(tiny_weights)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first path is printed
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode == 1, err
    assert sorted(p.name for p in out.iterdir()) == ["a_color.png", "b_color.png", "c_color.png"]
    assert "done 3, skipped 0, failed 0" in err
    assert "3 output path(s) not printed" in err
    assert "Traceback" not in err and "Exception ignored" not in err


def test_head_n1_pipe(photo_dir, tiny_weights, tmp_path):
    """``colorize ... | head -n1``: the batch is finished whatever head does."""
    out = tmp_path / "out"
    cmd = (f"{sys.executable} -m colorcli colorize {photo_dir} -o {out} --model test_mcl --suffix _color "
           f"--weights {tiny_weights} 2>{tmp_path / 'err.txt'} | head -n1")
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=120)
    assert res.stdout.splitlines() == [str(out / "a_color.png")]
    err = (tmp_path / "err.txt").read_text()
    assert "done 3, skipped 0, failed 0" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a_color.png", "b_color.png", "c_color.png"]


# ---------------------------------------------------------------------------------------------
# 11: two runs into one output folder


def test_output_finished_meanwhile_counts_as_skipped(photo_dir, tmp_path, monkeypatch):
    from colorcli import batch

    out = tmp_path / "out"
    plan = plan_jobs([photo_dir], out)
    a, b, c = plan.jobs
    # a: appears before it is read; b: while it is computed; c: between encoding and the rename.
    real_read = batch.read_photo

    def read(path):
        if path == a.source:
            a.target.parent.mkdir(parents=True, exist_ok=True)
            a.target.write_bytes(b"theirs")
        return real_read(path)

    class Colorizer:
        def colorize_rgb(self, rgb):
            if b.target.parent.is_dir() and not b.target.exists() and rgb.shape[:2] == (37, 53):
                b.target.write_bytes(b"theirs")
            return np.asarray(rgb)

    real_encode = batch.write_image.__globals__["encode_image"]

    def encode(fmt, rgb, **kw):
        data = real_encode(fmt, rgb, **kw)
        if rgb.shape[:2] == (64, 40):
            c.target.write_bytes(b"theirs")
        return data

    monkeypatch.setattr(batch, "read_photo", read)
    monkeypatch.setitem(batch.write_image.__globals__, "encode_image", encode)
    events = []
    res = run_jobs(Colorizer(), plan.jobs, workers=0, on_event=lambda j, s, d: events.append((j.source.name, s, d)))
    assert res.failed == []
    assert res.skipped == [a.source, b.source, c.source]
    assert all(s == "skipped" and d == batch.OTHER_RUN for _, s, d in events)
    for job in plan.jobs:
        assert job.target.read_bytes() == b"theirs"  # never replaced
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]
