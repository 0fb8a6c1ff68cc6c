"""Colorization metrics, shared by ``eval`` and training.

All metrics compare a prediction with its ground truth at full resolution, both sRGB float
``(H, W, 3)`` numpy arrays in [0, 1]. Per-image functions return floats; ``image_metrics``
returns the whole set for one pair.

Evaluation scores several predictions against the same ground truth, so the colour planes and
statistics of an image are computed once by :func:`prepare` and reused by :func:`compare`:
one Lab and one LUV conversion per image, SSIM's local means from integral images (the same
numbers as scikit-image's ``structural_similarity``, at a fraction of its cost).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from colorcli import color
from colorcli.imageio import to_uint8

AUC_THRESHOLDS = np.arange(0, 151, dtype=np.float64)  # 0..150 inclusive, step 1
DEFAULT_THRESHOLD = 10.0

# SSIM constants (Wang et al. 2004; scikit-image's defaults for 8-bit data).
_SSIM_WIN = 7
_SSIM_RANGE = 255.0
_SSIM_C1 = (0.01 * _SSIM_RANGE) ** 2
_SSIM_C2 = (0.03 * _SSIM_RANGE) ** 2

# What each key of image_metrics means, for reports.
METRIC_LABELS = {
    "ab_l2": "mean per-pixel Euclidean ab distance (Lab)",
    "ab_l2_total": "per-image total of the per-pixel ab distances",
    "pixel_acc": "fraction of pixels with ab distance <= threshold",
    "auc": "mean pixel accuracy over thresholds 0..150 (AuC)",
    "psnr": "PSNR of the 8-bit sRGB images, dB",
    "ssim": "SSIM of the 8-bit sRGB images (7x7 window, per channel, averaged)",
    "cf_pred": "colourfulness (Hasler-Süsstrunk) of the prediction",
    "cf_gt": "colourfulness (Hasler-Süsstrunk) of the ground truth",
    "delta_cf": "|CF(pred) - CF(gt)| per image",
    "sat_diff": "|sum S_pred - sum S_gt| / sum S_gt, S = HSV saturation",
    "bin_acc_u": "fraction of pixels whose CIELUV U falls in the ground truth's bin (50 bins)",
    "bin_acc_v": "fraction of pixels whose CIELUV V falls in the ground truth's bin (50 bins)",
    "neutral_chroma": "mean predicted chroma sqrt(a^2+b^2) on pixels whose true chroma < 6 "
                      "(photos with < 2% such pixels left out)",
    "neutral_over20": "share of those neutral pixels given chroma > 20",
}

# False colour on neutral things: pixels whose true chroma is below NEUTRAL_CHROMA count as
# neutral; photos with fewer than NEUTRAL_MIN_SHARE of them have no neutral figure (NaN).
NEUTRAL_CHROMA = 6.0
NEUTRAL_MIN_SHARE = 0.02
NEUTRAL_FALSE = 20.0


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` numpy -> ``(1, 3, H, W)`` float32 tensor clipped to [0, 1]."""
    a = np.clip(np.asarray(rgb, dtype=np.float32), 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]


def _lab(rgb: np.ndarray) -> np.ndarray:
    return color.rgb_to_lab(_tensor(rgb))[0].permute(1, 2, 0).numpy()


def _luv(rgb: np.ndarray) -> np.ndarray:
    return color.rgb_to_luv(_tensor(rgb))[0].permute(1, 2, 0).numpy()


# ---------------------------------------------------------------------------------------------
# single metrics (each from plain images; compare() computes the same from prepared planes)


