"""The one module that owns colour.

sRGB <-> CIE Lab (D65) and sRGB <-> CIELUV as plain, differentiable torch ops (training and
the torch backend), the same conversions for the inference path as float32 numpy code over
``(H, W)`` planes (``*_np``: torch-free, for the light install), the L/ab normalisation
constants, and the quantisation of ab into bins used by classification
models (soft encoding, class rebalancing, annealed-mean decoding). Nothing else in colorcli
converts colour spaces; scikit-image serves only as the reference in tests.

Conventions: images are ``(B, 3, H, W)`` or ``(3, H, W)`` float tensors; sRGB in [0, 1],
L in [0, 100], a/b in about [-110, 110], U/V in about [-100, 100].
"""

from __future__ import annotations

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the light install (no torch): only the numpy conversions are used there
    torch = F = None

# Normalisation constants (richzhang's BaseColor). What each model computes from them (its input
# (L / L_NORM - 0.5) / 0.5, its targets) is declared by ``ColorModel.normalisation``.
L_CENT = 50.0
L_NORM = 100.0
AB_NORM = 110.0

# Quantisation of ab (Zhang et al.): square bins of side 10 with centres on multiples of 10.
AB_GRID = 10.0
AB_RANGE = 110.0

# CIELUV binning for the luv50 model: U and V in [-100, 100], 50 equal bins each.
UV_RANGE = 100.0
UV_BINS = 50

# D65 reference white and the sRGB primaries (same values as scikit-image).
_WHITE = (0.95047, 1.0, 1.08883)
_RGB2XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_EPS = 0.008856
_KAPPA = 7.787
_LUV_KAPPA = 903.3


def _matrix(device: torch.device, dtype: torch.dtype, *, inverse: bool = False) -> torch.Tensor:
    m = torch.tensor(_RGB2XYZ, dtype=torch.float64)
    if inverse:
        m = torch.linalg.inv(m)
    return m.to(device=device, dtype=dtype)


def _channels_first(fn):
    """Let the converters take (3, H, W) as well as (B, 3, H, W)."""

    def wrapper(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3 and x.shape[0] == 3:  # not (1, H, W): einsum would broadcast it
            return fn(x.unsqueeze(0)).squeeze(0)
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) or (3, H, W), got {tuple(x.shape)}")
        return fn(x)

    wrapper.__doc__ = fn.__doc__
    wrapper.__name__ = fn.__name__
    return wrapper


