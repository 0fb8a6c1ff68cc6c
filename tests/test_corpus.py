"""The hostile-input corpus (tests/make_corpus.py) through the real CLI, case by case.

One ``colorcli colorize CORPUS -o OUT -r`` run colorizes every case; each case then checks that
it got either a correct output (size, L kept, alpha, bit depth, EXIF, ICC, notes) or exactly
one failure line naming the file and the reason, and the whole run checks the summary, exit
code, stdout/stderr split, that no partial file was left and that no input was touched.
Then the same command again, interrupts, unwritable outputs and bad weights.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import make_corpus
from colorcli import color
from colorcli.cli import app
from colorcli.cli.common import safe_text
from colorcli.imageio import read_photo
from colorcli.inference import Colorizer, InferenceSettings
from colorcli.inference.render import rgb_to_l


def _case_names() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        return [c.name for c in make_corpus.make_corpus(Path(tmp) / "c")]


CASE_NAMES = _case_names()
ROOT_SKIP = "running as root: permission bits do not stop root, so this case cannot fail here"


@dataclass
class Run:
    cases: dict[str, make_corpus.Case]
    inp: Path
    out: Path
    exit_code: int
    exception: BaseException | None
    stdout: list[str]
    stderr: list[str]
    hashes: dict[str, str]


def _tree_hashes(root: Path) -> dict[str, str]:
    found = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if p.is_symlink() or not os.access(p, os.R_OK):
                found[str(p)] = "link-or-locked"
                continue
            st = p.stat()
            if st.st_size > 64 << 20:  # the sparse 3 GiB case: reading it is what we test against
                found[str(p)] = f"{st.st_size}:{st.st_mtime_ns}"
                continue
            found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def _invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def _colorize_args(inp: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return ["colorize", str(inp), "-o", str(out), "--model", "test_mcl", "--weights", str(weights), "--suffix", "_color", *extra]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_weights) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("corpus") / "c"
    cases = {c.name: c for c in make_corpus.make_corpus(root)}
    inp, out = root / "in", root / "out"
    before = _tree_hashes(inp)
    res = _invoke(_colorize_args(inp, out, tiny_weights, "--recursive"))
    assert _tree_hashes(inp) == before, "an input was modified"
    yield Run(cases, inp, out, res.exit_code, res.exception, res.stdout.splitlines(),
              res.stderr.splitlines(), before)
    (inp / cases["sparse_3gib"].file).unlink()  # sparse, but 3 GiB to anything that reads it


def _limited_as() -> None:
    """preexec_fn: a 2 GiB address-space limit (``ulimit -v``) for the child."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))


LIMIT_AS = 2 << 30


def _cli(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "colorcli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, preexec_fn=_limited_as)


def test_corpus_under_2gib_address_space(run: Run, tiny_weights, tmp_path) -> None:
    """The real CLI under ``ulimit -v`` 2 GiB over the whole corpus: the iCCP bomb and the 3 GiB
    file included, every bad input is one failure line, the rest are written, no traceback."""
    out = tmp_path / "out"
    res = _cli(_colorize_args(run.inp, out, tiny_weights, "--recursive"))
    assert "Traceback" not in res.stderr and "MemoryError" not in res.stderr, res.stderr[-3000:]
    outputs = [c for c in run.cases.values() if not c.error]
    errors = [c for c in run.cases.values() if c.error]
    assert res.returncode == 1, res.stderr[-3000:]
    assert f"done {len(outputs)}, skipped 0, failed {len(errors)}" in res.stderr
    for name in ("iccp_bomb", "sparse_3gib"):
        case = run.cases[name]
        lines = [line for line in res.stderr.splitlines() if f"{case.file}:" in line]
        assert len(lines) == 1 and re.search(case.error, lines[0]), lines


# One child process runs the real CLI entry point once per weights file (torch is imported
# once, not once per file), capturing each run's exit code and stderr.
_CLI_LOOP = """
import contextlib, io, json, sys
from colorcli.cli import app
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            app(args, prog_name="colorcli")
            code = 0
        except SystemExit as exc:
            code = exc.code
    print(json.dumps([code, err.getvalue()]), flush=True)
"""


def test_hostile_weights_under_2gib_address_space(run: Run, tiny_weights, tmp_path) -> None:
    """Every hostile or damaged weights file: exit 2 and one line naming it, under 2 GiB."""
    import json

    cases = make_corpus.make_hostile_weights(tmp_path / "w", tiny_weights)
    assert len(cases) >= 8
    src = run.inp / run.cases["gray_jpeg"].file
    runs = [_colorize_args(src, tmp_path / "out", path) for _, path, _ in cases]
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        res = subprocess.run([sys.executable, "-c", _CLI_LOOP, json.dumps(runs)], capture_output=True,
                             text=True, env=env, timeout=300, preexec_fn=_limited_as)
    finally:
        for _, path, _ in cases:
            path.unlink(missing_ok=True)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    results = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(results) == len(cases), res.stdout[-2000:]
    for (name, path, error), (code, stderr) in zip(cases, results):
        lines = stderr.splitlines()
        assert code == 2, (name, stderr)
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), (name, stderr)
        assert re.search(error, lines[0]), (name, lines[0])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _target(run: Run, case: make_corpus.Case) -> Path:
    rel = Path(case.file)
    return run.out / rel.with_name(f"{rel.stem}_color{'.mp4' if case.film else '.png'}")


