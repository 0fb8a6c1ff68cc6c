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
from colorcli.sizing import network_size

BACKENDS = ("auto", "torch", "onnx")


def torch_available() -> bool:
    """Whether torch can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # sys.modules["torch"] = None makes find_spec raise
        return False


def make_backend(name: str, *, weights: Path | None = None, backend: str = "auto",
                 settings: InferenceSettings = InferenceSettings()) -> Backend:
    """The backend for model ``name``: ``torch`` (weights: a .safetensors file), ``onnx``
    (weights: a .onnx file) or ``auto``: the file's kind when weights are given; else
    onnxruntime when the model's ONNX twin is shipped and the settings allow it (no
    temperature override, which is baked into the twin, and not ``--device cuda``), since it
    is the faster one end to end (benchmarks/bench_colorize.py); else torch when installed."""
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
            fits = settings.temperature is None and settings.device != "cuda"
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
        network_size(64, 64, self.size)  # validates size early
        self.chroma_space = backend.chroma_space
        self.threads = settings.threads or min(4, os.cpu_count() or 1)

    @classmethod
    def from_name(cls, name: str, *, weights: Path | None = None, backend: str = "auto",
                  settings: InferenceSettings = InferenceSettings()) -> Colorizer:
        """Model ``name`` from ``weights`` (default: its shipped file) on ``backend``."""
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
        """Full-size L ``(H, W)`` -> ``(1, 1, h, w)`` at network size (antialiased)."""
        return render.network_view(L, self.size)

    def predict_chroma(self, L: np.ndarray) -> np.ndarray:
        """L ``(B, 1, h, w)`` at network size -> chroma ``(B, 2, h', w')`` float32; with ``tta``
        the mean of the chroma of L and (mirrored back) of its mirror image (one batch of two).
        Non-finite output is an :class:`InferenceError`."""
        L = np.asarray(L, dtype=np.float32)
        if self.tta:
            b = L.shape[0]
            both = self.backend.predict(np.concatenate([L, L[..., ::-1]]))
            chroma = (both[:b] + both[b:, ..., ::-1]) / np.float32(2)
        else:
            chroma = self.backend.predict(L)
        chroma = np.asarray(chroma, dtype=np.float32)
        if not np.isfinite(chroma).all():
            raise InferenceError(f"the network ({self.backend.source}) gave non-finite colours; nothing written")
        return chroma

    def chroma_for(self, L_net: np.ndarray) -> Chroma | Coefficients:
        """Network view ``(1, 1, h, w)`` -> what :meth:`recombine` takes: chroma, or with
        ``refine`` the guided-filter coefficients for the full-size L."""
        chroma = Chroma(self.predict_chroma(L_net)[0])
        if not self.refine:
            return chroma
        return render.guided_coefficients(L_net[0, 0], chroma)

    def recombine(self, L: np.ndarray, chroma: Chroma | Coefficients) -> np.ndarray:
        """Original L ``(H, W)`` + chroma or coefficients -> sRGB float32 ``(H, W, 3)``."""
        return render.recombine(L, chroma, space=self.chroma_space, threads=self.threads)

    def rgb_to_l(self, rgb: np.ndarray) -> np.ndarray:
        """sRGB float ``(H, W, 3)`` -> L float32 ``(H, W)`` in [0, 100]."""
        return render.rgb_to_l(rgb, threads=self.threads)

    def colorize_l(self, L: np.ndarray) -> np.ndarray:
        """L float ``(H, W)`` in [0, 100] -> sRGB float32 ``(H, W, 3)`` of the same size."""
        return self.recombine(L, self.chroma_for(self.network_input(L)))

    def colorize_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """Any sRGB float ``(H, W, 3)`` (colour or gray) -> recolorized from its L alone."""
        return self.colorize_l(self.rgb_to_l(rgb))
