"""Colorization metrics, shared by ``eval`` and training.

All metrics compare a prediction with its ground truth at full resolution, both sRGB float
``(H, W, 3)`` numpy arrays in [0, 1]. Per-image functions return floats; ``image_metrics``
returns the whole set for one pair.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.color import rgb2hsv
from skimage.metrics import structural_similarity

from colorcli import color

AUC_THRESHOLDS = np.arange(0, 151, dtype=np.float64)  # 0..150 inclusive, step 1


def _lab(rgb: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)
    return color.rgb_to_lab(t).permute(1, 2, 0).numpy()


def _luv(rgb: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)
    return color.rgb_to_luv(t).permute(1, 2, 0).numpy()


def ab_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-pixel Euclidean ab distance ``(H, W)``."""
    d = _lab(pred)[..., 1:] - _lab(gt)[..., 1:]
    return np.sqrt((d.astype(np.float64) ** 2).sum(-1))


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """PSNR in dB of the 8-bit sRGB images (peak 255)."""
    p = np.round(np.clip(pred, 0, 1) * 255)
    g = np.round(np.clip(gt, 0, 1) * 255)
    mse = float(((p - g) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """SSIM of the 8-bit sRGB images (per channel, averaged; scikit-image)."""
    p = np.round(np.clip(pred, 0, 1) * 255).astype(np.uint8)
    g = np.round(np.clip(gt, 0, 1) * 255).astype(np.uint8)
    win = min(7, min(p.shape[:2]) | 1 if min(p.shape[:2]) % 2 else min(p.shape[:2]) - 1)
    if win < 3:
        return float("nan")
    return float(structural_similarity(p, g, channel_axis=2, data_range=255, win_size=win))


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Süsstrunk (2003) colourfulness on 8-bit sRGB values."""
    x = np.clip(rgb, 0, 1).astype(np.float64) * 255
    rg = x[..., 0] - x[..., 1]
    yb = 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    return float(np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2))


def saturation_difference(pred: np.ndarray, gt: np.ndarray) -> float:
    """``|ΣS_pred − ΣS_gt| / ΣS_gt`` with S the HSV saturation (NaN for a gray ground truth)."""
    sp = float(rgb2hsv(np.clip(pred, 0, 1))[..., 1].sum())
    sg = float(rgb2hsv(np.clip(gt, 0, 1))[..., 1].sum())
    return float("nan") if sg == 0 else abs(sp - sg) / sg


def uv_bin_accuracy(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Fraction of pixels whose U (and V) falls in the same of 50 CIELUV bins as the truth."""
    lp, lg = torch.from_numpy(_luv(pred)), torch.from_numpy(_luv(gt))
    acc = []
    for c in (1, 2):
        bp = color.uv_to_bin_index(lp[..., c])
        bg = color.uv_to_bin_index(lg[..., c])
        acc.append(float((bp == bg).float().mean()))
    return acc[0], acc[1]


def accuracy_curve(err: np.ndarray, thresholds: np.ndarray = AUC_THRESHOLDS) -> np.ndarray:
    """Fraction of pixels with ab error ≤ t, for each threshold t."""
    e = np.sort(err.ravel())
    return np.searchsorted(e, thresholds, side="right") / e.size


def image_metrics(pred: np.ndarray, gt: np.ndarray, *, threshold: float = 10.0) -> dict[str, float]:
    """Every per-image metric for one prediction/ground-truth pair."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    err = ab_error(pred, gt)
    curve = accuracy_curve(err)
    cf_p, cf_g = colourfulness(pred), colourfulness(gt)
    u_acc, v_acc = uv_bin_accuracy(pred, gt)
    return {
        "ab_l2": float(err.mean()),
        "ab_l2_total": float(err.sum()),
        "pixel_acc": float((err <= threshold).mean()),
        "auc": float(curve.mean()),
        "psnr": psnr(pred, gt),
        "ssim": ssim(pred, gt),
        "cf_pred": cf_p,
        "cf_gt": cf_g,
        "delta_cf": abs(cf_p - cf_g),
        "sat_diff": saturation_difference(pred, gt),
        "bin_acc_u": u_acc,
        "bin_acc_v": v_acc,
    }


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over images (NaNs ignored)."""
    if not rows:
        return {}
    keys = rows[0].keys()
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in rows], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        out[k] = float(vals.mean()) if vals.size else float("nan")
    return out
