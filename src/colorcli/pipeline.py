"""The one inference path: L -> network size -> model -> chroma -> full size -> with original L.

Used by ``colorize``, ``eval``, training's validation, the ONNX parity check and the tests.
The network sees L resized (aspect kept, short side = ``size``, both sides multiples of 32); its
chroma is upsampled bilinearly to the photo's exact size and recombined with the ORIGINAL
full-resolution L, so output keeps every pixel of the input's detail.

Two steps on by default, each with an off switch: ``tta`` averages the chroma of the view and of
its mirror image (one batch of two), and ``refine`` turns the chroma into guided-filter
coefficients applied to the full-resolution L (:mod:`colorcli.refine`), so colour follows the
photo's edges instead of bleeding across them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from colorcli import color, refine, steer
from colorcli.errors import ColorcliError
from colorcli.models import ColorModel
from colorcli.sizing import MAX_ASPECT, MULTIPLE, network_size

# Full-resolution colour conversion runs in bands of this many pixels to bound peak memory.
# 1 << 18: a band's float planes (1 MB each) stay in cache across the conversion's many
# elementwise steps, 1.3-1.8x faster than 1 << 21 on a 2-core CPU.
BAND_PIXELS = 1 << 18

# A backend maps L (B, 1, h, w) in [0, 100] at network size to chroma (B, 2, h', w').
Backend = Callable[[torch.Tensor], torch.Tensor]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: cuda, then mps (Apple Silicon), then cpu; an asked-for device that is not
    there is a one-line error."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ColorcliError("--device cuda was asked for but no CUDA GPU is available")
    if device == "mps" and not _mps_available():
        raise ColorcliError("--device mps was asked for but this torch has no usable MPS (Apple Silicon) backend")
    if device not in ("cpu", "cuda", "mps"):
        raise ColorcliError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
    return torch.device(device)




def rgb_to_l(rgb: np.ndarray) -> np.ndarray:
    """sRGB float ``(H, W, 3)`` -> L float32 ``(H, W)`` in [0, 100], in memory-bounded bands."""
    from colorcli.onnx_runtime import gray_codes

    gray = gray_codes(rgb)
    if gray is not None:
        # A gray 8/16-bit photo has at most 65536 levels: convert those and index, which gives
        # the per-pixel values (to the last float32 ulp) 10x+ faster at 12 MP.
        codes, levels = gray
        lut = color.rgb_to_gray_l(torch.from_numpy(levels).view(1, 1, 1, -1).expand(1, 3, 1, -1))
        return lut.reshape(-1).numpy()[codes]
    h, w, _ = rgb.shape
    out = np.empty((h, w), dtype=np.float32)
    for r0, r1 in _bands(h, w):
        t = torch.from_numpy(np.ascontiguousarray(rgb[r0:r1])).permute(2, 0, 1)
        out[r0:r1] = color.rgb_to_lab(t.float())[0].numpy()
    return out


def recombine(L: np.ndarray, chroma: torch.Tensor, *, space: str = "lab") -> np.ndarray:
    """Original L ``(H, W)`` + chroma ``(1, 2, h, w)`` (any h, w) -> sRGB float ``(H, W, 3)``.

    ``chroma`` may instead hold the ``(1, 4, h, w)`` coefficients of
    :func:`colorcli.refine.guided_coefficients`: they are upsampled the same way and applied to
    the full-resolution L.

    The chroma is upsampled bilinearly band by band, so a 12 MP photo never holds more than a
    few full-size float planes.
    """
    h, w = L.shape
    to_rgb = color.lab_to_rgb if space == "lab" else color.luv_to_rgb
    chroma = chroma.float().cpu()
    refine.check_channels(chroma.shape)
    ch, cw = chroma.shape[-2:]
    out = np.empty((h, w, 3), dtype=np.float32)
    sy = ch / h
    for r0, r1 in _bands(h, w):
        # Source rows needed for output rows r0..r1 (align_corners=False mapping), with margin.
        s0 = max(0, int(math.floor((r0 + 0.5) * sy - 0.5)) - 1)
        s1 = min(ch, int(math.ceil((r1 - 0.5) * sy - 0.5)) + 2)
        part = chroma[..., s0:s1, :]
        # Interpolate the full height mapping, then take our rows: exact same sampling as one
        # full-size call, computed only for this band.
        up = _band_interpolate(part, s0, ch, h, w, r0, r1)
        Lt = torch.from_numpy(np.ascontiguousarray(L[r0:r1]))[None, None]
        lab = torch.cat([Lt, refine.as_chroma(up, Lt)], dim=1)
        out[r0:r1] = to_rgb(lab)[0].permute(1, 2, 0).numpy()
    return out


def _band_interpolate(
    part: torch.Tensor, s0: int, src_h: int, dst_h: int, dst_w: int, r0: int, r1: int
) -> torch.Tensor:
    """Bilinear (align_corners=False) upsampling of rows r0..r1 of a (src_h -> dst_h) resize."""
    scale = src_h / dst_h
    ys = (torch.arange(r0, r1, dtype=torch.float32) + 0.5) * scale - 0.5
    ys = ys.clamp(min=0)
    y0 = ys.floor().long().clamp(max=src_h - 1)
    y1 = (y0 + 1).clamp(max=src_h - 1)
    wy = (ys - y0.float()).view(1, 1, -1, 1)
    rows = F.interpolate(part, size=(part.shape[-2], dst_w), mode="bilinear", align_corners=False)
    a = rows[..., y0 - s0, :]
    b = rows[..., y1 - s0, :]
    return a * (1 - wy) + b * wy


def _bands(h: int, w: int) -> list[tuple[int, int]]:
    step = max(1, BAND_PIXELS // max(w, 1))
    return [(r, min(h, r + step)) for r in range(0, h, step)]


class Colorizer:
    """A model (or any backend) plus the settings to colorize photos with it."""

    def __init__(
        self,
        model: ColorModel | None = None,
        *,
        device: str | torch.device = "cpu",
        size: int | None = None,
        temperature: float | None = None,
        backend: Backend | None = None,
        chroma_space: str | None = None,
        default_size: int | None = None,
        tta: bool = True,
        refine: bool = True,
        saturation: float = 1.0,
        reference_strength: float = steer.DEFAULT_REFERENCE_STRENGTH,
    ) -> None:
        if model is None and backend is None:
            raise ValueError("need a model or a backend")
        self.model = model
        self.device = torch.device(device) if isinstance(device, str) else device
        self.temperature = temperature
        self.tta = tta
        self.refine = refine
        self.saturation = steer.check_saturation(saturation)
        self.reference_strength = steer.check_strength(reference_strength)
        # Steering hook: bin models take a reference as a prior on their bin logits (see
        # ``_predict``); every other model and backend gets the mean/spread transfer.
        self._bin_centres: torch.Tensor | None = None
        if model is not None:
            model.to(self.device).eval()
            self.chroma_space = model.chroma_space
            self.default_size = model.config.default_size
            info = model.decode_info()
            if info.get("kind") == "annealed_mean":
                self._bin_centres = torch.tensor(info["centres"], dtype=torch.float32)
        else:
            self.chroma_space = chroma_space or "lab"
            self.default_size = default_size or 224
        self.size = size if size is not None else self.default_size
        self._backend = backend
        network_size(64, 64, self.size)  # validates size early

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        weights: Path | None = None,
        device: str = "auto",
        size: int | None = None,
        temperature: float | None = None,
        tta: bool = True,
        refine: bool = True,
        saturation: float = 1.0,
        reference_strength: float = steer.DEFAULT_REFERENCE_STRENGTH,
    ) -> Colorizer:
        """Load model ``name`` from ``weights`` (default: its shipped file)."""
        from colorcli.weights import load_named

        model = load_named(name, weights)
        return cls(model, device=resolve_device(device), size=size, temperature=temperature,
                   tta=tta, refine=refine, saturation=saturation, reference_strength=reference_strength)

    def with_steering(self, *, saturation: float | None = None, reference_strength: float | None = None) -> Colorizer:
        """The same model and settings with another saturation or reference strength (shares
        the model: no copy of the weights)."""
        other = copy.copy(self)
        if saturation is not None:
            other.saturation = steer.check_saturation(saturation)
        if reference_strength is not None:
            other.reference_strength = steer.check_strength(reference_strength)
        return other

    @torch.inference_mode()
    def predict_chroma(self, L: torch.Tensor, *, reference: steer.Reference | None = None) -> torch.Tensor:
        """L ``(B, 1, h, w)`` at network size -> chroma ``(B, 2, h', w')`` on the CPU; with
        ``tta`` the mean of the chroma of L and (mirrored back) of its mirror image. A
        ``reference`` re-weights the bin distribution of bin models before decoding."""
        if not self.tta:
            return self._predict(L, reference)
        b = L.shape[0]
        both = self._predict(torch.cat([L, L.flip(-1)]), reference)
        return (both[:b] + both[b:].flip(-1)) / 2

    def _predict(self, L: torch.Tensor, reference: steer.Reference | None = None) -> torch.Tensor:
        if self._backend is not None:
            return self._backend(L)
        L = L.to(self.device)
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                raw = self.model(L)
        else:
            raw = self.model(L)
        raw = raw.float()
        if self._prior_applies(reference):
            # Steering hook (colorcli.steer): logits + s * log r(q) = log(p(q) * r(q)^s), the
            # network's distribution times the reference's, then the usual annealed mean.
            prior = reference.log_prior(self._bin_centres.numpy())
            raw = raw + self.reference_strength * torch.from_numpy(prior).to(raw).view(1, -1, 1, 1)
        return self.model.decode(raw, temperature=self.temperature).float().cpu()

    def _prior_applies(self, reference: steer.Reference | None) -> bool:
        return (reference is not None and self._bin_centres is not None and self._backend is None
                and self.reference_strength > 0)

    def network_input(self, L: np.ndarray) -> torch.Tensor:
        """Full-size L ``(H, W)`` -> ``(1, 1, h, w)`` at network size (antialiased)."""
        h, w = network_size(*L.shape, self.size, default=self.default_size)
        t = torch.from_numpy(np.ascontiguousarray(L))[None, None]
        return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=True)

    def chroma_for(
        self,
        L_net: torch.Tensor,
        *,
        hints: list[steer.PlacedHint] | None = None,
        reference: steer.Reference | None = None,
    ) -> torch.Tensor:
        """Network view ``(1, 1, h, w)`` -> what :func:`recombine` takes: chroma, or with
        ``refine`` the guided-filter coefficients ``(1, 4, h, w)`` for the full-size L.

        Steering (:mod:`colorcli.steer`): a ``reference`` (prior on the bins, else mean/spread
        transfer), ``hints`` placed on the photo (:func:`colorcli.steer.place_hints`) spread
        over the network view before the refinement, and the ``saturation`` setting last."""
        chroma = self.predict_chroma(L_net, reference=reference)
        L_view = L_net[0, 0].numpy()
        # Steering hooks: chroma-level changes before the refinement keeps them on the edges.
        steered = reference is not None and self.reference_strength > 0
        if steered and not self._prior_applies(reference):
            chroma = torch.from_numpy(steer.transfer_stats(
                chroma[0].numpy(), reference, space=self.chroma_space, strength=self.reference_strength))[None]
        if hints:
            steered = True
            chroma = torch.from_numpy(steer.spread_hints(chroma[0].numpy(), L_view, hints, space=self.chroma_space))[None]
        if self.refine:
            chroma = torch.from_numpy(refine.guided_coefficients(L_view, chroma[0].numpy()))[None]
        if self.saturation != 1.0 or steered:
            chroma = torch.from_numpy(steer.saturate(chroma[0].numpy(), L_view, self.saturation, space=self.chroma_space))[None]
        return chroma

    def colorize_l(self, L: np.ndarray, *, hints=None, reference=None) -> np.ndarray:
        """L float ``(H, W)`` in [0, 100] -> sRGB float ``(H, W, 3)`` of the same size.

        ``hints``: ``"X,Y=#RRGGBB"`` strings or :class:`colorcli.steer.Hint` objects (pixels of
        this photo, or fractions); ``reference``: a photo whose colours steer the result (an sRGB
        array ``(H, W, 3)``, a path, or a :class:`colorcli.steer.Reference` to reuse across
        photos). A hint outside the photo raises :class:`colorcli.errors.SteeringError`."""
        placed = steer.place_hints(steer.as_hints(hints), L.shape[1], L.shape[0]) if hints else None
        chroma = self.chroma_for(self.network_input(L), hints=placed, reference=steer.as_reference(reference))
        return recombine(L, chroma, space=self.chroma_space)

    def colorize_rgb(self, rgb: np.ndarray, *, hints=None, reference=None) -> np.ndarray:
        """Any sRGB float ``(H, W, 3)`` (colour or gray) -> recolorized from its L alone;
        ``hints`` and ``reference`` as in :meth:`colorize_l`."""
        return self.colorize_l(rgb_to_l(rgb), hints=hints, reference=reference)
