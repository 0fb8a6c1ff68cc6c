"""``colorcli eval`` and its library: systems, baselines, other tools' outputs, report files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from colorcli import metrics, report
from colorcli.cli import app
from colorcli.errors import ColorcliError
from colorcli.evaluate import (
    EvalResult,
    evaluate,
    gray_colorizer,
    imagenet_label,
    torch_threads,
)
from colorcli.imageio import read_photo
from colorcli.cli.common import parse_named
from colorcli.inference import Colorizer, InferenceSettings
from colorcli.report import FILES, accuracy_plot, contact_sheet, markdown, table, write_report

TENCH = "imagenette-n01440764-ILSVRC2012_val_00009111.jpg"
CHURCH = "imagenette-n03028079-ILSVRC2012_val_00001234.png"


@pytest.fixture()
def photos(tmp_path, make_photo) -> Path:
    """Four small colour photos, two named like Imagenette files (known ImageNet class)."""
    d = tmp_path / "val"
    d.mkdir()
    Image.fromarray(make_photo(40, 48, 1)).save(d / TENCH, quality=95)
    Image.fromarray(make_photo(36, 44, 2)).save(d / CHURCH)
    Image.fromarray(make_photo(48, 40, 3)).save(d / "coco-image0001.png")
    Image.fromarray(make_photo(32, 32, 4)).save(d / "coco-image0002.png")
    return d


def _gt(folder: Path, name: str) -> np.ndarray:
    return np.ascontiguousarray(read_photo(folder / name).rgb, dtype=np.float32)


def test_imagenet_label_and_parse_named(tmp_path):
    assert imagenet_label(TENCH) == 0
    assert imagenet_label("imagenette-n03888257-foo.jpg") == 701
    assert imagenet_label("coco-image0033.jpg") is None
    assert imagenet_label("n99999999.jpg") is None
    assert parse_named(["a=x.safetensors", "b = dir/y"], "--weights") == {"a": Path("x.safetensors"), "b": Path(" dir/y")}
    for bad in (["a"], ["=x"], ["a="], ["a=x", "a=y"]):
        with pytest.raises(ColorcliError, match="--weights"):
            parse_named(bad, "--weights")


def test_gray_baseline_closed_form(photos):
    """The neutral image: CF 0, so ΔCF = CF gap = mean CF(gt); saturation difference 1."""
    res = evaluate(photos, baseline="gray")
    s = res.summary()["gray"]
    assert s["images"] == 4
    assert s["cf_pred"] == pytest.approx(0.0, abs=0.05)
    assert s["delta_cf"] == pytest.approx(s["cf_gt"], abs=0.05)
    assert s["cf_gap"] == pytest.approx(s["cf_gt"], abs=0.05)
    assert s["sat_diff"] == pytest.approx(1.0, abs=1e-2)
    # Each photo's ab error is exactly its own chroma: the baseline's ab is 0.
    gt = _gt(photos, TENCH)
    chroma = np.hypot(*np.moveaxis(metrics._lab(gt)[..., 1:], -1, 0))
    assert res.systems[0].rows[TENCH]["ab_l2"] == pytest.approx(chroma.mean(), abs=1e-2)


def test_model_scored_through_the_one_pipeline(photos, tiny_weights):
    """A row equals image_metrics of Colorizer.colorize_rgb's output for that photo."""
    calls = []
    res = evaluate(photos, weights={"test_mcl": tiny_weights}, threshold=12,
                   on_progress=lambda done, total: calls.append((done, total)))
    assert [s.name for s in res.systems] == ["test_mcl"]
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    col = Colorizer.from_name("test_mcl", weights=tiny_weights, settings=InferenceSettings(device="cpu"))
    for name in (TENCH, "coco-image0002.png"):
        gt = _gt(photos, name)
        expect = metrics.image_metrics(col.colorize_rgb(gt), gt, threshold=12)
        got = res.systems[0].rows[name]
        assert got.keys() == expect.keys()
        for k in expect:
            assert got[k] == pytest.approx(expect[k], rel=1e-5, abs=1e-6, nan_ok=True), k
    s = res.summary()["test_mcl"]
    rows = list(res.systems[0].rows.values())
    assert s["delta_cf"] == pytest.approx(np.mean([r["delta_cf"] for r in rows]))
    assert s["cf_gap"] == pytest.approx(abs(np.mean([r["cf_pred"] for r in rows]) - np.mean([r["cf_gt"] for r in rows])))
    np.testing.assert_allclose(res.systems[0].curve.mean(), s["auc"])
    assert s["settings"] == "size=64 temperature=0.38 tta=on refine=on"


