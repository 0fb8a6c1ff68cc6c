"""The one inference path: L -> network size -> backend -> chroma -> (refine) -> full size ->
recombined with the original L. ``colorize``, ``compare``, ``eval``, training's validation, the
export parity check and any later front end call this class; only the backend varies.

The network sees L resized (aspect kept, short side = ``size``, both sides multiples of 32); its
chroma is upsampled bilinearly to the photo's exact size and recombined with the ORIGINAL
full-resolution L, so the output keeps every pixel of the input's detail. Two steps are on by
default, each with an off switch in :class:`InferenceSettings`: ``tta`` averages the chroma of
the view and of its mirror image, and ``refine`` turns the chroma into guided-filter
coefficients applied to the full-resolution L, so colour follows the photo's edges.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from colorcli.errors import InferenceError
from colorcli.inference import render
from colorcli.inference.backends import Backend, OnnxBackend, TorchBackend
from colorcli.inference.render import Chroma, Coefficients
from colorcli.inference.settings import InferenceSettings
from colorcli.sizing import check_size

BACKENDS = ("auto", "torch", "onnx")


def torch_available() -> bool:
    """Whether torch can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # sys.modules["torch"] = None makes find_spec raise
        return False


def make_backend(name: str | None, *, weights: Path | None = None, backend: str = "auto",
                 settings: InferenceSettings = InferenceSettings()) -> Backend:
    """The backend for model ``name``: ``torch`` (weights: a .safetensors file), ``onnx``
    (weights: a .onnx file) or ``auto``: the file's kind when weights are given; else
    onnxruntime when the model's ONNX twin is shipped and the settings allow it (no
    temperature override, which is baked into the twin, and not ``--device cuda`` or ``mps``), since it
    is the faster one end to end (benchmarks/bench_colorize.py); else torch when installed.
    ``name=None`` takes the model that ``weights`` holds, whichever it is."""
    if backend not in BACKENDS:
        raise InferenceError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")
    if backend == "auto":
        if weights is not None:
            backend = "onnx" if Path(weights).suffix.lower() == ".onnx" else "torch"
        elif not torch_available():
            backend = "onnx"
        else:
            from colorcli.paths import find_shipped

            twin = find_shipped(f"{name}.onnx") is not None
            fits = settings.temperature is None and settings.device not in ("cuda", "mps")
            backend = "onnx" if twin and fits else "torch"
    if backend == "onnx":
        return OnnxBackend.from_name(name, weights, device=settings.device, threads=settings.threads,
                                     temperature=settings.temperature)
    if not torch_available():
        raise InferenceError('the torch backend needs PyTorch: pip install "colorcli[train]", or use --backend onnx')
    return TorchBackend.from_name(name, weights, device=settings.device, temperature=settings.temperature)