def ab_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-pixel Euclidean ab distance ``(H, W)`` (float64)."""
    return ab_distance(_lab(pred)[..., 1:], _lab(gt)[..., 1:])


def ab_distance(ab_pred: np.ndarray, ab_gt: np.ndarray) -> np.ndarray:
    """Euclidean distance ``(H, W)`` of two ab planes ``(H, W, 2)``, computed in float64."""
    d = ab_pred.astype(np.float64) - ab_gt.astype(np.float64)
    return np.sqrt((d**2).sum(-1))


def flicker(frames: Iterable[np.ndarray], *, follow_camera: bool = True) -> float:
    """Temporal flicker of a film: the mean |Δab| (per-pixel Euclidean ab distance, Lab) between
    consecutive frames, averaged over pixels and frame pairs. Frames are sRGB float ``(H, W, 3)``
    in [0, 1], streamed; 0.0 for fewer than two frames.

    With ``follow_camera`` (the default) the camera's own motion is left out, as the warping
    error of video colorization papers leaves out optical flow: the previous frame's ab is
    first moved by the global translation between the two frames' L
    (:func:`colorcli.motion.global_shift`), and only the pixels both frames show are compared.
    Without it, a pan counts its moving picture as flicker."""
    from colorcli.motion import global_shift, shift_plane

    prev = None
    total, pairs = 0.0, 0
    for rgb in frames:
        lab = _lab(rgb)
        ab = lab[..., 1:]
        if prev is not None:
            prev_L, prev_ab = prev
            dy = dx = 0.0
            if follow_camera:
                k = max(1, min(ab.shape[:2]) // 256)  # estimated on a view of ~256 px, for speed
                dy, dx = (k * d for d in global_shift(_block_mean(prev_L, k), _block_mean(lab[..., 0], k)))
            if dy or dx:
                moved = np.stack([shift_plane(prev_ab[..., c], dy, dx) for c in range(2)], axis=-1)
                my, mx = int(np.ceil(abs(dy))) + 1, int(np.ceil(abs(dx))) + 1  # rows/cols only one frame shows
                d = ab_distance(ab, moved)[my : ab.shape[0] - my, mx : ab.shape[1] - mx]
            else:
                d = ab_distance(ab, prev_ab)
            total += float(d.mean()) if d.size else 0.0
            pairs += 1
        prev = (lab[..., 0], ab)
    return total / pairs if pairs else 0.0


def _block_mean(x: np.ndarray, k: int) -> np.ndarray:
    """``x (h, w)`` averaged over ``k`` x ``k`` blocks (edges that do not fill a block dropped)."""
    if k == 1:
        return np.asarray(x, dtype=np.float32)
    h, w = x.shape[0] // k * k, x.shape[1] // k * k
    return x[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3)).astype(np.float32)


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """PSNR in dB of the 8-bit sRGB images (peak 255); inf for identical images."""
    return _psnr8(to_uint8(pred), to_uint8(gt))


def _psnr8(p: np.ndarray, g: np.ndarray) -> float:
    mse = float(((p.astype(np.float64) - g.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _ssim_window(h: int, w: int) -> int:
    """scikit-image's rule: 7, or the largest odd size that fits a smaller image."""
    m = min(h, w)
    return min(_SSIM_WIN, m if m % 2 else m - 1)


def _box_mean(x: np.ndarray, win: int) -> np.ndarray:
    """Mean over every valid ``win`` x ``win`` window of ``(H, W, C)`` float64 -> ``(H', W', C)``.

    An integral image makes this O(pixels) whatever the window; float64 keeps the sums of
    8-bit squares exact enough (well below 1e-9 relative) for the variances taken from them.
    """
    c = np.zeros((x.shape[0] + 1, x.shape[1] + 1, x.shape[2]), dtype=np.float64)
    np.cumsum(np.cumsum(x, axis=0), axis=1, out=c[1:, 1:])
    s = c[win:, win:] - c[:-win, win:] - c[win:, :-win] + c[:-win, :-win]
    return s / (win * win)


@dataclass(frozen=True)
class _SsimStats:
    """One image's 8-bit planes and windowed moments (float64, ``(H', W', 3)``)."""

    x: np.ndarray  # (H, W, 3) the 8-bit values as float64
    mu: np.ndarray  # local means over the valid windows
    mu2: np.ndarray  # local means of squares
    win: int