def _srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    return torch.where(rgb > 0.04045, ((rgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)


def _linear_to_srgb(lin: torch.Tensor) -> torch.Tensor:
    return torch.where(
        lin > 0.0031308, 1.055 * lin.clamp(min=0.0031308) ** (1 / 2.4) - 0.055, lin * 12.92
    )


def _rgb_to_xyz(rgb: torch.Tensor) -> torch.Tensor:
    lin = _srgb_to_linear(rgb)
    return torch.einsum("ij,bjhw->bihw", _matrix(rgb.device, rgb.dtype), lin)


def _xyz_to_rgb(xyz: torch.Tensor) -> torch.Tensor:
    lin = torch.einsum("ij,bjhw->bihw", _matrix(xyz.device, xyz.dtype, inverse=True), xyz)
    return _linear_to_srgb(lin).clamp(0.0, 1.0)


def _white(ref: torch.Tensor) -> torch.Tensor:
    return torch.tensor(_WHITE, device=ref.device, dtype=ref.dtype).view(1, 3, 1, 1)


@_channels_first
def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB ``(B, 3, H, W)`` in [0, 1] -> Lab, L in [0, 100], a/b in about [-110, 110]."""
    xyz = _rgb_to_xyz(rgb) / _white(rgb)
    f = torch.where(xyz > _EPS, xyz.clamp(min=_EPS) ** (1 / 3), _KAPPA * xyz + 16 / 116)
    fx, fy, fz = f[:, 0:1], f[:, 1:2], f[:, 2:3]
    return torch.cat([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def _lab_to_xyz(lab: torch.Tensor) -> torch.Tensor:
    L, a, b = lab[:, 0:1], lab[:, 1:2], lab[:, 2:3]
    fy = (L + 16) / 116
    fx = a / 500 + fy
    fz = (fy - b / 200).clamp(min=0.0)  # scikit-image clips negative z too
    f = torch.cat([fx, fy, fz], dim=1)
    return torch.where(f**3 > _EPS, f**3, (f - 16 / 116) / _KAPPA) * _white(lab)


@_channels_first
def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab ``(B, 3, H, W)`` -> sRGB in [0, 1] (out-of-gamut colours are clipped)."""
    return _xyz_to_rgb(_lab_to_xyz(lab))


def colourfulness(rgb: torch.Tensor, *, eps: float = 0.0) -> torch.Tensor:
    """Hasler & Süsstrunk (2003) colourfulness of each sRGB photo ``(B, 3, H, W)`` in [0, 1]
    -> ``(B,)``, on the 0..255 scale, as the field's tables compute it (DDColor's and CT2's
    ``calculate_cf``): rg = |R − G| and yb = |(R + G)/2 − B|, absolute before the statistics;
    ``sqrt(σ_rg² + σ_yb²) + 0.3 · sqrt(μ_rg² + μ_yb²)`` (population deviations). ``eps`` inside
    the roots keeps the gradient finite on a gray photo (a training loss; eval uses 0)."""
    x = rgb.clamp(0.0, 1.0) * 255
    r, g, b = x[:, 0].flatten(1), x[:, 1].flatten(1), x[:, 2].flatten(1)
    rg, yb = (r - g).abs(), (0.5 * (r + g) - b).abs()
    mean_rg, mean_yb = rg.mean(dim=1), yb.mean(dim=1)
    var = (rg - mean_rg[:, None]).square().mean(dim=1) + (yb - mean_yb[:, None]).square().mean(dim=1)
    return torch.sqrt(var + eps) + 0.3 * torch.sqrt(mean_rg.square() + mean_yb.square() + eps)


def _uv_prime(xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y, z = xyz[:, 0:1], xyz[:, 1:2], xyz[:, 2:3]
    denom = x + 15 * y + 3 * z + 1e-12
    return 4 * x / denom, 9 * y / denom


def _white_uv(ref: torch.Tensor) -> tuple[float, float]:
    wx, wy, wz = _WHITE
    denom = wx + 15 * wy + 3 * wz
    return 4 * wx / denom, 9 * wy / denom


@_channels_first
def rgb_to_luv(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB ``(B, 3, H, W)`` in [0, 1] -> CIELUV, L in [0, 100], U/V in about [-100, 180]."""
    xyz = _rgb_to_xyz(rgb)
    y = xyz[:, 1:2] / _WHITE[1]
    L = torch.where(y > _EPS, 116 * y.clamp(min=_EPS) ** (1 / 3) - 16, _LUV_KAPPA * y)
    up, vp = _uv_prime(xyz)
    u0, v0 = _white_uv(rgb)
    return torch.cat([L, 13 * L * (up - u0), 13 * L * (vp - v0)], dim=1)


def _luv_to_xyz(luv: torch.Tensor) -> torch.Tensor:
    L, u, v = luv[:, 0:1], luv[:, 1:2], luv[:, 2:3]
    y = torch.where(L > 7.999625, ((L + 16) / 116) ** 3, L / _LUV_KAPPA) * _WHITE[1]
    u0, v0 = _white_uv(luv)
    a = u0 + u / (13 * L + 1e-12)
    b = v0 + v / (13 * L + 1e-12)
    b = torch.where(b.abs() < 1e-12, torch.full_like(b, 1e-12), b)
    c = 3 * y * (5 * b - 3)
    z = ((a - 4) * c - 15 * a * b * y) / (12 * b)
    x = -(c / b + 3 * z)
    xyz = torch.cat([x, y, z], dim=1)
    # Black (L = 0) has no chroma; avoid the 0/0 above turning into NaN.
    return torch.where(L > 0, xyz, torch.zeros_like(xyz))


@_channels_first
def luv_to_rgb(luv: torch.Tensor) -> torch.Tensor:
    """CIELUV ``(B, 3, H, W)`` -> sRGB in [0, 1] (out-of-gamut colours are clipped)."""
    return _xyz_to_rgb(_luv_to_xyz(luv))


@_channels_first
def hsv_saturation(rgb: torch.Tensor) -> torch.Tensor:
    """HSV saturation ``(max - min) / max`` of sRGB ``(B, 3, H, W)`` -> ``(B, 1, H, W)`` in [0, 1].

    Black (max = 0) has saturation 0, as in scikit-image's ``rgb2hsv``.
    """
    mx = rgb.amax(dim=1, keepdim=True)
    mn = rgb.amin(dim=1, keepdim=True)
    return torch.where(mx > 0, (mx - mn) / mx.clamp(min=1e-12), torch.zeros_like(mx))


def rgb_to_gray_l(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB ``(B, 3, H, W)`` -> L ``(B, 1, H, W)`` in [0, 100]."""
    return rgb_to_lab(rgb)[:, 0:1]


def gray_lab_to_rgb(L: torch.Tensor) -> torch.Tensor:
    """L ``(B, 1, H, W)`` -> the neutral sRGB image with that lightness."""
    return lab_to_rgb(torch.cat([L, torch.zeros_like(L), torch.zeros_like(L)], dim=1))


# ---------------------------------------------------------------------------------------------
# ab quantisation (Zhang et al. 2016)


def gamut_bins(*, grid: float = AB_GRID, samples: int = 48) -> np.ndarray:
    """Centres ``(Q, 2)`` of the ab bins that the sRGB gamut reaches (261 for grid 10 at the default sampling; Zhang et al. report 313 with a looser hull).

    The RGB cube is sampled on a ``samples``^3 lattice (with its faces), converted to Lab, and
    every bin hit by at least one colour is kept.
    """
    t = torch.linspace(0.0, 1.0, samples, dtype=torch.float64)
    r, g, b = torch.meshgrid(t, t, t, indexing="ij")
    rgb = torch.stack([r, g, b]).reshape(1, 3, -1, 1)
    ab = rgb_to_lab(rgb)[0, 1:, :, 0].T.numpy()
    idx = np.unique(np.round(ab / grid).astype(np.int64), axis=0)
    return (idx * grid).astype(np.float32)


def ab_to_bin_index(ab: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Hard assignment: ab ``(B, 2, H, W)`` -> index ``(B, H, W)`` of the nearest bin centre."""
    b, _, h, w = ab.shape
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)
    d = torch.cdist(flat, centres.to(flat))
    return d.argmin(dim=1).view(b, h, w)


def soft_encode(
    ab: torch.Tensor, centres: torch.Tensor, *, neighbours: int = 5, sigma: float = 5.0
) -> torch.Tensor:
    """Soft-encode ab ``(B, 2, H, W)`` over ``Q`` bins -> ``(B, Q, H, W)`` summing to 1.

    Each pixel spreads over its ``neighbours`` nearest bin centres with Gaussian weights
    (``sigma`` in ab units), as in Zhang et al. The dense form of :func:`soft_encode_sparse`.
    """
    b, _, h, w = ab.shape
    idx, wts = soft_encode_sparse(ab.permute(0, 2, 3, 1).reshape(-1, 2), centres, neighbours=neighbours, sigma=sigma)
    out = torch.zeros(idx.shape[0], centres.shape[0], dtype=wts.dtype, device=wts.device)
    out.scatter_(1, idx, wts)
    return out.view(b, h, w, -1).permute(0, 3, 1, 2)


def soft_encode_sparse(
    ab: torch.Tensor, centres: torch.Tensor, *, neighbours: int = 5, sigma: float = 5.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """ab ``(N, 2)`` -> the ``neighbours`` nearest bins of each pixel, nearest first, and their
    Gaussian weights summing to 1: ``(idx (N, k), weights (N, k))``. The training loss takes
    these as they are: a dense ``(N, Q)`` target would be 50x larger and mostly zeros.

    Bins on the ``AB_GRID`` lattice (as :func:`gamut_bins` makes them) are searched among the
    5 x 5 lattice points around each pixel's nearest one instead of among all ``Q``: any other
    centre is at least 2.5 grid steps away, so the answer is exact wherever the k-th nearest
    found is closer than that; the few pixels where it is not (far outside the bins) are
    searched in full.
    """
    centres = centres.to(ab)
    lattice = torch.round(centres / AB_GRID)
    if not torch.equal(lattice * AB_GRID, centres) or neighbours > 25:
        return _soft_weights(*_nearest_bins(ab, centres, neighbours), sigma)
    lo = lattice.min(dim=0).values.long() - 2
    span = lattice.max(dim=0).values.long() + 3 - lo
    lut = torch.full((int(span[0]), int(span[1])), -1, dtype=torch.long, device=ab.device)
    cell = lattice.long() - lo
    lut[cell[:, 0], cell[:, 1]] = torch.arange(len(centres), device=ab.device)
    near = torch.round(ab / AB_GRID).long() - lo  # (N, 2) nearest lattice point, LUT coordinates
    near = torch.minimum(near.clamp(min=2), span - 3)  # far-off pixels: any window; searched in full below
    off = torch.arange(-2, 3, device=ab.device)
    rows, cols = near[:, :1] + off, near[:, 1:] + off  # (N, 5) each: the window's lattice lines
    cand = lut[rows[:, :, None], cols[:, None, :]].reshape(len(ab), 25)
    da = (ab[:, :1] - (rows + lo[0]) * AB_GRID).square()
    db = (ab[:, 1:] - (cols + lo[1]) * AB_GRID).square()
    d2 = (da[:, :, None] + db[:, None, :]).reshape(len(ab), 25).masked_fill(cand < 0, float("inf"))
    dist2, pick = d2.topk(neighbours, dim=1, largest=False)
    idx = cand.gather(1, pick)
    far = dist2[:, -1] > (2.5 * AB_GRID) ** 2
    if bool(far.any()):
        rows = far.nonzero().flatten()
        full_d2, full_idx = _nearest_bins(ab[rows], centres, neighbours)
        dist2, idx = dist2.index_put((rows,), full_d2), idx.index_put((rows,), full_idx)
    return _soft_weights(dist2, idx, sigma)


def _nearest_bins(ab: torch.Tensor, centres: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances and indices of the ``k`` nearest centres, nearest first, by full search."""
    d = torch.cdist(ab, centres)
    dist, idx = d.topk(k, dim=1, largest=False)
    return dist * dist, idx


def _soft_weights(dist2: torch.Tensor, idx: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    return idx, torch.softmax(-dist2 / (2 * sigma**2), dim=1)


def smooth_prior(
    counts: np.ndarray, centres: np.ndarray, *, sigma: float = 5.0
) -> np.ndarray:
    """Empirical bin distribution smoothed with a Gaussian of ``sigma`` over ab space."""
    p = np.asarray(counts, dtype=np.float64)
    p = p / max(p.sum(), 1e-12)
    d2 = ((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1).astype(np.float64)
    k = np.exp(-d2 / (2 * sigma**2))
    sp = k @ p
    return sp / sp.sum()


def rebalance_weights(prior: np.ndarray, *, lam: float = 0.5) -> np.ndarray:
    """Class-rebalancing weights ``w ∝ ((1 - λ) p + λ / Q)^-1``, normalised so E_p[w] = 1."""
    p = np.asarray(prior, dtype=np.float64)
    w = 1.0 / ((1 - lam) * p + lam / p.shape[0])
    return (w / (p * w).sum()).astype(np.float32)


def annealed_mean(logits: torch.Tensor, centres: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """Decode bin logits ``(B, Q, H, W)`` to ab ``(B, 2, H, W)`` with the annealed mean.

    ``f_T(z) = exp(log z / T) / Σ exp(log z / T)`` equals ``softmax(logits / T)``; T = 1 is the
    mean, T -> 0 the mode. Very small T is handled as the mode so the result stays finite.
    """
    c = centres.to(logits)
    if temperature <= 1e-3:
        return c[logits.argmax(dim=1)].permute(0, 3, 1, 2)
    # Bins last: the softmax and the product with the centres run along memory (the networks
    # give channels-last logits), 2x faster on a CPU, forward and backward, than over dim 1.
    b, q, h, w = logits.shape
    flat = logits.permute(0, 2, 3, 1).reshape(-1, q)
    p = torch.softmax(flat.float() / temperature, dim=1).to(logits.dtype)
    return (p @ c).view(b, h, w, c.shape[1]).permute(0, 3, 1, 2)


def neutral_gated_mean(
    logits: torch.Tensor, centres: torch.Tensor, *, temperature: float, neutral_radius: float, gain: float = 1.0
) -> torch.Tensor:
    """The annealed mean scaled by ``gain · (1 − g)``, where ``g`` is the annealed distribution's
    mass on the neutral bins (centres within ``neutral_radius`` of gray).

    Where the model holds gray likely, its colour fades toward gray instead of landing on a
    confident cast; where it is sure of a colour, ``g`` is ~0 and ``gain`` gives back the
    colourfulness the gate takes from the photo as a whole. ``neutral_radius`` 0 and ``gain`` 1
    are the plain annealed mean.
    """
    if neutral_radius > 0:
        # One annealed pass over the centres with a third column (1 on the neutral bins, else
        # 0): its first two channels are the annealed mean, the third is the neutral mass g.
        c = centres.to(logits)
        neutral = (torch.linalg.vector_norm(c, dim=1, keepdim=True) <= neutral_radius + 1e-3).to(c.dtype)
        out = annealed_mean(logits, torch.cat([c, neutral], dim=1), temperature=temperature)
        ab = out[:, :2] * (1 - out[:, 2:]).clamp(0, 1)
    else:
        ab = annealed_mean(logits, centres, temperature=temperature)
    return ab * gain if gain != 1 else ab


def uv_bin_edges(*, bins: int = UV_BINS, span: float = UV_RANGE) -> np.ndarray:
    return np.linspace(-span, span, bins + 1, dtype=np.float32)


def uv_to_bin_index(uv: torch.Tensor, *, bins: int = UV_BINS, span: float = UV_RANGE) -> torch.Tensor:
    """U or V values -> bin index in [0, bins), values outside ±span go to the end bins."""
    # Multiply before dividing: (16 + 100) / 200 * 50 is 28.999... in float64, and an edge
    # value must land in the bin that starts there.
    idx = torch.floor((uv + span) * bins / (2 * span)).long()
    return idx.clamp(0, bins - 1)


def uv_bin_means(*, bins: int = UV_BINS, span: float = UV_RANGE) -> np.ndarray:
    edges = uv_bin_edges(bins=bins, span=span)
    return ((edges[:-1] + edges[1:]) / 2).astype(np.float32)


def resize_ab(ab: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ab (or any chroma) ``(B, C, h, w)`` to ``size = (H, W)``."""
    if tuple(ab.shape[-2:]) == tuple(size):
        return ab
    return F.interpolate(ab, size=size, mode="bilinear", align_corners=False)


def chroma(ab: torch.Tensor) -> torch.Tensor:
    """Chroma ``sqrt(a² + b²)`` of ab ``(B, 2, H, W)`` -> ``(B, 1, H, W)``."""
    return torch.sqrt((ab**2).sum(dim=1, keepdim=True) + 1e-12)



# ---------------------------------------------------------------------------------------------
# numpy conversions for the inference path (torch-free). Same constants and formulas as the
# torch ops above, in float32 over channel planes, written to reuse buffers: a band of a 12 MP
# photo goes through them with a few passes per step and no full-size temporaries.

_F32 = np.float32
_RGB2XYZ_NP = np.array(_RGB2XYZ, dtype=np.float64)
_XYZ2RGB_NP = np.linalg.inv(_RGB2XYZ_NP)
_XYZ2RGB_F32 = _XYZ2RGB_NP.astype(np.float32)
_WHITE_F32 = np.array(_WHITE, dtype=np.float32)


class Scratch:
    """Reusable buffers for pixel work done band by band: :meth:`get` gives a C-contiguous array
    of the asked shape, a view of one flat buffer per name, grown when a band needs more.

    A band's temporaries made fresh each time cost more than the arithmetic on them: arrays
    over glibc's mmap threshold are new mappings whose pages fault in (recombining 12 MP on one
    loaded core: 995 ms with fresh temporaries, 604 ms with the allocator told to keep them).
    One ``Scratch`` per thread; an array it gives is valid until the next ``get`` of its name.
    """

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        n = int(np.prod(shape))
        buf = self._bufs.get(name)
        if buf is None or buf.size < n or buf.dtype != dtype:
            buf = self._bufs[name] = np.empty(n, dtype=dtype)
        return buf[:n].reshape(shape)


def _select_below(out: np.ndarray, x: np.ndarray, edge: float, low, mask: np.ndarray | None = None) -> None:
    """``out[x <= edge] = low(x)[x <= edge]``; the low branch is rare in photos, so it is only
    computed when present (a full ``np.where`` pass costs more than the branch itself).
    ``mask``: a bool buffer of ``x``'s shape to write the comparison into (band code reuses one)."""
    mask = np.less_equal(x, _F32(edge), out=mask)
    if mask.any():
        np.copyto(out, low(x), where=mask)


def _srgb_to_linear_np(v: np.ndarray) -> np.ndarray:
    out = np.maximum(v, _F32(0.04045))
    out += _F32(0.055)
    out /= _F32(1.055)
    np.power(out, _F32(2.4), out=out)
    _select_below(out, v, 0.04045, lambda x: x / _F32(12.92))
    return out


def _linear_rgb_np(rgb: np.ndarray) -> list[np.ndarray]:
    """sRGB float ``(..., 3)`` -> the three linear RGB planes float32 ``(...)``."""
    return [_srgb_to_linear_np(np.asarray(rgb[..., c], dtype=_F32)) for c in range(3)]


def _xyz_row_np(lin: list[np.ndarray], row: int, scale: float = 1.0) -> np.ndarray:
    """One row of the sRGB -> XYZ matrix applied to the linear planes (times ``scale``)."""
    m = _RGB2XYZ_NP[row] * scale
    out = lin[0] * _F32(m[0])
    out += lin[1] * _F32(m[1])
    out += lin[2] * _F32(m[2])
    return out


def _lab_f_np(t: np.ndarray) -> np.ndarray:
    """CIE Lab's ``f``: cube root above _EPS, the linear segment below (as :func:`rgb_to_lab`)."""
    f = np.cbrt(np.maximum(t, _F32(_EPS)))
    _select_below(f, t, _EPS, lambda x: x * _F32(_KAPPA) + _F32(16 / 116))
    return f


def rgb_to_l_np(rgb: np.ndarray) -> np.ndarray:
    """sRGB float ``(..., 3)`` in [0, 1] -> L float32 ``(...)`` in [0, 100] (as :func:`rgb_to_gray_l`)."""
    f = _lab_f_np(_xyz_row_np(_linear_rgb_np(rgb), 1, 1 / _WHITE[1]))
    f *= _F32(116)
    f -= _F32(16)
    return f


def rgb_to_lab_np(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sRGB float ``(..., 3)`` in [0, 1] -> L float32 ``(...)`` in [0, 100] and a/b float32
    ``(2, ...)`` (as :func:`rgb_to_lab`; the inverse of :func:`lab_to_rgb_np`)."""
    lin = _linear_rgb_np(rgb)
    fx, fy, fz = (_lab_f_np(_xyz_row_np(lin, r, 1 / _WHITE[r])) for r in range(3))
    L = fy * _F32(116) - _F32(16)
    return L, np.stack([(fx - fy) * _F32(500), (fy - fz) * _F32(200)])


def rgb_to_luv_np(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sRGB float ``(..., 3)`` in [0, 1] -> L float32 ``(...)`` in [0, 100] and u/v float32
    ``(2, ...)`` (as :func:`rgb_to_luv`; the inverse of :func:`luv_to_rgb_np`)."""
    lin = _linear_rgb_np(rgb)
    x, y, z = (_xyz_row_np(lin, r) for r in range(3))
    yn = y / _F32(_WHITE[1])
    L = np.cbrt(np.maximum(yn, _F32(_EPS))) * _F32(116) - _F32(16)
    _select_below(L, yn, _EPS, lambda t: t * _F32(_LUV_KAPPA))
    denom = x + y * _F32(15) + z * _F32(3) + _F32(1e-12)
    u0, v0 = _white_uv(None)
    u = L * _F32(13) * (x * _F32(4) / denom - _F32(u0))
    v = L * _F32(13) * (y * _F32(9) / denom - _F32(v0))
    return L, np.stack([u, v])


def _xyz_to_rgb_np(xyz: np.ndarray, out: np.ndarray, scratch: Scratch | None = None) -> np.ndarray:
    """XYZ ``(3, ...)`` float32 (overwritten) -> sRGB into ``out (..., 3)``, clipped to [0, 1]."""
    s = scratch or Scratch()
    lin = _xyz_to_linear_np(xyz, s.get("lin", xyz.shape))
    _linear_to_srgb_planes(lin, xyz, np.moveaxis(out, -1, 0), s.get("mask", xyz.shape, bool))
    return out


def _xyz_to_linear_np(xyz: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """XYZ ``(3, ...)`` -> linear RGB ``(3, ...)`` (unclipped), one matrix product."""
    out = np.empty(xyz.shape, dtype=_F32) if out is None else out
    np.matmul(_XYZ2RGB_F32, xyz.reshape(3, -1), out=out.reshape(3, -1))
    return out


def _linear_to_srgb_planes(lin: np.ndarray, work: np.ndarray, out: np.ndarray, low: np.ndarray) -> None:
    """Gamma-encode linear RGB ``(3, ...)`` into ``out`` (any strides), clipped to [0, 1].
    ``lin``, ``work`` (float32) and ``low`` (bool), all of ``lin``'s shape, are overwritten."""
    np.maximum(lin, _F32(0.0031308), out=work)
    np.power(work, _F32(1 / 2.4), out=work)
    work *= _F32(1.055)
    work -= _F32(0.055)
    _select_below(work, lin, 0.0031308, lambda x: np.multiply(x, _F32(12.92), out=x), mask=low)
    np.clip(work, _F32(0), _F32(1), out=out)


def _lab_to_xyz_np(L: np.ndarray, ab: np.ndarray, scratch: Scratch | None = None) -> np.ndarray:
    """L ``(...)`` and a/b ``(2, ...)`` -> XYZ ``(3, ...)`` float32 (negative z clipped, as
    scikit-image does); in ``scratch``'s buffers when given."""
    L = np.asarray(L, dtype=_F32)
    s = scratch or Scratch()
    shape = (3, *L.shape)
    f = s.get("f", shape)
    fy = f[1]
    np.add(L, _F32(16), out=fy)
    fy *= _F32(1 / 116)
    np.multiply(ab[0], _F32(1 / 500), out=f[0])
    f[0] += fy
    np.multiply(ab[1], _F32(-1 / 200), out=f[2])
    f[2] += fy
    np.maximum(f[2], _F32(0), out=f[2])
    xyz = s.get("xyz", shape)
    np.multiply(f, f, out=xyz)
    xyz *= f

    def linear_segment(_: np.ndarray) -> np.ndarray:  # below _EPS: (f - 16/116) / kappa, in f
        np.subtract(f, _F32(16 / 116), out=f)
        return np.multiply(f, _F32(1 / _KAPPA), out=f)

    _select_below(xyz, xyz, _EPS, linear_segment, mask=s.get("mask", shape, bool))
    xyz *= _WHITE_F32.reshape(3, *[1] * L.ndim)
    return xyz


def _luv_to_xyz_np(L: np.ndarray, uv: np.ndarray) -> np.ndarray:
    L = np.asarray(L, dtype=_F32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        y = ((L + _F32(16)) / _F32(116)) ** 3
        _select_below(y, L, 7.999625, lambda x: x / _F32(_LUV_KAPPA))
        y *= _F32(_WHITE[1])
        u0, v0 = _white_uv(None)
        d = L * _F32(13) + _F32(1e-12)
        a = uv[0] / d + _F32(u0)
        b = uv[1] / d + _F32(v0)
        b[np.abs(b) < 1e-12] = _F32(1e-12)
        c = y * (b * _F32(15) - _F32(9))
        z = ((a - _F32(4)) * c - a * b * y * _F32(15)) / (b * _F32(12))
        x = -(c / b + z * _F32(3))
        black = L <= 0  # no chroma at L = 0: avoid the 0/0 above turning into NaN
        if black.any():
            for p in (x, y, z):
                p[black] = 0
    return np.stack([x, y, z])


def lab_to_rgb_np(L: np.ndarray, ab: np.ndarray, out: np.ndarray | None = None, *,
                  scratch: Scratch | None = None) -> np.ndarray:
    """L ``(h, w)`` and a/b ``(2, h, w)`` float32 -> sRGB ``(h, w, 3)`` float32 in [0, 1]
    (as :func:`lab_to_rgb`; written into ``out`` when given; temporaries in ``scratch``)."""
    out = np.empty((*np.shape(L), 3), dtype=_F32) if out is None else out
    return _xyz_to_rgb_np(_lab_to_xyz_np(L, ab, scratch), out, scratch)


def luv_to_rgb_np(L: np.ndarray, uv: np.ndarray, out: np.ndarray | None = None, *,
                  scratch: Scratch | None = None) -> np.ndarray:
    """L ``(h, w)`` and u/v ``(2, h, w)`` float32 -> sRGB ``(h, w, 3)`` float32 in [0, 1]
    (as :func:`luv_to_rgb`; written into ``out`` when given; temporaries in ``scratch``)."""
    out = np.empty((*np.shape(L), 3), dtype=_F32) if out is None else out
    with np.errstate(invalid="ignore", over="ignore"):
        return _xyz_to_rgb_np(_luv_to_xyz_np(L, uv), out, scratch)


def in_gamut_np(L: np.ndarray, chroma: np.ndarray, *, space: str = "lab", tol: float = 1e-3) -> np.ndarray:
    """L ``(...)`` and chroma ``(2, ...)`` (a/b for ``space="lab"``, u/v for "luv") -> bool
    ``(...)``: True where the colour is inside the sRGB cube (linear RGB within
    ``[-tol, 1 + tol]``), i.e. where :func:`lab_to_rgb_np` / :func:`luv_to_rgb_np` would not
    clip it. A negative ``tol`` asks for a margin inside the cube."""
    chroma = np.asarray(chroma, dtype=_F32)
    xyz = _lab_to_xyz_np(L, chroma) if space == "lab" else _luv_to_xyz_np(L, chroma)
    with np.errstate(invalid="ignore"):
        lin = _xyz_to_linear_np(xyz)
        return ((lin >= _F32(-tol)) & (lin <= _F32(1 + tol))).all(axis=0)


def in_gamut(x, *, space: str = "lab", tol: float = 1e-3) -> np.ndarray:
    """Lab (``space="lab"``) or CIELUV ``(B, 3, H, W)`` (a numpy array or a CPU tensor) ->
    numpy bool ``(B, 1, H, W)``: :func:`in_gamut_np` over channel-first images."""
    x = np.asarray(x, dtype=_F32)
    return in_gamut_np(x[:, 0], np.moveaxis(x[:, 1:], 1, 0), space=space, tol=tol)[:, None]


def gray_l_levels(levels: np.ndarray) -> np.ndarray:
    """L of neutral sRGB ``levels`` (1-D float32), for the gray-photo lookup table."""
    return rgb_to_l_np(np.repeat(np.asarray(levels, dtype=_F32)[:, None], 3, axis=1))

__all__ = [
    "AB_GRID",
    "AB_NORM",
    "AB_RANGE",
    "L_CENT",
    "L_NORM",
    "UV_BINS",
    "UV_RANGE",
    "ab_to_bin_index",
    "annealed_mean",
    "neutral_gated_mean",
    "chroma",
    "gamut_bins",
    "gray_l_levels",
    "gray_lab_to_rgb",
    "hsv_saturation",
    "in_gamut",
    "in_gamut_np",
    "lab_to_rgb",
    "lab_to_rgb_np",
    "luv_to_rgb",
    "luv_to_rgb_np",
    "rebalance_weights",
    "resize_ab",
    "rgb_to_gray_l",
    "rgb_to_l_np",
    "rgb_to_lab",
    "rgb_to_lab_np",
    "rgb_to_luv",
    "rgb_to_luv_np",
    "Scratch",
    "smooth_prior",
    "soft_encode",
    "soft_encode_sparse",
    "uv_bin_edges",
    "uv_bin_means",
    "uv_to_bin_index",
]

