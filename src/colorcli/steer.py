"""Steering the colour: saturation, a reference photo, and point hints.

Numpy functions that sit around the network, so every backend and every front end share them:

- **Reference photo.** :class:`Reference` keeps a small chroma sample of another photo. For the
  bin models its smoothed ab histogram becomes a log-prior added to the bin logits before the
  annealed mean (:meth:`Reference.log_prior`: a product of the network's distribution and the
  reference's, ``p(q) * r(q)^strength``). For every other model (regression, the UV bins, the
  onnx graphs that decode inside) the fallback moves the predicted chroma's per-channel mean
  and spread to the reference's (:func:`transfer_stats`, Reinhard et al. 2001 in ab).
- **Point hints.** ``X,Y=#RRGGBB`` (:func:`parse_hint`). A hint's colour spreads from its point
  over the network view by an edge-aware geodesic distance (steps cost more where L changes:
  colour flows along regions of even lightness and stops at edges) and replaces the predicted
  chroma with a weight that falls with that distance (:func:`spread_hints`). The guided filter
  of :mod:`colorcli.inference.render` then puts the colour edges on the full-resolution photo's edges.
  Only chroma changes: a hint never touches L.
- **Saturation.** Chroma times ``s`` (:func:`saturate`); 1 changes nothing (the very same
  arrays), 0 gives gray, more than 1 is lowered where needed to stay in the sRGB gamut. The
  gamut fit runs at network resolution, not on the full-size photo.

Colour conversions go through the numpy (``*_np``) conversions of :mod:`colorcli.color` (the
one module that owns colour) on small arrays only: the hint colours, a thumbnail of the
reference, the network-size view. Nothing here needs torch: steering works on the light install
(onnxruntime backend) as on the torch one.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.sparse.csgraph import dijkstra

from colorcli import color
from colorcli.errors import ColorcliError, SteeringError

MAX_HINTS = 32  # per photo: each one costs a shortest-path search over the network view
MAX_HINTS_FILE = 1 << 20  # bytes of a --hints JSON file
REFERENCE_SAMPLES = 1 << 16  # reference pixels kept for its statistics (a strided thumbnail)
DEFAULT_REFERENCE_STRENGTH = 1.0

# Hint spreading over the network view (short side ~160 px). A step between 4-neighbours costs
# 1 + EDGE_COST * max(0, |dL| - GRAIN) (dL in L units): grain and gentle gradients are free, an
# edge of 10 L units costs 65 plain steps, one of 20 L units 145. A hint's weight is
# exp(-(d / (SPREAD * short side))^2): 0.85 at 0.2 of the short side on an even region, about
# 0.5 across an edge of 10 L units, 0.04 across one of 20; cut off at 3 spreads.
EDGE_COST = 8.0
GRAIN = 2.0
SPREAD = 0.5
GEODESIC_SIDE = 80
LEVELS = 401  # L values at which a hint colour's gamut limit is found (steps of 0.25)

# Reference histogram: ab (or uv) on a grid of HIST_STEP units over +-HIST_RANGE, smoothed with a
# Gaussian of HIST_SIGMA units (the bin models quantise ab on a grid of 10), floored so that no
# bin gets log(0).
HIST_STEP = 2.0
HIST_RANGE = 128.0
HIST_SIGMA = 5.0
PRIOR_FLOOR = 1e-3

# The fallback transfer never scales spread by more than this (a gray prediction has ~0 spread).
MAX_SPREAD_RATIO = 4.0
GAMUT_STEPS = 7
GAMUT_MARGIN = 0.01  # linear RGB kept within [0.01, 0.99] by the fits  # bisection steps of the saturation gamut fit: chroma within 1 % of the boundary

_HINT = re.compile(r"^\s*([^,=\s]+)\s*,\s*([^,=\s]+)\s*=\s*(\S+)\s*$")
_COLOUR = re.compile(r"^#?([0-9a-fA-F]{6})$")


# ---------------------------------------------------------------------------------------------
# hints


@dataclass(frozen=True)
class Hint:
    """One colour hint: a point of the photo (pixels, or fractions of width and height when
    ``fractional``) and an sRGB colour in [0, 1]; ``text`` is how the user wrote it."""

    x: float
    y: float
    rgb: tuple[float, float, float]
    fractional: bool
    text: str


@dataclass(frozen=True)
class PlacedHint:
    """A hint on a particular photo: its point as fractions ``(fx, fy)`` of the width and
    height, pixel-centre based (0.5 / W is the first column's centre)."""

    fx: float
    fy: float
    rgb: tuple[float, float, float]
    text: str


def parse_colour(text: str, *, what: str) -> tuple[float, float, float]:
    m = _COLOUR.match(text.strip())
    if not m:
        raise SteeringError(f"{what}: colour {text!r} is not #RRGGBB (six hex digits)")
    v = int(m.group(1), 16)
    return ((v >> 16) / 255.0, ((v >> 8) & 255) / 255.0, (v & 255) / 255.0)


def _coordinate(text: str, what: str) -> tuple[float, bool]:
    """A pixel (an integer) or a fraction (a number with a decimal point, within [0, 1])."""
    try:
        value = float(text)
    except ValueError:
        raise SteeringError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise SteeringError(f"{what}: {text!r} is not a finite number")
    if "." in text or "e" in text.lower():
        if not 0.0 <= value <= 1.0:
            raise SteeringError(f"{what}: fraction {text} is outside [0, 1] (pixels are whole numbers)")
        return value, True
    return value, False


def parse_hint(text: str) -> Hint:
    """``"X,Y=#RRGGBB"`` -> :class:`Hint`. X and Y are pixels of the original photo (whole
    numbers, 0 = left / top) or both fractions of its width and height (``0.4,0.7``)."""
    what = f"hint {text!r}"
    m = _HINT.match(text)
    if not m:
        raise SteeringError(f"{what}: expected X,Y=#RRGGBB, e.g. 120,80=#a03020 or 0.4,0.7=#3060c0")
    x, fx = _coordinate(m.group(1), what)
    y, fy = _coordinate(m.group(2), what)
    if fx != fy:
        raise SteeringError(f"{what}: give X and Y both as pixels (120,80) or both as fractions (0.4,0.7)")
    return Hint(x, y, parse_colour(m.group(3), what=what), fx, text.strip())


def check_count(hints: list, what: str = "a photo") -> None:
    if len(hints) > MAX_HINTS:
        raise SteeringError(f"{what}: {len(hints)} hints; at most {MAX_HINTS} per photo")


def load_hints(path: Path) -> dict[str, list[Hint]]:
    """A hints file: a JSON object mapping a photo's file name (or its stem) to a list of hints,
    each ``"X,Y=#RRGGBB"`` or ``{"x": X, "y": Y, "color": "#RRGGBB"}``."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_HINTS_FILE + 1)
    except OSError as exc:
        raise SteeringError(f"{path}: cannot read the hints file ({exc.strerror or exc})") from None
    if len(data) > MAX_HINTS_FILE:
        raise SteeringError(f"{path}: hints file larger than {MAX_HINTS_FILE >> 20} MiB")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SteeringError(f"{path}: not a JSON hints file ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise SteeringError(f'{path}: expected a JSON object {{"photo.jpg": ["X,Y=#RRGGBB", ...]}}')
    out: dict[str, list[Hint]] = {}
    for name, items in doc.items():
        if not isinstance(items, list):
            raise SteeringError(f"{path}: {name!r}: expected a list of hints")
        hints = []
        for item in items:
            if isinstance(item, dict) and set(item) == {"x", "y", "color"}:
                item = f"{item['x']},{item['y']}={item['color']}"
            if not isinstance(item, str):
                raise SteeringError(f'{path}: {name!r}: a hint is "X,Y=#RRGGBB" or {{"x", "y", "color"}}, got {item!r}')
            try:
                hints.append(parse_hint(item))
            except SteeringError as exc:
                raise SteeringError(f"{path}: {name!r}: {exc}") from None
        check_count(hints, f"{path}: {name!r}")
        out[name] = hints
    return out


def hints_for(table: dict[str, list[Hint]], source: Path) -> list[Hint]:
    """The hints of a hints file for photo ``source``: by file name, else by stem."""
    source = Path(source)
    return list(table.get(source.name, table.get(source.stem, [])))


def place_hints(hints: list[Hint], width: int, height: int) -> list[PlacedHint]:
    """Check each hint against a ``width`` x ``height`` photo and place it; a hint outside the
    photo is a :class:`SteeringError` naming it."""
    check_count(hints)
    placed = []
    for h in hints:
        if h.fractional:
            px, py = h.x * (width - 1), h.y * (height - 1)
        else:
            px, py = h.x, h.y
            if not (0 <= px < width and 0 <= py < height):
                raise SteeringError(
                    f"hint {h.text!r} is outside the photo ({width}x{height} pixels: x 0..{width - 1}, "
                    f"y 0..{height - 1}; or use fractions such as 0.4,0.7)"
                )
        placed.append(PlacedHint((px + 0.5) / width, (py + 0.5) / height, h.rgb, h.text))
    return placed


def _chroma_of(rgb: np.ndarray, space: str) -> np.ndarray:
    """sRGB ``(..., 3)`` in [0, 1] -> its chroma ``(2, ...)`` float32 in ``space``."""
    to = color.rgb_to_lab_np if space == "lab" else color.rgb_to_luv_np
    return to(rgb)[1]


def hint_chroma(placed: list[PlacedHint], space: str) -> np.ndarray:
    """The chroma ``(K, 2)`` (a/b, or u/v for ``space="luv"``) of each hint's colour."""
    return np.ascontiguousarray(_chroma_of(np.array([p.rgb for p in placed], dtype=np.float32), space).T)


def _grid_graph(L: np.ndarray) -> sparse.csr_matrix:
    """4-neighbour graph of an ``(h, w)`` L plane, step cost ``1 + EDGE_COST * max(0, |dL| - GRAIN)``."""
    h, w = L.shape
    idx = np.arange(h * w).reshape(h, w)
    Lf = L.astype(np.float64)
    right = 1.0 + EDGE_COST * np.maximum(np.abs(Lf[:, 1:] - Lf[:, :-1]) - GRAIN, 0.0)
    down = 1.0 + EDGE_COST * np.maximum(np.abs(Lf[1:, :] - Lf[:-1, :]) - GRAIN, 0.0)
    rows = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    cols = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    return sparse.csr_matrix((np.concatenate([right.ravel(), down.ravel()]), (rows, cols)), shape=(h * w, h * w))


def hint_weights(L: np.ndarray, placed: list[PlacedHint]) -> np.ndarray:
    """Each hint's weight ``(K, h, w)`` in [0, 1] over the L plane ``(h, w)``: 1 at its point,
    falling with the edge-aware geodesic distance from it.

    The shortest paths run on L averaged in blocks to a short side of about GEODESIC_SIDE
    (4x fewer nodes at the default 160: 2 hints take ~10 ms instead of ~45 ms); the weights are
    upsampled back, and the refinement puts the colour edges on the photo's own edges."""
    h, w = L.shape
    f = max(1, min(h, w) // GEODESIC_SIDE)
    gh, gw = h // f, w // f
    G = L[: gh * f, : gw * f].reshape(gh, f, gw, f).mean(axis=(1, 3))
    sigma = SPREAD * min(gh, gw)
    src = [min(gh - 1, int(p.fy * gh)) * gw + min(gw - 1, int(p.fx * gw)) for p in placed]
    d = dijkstra(_grid_graph(G), directed=False, indices=src, limit=3 * sigma)
    wts = np.exp(-((d / sigma) ** 2)).astype(np.float32).reshape(len(placed), gh, gw)  # inf -> 0
    if (gh, gw) == (h, w):
        return wts
    from colorcli.inference.render import upsample_band

    return upsample_band(wts, h, w, 0, h)


def _gamut_by_level(targets: np.ndarray, *, space: str) -> tuple[np.ndarray, np.ndarray]:
    """For constant chromas ``(K, 2)``: the L levels ``(LEVELS,)`` and, per chroma, the factor
    in [0, 1] that keeps it in gamut at each level ``(K, LEVELS)`` (the limit depends on L
    alone, so one small bisection serves every pixel)."""
    levels = np.linspace(0.0, 100.0, LEVELS, dtype=np.float32)
    k = len(targets)
    plane = np.broadcast_to(np.asarray(targets, dtype=np.float32).T[:, :, None], (2, k, LEVELS))
    fit = gamut_factor(np.broadcast_to(levels, (k, LEVELS)), plane, 0.0, 1.0, space=space)
    return levels, fit


def spread_hints(chroma: np.ndarray, L: np.ndarray, placed: list[PlacedHint], *, space: str) -> np.ndarray:
    """Chroma ``(2, h', w')`` and the network view's L ``(h, w)`` in [0, 100] -> chroma
    ``(2, h, w)`` pulled toward each hint's colour by its :func:`hint_weights` (overlapping
    hints share: their weights are normalised where they sum past 1)."""
    from colorcli.inference.render import upsample_band  # the align_corners=False bilinear mapping

    h, w = L.shape
    c = upsample_band(np.asarray(chroma, dtype=np.float32), h, w, 0, h)
    if not placed:
        return c
    wts = hint_weights(L, placed)
    target = hint_chroma(placed, space)
    total = wts.sum(axis=0)
    norm = np.maximum(total, 1.0)
    out = c * (1.0 - total / norm)
    # Each hint's hue at each pixel's own L, its chroma lowered where that leaves the gamut: the
    # photo's lightness stays, and the clip at recombination never has to move it.
    levels, fits = _gamut_by_level(target, space=space)
    Lc = np.clip(L, 0.0, 100.0)
    for k in range(len(placed)):
        fit = np.interp(Lc, levels, fits[k]).astype(np.float32)
        out += (wts[k] * fit / norm)[None] * target[k][:, None, None]
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# reference photo


@dataclass(eq=False)
class Reference:
    """Another photo whose colours steer the result. Holds a strided thumbnail of it (at most
    :data:`REFERENCE_SAMPLES` pixels) and, per chroma space, its statistics, computed once."""

    rgb: np.ndarray  # (h, w, 3) float32 sRGB in [0, 1], the thumbnail
    name: str = "reference"
    _stats: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_rgb(cls, rgb: np.ndarray, *, name: str = "reference") -> Reference:
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
            raise SteeringError(f"{name}: a reference must be an RGB image (H, W, 3), got {rgb.shape}")
        step = max(1, math.ceil(math.sqrt(rgb.shape[0] * rgb.shape[1] / REFERENCE_SAMPLES)))
        return cls(np.ascontiguousarray(rgb[::step, ::step], dtype=np.float32), name)

    @classmethod
    def from_file(cls, path: Path) -> Reference:
        from colorcli.imageio import read_photo  # raises ImageReadError naming the file

        return cls.from_rgb(read_photo(Path(path)).rgb, name=str(path))

    def chroma(self, space: str) -> np.ndarray:
        """The thumbnail's chroma ``(N, 2)`` in ``space`` ("lab": a/b, "luv": u/v)."""
        if ("chroma", space) not in self._stats:
            self._stats[("chroma", space)] = np.ascontiguousarray(_chroma_of(self.rgb, space).reshape(2, -1).T)
        return self._stats[("chroma", space)]

    def mean_std(self, space: str) -> tuple[np.ndarray, np.ndarray]:
        c = self.chroma(space)
        return c.mean(axis=0), c.std(axis=0)

    def histogram(self, space: str) -> np.ndarray:
        """Smoothed, normalised histogram over the ``(n, n)`` grid of HIST_STEP units."""
        if ("hist", space) not in self._stats:
            c = self.chroma(space)
            n = int(2 * HIST_RANGE / HIST_STEP)
            edges = np.linspace(-HIST_RANGE, HIST_RANGE, n + 1)
            hist, _, _ = np.histogram2d(c[:, 0], c[:, 1], bins=(edges, edges))
            hist = gaussian_filter(hist, HIST_SIGMA / HIST_STEP, mode="constant")
            self._stats[("hist", space)] = hist / max(hist.sum(), 1e-12)
        return self._stats[("hist", space)]

    def log_prior(self, centres: np.ndarray) -> np.ndarray:
        """log of the reference's distribution over the bin ``centres (Q, 2)`` (ab), float32
        ``(Q,)``: its smoothed histogram read at each centre, normalised, with a floor of
        :data:`PRIOR_FLOOR` / Q so that no colour becomes impossible."""
        key = ("prior", np.asarray(centres, dtype=np.float32).tobytes())
        if key not in self._stats:
            hist = self.histogram("lab")
            pos = (np.asarray(centres, dtype=np.float64).T + HIST_RANGE) / HIST_STEP - 0.5
            p = np.maximum(map_coordinates(hist, pos, order=1, mode="constant"), 0.0)
            q = len(centres)
            p = p / max(p.sum(), 1e-12)
            p = (1 - PRIOR_FLOOR) * p + PRIOR_FLOOR / q
            self._stats[key] = np.log(p).astype(np.float32)
        return self._stats[key]


def transfer_stats(chroma: np.ndarray, reference: Reference, *, space: str, strength: float) -> np.ndarray:
    """The fallback for models without bins: chroma ``(2, h, w)`` with each channel's mean and
    spread moved to the reference's; ``strength`` 0 leaves it, 1 (and above) transfers fully."""
    c = np.asarray(chroma, dtype=np.float32)
    t = min(max(float(strength), 0.0), 1.0)
    if t == 0:
        return c
    mu_r, sd_r = reference.mean_std(space)
    flat = c.reshape(2, -1)
    mu_p, sd_p = flat.mean(axis=1), flat.std(axis=1)
    ratio = np.clip(sd_r / np.maximum(sd_p, 1e-6), 0.0, MAX_SPREAD_RATIO)
    moved = (c - mu_p[:, None, None]) * ratio[:, None, None] + mu_r[:, None, None]
    return (c + t * (moved - c)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# saturation


def check_saturation(saturation: float) -> float:
    s = float(saturation)
    if not (math.isfinite(s) and 0.0 <= s <= 10.0):
        raise SteeringError(f"saturation must be between 0 and 10, got {saturation}")
    return s


def check_strength(strength: float) -> float:
    s = float(strength)
    if not (math.isfinite(s) and 0.0 <= s <= 10.0):
        raise SteeringError(f"reference strength must be between 0 and 10, got {strength}")
    return s


def _resize_plane(L: np.ndarray, h: int, w: int) -> np.ndarray:
    if L.shape == (h, w):
        return L
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(L, dtype=np.float32))
    return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def gamut_factor(L: np.ndarray, chroma: np.ndarray, lo: float, hi: float, *, space: str) -> np.ndarray:
    """Per pixel, the largest ``k`` in [lo, hi] with ``(L, k * chroma)`` inside the sRGB gamut
    (``lo`` where even that is outside), by bisection; L ``(h, w)``, chroma ``(2, h, w)`` ->
    ``(h, w)`` float32."""
    L = np.asarray(L, dtype=np.float32)
    chroma = np.asarray(chroma, dtype=np.float32)
    k = np.full(L.shape, hi, dtype=np.float32)
    good = color.in_gamut_np(L, chroma * k, space=space, tol=-GAMUT_MARGIN)
    if good.all():
        return k
    # Bisection only where ``hi`` leaves the gamut: usually a small part of the photo.
    sel = ~good
    Ls, cs = L[sel], chroma[:, sel]
    a, b = np.full(Ls.shape, lo, dtype=np.float32), np.full(Ls.shape, hi, dtype=np.float32)
    for _ in range(GAMUT_STEPS):
        mid = (a + b) / np.float32(2)
        m = color.in_gamut_np(Ls, cs * mid, space=space, tol=-GAMUT_MARGIN)
        a = np.where(m, mid, a)
        b = np.where(m, b, mid)
    k[sel] = a
    return k


def saturate(x: np.ndarray, L: np.ndarray, saturation: float, *, space: str) -> np.ndarray:
    """Scale chroma ``(2, h', w')`` or guided-filter coefficients ``(4, h, w)`` (chroma =
    A * L/100 + B, linear in both) by ``saturation``, per pixel no further than the sRGB gamut
    allows at the network view's L ``(h, w)`` in [0, 100] (with a margin of GAMUT_MARGIN, as the
    full-resolution L varies within a network pixel). So the photo's L survives recombination
    where a plain clip would move it. ``colorcli`` calls this only when the saturation is not 1
    or when a hint or reference changed the chroma: the default output is the network's own."""
    from colorcli.inference.render import apply_coefficients

    s = check_saturation(saturation)
    Lg = _resize_plane(L, *x.shape[-2:])
    chroma = apply_coefficients(x, Lg) if x.shape[0] == 4 else x
    k = gamut_factor(Lg, chroma, 0.0, s, space=space)
    return (x * k[None]).astype(np.float32)


def as_hints(items) -> list[Hint]:
    """Hints for the library call: :class:`Hint` objects or ``"X,Y=#RRGGBB"`` strings."""
    if items is None:
        return []
    if isinstance(items, (str, Hint)):
        items = [items]
    hints = [h if isinstance(h, Hint) else parse_hint(h) for h in items]
    check_count(hints)
    return hints


def as_reference(ref) -> Reference | None:
    """A reference for the library call: a :class:`Reference`, an sRGB array ``(H, W, 3)`` in
    [0, 1], or a path to a photo; None for none."""
    if ref is None or isinstance(ref, Reference):
        return ref
    if isinstance(ref, (str, Path)):
        return Reference.from_file(Path(ref))
    return Reference.from_rgb(ref)


# ---------------------------------------------------------------------------------------------
# a batch: the same hints and reference for every photo, or per photo


class BatchSteering:
    """What steers each photo of a batch: hints given for all (``--hint``), hints from a file
    by photo name (``--hints``), and one reference photo for all, or a folder of references
    paired with the photos by file stem (``--reference``).

    Everything that can be checked before the batch starts is checked here (a malformed hint,
    an unreadable hints file or reference, two references with one stem), raising
    :class:`SteeringError`; a photo with no reference in the folder fails alone, in
    :meth:`for_photo`."""

    def __init__(self, *, hints: list[str] | None = None, hints_file: Path | None = None,
                 reference: Path | None = None) -> None:
        self.hints = as_hints(hints)
        self.table = load_hints(hints_file) if hints_file is not None else {}
        self.reference: Reference | None = None
        self.folder: dict[str, Path] | None = None
        if reference is not None:
            reference = Path(reference)
            if reference.is_dir():
                self.folder = _references_by_stem(reference)
            else:
                self.reference = Reference.from_file(reference)
        self._folder_path = reference

    def __bool__(self) -> bool:
        return bool(self.hints or self.table or self.reference is not None or self.folder is not None)

    def for_photo(self, source: Path) -> dict:
        """Keyword arguments of ``colorize_rgb`` for photo ``source``."""
        hints = self.hints + hints_for(self.table, source)
        check_count(hints)
        ref = self.reference
        if self.folder is not None:
            path = self.folder.get(Path(source).stem)
            if path is None:
                raise SteeringError(f"no reference named {Path(source).stem}.* in {self._folder_path}")
            try:
                ref = Reference.from_file(path)
            except ColorcliError as exc:
                raise SteeringError(f"reference {exc}") from None
        return {"hints": hints or None, "reference": ref}


def _references_by_stem(folder: Path) -> dict[str, Path]:
    from colorcli.imageio import IMAGE_SUFFIXES

    try:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    except OSError as exc:
        raise SteeringError(f"{folder}: cannot list the reference folder ({exc.strerror or exc})") from None
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise SteeringError(f"{folder}: two references for {p.stem!r} ({out[p.stem].name}, {p.name})")
        out[p.stem] = p
    if not out:
        raise SteeringError(f"{folder}: no reference photos in the folder")
    return out


__all__ = [
    "BatchSteering", "DEFAULT_REFERENCE_STRENGTH", "Hint", "as_hints", "as_reference", "MAX_HINTS", "PlacedHint", "Reference", "check_saturation",
    "check_strength", "gamut_factor", "hint_chroma", "hint_weights", "hints_for", "load_hints",
    "parse_colour", "parse_hint", "place_hints", "saturate", "spread_hints", "transfer_stats",
]