class Colorizer:
    """A backend plus the settings to colorize photos with it."""

    def __init__(self, backend: Backend, settings: InferenceSettings = InferenceSettings()) -> None:
        self.backend = backend
        self.settings = settings
        self.size = settings.size if settings.size is not None else backend.default_size
        check_size(self.size)  # validates size early
        self.chroma_space = backend.chroma_space
        self.threads = settings.threads or min(4, os.cpu_count() or 1)

    @classmethod
    def from_name(cls, name: str | None, *, weights: Path | None = None, backend: str = "auto",
                  settings: InferenceSettings = InferenceSettings()) -> Colorizer:
        """Model ``name`` from ``weights`` (default: its shipped file) on ``backend``; ``name=None``:
        the model ``weights`` holds."""
        return cls(make_backend(name, weights=weights, backend=backend, settings=settings), settings)

    @classmethod
    def from_model(cls, model, settings: InferenceSettings = InferenceSettings(), *, device=None) -> Colorizer:
        """A PyTorch model in memory (training's validation, export's parity check, tests), on
        ``device`` (a ``torch.device``; default: the settings' device, ``auto`` meaning cpu)."""
        if device is None:
            device = "cpu" if settings.device == "auto" else settings.device
        return cls(TorchBackend(model, device=device, temperature=settings.temperature), settings)

    @property
    def tta(self) -> bool:
        return self.settings.tta

    @property
    def refine(self) -> bool:
        return self.settings.refine

    @property
    def temperature(self) -> float | None:
        """The decoding temperature in use (None for regression models)."""
        return self.backend.temperature

    def network_input(self, L: np.ndarray) -> np.ndarray:
        """Full-size L ``(H, W)`` -> ``(1, 1, h, w)`` at network size (antialiased): short side
        ``size``, but never upscaled past the photo's own short side beyond the model's default
        (:func:`colorcli.sizing.view_size`)."""
        return render.network_view(L, self.size, default=self.backend.default_size)

    def with_steering(self, *, saturation: float | None = None,
                      reference_strength: float | None = None) -> Colorizer:
        """The same backend (no copy of the weights) with another saturation or reference strength."""
        changes = {k: v for k, v in (("saturation", saturation), ("reference_strength", reference_strength))
                   if v is not None}
        return Colorizer(self.backend, self.settings.replace(**changes))

    def _prior_applies(self, reference) -> bool:
        return (reference is not None and getattr(self.backend, "bin_centres", None) is not None
                and self.settings.reference_strength > 0)

    def predict_chroma(self, L: np.ndarray, *, reference=None) -> np.ndarray:
        """L ``(B, 1, h, w)`` at network size -> chroma ``(B, 2, h', w')`` float32; with ``tta``
        the mean of the chroma of L and (mirrored back) of its mirror image (one batch of two).
        A ``reference`` (:class:`colorcli.steer.Reference`) re-weights the bins of bin models
        on the torch backend before decoding. Non-finite output is an :class:`InferenceError`."""
        L = np.asarray(L, dtype=np.float32)
        kw = {}
        if self._prior_applies(reference):
            prior = reference.log_prior(self.backend.bin_centres)
            kw["log_prior"] = self.settings.reference_strength * np.asarray(prior, np.float32)
        if self.tta:
            b = L.shape[0]
            both = self.backend.predict(np.concatenate([L, L[..., ::-1]]), **kw)
            chroma = (both[:b] + both[b:, ..., ::-1]) / np.float32(2)
        else:
            chroma = self.backend.predict(L, **kw)
        chroma = np.asarray(chroma, dtype=np.float32)
        if not np.isfinite(chroma).all():
            raise InferenceError(f"the network ({self.backend.source}) gave non-finite colours; nothing written")
        return chroma

    def chroma_for(self, L_net: np.ndarray, *, hints=None, reference=None) -> Chroma | Coefficients:
        """Network view ``(1, 1, h, w)`` -> what :meth:`recombine` takes: chroma, or with
        ``refine`` the guided-filter coefficients for the full-size L.

        Steering (:mod:`colorcli.steer`): a ``reference`` (prior on the bins, else mean/spread
        transfer), ``hints`` placed on the photo (:func:`colorcli.steer.place_hints`) spread over
        the network view before the refinement, and the ``saturation`` setting last."""
        chroma = self.predict_chroma(L_net, reference=reference)[0]
        L_view = L_net[0, 0]
        steered = reference is not None and self.settings.reference_strength > 0
        if steered or hints or self.settings.saturation != 1.0:
            from colorcli import steer

            if steered and not self._prior_applies(reference):
                chroma = steer.transfer_stats(chroma, reference, space=self.chroma_space,
                                              strength=self.settings.reference_strength)
            if hints:
                steered = True
                chroma = steer.spread_hints(chroma, L_view, hints, space=self.chroma_space)
        out: Chroma | Coefficients = Chroma(np.ascontiguousarray(chroma, dtype=np.float32))
        if self.refine:
            out = render.guided_coefficients(L_view, out)
        if self.settings.saturation != 1.0 or steered:
            from colorcli import steer

            out = type(out)(steer.saturate(out.values, L_view, self.settings.saturation, space=self.chroma_space))
        return out

    def recombine(self, L: np.ndarray, chroma: Chroma | Coefficients) -> np.ndarray:
        """Original L ``(H, W)`` + chroma or coefficients -> sRGB float32 ``(H, W, 3)``."""
        return render.recombine(L, chroma, space=self.chroma_space, threads=self.threads)

    def rgb_to_l(self, rgb: np.ndarray) -> np.ndarray:
        """sRGB float ``(H, W, 3)`` -> L float32 ``(H, W)`` in [0, 100]."""
        return render.rgb_to_l(rgb, threads=self.threads)

    def colorize_l(self, L: np.ndarray, *, hints=None, reference=None) -> np.ndarray:
        """L float ``(H, W)`` in [0, 100] -> sRGB float32 ``(H, W, 3)`` of the same size.

        ``hints``: ``"X,Y=#RRGGBB"`` strings or :class:`colorcli.steer.Hint` objects (pixels of
        this photo, or fractions); ``reference``: a photo whose colours steer the result (an sRGB
        array, a path, or a :class:`colorcli.steer.Reference`). A hint outside the photo raises
        :class:`colorcli.errors.SteeringError`."""
        placed = ref = None
        if hints or reference is not None:
            from colorcli import steer

            placed = steer.place_hints(steer.as_hints(hints), L.shape[1], L.shape[0]) if hints else None
            ref = steer.as_reference(reference)
        return self.recombine(L, self.chroma_for(self.network_input(L), hints=placed, reference=ref))

    def colorize_rgb(self, rgb: np.ndarray, *, hints=None, reference=None) -> np.ndarray:
        """Any sRGB float ``(H, W, 3)`` (colour or gray) -> recolorized from its L alone;
        ``hints`` and ``reference`` as in :meth:`colorize_l`."""
        return self.colorize_l(self.rgb_to_l(rgb), hints=hints, reference=reference)