def test_eval_switches_reach_the_pipeline(photos, tiny_weights):
    """--no-tta --no-refine scores exactly what the plain pipeline makes."""
    res = evaluate(photos, weights={"test_mcl": tiny_weights}, limit=1, tta=False, refine=False,
                   size=96, temperature=0.5)
    col = Colorizer.from_name("test_mcl", weights=tiny_weights, settings=InferenceSettings(
        device="cpu", tta=False, refine=False, size=96, temperature=0.5))
    name, got = next(iter(res.systems[0].rows.items()))
    gt = _gt(photos, name)
    assert got["psnr"] == pytest.approx(metrics.psnr(col.colorize_rgb(gt), gt), rel=1e-6)
    assert res.summary()["test_mcl"]["settings"] == "size=96 temperature=0.5 tta=off refine=off"


def test_eval_settings_name_no_temperature_for_regression(photos, tmp_path):
    from colorcli.models import create_model
    from colorcli.weights import save_weights

    path = save_weights(create_model("test_l2"), tmp_path / "l2.safetensors")
    res = evaluate(photos, weights={"test_l2": path}, limit=1, temperature=0.5)
    assert res.summary()["test_l2"]["settings"] == "size=64 tta=on refine=on"


def test_pred_dir_matching_resize_and_missing(photos, tmp_path):
    """Ground-truth copies score perfectly; wrong size is resized (noted); absent is counted."""
    preds = tmp_path / "other_tool"
    preds.mkdir()
    Image.open(photos / "coco-image0001.png").save(preds / "coco-image0001.png")
    Image.open(photos / CHURCH).save(preds / (Path(CHURCH).stem + "_color.png"))  # colorize's naming
    Image.open(photos / "coco-image0002.png").resize((64, 64)).save(preds / "coco-image0002.jpg", quality=95)
    res = evaluate(photos, pred_dirs={"other": preds}, baseline="gray")
    other = res.systems[1]
    assert other.missing == [TENCH]
    assert len(other.resized) == 1 and "64x64 -> 32x32" in other.resized[0]
    for name in ("coco-image0001.png", CHURCH):
        r = other.rows[name]
        assert r["ab_l2"] == 0 and r["auc"] == 1 and r["psnr"] == math.inf and r["delta_cf"] == 0
    assert other.rows["coco-image0002.png"]["ab_l2"] > 0
    s = res.summary()["other"]
    assert (s["images"], s["missing"], s["resized"]) == (3, 1, 1)
    notes = "\n".join(res.notes())
    assert "1 prediction(s) missing" in notes and "resized" in notes
    assert res.summary()["gray"]["images"] == 4


def test_unreadable_photo_is_reported_and_rest_scored(photos):
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    res = evaluate(photos, baseline="gray", limit=3)
    assert [p.name for p, _ in res.failed] == ["broken.jpg"]
    assert len(res.images) == 2  # the first 3 sorted files, one of them broken