def _ssim_stats(rgb8: np.ndarray) -> _SsimStats | None:
    win = _ssim_window(*rgb8.shape[:2])
    if win < 3:
        return None
    x = rgb8.astype(np.float64)
    # Valid windows equal scikit-image's reflect-padded uniform filter followed by its crop of
    # (win - 1) / 2 pixels per side, which is all its mean ever looks at.
    return _SsimStats(x, _box_mean(x, win), _box_mean(x * x, win), win)


def _ssim_from_stats(p: _SsimStats | None, g: _SsimStats | None) -> float:
    if p is None or g is None:
        return float("nan")
    n = p.win**2
    cov_norm = n / (n - 1)  # sample covariance, as scikit-image
    mu_pg = _box_mean(p.x * g.x, p.win)
    vp = cov_norm * (p.mu2 - p.mu**2)
    vg = cov_norm * (g.mu2 - g.mu**2)
    vpg = cov_norm * (mu_pg - p.mu * g.mu)
    s = ((2 * p.mu * g.mu + _SSIM_C1) * (2 * vpg + _SSIM_C2)) / (
        (p.mu**2 + g.mu**2 + _SSIM_C1) * (vp + vg + _SSIM_C2)
    )
    return float(s.mean())


def ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """SSIM of the 8-bit sRGB images (7x7 box window, per channel, averaged); NaN below 3 px.

    Same value as ``skimage.metrics.structural_similarity(p, g, channel_axis=2, data_range=255)``.
    """
    return _ssim_from_stats(_ssim_stats(to_uint8(pred)), _ssim_stats(to_uint8(gt)))


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Süsstrunk (2003) colourfulness of sRGB ``(H, W, 3)`` scaled to 0..255
    (:func:`colorcli.color.colourfulness`, the form of the field's tables).

    On the float values, in float64: rounding to 8 bits would turn the last-digit noise of a
    neutral image's conversion (r, g, b equal to ~2e-5) into whole steps and a colourfulness
    above 0.
    """
    x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float64)).permute(2, 0, 1)[None]
    return float(color.colourfulness(x)[0])


def _saturation_sum(rgb: torch.Tensor) -> float:
    return float(color.hsv_saturation(rgb).double().sum())


def _saturation_diff(sp: float, sg: float) -> float:
    return float("nan") if sg == 0 else abs(sp - sg) / sg


def saturation_difference(pred: np.ndarray, gt: np.ndarray) -> float:
    """``|ΣS_pred − ΣS_gt| / ΣS_gt`` with S the HSV saturation (NaN for a gray ground truth)."""
    return _saturation_diff(_saturation_sum(_tensor(pred)), _saturation_sum(_tensor(gt)))


def _uv_bins(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB ``(1, 3, H, W)`` -> U and V bin indices ``(2, H, W)`` (50 bins each)."""
    luv = color.rgb_to_luv(rgb)[0]
    return color.uv_to_bin_index(luv[1:]).to(torch.int16)


def _bin_accuracy(bp: torch.Tensor, bg: torch.Tensor) -> tuple[float, float]:
    same = (bp == bg).flatten(1).double().mean(dim=1)
    return float(same[0]), float(same[1])


def uv_bin_accuracy(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Fraction of pixels whose U (and V) falls in the same of 50 CIELUV bins as the truth."""
    return _bin_accuracy(_uv_bins(_tensor(pred)), _uv_bins(_tensor(gt)))


def accuracy_curve(err: np.ndarray, thresholds: np.ndarray = AUC_THRESHOLDS) -> np.ndarray:
    """Fraction of pixels with ab error ≤ t, for each threshold t."""
    e = np.sort(err.ravel())
    return np.searchsorted(e, thresholds, side="right") / e.size


def neutral_scores(ab_pred: np.ndarray, ab_gt: np.ndarray) -> dict[str, float]:
    """False colour on neutral things, from ab planes ``(H, W, 2)``: the mean predicted chroma on
    pixels whose true chroma is below :data:`NEUTRAL_CHROMA`, and the share of them given chroma
    above :data:`NEUTRAL_FALSE`. Both NaN when under :data:`NEUTRAL_MIN_SHARE` of the pixels are
    neutral."""
    neutral = np.hypot(ab_gt[..., 0], ab_gt[..., 1]) < NEUTRAL_CHROMA
    if neutral.mean() < NEUTRAL_MIN_SHARE:
        return {"neutral_chroma": float("nan"), "neutral_over20": float("nan")}
    chroma = np.hypot(ab_pred[..., 0], ab_pred[..., 1])[neutral]
    return {"neutral_chroma": float(chroma.mean()), "neutral_over20": float((chroma > NEUTRAL_FALSE).mean())}


def ab_scores(
    ab_pred: np.ndarray, ab_gt: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD
) -> tuple[dict[str, float], np.ndarray]:
    """The ab-distance metrics of two ab planes ``(H, W, 2)``, and the accuracy curve ``(151,)``.

    Returns ``{"ab_l2", "ab_l2_total", "pixel_acc", "auc"}`` and the pixel accuracy at each of
    :data:`AUC_THRESHOLDS`; the AuC is that curve's mean.
    """
    err = ab_distance(ab_pred, ab_gt)
    curve = accuracy_curve(err)
    return {
        "ab_l2": float(err.mean()),
        "ab_l2_total": float(err.sum()),
        "pixel_acc": float((err <= threshold).mean()),
        "auc": float(curve.mean()),
    }, curve


# ---------------------------------------------------------------------------------------------
# prepared images: every plane a comparison needs, computed once per image


@dataclass(frozen=True)
class Prepared:
    """One image's colour planes and statistics, computed once and reused by :func:`compare`.

    ``ab`` is ``(H, W, 2)`` float32 (Lab a/b), ``uv_bins`` ``(2, H, W)`` int16 CIELUV U/V bin
    indices, ``rgb8`` ``(H, W, 3)`` uint8, ``sat_sum`` the sum of HSV saturation over pixels,
    ``cf`` the colourfulness.
    """

    ab: np.ndarray
    uv_bins: torch.Tensor
    rgb8: np.ndarray
    sat_sum: float
    cf: float
    ssim_stats: _SsimStats | None

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgb8.shape[:2]


def prepare(rgb: np.ndarray) -> Prepared:
    """Planes and statistics of sRGB float ``(H, W, 3)`` in [0, 1] for :func:`compare`."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got {rgb.shape}")
    t = _tensor(rgb)
    rgb8 = to_uint8(rgb)
    return Prepared(
        ab=color.rgb_to_lab(t)[0, 1:].permute(1, 2, 0).numpy(),
        uv_bins=_uv_bins(t),
        rgb8=rgb8,
        sat_sum=_saturation_sum(t),
        cf=colourfulness(rgb),
        ssim_stats=_ssim_stats(rgb8),
    )


def compare(
    pred: Prepared, gt: Prepared, *, threshold: float = DEFAULT_THRESHOLD
) -> tuple[dict[str, float], np.ndarray]:
    """Every per-image metric (keys of :data:`METRIC_LABELS`) and the accuracy curve ``(151,)``."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    out, curve = ab_scores(pred.ab, gt.ab, threshold=threshold)
    out.update(neutral_scores(pred.ab, gt.ab))
    u_acc, v_acc = _bin_accuracy(pred.uv_bins, gt.uv_bins)
    out.update(
        psnr=_psnr8(pred.rgb8, gt.rgb8),
        ssim=_ssim_from_stats(pred.ssim_stats, gt.ssim_stats),
        cf_pred=pred.cf,
        cf_gt=gt.cf,
        delta_cf=abs(pred.cf - gt.cf),
        sat_diff=_saturation_diff(pred.sat_sum, gt.sat_sum),
        bin_acc_u=u_acc,
        bin_acc_v=v_acc,
    )
    return out, curve


def image_metrics(pred: np.ndarray, gt: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD) -> dict[str, float]:
    """Every per-image metric for one prediction/ground-truth pair (``(H, W, 3)`` in [0, 1])."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    return compare(prepare(pred), prepare(gt), threshold=threshold)[0]


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over images (NaNs and infinities ignored)."""
    if not rows:
        return {}
    keys = rows[0].keys()
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in rows], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        out[k] = float(vals.mean()) if vals.size else float("nan")
    return out


# The figures paired_differences compares, with how to read them, and its bootstrap's defaults.
PAIRED_RESAMPLES = 2000
PAIRED_SEED = 0
PAIRED_FIGURES = {
    "psnr": "PSNR (dB), higher is better",
    "delta_cf": "ΔCF, lower is better",
    "cf_gap": "CF gap, lower is better",
    "neutral_chroma": "neutral chroma, lower is better",
}


def _mean_diff(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(b - a, axis=axis)


def _gap_diff(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    # a, b: CF(pred) - CF(gt) per photo; the CF gap is |mean| of it.
    return np.abs(np.mean(b, axis=axis)) - np.abs(np.mean(a, axis=axis))


def paired_differences(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], *,
                       n_resamples: int = PAIRED_RESAMPLES, seed: int = PAIRED_SEED) -> dict[str, dict[str, float]]:
    """How system ``b`` differs from system ``a`` on the photos both scored, with uncertainty.

    ``a`` and ``b`` map photo names to per-image metrics (:func:`image_metrics`). For each of
    :data:`PAIRED_FIGURES` the result holds ``diff`` (b's figure minus a's: the mean of the
    per-photo differences, or for ``cf_gap`` the difference of the two gaps), ``low`` and
    ``high`` (a 95 % percentile bootstrap interval that resamples photos, so the two systems
    stay paired: scipy.stats.bootstrap with ``paired=True``) and ``photos`` (those with a
    finite figure for both). For ``psnr`` it also holds ``wins``, the share of those photos on
    which ``b`` is higher. An interval spanning 0 means the sample cannot tell the two apart.
    Fewer than 2 photos give NaN intervals. ``seed`` makes the interval reproducible.
    """
    from scipy import stats

    names = sorted(set(a) & set(b))
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float]] = {}
    for key in PAIRED_FIGURES:
        if key == "cf_gap":
            x = np.array([a[n]["cf_pred"] - a[n]["cf_gt"] for n in names], np.float64)
            y = np.array([b[n]["cf_pred"] - b[n]["cf_gt"] for n in names], np.float64)
            statistic = _gap_diff
        else:
            x = np.array([a[n][key] for n in names], np.float64)
            y = np.array([b[n][key] for n in names], np.float64)
            statistic = _mean_diff
        keep = np.isfinite(x) & np.isfinite(y)
        x, y = x[keep], y[keep]
        fig: dict[str, float] = {"photos": int(x.size), "diff": float("nan"),
                                 "low": float("nan"), "high": float("nan")}
        if x.size:
            fig["diff"] = float(statistic(x, y))
        if x.size >= 2:
            res = stats.bootstrap((x, y), statistic, paired=True, vectorized=True, n_resamples=n_resamples,
                                  method="percentile", confidence_level=0.95, rng=rng)
            fig["low"], fig["high"] = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if key == "psnr":
            fig["wins"] = float(np.mean(y > x)) if x.size else float("nan")
        out[key] = fig
    return out


__all__ = [
    "AUC_THRESHOLDS",
    "DEFAULT_THRESHOLD",
    "METRIC_LABELS",
    "PAIRED_FIGURES",
    "PAIRED_RESAMPLES",
    "PAIRED_SEED",
    "Prepared",
    "ab_distance",
    "ab_error",
    "ab_scores",
    "accuracy_curve",
    "colourfulness",
    "compare",
    "image_metrics",
    "paired_differences",
    "prepare",
    "psnr",
    "saturation_difference",
    "ssim",
    "summarise",
    "uv_bin_accuracy",
]
