"""Every metric against its closed-form value on hand-made images, and against scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2hsv
from skimage.metrics import structural_similarity

from colorcli import color, metrics

H, W = 24, 32
N = H * W
AUC_COUNT = len(metrics.AUC_THRESHOLDS)  # 151 thresholds, 0..150


def _lab_image(L: float, a: float, b: float, h: int = H, w: int = W) -> np.ndarray:
    """A constant sRGB ``(h, w, 3)`` float64 image of the given Lab colour."""
    lab = torch.tensor([L, a, b], dtype=torch.float64).view(3, 1, 1).expand(3, h, w)
    return color.lab_to_rgb(lab).permute(1, 2, 0).numpy()


def _const(rgb: tuple[float, float, float], h: int = H, w: int = W) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.float64), (h, w, 3)).copy()


def test_ab_scores_closed_form():
    """ab offset (3, 4) everywhere: L2 5, total 5·N, accuracy 1 at 10 and 0 at 4, AuC 146/151."""
    gt = np.zeros((H, W, 2))
    pred = np.broadcast_to(np.array([3.0, 4.0]), (H, W, 2))
    m, curve = metrics.ab_scores(pred, gt, threshold=10)
    assert m["ab_l2"] == 5.0
    assert m["ab_l2_total"] == 5.0 * N
    assert m["pixel_acc"] == 1.0
    assert metrics.ab_scores(pred, gt, threshold=4)[0]["pixel_acc"] == 0.0
    # accuracy(t) = [5 <= t]: 0 for t = 0..4, 1 for t = 5..150, i.e. 146 of 151 thresholds.
    assert m["auc"] == pytest.approx(146 / 151, abs=1e-12)
    np.testing.assert_array_equal(curve, (metrics.AUC_THRESHOLDS >= 5).astype(float))


def test_ab_scores_two_halves():
    """Half the pixels exact, half 20 off: L2 10, accuracy at 10 is 1/2, AuC (151 + 131)/2/151."""
    gt = np.zeros((H, W, 2))
    pred = np.zeros((H, W, 2))
    pred[:, W // 2 :, 0] = 20.0
    m, _ = metrics.ab_scores(pred, gt, threshold=10)
    assert m["ab_l2"] == pytest.approx(10.0)
    assert m["pixel_acc"] == pytest.approx(0.5)
    assert m["auc"] == pytest.approx((151 + 131) / 2 / 151)


def test_ab_metrics_through_rgb():
    """The same offsets on real sRGB images through image_metrics (float colour round trips)."""
    gt = _const((0.5, 0.5, 0.5))
    L, a0, b0 = metrics._lab(gt)[0, 0]
    pred = _lab_image(L, a0 + 3, b0 + 4)
    m = metrics.image_metrics(pred, gt, threshold=10)
    assert m["ab_l2"] == pytest.approx(5.0, abs=2e-3)
    assert m["ab_l2_total"] == pytest.approx(5.0 * N, rel=1e-3)
    assert m["pixel_acc"] == 1.0
    assert metrics.image_metrics(pred, gt, threshold=4)["pixel_acc"] == 0.0
    # |(6, 8.5)| = 10.404...: accuracy 0 for t = 0..10, 1 for t = 11..150 (no threshold near it).
    far = _lab_image(L, a0 + 6, b0 + 8.5)
    m = metrics.image_metrics(far, gt)
    assert m["ab_l2"] == pytest.approx(math.hypot(6, 8.5), abs=2e-3)
    assert m["pixel_acc"] == 0.0
    assert m["auc"] == pytest.approx(140 / 151, abs=1e-12)


def test_identical_images_are_perfect():
    rng = np.random.default_rng(0)
    img = rng.random((H, W, 3))
    m = metrics.image_metrics(img, img)
    assert m["ab_l2"] == 0 and m["pixel_acc"] == 1 and m["auc"] == 1
    assert m["psnr"] == math.inf and m["ssim"] == pytest.approx(1.0)
    assert m["delta_cf"] == 0 and m["sat_diff"] == 0
    assert m["bin_acc_u"] == 1 and m["bin_acc_v"] == 1


def test_colourfulness_constant_image():
    """σ = 0, so CF = 0.3·sqrt(μ_rg² + μ_yb²) with rg = R − G, yb = (R + G)/2 − B."""
    img = _const((200 / 255, 100 / 255, 50 / 255))
    rg, yb = 200 - 100, 150 - 50
    assert metrics.colourfulness(img) == pytest.approx(0.3 * math.hypot(rg, yb))
    assert metrics.colourfulness(_const((0.4, 0.4, 0.4))) == pytest.approx(0.0, abs=1e-9)


def test_colourfulness_two_halves():
    """Half pure red, half black: σ and μ of each opponent channel are both half the red value."""
    img = np.zeros((H, W, 3))
    img[:, : W // 2, 0] = 1.0
    rg, yb = 255 / 2, 127.5 / 2
    assert metrics.colourfulness(img) == pytest.approx(1.3 * math.hypot(rg, yb))


def test_colourfulness_takes_absolute_opponents_like_ddcolor():
    """Half red, half green: R − G is +255 and −255, so the signed form has mean 0 and σ 255,
    the absolute form (DDColor's calculate_cf) mean 255 and σ 0: the two differ."""
    img = np.zeros((H, W, 3))
    img[:, : W // 2, 0] = 1.0
    img[:, W // 2 :, 1] = 1.0
    rg_abs, yb_abs = 255.0, 127.5  # |R − G| everywhere 255; |(R + G)/2 − B| everywhere 127.5
    assert metrics.colourfulness(img) == pytest.approx(0.3 * math.hypot(rg_abs, yb_abs))


def test_neutral_scores_on_hand_made_ab_planes():
    gt = np.zeros((10, 10, 2), np.float32)
    gt[:5] = (30.0, 40.0)  # chroma 50: not neutral; the lower half (chroma 0) is neutral
    pred = np.zeros_like(gt)
    pred[5:, :4] = (0.0, 25.0)  # 20 of the 50 neutral pixels get chroma 25 (> 20)
    pred[5:, 4:] = (3.0, 4.0)  # the other 30 get chroma 5
    m = metrics.neutral_scores(pred, gt)
    assert m["neutral_chroma"] == pytest.approx((20 * 25 + 30 * 5) / 50)
    assert m["neutral_over20"] == pytest.approx(20 / 50)
    gt[:] = (30.0, 40.0)
    gt[0, 0] = 0.0  # 1 % neutral: under 2 %, no figure
    assert all(math.isnan(v) for v in metrics.neutral_scores(pred, gt).values())


def test_neutral_chroma_through_rgb():
    """A gray truth and a gray-with-a-cast prediction: the figure is the cast's Lab chroma."""
    gt = _const((0.5, 0.5, 0.5))
    pred = _const((0.6, 0.5, 0.4))
    m = metrics.image_metrics(pred, gt)
    lab = color.rgb_to_lab(torch.from_numpy(pred[:1, :1]).permute(2, 0, 1)[None].float())[0, 1:, 0, 0]
    assert m["neutral_chroma"] == pytest.approx(float(torch.hypot(lab[0], lab[1])), rel=1e-3)
    assert m["neutral_over20"] == 0.0


def test_delta_cf_closed_form():
    gt = _const((200 / 255, 100 / 255, 50 / 255))
    pred = _const((0.5, 0.5, 0.5))
    m = metrics.image_metrics(pred, gt)
    assert m["cf_gt"] == pytest.approx(0.3 * math.hypot(100, 100))
    assert m["cf_pred"] == pytest.approx(0.0, abs=1e-9)
    assert m["delta_cf"] == pytest.approx(m["cf_gt"])


def test_saturation_difference_closed_form():
    """S = (max − min)/max: 0.5 for (0.5, .25, .25), 0.25 for (0.5, .375, .375), 0 for gray."""
    gt = _const((0.5, 0.25, 0.25))
    assert metrics.saturation_difference(_const((0.5, 0.375, 0.375)), gt) == pytest.approx(0.5)
    assert metrics.saturation_difference(_const((0.4, 0.4, 0.4)), gt) == pytest.approx(1.0)
    assert metrics.saturation_difference(_const((1.0, 0.0, 0.0)), gt) == pytest.approx(1.0)  # S=1 vs .5
    assert math.isnan(metrics.saturation_difference(gt, _const((0.3, 0.3, 0.3))))  # gray truth


def test_hsv_saturation_matches_skimage():
    rng = np.random.default_rng(1)
    img = rng.random((H, W, 3))
    img[0, 0] = 0  # black: saturation 0, not a division by zero
    ours = color.hsv_saturation(torch.from_numpy(img).permute(2, 0, 1))[0].numpy()
    np.testing.assert_allclose(ours, rgb2hsv(img)[..., 1], atol=1e-12)
    assert metrics.saturation_difference(img[::-1], img) == pytest.approx(0.0, abs=1e-12)


def test_uv_bin_accuracy_closed_form():
    """U/V bins are 4 units wide ([0, 4) is bin 25): left half U same bin, V one bin off."""
    luv = torch.zeros(3, H, W, dtype=torch.float64)
    luv[0] = 50.0
    luv[1:] = 2.0  # the middle of bin 25, far from any edge
    gt = color.luv_to_rgb(luv).permute(1, 2, 0).numpy()
    luv_p = luv.clone()
    luv_p[1, :, : W // 2] = 3.0  # same U bin
    luv_p[2, :, : W // 2] = -2.0  # V in bin 24
    pred = color.luv_to_rgb(luv_p).permute(1, 2, 0).numpy()
    u, v = metrics.uv_bin_accuracy(pred, gt)
    assert u == 1.0
    assert v == 0.5
    m = metrics.image_metrics(pred, gt)
    assert (m["bin_acc_u"], m["bin_acc_v"]) == (1.0, 0.5)


def test_psnr_closed_form():
    """One channel 10 steps off everywhere: MSE = 100/3, PSNR = 10·log10(255² · 3 / 100)."""
    gt = _const((100 / 255, 100 / 255, 100 / 255))
    pred = _const((110 / 255, 100 / 255, 100 / 255))
    assert metrics.psnr(pred, gt) == pytest.approx(10 * math.log10(255**2 * 3 / 100))
    assert metrics.psnr(gt, gt) == math.inf


def test_ssim_closed_form_and_reference():
    """Constant images: variances vanish, SSIM = (2μxμy + C1) / (μx² + μy² + C1)."""
    c1 = (0.01 * 255) ** 2
    gt = _const((100 / 255,) * 3)
    pred = _const((110 / 255,) * 3)
    assert metrics.ssim(pred, gt) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1))
    rng = np.random.default_rng(2)
    for h, w in ((H, W), (5, 9), (160, 120)):
        a = rng.random((h, w, 3))
        b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
        a8, b8 = metrics.to_uint8(a), metrics.to_uint8(b)
        ref = structural_similarity(b8, a8, channel_axis=2, data_range=255, win_size=min(7, 5 if h == 5 else 7))
        assert metrics.ssim(b, a) == pytest.approx(ref, abs=1e-10)
    assert math.isnan(metrics.ssim(_const((0.5,) * 3, 2, 8), _const((0.5,) * 3, 2, 8)))


def test_image_metrics_keys_and_prepared_path_agree():
    """Training reads these keys; compare(prepare(...)) is the same computation eval uses."""
    rng = np.random.default_rng(3)
    gt = rng.random((H, W, 3)).astype(np.float32)
    pred = np.clip(gt[..., ::-1] + 0.05, 0, 1)
    m = metrics.image_metrics(pred, gt, threshold=7)
    assert set(m) == set(metrics.METRIC_LABELS) == {
        "ab_l2", "ab_l2_total", "pixel_acc", "auc", "psnr", "ssim", "cf_pred", "cf_gt",
        "delta_cf", "sat_diff", "bin_acc_u", "bin_acc_v", "neutral_chroma", "neutral_over20",
    }
    m2, curve = metrics.compare(metrics.prepare(pred), metrics.prepare(gt), threshold=7)
    assert m2 == pytest.approx(m, rel=0, abs=0, nan_ok=True)  # random planes: no neutral pixels, NaN
    assert m["auc"] == pytest.approx(curve.mean())
    assert np.all(np.diff(curve) >= 0) and curve[-1] <= 1
    assert m["ab_l2"] == pytest.approx(metrics.ab_error(pred, gt).mean())
    assert m["ssim"] == pytest.approx(metrics.ssim(pred, gt))
    assert m["delta_cf"] == pytest.approx(abs(metrics.colourfulness(pred) - metrics.colourfulness(gt)))
    with pytest.raises(ValueError, match="differ in size"):
        metrics.image_metrics(pred[:-1], gt)


def test_summarise_ignores_nan_and_inf():
    rows = [{"psnr": math.inf, "sat_diff": 0.5}, {"psnr": 30.0, "sat_diff": math.nan}, {"psnr": 20.0, "sat_diff": 1.5}]
    s = metrics.summarise(rows)
    assert s == {"psnr": 25.0, "sat_diff": 1.0}
    assert metrics.summarise([]) == {}


# ---------------------------------------------------------------------------------------------
# flicker, with and without the camera's motion


def _pan(rgb: np.ndarray, step: int, n: int, w: int) -> list[np.ndarray]:
    return [rgb[:, i * step : i * step + w] for i in range(n)]


def test_flicker_leaves_the_camera_motion_out():
    # A colourful, detailed photo panned 2 px a frame with colours that never change: no
    # flicker, although every pixel changes. Counting the camera's motion calls it flicker.
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(4)
    rgb = np.clip(gaussian_filter(rng.random((96, 200, 3)), (2, 2, 0)) * 3 - 1, 0, 1).astype(np.float32)
    frames = _pan(rgb, 2, 8, 128)
    steady = metrics.flicker(frames)
    counted = metrics.flicker(frames, follow_camera=False)
    assert counted > 3
    assert steady < 0.1 * counted
    # Real flicker is still seen: the same pan with the colour of every other frame shifted.
    tinted = [f if i % 2 else np.clip(f + np.float32([0.06, 0.0, -0.06]), 0, 1) for i, f in enumerate(frames)]
    assert metrics.flicker(tinted) > 5 * steady + 2
    # A still shot: both forms agree.
    still = [frames[0]] * 3 + [tinted[0]]
    assert metrics.flicker(still) == pytest.approx(metrics.flicker(still, follow_camera=False))
