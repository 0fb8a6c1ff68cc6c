"""``colorcli compare``: the before/after sheet on real files, a bad file in the batch, no clobbering."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from colorcli.cli import app
from colorcli.inference.render import rgb_to_l

CELL = 96


def _run(*args):
    return CliRunner().invoke(app, ["compare", *map(str, args)])


def test_sheet_with_a_bad_file(photo_dir, tiny_weights, tmp_path):
    (photo_dir / "text.jpg").write_text("not a photo\n")
    sheet = tmp_path / "sheet.png"
    res = _run(photo_dir, "-o", sheet, "--weights", f"test_mcl={tiny_weights}", "--cell", CELL)
    # The readable photos are on the sheet; the bad one is named on one line; exit 1.
    assert res.exit_code == 1, res.output
    assert res.stdout.strip() == str(sheet)
    assert [line for line in res.stderr.splitlines() if "text.jpg" in line] == [
        line for line in res.stderr.splitlines() if line.startswith("failed:")
    ]
    assert len([line for line in res.stderr.splitlines() if line.startswith("failed:")]) == 1
    img = np.asarray(Image.open(sheet).convert("RGB"))
    pad = 8
    assert img.shape[1] == pad + 2 * (CELL + pad)  # input + one model
    assert not list(tmp_path.glob(".*.part"))

    # Cell of c.png (64x40, last row): the colorized picture keeps the input's lightness.
    cell_h, cell_w = CELL, round(40 * CELL / 64)
    top = img.shape[0] - pad - cell_h
    left_in = pad + (CELL - cell_w) // 2
    left_out = left_in + CELL + pad
    inp = img[top : top + cell_h, left_in : left_in + cell_w].astype(np.float32) / 255
    col = img[top : top + cell_h, left_out : left_out + cell_w].astype(np.float32) / 255
    assert np.abs(rgb_to_l(inp) - rgb_to_l(col)).mean() < 1.5


def test_existing_sheet_is_kept_unless_overwrite(photo_dir, tiny_weights, tmp_path):
    sheet = tmp_path / "sheet.jpg"
    sheet.write_bytes(b"precious")
    args = [photo_dir, "-o", sheet, "--weights", f"test_mcl={tiny_weights}", "--cell", 48]
    res = _run(*args)
    assert res.exit_code == 2 and f"{sheet}: exists" in res.stderr
    assert sheet.read_bytes() == b"precious"
    res = _run(*args, "--overwrite")
    assert res.exit_code == 0, res.output
    assert Image.open(sheet).format == "JPEG"


def test_unknown_model_and_bad_suffix(photo_dir, tmp_path):
    res = _run(photo_dir, "-o", tmp_path / "s.png", "-m", "nope")
    assert res.exit_code == 2 and "nope" in res.stderr and "mcl" in res.stderr
    res = _run(photo_dir, "-o", tmp_path / "s.gif")
    assert res.exit_code == 2 and "must be a .png or .jpg" in res.stderr