def _lines_about(lines: list[str], path: Path) -> list[str]:
    shown = safe_text(str(path))
    return [line for line in lines if shown + ":" in line]


def _lab(rgb: np.ndarray) -> torch.Tensor:
    return color.rgb_to_lab(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_case(run: Run, name: str) -> None:
    case = run.cases[name]
    if case.skip:
        pytest.skip(case.skip)
    src = run.inp / case.file
    target = _target(run, case)
    about = _lines_about(run.stderr, src)
    failures = [line for line in about if line.startswith("failed: ")]
    if case.error:
        assert len(failures) == 1, f"want one failure line for {src}, got {about}"
        assert re.search(case.error, failures[0]), failures[0]
        others = {_target(run, c) for c in run.cases.values() if not c.error}
        assert target in others or not os.path.lexists(target), "a failed input left an output"
        return
    assert failures == [], failures
    assert safe_text(str(target)) in run.stdout
    if case.film:
        from colorcli.video import film_frames

        frames = list(film_frames(target))
        assert len(frames) == case.film
        assert frames[0].shape[1::-1] == read_photo(src).size
        return
    with Image.open(target) as img:
        img.load()  # a complete, decodable file
        mode, size, info, exif = img.mode, img.size, dict(img.info), img.getexif()
    photo_in = read_photo(src)
    photo_out = read_photo(target)
    assert size == (case.size or photo_in.size)
    assert photo_out.size == photo_in.size  # orientation applied on input, same on output
    # The photo's own L at full resolution: the output keeps it (to rounding; clipped highlights
    # of a bi-level scan move a little more), at 16-bit precision when the input had it.
    tol = case.extra.get("l_tol", 0.03 if case.bit_depth == 16 else 0.5)
    diff = np.abs(rgb_to_l(photo_in.rgb) - rgb_to_l(photo_out.rgb)).mean()
    assert diff < tol, f"L changed by {diff:.3f} on average"
    assert photo_out.bit_depth == case.bit_depth
    assert (mode == "RGBA") == case.alpha, mode
    if case.alpha:
        step = 1 / 65535 if case.bit_depth == 16 else 1 / 255
        assert np.abs(photo_out.alpha - photo_in.alpha).max() <= step
    if case.note:
        notes = [line for line in about if line.startswith("note: ")]
        assert any(re.search(case.note, line) for line in notes), about
    if "exif_make" in case.extra:
        assert exif.get(0x010F) == case.extra["exif_make"]
        assert exif.get(0x0112, 1) == 1  # pixels are turned, so the tag says "as stored"
    if "icc" in case.extra:
        assert info.get("icc_profile") == case.extra["icc"]
    if case.extra.get("colour_input"):
        # Re-colorized from L: the input's own colours are not what comes out.
        ab_in, ab_out = _lab(photo_in.rgb)[1:], _lab(photo_out.rgb)[1:]
        assert (ab_in - ab_out).abs().mean() > 2.0


def test_whole_run(run: Run) -> None:
    """Summary and exit code count every case; no crash, no partial file, stdout only paths."""
    assert run.exception is None or isinstance(run.exception, SystemExit), run.exception
    assert not any("Traceback" in line for line in run.stderr)
    outputs = [c for c in run.cases.values() if not c.error]
    errors = [c for c in run.cases.values() if c.error]
    assert run.exit_code == 1
    assert f"done {len(outputs)}, skipped 0, failed {len(errors)}" in run.stderr
    failed_lines = [line for line in run.stderr if line.startswith("failed: ")]
    assert len(failed_lines) == len(errors)
    # stdout: exactly one path per output, nothing else.
    assert sorted(run.stdout) == sorted(safe_text(str(_target(run, c))) for c in outputs)
    written = []
    for dirpath, _, files in os.walk(run.out):
        for name in files:
            written.append(Path(dirpath) / name)
    assert not [p for p in written if p.name.endswith(".part") or p.name.startswith(".")]
    assert sorted(map(str, written)) == sorted(str(_target(run, c)) for c in outputs)
    partial = 0
    for p in written:
        try:
            if p.suffix == ".mp4":  # a film (an animated GIF's output): every frame decodes
                from colorcli.video import film_frames

                assert sum(1 for _ in film_frames(p)) > 0
                continue
            with Image.open(p) as img:
                img.load()
        except Exception:  # noqa: BLE001 - counting, not judging
            partial += 1
    assert partial == 0
    skipped = [c.name for c in run.cases.values() if c.skip]
    print(f"\ncorpus: {len(run.cases)} inputs tried, {len(outputs)} correct outputs, "
          f"{len(errors)} clear errors, 0 crashes, {partial} partial files"
          + (f"; not checkable here: {', '.join(skipped)}" if skipped else ""))
    assert len(run.cases) >= 30


def test_same_command_again_skips_everything(run: Run, tiny_weights) -> None:
    stamps = {p: p.stat().st_mtime_ns for p in run.out.rglob("*") if p.is_file()}
    res = _invoke(_colorize_args(run.inp, run.out, tiny_weights, "--recursive"))
    outputs = sum(1 for c in run.cases.values() if not c.error)
    errors = sum(1 for c in run.cases.values() if c.error)
    assert f"done 0, skipped {outputs}, failed {errors} (skipped: output exists; --overwrite replaces it)" in res.stderr
    assert res.stdout == ""
    assert {p: p.stat().st_mtime_ns for p in run.out.rglob("*") if p.is_file()} == stamps


def test_sixteen_bit_tiff_output_round_trips(run: Run, tiny_weights, tmp_path) -> None:
    """--format same keeps a 16-bit TIFF a 16-bit TIFF, readable by tifffile."""
    import tifffile

    src = run.inp / run.cases["gray16_tiff"].file
    res = _invoke(_colorize_args(src, tmp_path, tiny_weights, "--format", "same"))
    assert res.exit_code == 0, res.stderr
    out = tmp_path / f"{src.stem}_color.tif"
    data = tifffile.imread(out)
    assert data.dtype == np.uint16 and data.shape == (40, 52, 3)
    photo = read_photo(out)
    assert photo.bit_depth == 16
    assert np.array_equal(np.round(photo.rgb * 65535).astype(np.uint16), data)
    L_in, L_out = rgb_to_l(read_photo(src).rgb), rgb_to_l(photo.rgb)
    assert np.abs(L_in - L_out).mean() < 0.03


def test_toned_scans_are_colorized_from_their_L(run: Run, tiny_weights) -> None:
    """A sepia scan and the same scan toned blue give the same output: the tint is ignored."""
    import tifffile

    sepia = tifffile.imread(run.inp / run.cases["rgb16_tiff_sepia"].file)
    L = rgb_to_l(sepia.astype(np.float32) / 65535)
    colorizer = Colorizer.from_name("test_mcl", weights=tiny_weights, settings=InferenceSettings(device="cpu"))
    toned = []
    # Tints inside the sRGB gamut for every L here, so both scans carry the very same L.
    for ab in ((6.0, 14.0), (-5.0, -10.0)):
        lab = torch.stack([torch.from_numpy(L), torch.full_like(torch.from_numpy(L), ab[0]),
                           torch.full_like(torch.from_numpy(L), ab[1])])
        rgb = color.lab_to_rgb(lab).permute(1, 2, 0).numpy()
        toned.append(colorizer.colorize_rgb(np.round(rgb * 65535) / 65535))
    assert np.abs(toned[0] - toned[1]).max() < 0.02
    assert np.abs(toned[0] - toned[1]).mean() < 0.001


def test_ctrl_c_leaves_no_partial_file_and_rerun_finishes(tiny_weights, tmp_path, monkeypatch) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for i in range(6):
        Image.fromarray(make_corpus.gray(24, 32, i)).save(inp / f"p{i}.png")
    real = Colorizer.colorize_rgb
    calls = {"n": 0}

    def interrupted_on_fourth(self, rgb):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, rgb)

    monkeypatch.setattr(Colorizer, "colorize_rgb", interrupted_on_fourth)
    res = _invoke(_colorize_args(inp, out, tiny_weights))
    assert res.exit_code == 130
    assert "interrupted: done 3, skipped 0, failed 0, not started 3" in res.stderr
    assert "run the same command again" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"p{i}_color.png" for i in range(3)]
    assert len(res.stdout.splitlines()) == 3
    monkeypatch.setattr(Colorizer, "colorize_rgb", real)
    res = _invoke(_colorize_args(inp, out, tiny_weights))
    assert res.exit_code == 0, res.stderr
    assert "done 3, skipped 3, failed 0" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"p{i}_color.png" for i in range(6)]