def test_usage_errors(photos, tmp_path, tiny_weights):
    with pytest.raises(ColorcliError, match="no such folder"):
        evaluate(tmp_path / "nope", baseline="gray")
    with pytest.raises(ColorcliError, match="nothing to evaluate"):
        evaluate(photos)
    with pytest.raises(ColorcliError, match="no image files"):
        (tmp_path / "empty").mkdir()
        evaluate(tmp_path / "empty", baseline="gray")
    with pytest.raises(ColorcliError, match="already used"):
        evaluate(photos, baseline="gray", pred_dirs={"gray": photos})
    with pytest.raises(ColorcliError, match="--pred-dir .*no such folder"):
        evaluate(photos, pred_dirs={"x": tmp_path / "missing"})
    with pytest.raises(ColorcliError, match="unknown model"):
        evaluate(photos, models=["no_such_model"])
    with pytest.raises(ColorcliError, match="--size"):
        evaluate(photos, baseline="gray", size=50)
    with pytest.raises(ColorcliError, match="--against 'mcl' is not a system of this run .gray, x."):
        evaluate(photos, baseline="gray", pred_dirs={"x": photos}, against="mcl")


def test_weights_label_brings_its_own_model_and_pairs(photos, tiny_weights, monkeypatch):
    """--weights LABEL=FILE with a name no model has: the file's own model, under that label;
    the same file twice is a paired tie at exactly 0."""
    res = evaluate(photos, weights={"old": tiny_weights, "test_mcl": tiny_weights}, against="old", limit=3)
    assert [s.name for s in res.systems] == ["old", "test_mcl"] and res.against == "old"
    assert res.systems[0].source == str(tiny_weights)
    assert {n: r["psnr"] for n, r in res.systems[0].rows.items()} == {n: r["psnr"] for n, r in res.systems[1].rows.items()}
    psnr = res.paired["test_mcl"]["psnr"]
    assert (psnr["diff"], psnr["low"], psnr["high"], psnr["photos"]) == (0, 0, 0, 3)
    # So few photos: the note says the interval is rough; with enough photos it does not.
    assert "Only 3 photos are paired" in report.paired_note(res)
    monkeypatch.setattr(report, "PAIRED_FEW_PHOTOS", 3)
    assert "Only" not in report.paired_note(res) and "tie at this sample size" in report.paired_note(res)


def _rows(**figures) -> dict[str, dict[str, float]]:
    """Per-photo rows from columns: _rows(psnr=[...], cf_pred=[...], ...)."""
    n = len(next(iter(figures.values())))
    return {f"p{i}": {k: float(v[i]) for k, v in figures.items()} for i in range(n)}


def test_paired_differences_on_hand_made_rows():
    """Mean per-photo difference with a paired interval; the CF gap lets errors cancel."""
    rng = np.random.default_rng(1)
    base = rng.uniform(20, 30, 200)
    cf_gt = rng.uniform(10, 40, 200)
    nan_half = np.where(np.arange(200) % 2 == 0, np.nan, 4.0)
    a = _rows(psnr=base, delta_cf=np.full(200, 3.0), cf_pred=cf_gt + np.where(np.arange(200) % 2, 5, -5),
              cf_gt=cf_gt, neutral_chroma=nan_half)
    # b: +0.5 dB on every photo plus noise far larger than the shift between photos, but the
    # same on both sides of a pair; colourfulness always 5 over (gap 5, a's gap is 0).
    b = _rows(psnr=base + 0.5 + rng.normal(0, 0.1, 200), delta_cf=np.full(200, 5.0), cf_pred=cf_gt + 5,
              cf_gt=cf_gt, neutral_chroma=nan_half + 2)
    d = metrics.paired_differences(a, b)
    assert d["psnr"]["diff"] == pytest.approx(0.5, abs=0.03)
    assert 0.45 < d["psnr"]["low"] < 0.5 < d["psnr"]["high"] < 0.55  # paired: photo spread cancels
    assert d["psnr"]["wins"] == 1.0 and d["psnr"]["photos"] == 200
    assert (d["delta_cf"]["diff"], d["delta_cf"]["low"], d["delta_cf"]["high"]) == pytest.approx((2, 2, 2))
    assert d["cf_gap"]["diff"] == pytest.approx(5.0)  # a's +5/-5 errors cancel to a gap of 0
    # Resampled, a's errors no longer cancel exactly, so its gap grows and the difference shrinks.
    assert 3 < d["cf_gap"]["low"] < 5 and d["cf_gap"]["high"] == pytest.approx(5.0)
    assert d["neutral_chroma"]["photos"] == 100 and d["neutral_chroma"]["diff"] == pytest.approx(2.0)
    # Reproducible (seeded), symmetric, and a system against itself is a tie at exactly 0.
    assert metrics.paired_differences(a, b) == d
    assert metrics.paired_differences(b, a)["psnr"]["diff"] == pytest.approx(-d["psnr"]["diff"])
    same = metrics.paired_differences(a, a)["psnr"]
    assert (same["diff"], same["low"], same["high"], same["wins"]) == (0, 0, 0, 0)
    # Only photos both scored count; fewer than two leave the interval open (NaN).
    one = metrics.paired_differences(a, {"p0": b["p0"], "zz": b["p1"]})["psnr"]
    assert one["photos"] == 1 and math.isnan(one["low"]) and one["diff"] == pytest.approx(b["p0"]["psnr"] - base[0])


