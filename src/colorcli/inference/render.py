"""The pixel steps of the inference path, shared by every backend (numpy, torch-free).

L of the photo -> the network's view of it -> (the backend's network) -> chroma -> guided-filter
coefficients (refinement) -> bilinear upsampling to the photo's exact size -> recombined with the
ORIGINAL full-resolution L -> sRGB. Colour conversions come from :mod:`colorcli.color` (its numpy
functions); everything at full resolution runs in row bands of about :data:`BAND_PIXELS` pixels,
so a 12 MP photo never holds more than the output and a few band-sized planes, and bands run on
``threads`` threads (numpy releases the GIL in its loops).

Chroma and coefficients are two types: :class:`Chroma` (what the network predicts) and
:class:`Coefficients` (the guided filter's ``A, B`` with chroma ~ A * L/100 + B); both know how
to give a full-resolution band of chroma, so :func:`recombine` never asks which it holds.

The guided filter: He, Sun and Tang, "Guided Image Filtering" (ECCV 2010). The networks predict
chroma on a small view (short side ~160 px, the bin models at 1/4 of that), so plain bilinear
upsampling lets colour bleed across edges. The filter fits chroma ~ A * L + B in a window around
each pixel of the network view; as in the fast guided filter (He and Sun, 2015) the smoothed A
and B are upsampled and applied to the full-resolution L, so colour edges follow the photo's own.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from colorcli import color
from colorcli.sizing import network_size

# Pixels per band: a band's float32 planes (256 KB each) stay in cache across the ~40
# elementwise passes of upsampling, refinement and colour conversion. Recombining 1 MP on one
# thread (loaded 2-core machine, best of 5): 1 << 14: 287 ms, 1 << 15: 238, 1 << 16: 231,
# 1 << 17: 279, 1 << 18: 321.
BAND_PIXELS = 1 << 16

# Window radius as a fraction of the network view's short side: 8 px at the default 160.
# Chosen on the first 150 val photos with mcl (flip-averaged, T=0.38): radius 2/4/6/8/12 px gave
# PSNR 21.97/22.03/22.08/22.14/22.22 and colourfulness gap +0.1/-0.6/-1.3/-2.1/-3.4 (gt 39.8),
# per-photo |dCF| lowest at 8 px: wider windows keep buying PSNR by washing colour out.
RADIUS_FRAC = 1 / 20
# Regularisation for a guide in [0, 1] (L / 100): edges of ~3 L units and more are kept.
EPS = 1e-3

_TO_RGB = {"lab": color.lab_to_rgb_np, "luv": color.luv_to_rgb_np}


# ---------------------------------------------------------------------------------------------
# geometry


def bands(h: int, w: int) -> list[tuple[int, int]]:
    """Row ranges of at most ~BAND_PIXELS pixels covering an ``h`` x ``w`` image."""
    step = max(1, BAND_PIXELS // max(w, 1))
    return [(r, min(h, r + step)) for r in range(0, h, step)]


def upsample_band(planes: np.ndarray, h: int, w: int, r0: int, r1: int, *,
                  scratch: color.Scratch | None = None) -> np.ndarray:
    """Rows ``r0..r1`` of the bilinear resize of ``planes (C, ch, cw)`` to ``(C, h, w)``.

    The mapping of torch's ``interpolate(mode="bilinear", align_corners=False)`` (no
    antialiasing): output row ``i`` samples ``(i + 0.5) * ch / h - 0.5``, edges clamped
    (:func:`linear_taps`). Separable: the few source rows the band needs are resized across
    first, at their own height; each output row is then one of them plus its weight times the
    difference to the next, a row copy and one multiply-add. Enlarging 160 x 224 to 1 MP this
    is 1.8x faster than Pillow's float resize of each plane. With ``scratch`` the result and
    the temporaries live in its buffers (valid until its next use).
    """
    s = scratch or color.Scratch()
    planes = np.asarray(planes, dtype=np.float32)
    n, ch, cw = planes.shape
    y0, _, wy = linear_taps(ch, h, r0, r1)
    lo, hi = int(y0[0]), min(ch, int(y0[-1]) + 2)
    src = planes[:, lo:hi]
    x0, x1, wx = linear_taps(cw, w)
    k = hi - lo
    across = s.get("up_across", (n, k, w))  # the band's source rows at full width
    np.take(src, x0, axis=2, out=across, mode="clip")
    right = s.get("up_right", (n, k, w))
    np.take(src, x1, axis=2, out=right, mode="clip")
    right -= across
    right *= wx
    across += right
    step = right  # row j+1 minus row j; 0 past the last row (the clamped edge)
    np.subtract(across[:, 1:], across[:, :-1], out=step[:, :-1])
    step[:, -1] = 0
    rows = y0 - lo
    out = s.get("up", (n, r1 - r0, w))
    np.take(across, rows, axis=1, out=out, mode="clip")
    delta = s.get("up_delta", (n, r1 - r0, w))
    np.take(step, rows, axis=1, out=delta, mode="clip")
    delta *= wy[:, None]
    out += delta
    return out


def linear_taps(src: int, dst: int, start: int = 0, stop: int | None = None):
    """Source indices and weights of a bilinear resize ``src -> dst`` for outputs start..stop:
    output ``i`` samples ``(i + 0.5) * src / dst - 0.5``, clamped at 0; returns ``(i0, i1, w1)``
    with ``out = in[i0] * (1 - w1) + in[i1] * w1``."""
    stop = dst if stop is None else stop
    x = (np.arange(start, stop, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    x = np.maximum(x, 0.0)
    i0 = np.minimum(np.floor(x).astype(np.intp), src - 1)
    i1 = np.minimum(i0 + 1, src - 1)
    return i0, i1, (x - i0).astype(np.float32)


def network_view(L: np.ndarray, size: int, *, default: int | None = None) -> np.ndarray:
    """Full-size L ``(H, W)`` -> ``(1, 1, h, w)`` float32 at network size (aspect kept, sides
    multiples of 32; a ``size`` above the model's ``default`` is capped at the photo's own short
    side, :func:`colorcli.sizing.view_size`). Pillow's BILINEAR resize of a float image is the antialiased triangle
    filter (torch's ``interpolate(..., antialias=True)`` is a port of it)."""
    h, w = network_size(*L.shape, size, default=default)
    img = Image.fromarray(np.ascontiguousarray(L, dtype=np.float32))
    # reducing_gap: a photo more than 3x the view is first box-reduced by an integer factor
    # (Pillow's reduce), leaving the filter at least 3x: 12 MP to 160 x 224 in 4.4 ms instead
    # of 15.4, within 0.1 L of the exact filter.
    view = img.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(view, dtype=np.float32)[None, None]


# ---------------------------------------------------------------------------------------------
# L of a photo


def gray_codes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """For a gray photo of 8- or 16-bit values: integer codes ``(H, W)`` and the float32 levels
    they index (``levels[codes]`` equals the plane bit for bit); None for anything else.

    ``colorcli.imageio`` gives gray inputs as a broadcast view of one plane holding
    ``code / 255`` (or ``/ 65535``) in float32. Such a photo has at most 65536 distinct values,
    so converting the levels and indexing gives the per-pixel result, 10x+ faster.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.strides[2] != 0 or rgb.dtype != np.float32:
        return None  # colour, or a gray copy we cannot recognise cheaply
    plane = rgb[..., 0]
    rows = max(1, BAND_PIXELS // max(1, plane.shape[1]))
    buf = np.empty((min(rows, plane.shape[0]), plane.shape[1]), dtype=np.float32)
    for top, dtype in ((255, np.uint8), (65535, np.uint16)):
        codes = np.empty(plane.shape, dtype=dtype)
        # In bands through one reused buffer: a 12 MP photo in 15 ms instead of 40 ms with
        # full-size temporaries.
        for r0 in range(0, plane.shape[0], rows):
            src, t, c = plane[r0 : r0 + rows], buf[: len(plane[r0 : r0 + rows])], codes[r0 : r0 + rows]
            np.multiply(src, np.float32(top), out=t)
            np.clip(t, 0, top, out=t)
            with np.errstate(invalid="ignore"):  # NaN casts to some code; the check below fails it
                np.rint(t, out=t)
                c[...] = t
            # The same float32 division the reader did, so equal means equal bit for bit.
            np.divide(c, np.float32(top), out=t, dtype=np.float32)
            if not np.array_equal(t, src):
                break
        else:
            return codes, np.arange(top + 1, dtype=np.float32) / np.float32(top)
    return None


def rgb_to_l(rgb: np.ndarray, *, threads: int = 1) -> np.ndarray:
    """sRGB float ``(H, W, 3)`` -> L float32 ``(H, W)`` in [0, 100], in memory-bounded bands."""
    gray = gray_codes(rgb)
    if gray is not None:
        codes, levels = gray
        return color.gray_l_levels(levels)[codes]
    h, w, _ = rgb.shape
    out = np.empty((h, w), dtype=np.float32)

    def band(r0: int, r1: int) -> None:
        out[r0:r1] = color.rgb_to_l_np(rgb[r0:r1])

    _run_bands(band, bands(h, w), threads)
    return out


# ---------------------------------------------------------------------------------------------
# chroma and coefficients


@dataclass(frozen=True)
class Chroma:
    """Chroma from the network: ``values (2, h, w)`` float32 (a/b or u/v), any h, w."""

    values: np.ndarray

    def __post_init__(self) -> None:
        if self.values.ndim != 3 or self.values.shape[0] != 2:
            raise ValueError(f"chroma must be (2, h, w), got {self.values.shape}")

    def band(self, L_band: np.ndarray, h: int, w: int, r0: int, r1: int, *,
             scratch: color.Scratch | None = None) -> np.ndarray:
        """Chroma ``(2, r1 - r0, w)`` of rows r0..r1 of an ``h`` x ``w`` photo."""
        return upsample_band(self.values, h, w, r0, r1, scratch=scratch)


@dataclass(frozen=True)
class Coefficients:
    """Guided-filter coefficients ``values (4, h, w)`` float32: ``A_1, A_2, B_1, B_2`` with
    chroma_c ~ A_c * L/100 + B_c, at the network view's size; applied at any size."""

    values: np.ndarray

    def __post_init__(self) -> None:
        if self.values.ndim != 3 or self.values.shape[0] != 4:
            raise ValueError(f"coefficients must be (4, h, w), got {self.values.shape}")

    def band(self, L_band: np.ndarray, h: int, w: int, r0: int, r1: int, *,
             scratch: color.Scratch | None = None) -> np.ndarray:
        """Chroma ``(2, r1 - r0, w)`` of rows r0..r1: the upsampled coefficients applied to the
        full-resolution ``L_band (r1 - r0, w)``."""
        s = scratch or color.Scratch()
        up = upsample_band(self.values, h, w, r0, r1, scratch=s)
        g = np.multiply(L_band, np.float32(1 / 100), out=s.get("guide", L_band.shape))
        chroma = up[:2]  # in place: A * L/100 + B
        chroma *= g
        chroma += up[2:]
        return chroma


def apply_coefficients(coef: np.ndarray, L: np.ndarray) -> np.ndarray:
    """``coef (4, r, w)`` and L ``(r, w)`` in [0, 100] -> chroma ``(2, r, w)``."""
    g = L * np.float32(1 / 100)
    out = coef[:2] * g
    out += coef[2:]
    return out


def radius_for(h: int, w: int) -> int:
    """Window radius in pixels of an ``h`` x ``w`` network view."""
    return max(1, round(min(h, w) * RADIUS_FRAC))


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a ``(2r+1)^2`` window, edges mirrored (half-sample symmetric)."""
    from scipy.ndimage import uniform_filter  # here, not at import: colorize's start-up stays quick

    return uniform_filter(x, size=2 * r + 1, mode="reflect")


def guided_coefficients(
    L: np.ndarray, chroma: Chroma, *, radius: int | None = None, eps: float = EPS
) -> Coefficients:
    """Guide L ``(h, w)`` in [0, 100] (the network's input view) and its chroma -> the
    coefficients at the view's size."""
    h, w = L.shape
    r = radius_for(h, w) if radius is None else radius
    guide = np.asarray(L, dtype=np.float64) / 100.0
    p = upsample_band(chroma.values, h, w, 0, h).astype(np.float64)
    mean_i = _box(guide, r)
    var_i = _box(guide * guide, r) - mean_i * mean_i
    out = np.empty((4, h, w), dtype=np.float32)
    for c in range(2):
        mean_p = _box(p[c], r)
        a = (_box(guide * p[c], r) - mean_i * mean_p) / (var_i + eps)
        b = mean_p - a * mean_i
        out[c] = _box(a, r)
        out[2 + c] = _box(b, r)
    return Coefficients(out)


# ---------------------------------------------------------------------------------------------
# recombination


def recombine(
    L: np.ndarray, chroma: Chroma | Coefficients, *, space: str = "lab", threads: int = 1
) -> np.ndarray:
    """Original L ``(H, W)`` + chroma or coefficients (any size) -> sRGB float32 ``(H, W, 3)``."""
    if not isinstance(chroma, (Chroma, Coefficients)):
        raise TypeError(f"recombine takes Chroma or Coefficients, not {type(chroma).__name__}")
    to_rgb = _TO_RGB[space]
    h, w = L.shape
    out = np.empty((h, w, 3), dtype=np.float32)
    local = threading.local()  # one set of band buffers per thread, reused band after band

    def band(r0: int, r1: int) -> None:
        scratch = getattr(local, "scratch", None) or color.Scratch()
        local.scratch = scratch
        L_band = np.ascontiguousarray(L[r0:r1], dtype=np.float32)
        to_rgb(L_band, chroma.band(L_band, h, w, r0, r1, scratch=scratch), out[r0:r1], scratch=scratch)

    _run_bands(band, bands(h, w), threads)
    return out


def _run_bands(fn, ranges: list[tuple[int, int]], threads: int) -> None:
    if threads <= 1 or len(ranges) == 1:
        for r0, r1 in ranges:
            fn(r0, r1)
        return
    with ThreadPoolExecutor(min(threads, len(ranges)), thread_name_prefix="colorcli-band") as pool:
        for fut in [pool.submit(fn, r0, r1) for r0, r1 in ranges]:
            fut.result()
