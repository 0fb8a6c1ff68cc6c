"""Global camera motion between two frames: the one translation that carries the previous
frame onto the next (phase correlation), and moving a plane by it. Film smoothing
(:class:`colorcli.video.TemporalSmoother`) keeps colour on a panning scene with it, and the
flicker metric (:func:`colorcli.metrics.flicker`) leaves the camera's motion out of flicker."""

from __future__ import annotations

import numpy as np


def global_shift(prev: np.ndarray, cur: np.ndarray, *, max_frac: float = 0.125,
                 min_peak: float = 0.1) -> tuple[float, float]:
    """The translation ``(dy, dx)`` in pixels that carries ``prev`` onto ``cur`` (two views of
    one shape): phase correlation (the peak of the normalised cross-power spectrum, refined to
    a fraction of a pixel by a parabola through its neighbours) of the mean-removed,
    Hann-windowed images. ``(0, 0)`` when the peak is weak (no single motion: a cut, a scene of
    many movers) or beyond ``max_frac`` of the view (more likely a cut than a pan)."""
    h, w = cur.shape
    if h < 8 or w < 8:
        return 0.0, 0.0
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    fa = np.fft.rfft2((prev - prev.mean()) * win)
    fb = np.fft.rfft2((cur - cur.mean()) * win)
    cross = fb * np.conj(fa)
    cross /= np.maximum(np.abs(cross), 1e-9)
    corr = np.fft.irfft2(cross, s=(h, w))
    iy, ix = np.unravel_index(int(np.argmax(corr)), corr.shape)
    if corr[iy, ix] < min_peak:
        return 0.0, 0.0

    def refine(c_minus: float, c0: float, c_plus: float) -> float:
        den = c_minus - 2 * c0 + c_plus
        return 0.0 if den >= 0 else float(np.clip(0.5 * (c_minus - c_plus) / den, -0.5, 0.5))

    dy = iy + refine(corr[iy - 1, ix], corr[iy, ix], corr[(iy + 1) % h, ix])
    dx = ix + refine(corr[iy, ix - 1], corr[iy, ix], corr[iy, (ix + 1) % w])
    dy = dy - h if dy > h / 2 else dy  # wrap to signed shifts
    dx = dx - w if dx > w / 2 else dx
    if abs(dy) > max_frac * h or abs(dx) > max_frac * w:
        return 0.0, 0.0
    # A twentieth of a pixel and less is no motion (a still shot's grain and exposure flicker).
    return (float(dy) if abs(dy) >= 0.05 else 0.0), (float(dx) if abs(dx) >= 0.05 else 0.0)


def shift_plane(plane: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``plane`` moved by ``(dy, dx)`` pixels (bilinear; edges repeat the nearest pixel)."""
    from scipy.ndimage import shift

    return shift(plane, (dy, dx), order=1, mode="nearest").astype(np.float32, copy=False)