def test_torch_threads_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_semantic_counts_only_labelled_photos(photos, tiny_weights):
    """Top-1/top-5 over the two Imagenette-named photos; the classifier sees all three versions."""
    res = evaluate(photos, weights={"test_mcl": tiny_weights}, semantic=True)
    assert res.reference["ground truth"].n == 2 and res.reference["gray"].n == 2
    s = res.summary()["test_mcl"]
    assert s["semantic_images"] == 2
    assert 0 <= s["top1"] <= s["top5"] <= 1
    assert set(res.systems[0].rows[TENCH]) >= {"top1", "top5"}
    assert "top1" not in res.systems[0].rows["coco-image0001.png"]
    assert any("2 photo(s) without a known ImageNet class" in n for n in res.notes())
    headers, rows = table(res)
    assert "top-1" in headers and [r[0] for r in rows] == ["test_mcl", "ground truth", "gray (input)"]


def test_contact_sheet_first_and_worst(photos, tmp_path):
    """Columns gray | systems | ground truth; worst rows sorted by ΔCF; missing cells drawn."""
    preds = tmp_path / "p"
    preds.mkdir()
    Image.open(photos / TENCH).save(preds / (Path(TENCH).stem + ".png"))
    res = evaluate(photos, pred_dirs={"copy": preds}, baseline="gray", sheet_count=2)
    assert res.sheet_columns == ["gray", "copy", "ground truth"]
    assert [e.name for e in res.sheet_first] == sorted(p.name for p in photos.iterdir())[:2]
    # Only TENCH has a prediction (a perfect one), so it is the only photo with a finite ΔCF.
    assert [e.name for e in res.sheet_worst] == [TENCH]
    assert res.sheet_worst[0].delta_cf == 0
    assert any(c is None for e in res.sheet_first for c in e.cells)  # missing prediction cell
    img = contact_sheet(res)
    assert img.width > 3 * 128 and img.height > 3 * 128


def _run(*args) -> object:
    return CliRunner().invoke(app, ["eval", *map(str, args)])