def test_real_sigint_then_same_command_finishes(tiny_weights, tmp_path) -> None:
    """A real Ctrl-C (SIGINT) to a running ``colorcli``: reader/writer threads and all."""
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    n = 80  # enough work that the Ctrl-C lands mid-batch on a fast machine
    for i in range(n):
        Image.fromarray(make_corpus.gray(192, 256, i)).save(inp / f"p{i:02d}.png")
    cmd = [sys.executable, "-m", "colorcli", *_colorize_args(inp, out, tiny_weights, "--size", "128")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(p.suffix == ".png" for p in out.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "no output appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    written = sorted(p.name for p in out.iterdir())
    assert written and all(not n.startswith(".") for n in written)  # no temp file left
    for name in written:
        with Image.open(out / name) as img:
            img.load()
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: done {len(written)}, skipped 0, failed 0, not started {n - len(written)};")
    assert len(stdout.splitlines()) == len(written)
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"done {n - len(written)}, skipped {len(written)}, failed 0" in again.stderr
    assert len(list(out.iterdir())) == n


def test_interrupt_during_write_leaves_no_temp_file(tiny_weights, tmp_path, monkeypatch) -> None:
    """Ctrl-C in the middle of writing bytes: the temp file goes, the target never appears."""
    import colorcli.imageio as imageio

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    Image.fromarray(make_corpus.gray(24, 32)).save(inp / "p.png")

    def cut_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(imageio.os, "fsync", cut_fsync)
    res = _invoke(_colorize_args(inp, out, tiny_weights, "--workers", "0"))
    assert res.exit_code != 0
    assert list(out.iterdir()) == []


def test_unwritable_output_folder(run: Run, tiny_weights, tmp_path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        try:  # root (with its usual capabilities) writes anyway: then there is nothing to test
            (out / "probe").touch()
            (out / "probe").unlink()
            pytest.skip(ROOT_SKIP)
        except PermissionError:
            pass
        res = _invoke(_colorize_args(run.inp / "plain.jpg", out, tiny_weights))
    finally:
        out.chmod(0o755)
    assert res.exit_code == 2
    assert f"error: output folder {out}: not writable" in res.stderr
    assert list(out.iterdir()) == []


def test_output_folder_that_cannot_exist(run: Run, tiny_weights, tmp_path) -> None:
    """-o below a regular file fails once, clearly, for root too."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    res = _invoke(_colorize_args(run.inp / "plain.jpg", blocker / "out", tiny_weights))
    assert res.exit_code == 2
    assert res.stderr.startswith(f"error: output folder {blocker / 'out'}: cannot create")
    assert len(res.stderr.splitlines()) == 1 and "Traceback" not in res.stderr


def test_output_never_replaces_an_input(run: Run, tiny_weights, tmp_path) -> None:
    src = tmp_path / "scan.png"
    shutil.copy(run.inp / "sepia.png", src)
    before = src.read_bytes()
    res = _invoke(["colorize", str(src), "--suffix", "", "--overwrite", "--model", "test_mcl",
                   "--weights", str(tiny_weights)])
    assert res.exit_code == 1
    assert f"failed: {src}: output {src} would replace an input" in res.stderr
    assert src.read_bytes() == before


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_model", "not_colorcli"])
def test_bad_weights_file_is_one_clear_line(run: Run, tiny_weights, tmp_path, damage) -> None:
    from safetensors.torch import save_file

    from colorcli.models import create_model
    from colorcli.weights import save_weights

    bad = tmp_path / "bad.safetensors"
    if damage == "garbage":
        bad.write_bytes(os.urandom(300))
    elif damage == "truncated":
        data = tiny_weights.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "other_model":
        save_weights(create_model("test_l2"), bad)
    else:
        save_file({"w": torch.zeros(2)}, str(bad), metadata={"format": "something-else"})
    res = _invoke(_colorize_args(run.inp / "plain.jpg", tmp_path / "out", bad))
    assert res.exit_code == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: "), res.stderr
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
