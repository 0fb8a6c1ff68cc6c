"""``train --calibrate-only`` (:mod:`colorcli.calibrate`): the gain is fitted to what colorize renders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from colorcli import metrics
from colorcli.calibrate import GainRecorder, curve_at, fit_gain, log_gain_grid, measure_photo, rendered_log_gain
from colorcli.inference import Colorizer, InferenceSettings
from colorcli.models import create_model


def test_collected_curve_is_what_colorize_renders_at_each_gain(make_photo):
    """The colourfulness curve recorded with the gain held at 1 gives, read at a gain, the
    colourfulness of the photo colorize renders with that gain (mirror averaging and guided
    filter included); the head's input is recorded."""
    torch.manual_seed(0)
    model = create_model("test_mcl", cf_head=True).eval()
    col = Colorizer.from_model(model, InferenceSettings())
    rgb8 = make_photo(72, 100, seed=3)
    grid = log_gain_grid(model)
    assert float(grid[-1]) == pytest.approx(math.log(3.0), rel=1e-6) and float(grid[0]) == -float(grid[-1])
    recorder = GainRecorder(model.cf_head)
    try:
        features, curve, cf_true = measure_photo(col, recorder, rgb8, grid)
    finally:
        recorder.close()
    assert features.shape == (2, model.cf_head.in_features) and features.abs().sum() > 0  # the view, its mirror
    assert cf_true == pytest.approx(metrics.colourfulness(rgb8.astype(np.float32) / 255))
    assert not model.cf_head._forward_hooks  # the hook is gone: colorize applies the gain again
    for gain in (0.5, 1.0, 1.7):
        with torch.no_grad():
            model.cf_head.bias.fill_(float(math.log(3.0) * math.atanh(math.log(gain) / math.log(3.0))))
        rendered = metrics.colourfulness(col.colorize_rgb(rgb8.astype(np.float32) / 255))
        read = curve_at(torch.tensor([math.log(gain)], dtype=torch.float64), curve[None], grid)
        assert float(read) == pytest.approx(rendered, rel=2e-3)


def test_views_with_their_own_gains_render_what_the_fit_reads(make_photo):
    """With a head that gives the photo and its mirror image different gains (as a trained one
    does), the colourfulness colorize renders is the curve read at :func:`rendered_log_gain`
    of the recorded views (the mean of their gains), not at the gain of their mean input."""
    torch.manual_seed(0)
    model = create_model("test_mcl", cf_head=True).eval()
    col = Colorizer.from_model(model, InferenceSettings())
    rgb8 = make_photo(72, 100, seed=5)
    grid = log_gain_grid(model)
    recorder = GainRecorder(model.cf_head)
    try:
        features, curve, _ = measure_photo(col, recorder, rgb8, grid)
    finally:
        recorder.close()
    with torch.no_grad():  # a head that tells the two views far apart
        diff = features[0] - features[1]
        model.cf_head.weight.copy_(diff / diff.square().sum())
        model.cf_head.bias.fill_(-float(model.cf_head(features).mean()) + 0.2)
        per_view = model.clamp_log_gain(model.cf_head(features))[:, 0]
        assert float(per_view[0] - per_view[1]) > 0.8  # gains about 2.5 times apart
        lg = rendered_log_gain(model, features[None])
        of_mean = model.clamp_log_gain(model.cf_head(features.mean(dim=0)))
    rendered = metrics.colourfulness(col.colorize_rgb(rgb8.astype(np.float32) / 255))
    read = float(curve_at(lg.double(), curve[None], grid))
    assert read == pytest.approx(rendered, rel=0.01)
    wrong = float(curve_at(of_mean.double(), curve[None], grid))
    assert abs(wrong - rendered) > 0.05 * rendered  # the old reading misses by far more


def test_curve_at_is_exact_for_proportional_curves_and_interpolates():
    grid = torch.linspace(-1, 1, 5, dtype=torch.float64)
    curves = torch.stack([3.0 * torch.exp(grid), 10 * torch.tanh(torch.exp(grid))])
    lg = torch.tensor([0.3, -0.7], dtype=torch.float64)
    got = curve_at(lg, curves, grid)
    assert float(got[0]) == pytest.approx(3.0 * math.exp(0.3))
    assert float(got[1]) == pytest.approx(10 * math.tanh(math.exp(-0.7)), rel=0.02)
    # Past the grid, the gain is read at its end.
    assert float(curve_at(torch.tensor([5.0], dtype=torch.float64), curves[:1], grid)) == pytest.approx(3 * math.e)


@pytest.mark.parametrize("hidden", [0, 16])
def test_fit_gives_each_kind_of_photo_its_colourfulness(hidden):
    """Two kinds of photo the head (linear, or with a hidden layer) can tell apart by its
    input, one decoded too dull (needs 1.6x) and one too colourful (needs 0.8x): the fit learns
    both gains, and the held-out photos get their colourfulness on average."""
    torch.manual_seed(0)
    model = create_model("test_mcl", cf_head=True, cf_hidden=hidden)
    c = next(model.cf_head.parameters()).shape[1]
    n = 200
    kind = torch.arange(n) % 2
    features = torch.randn(n, c) * 0.01
    features[:, 0] += kind.float()  # what tells the two kinds apart
    decoded = 10 + 20 * torch.rand(n)
    need = torch.where(kind == 1, torch.tensor(1.6), torch.tensor(0.8))
    grid = log_gain_grid(model)
    curves = decoded[:, None].double() * torch.exp(grid)[None]
    report = fit_gain(model, features[:, None], curves, (decoded * need).double(), grid, groups=kind)
    with torch.no_grad():
        gains = torch.exp(model.clamp_log_gain(model.cf_head(features))[:, 0])
    assert gains[kind == 1].mean() == pytest.approx(1.6, rel=0.03)
    assert gains[kind == 0].mean() == pytest.approx(0.8, rel=0.03)
    assert report["held_out"] == 20 and report["kept_step"] > 0
    held = report["after"]["held_out"]
    assert held["cf_pred"] == pytest.approx(held["cf_true"], rel=0.02)
    for pred, true in held["groups"].values():  # each kind (group) on average too
        assert pred == pytest.approx(true, rel=0.03)
    assert all(p.dtype == torch.float32 for p in model.cf_head.parameters())  # the model's precision again


def test_photo_files_keep_shape_cap_large_scans_and_skip_gray(tmp_path, make_photo):
    """Calibration photos are read at their own size and shape; a large scan's long side is
    reduced to ``max_side`` (aspect kept); a gray photo reads as None unless kept; folders are
    indexed."""
    from PIL import Image

    from colorcli.data import PhotoFiles

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    Image.fromarray(make_photo(60, 90, seed=1)).save(a / "small.png")
    Image.fromarray(make_photo(150, 400, seed=2)).save(a / "wide.png")
    Image.fromarray(np.full((50, 70, 3), 128, np.uint8)).save(b / "gray.png")
    files = PhotoFiles([a, b], max_side=200)
    shapes = {p.name: (None if (r := files.read(i)) is None else r.shape) for i, p in enumerate(files.paths)}
    assert shapes == {"small.png": (60, 90, 3), "wide.png": (75, 200, 3), "gray.png": None}
    assert files.folder_index.tolist() == [0, 0, 1]
    assert files.read(files.paths.index(b / "gray.png"), keep_gray=True).shape == (50, 70, 3)  # asked for