def test_cli_report_files(photos, tiny_weights, tmp_path):
    out = tmp_path / "report"
    res = _run(photos, "--weights", f"test_mcl={tiny_weights}", "--baseline", "gray", "--report", out,
               "--sheet", "2", "--threshold", "5", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "test_mcl" in res.stdout and "gray" in res.stdout and "acc@5" in res.stdout
    for name in FILES.values():
        assert (out / name).is_file(), name

    with open(out / FILES["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 * 2
    assert {r["system"] for r in rows} == {"gray", "test_mcl"}
    assert {r["imagenet_class"] for r in rows if r["image"] == TENCH} == {"0"}
    assert all(0 <= float(r["pixel_acc"]) <= 1 for r in rows)

    summary = json.loads((out / FILES["json"]).read_text(), parse_constant=lambda c: pytest.fail(c))
    assert summary["threshold"] == 5 and summary["photos"] == 4
    gray = summary["systems"]["gray"]
    assert gray["delta_cf"] == pytest.approx(gray["cf_gt"], abs=0.05)
    assert "cf_gap" in summary["metric_labels"] and "delta_cf" in summary["metric_labels"]
    assert len(summary["accuracy_curve"]["test_mcl"]) == 151
    assert np.mean(summary["accuracy_curve"]["gray"]) == pytest.approx(gray["auc"])

    md = (out / FILES["markdown"]).read_text()
    assert "| system |" in md and "| gray |" in md and "CF gap" in md
    # The paired comparison: the model minus the gray baseline, photo by photo.
    paired = summary["paired"]
    assert paired["against"] == "gray" and list(paired["systems"]) == ["test_mcl"]
    psnr = paired["systems"]["test_mcl"]["psnr"]
    assert psnr["diff"] == pytest.approx(summary["systems"]["test_mcl"]["psnr"] - gray["psnr"])
    assert psnr["low"] <= psnr["diff"] <= psnr["high"] and psnr["photos"] == 4
    assert "## Paired: each system minus gray" in md and "| test_mcl | 4 |" in md
    assert "Paired: each system minus gray" in res.stdout

    sheet = Image.open(out / FILES["sheet"])
    sheet.load()
    assert sheet.format == "PNG" and sheet.mode == "RGB"
    # 3 columns (gray | test_mcl | ground truth), 2 + 2 rows of 128-px cells.
    assert sheet.width >= 3 * 128 and sheet.height >= 4 * 128
    plot = Image.open(out / FILES["plot"])
    plot.load()
    assert plot.format == "PNG" and plot.size == (820, 520)
    # The curves are drawn: pixels of the first two palette colours are present.
    px = np.asarray(plot.convert("RGB")).reshape(-1, 3)
    for colour in ((0, 114, 178), (213, 94, 0)):
        assert (px == colour).all(axis=1).sum() > 100


def test_cli_errors_exit_codes(photos, tmp_path):
    res = _run(photos, "--model", "no_such_model")
    assert res.exit_code == 2 and "unknown model" in res.output
    res = _run(photos, "--baseline", "gray", "--against", "mcl")
    assert res.exit_code == 2 and "--against 'mcl' is not a system" in res.output
    res = _run(photos, "--weights", "test_mcl")
    assert res.exit_code == 2 and "NAME=PATH" in res.output
    # No --model: the default model mcl is scored (issue 13); tests/test_cli_newcomer.py checks it.
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    res = _run(photos, "--baseline", "gray", "--limit", "2")
    assert res.exit_code == 1 and "broken.png" in res.output


def test_report_without_images(tmp_path, photos):
    """A run where every photo failed still writes a valid report."""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"nope")
    res = evaluate(tmp_path / "bad", baseline="gray", sheet_count=2)
    assert isinstance(res, EvalResult) and res.images == [] and len(res.failed) == 1
    paths = write_report(res, tmp_path / "r")
    assert json.loads(paths["json"].read_text())["systems"]["gray"]["images"] == 0
    assert accuracy_plot(res).size == (820, 520)
    assert "unreadable" in markdown(res)


def test_gray_colorizer_is_neutral(photos):
    gt = _gt(photos, TENCH)
    out = gray_colorizer().colorize_rgb(gt)
    lab = metrics._lab(out)
    assert np.abs(lab[..., 1:]).max() < 0.05
    np.testing.assert_allclose(lab[..., 0], metrics._lab(gt)[..., 0], atol=0.05)
