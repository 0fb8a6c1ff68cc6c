"""Backends: the one step of the inference path that varies, the network call.

A backend maps L ``(B, 1, h, w)`` float32 in [0, 100] at network size (h, w multiples of 32)
to DECODED chroma ``(B, 2, h', w')`` float32 (a/b or u/v; ``h'`` may be ``h / stride``), numpy
in and out, and says which chroma space it predicts and its default network size. Everything
else (sizes, mirror averaging, refinement, upsampling, colour) is the colorizer's.

- :class:`TorchBackend`: a PyTorch model and its own ``decode``. torch is imported here only,
  inside the class, so the light install (no torch) never loads it.
- :class:`OnnxBackend`: a file from ``colorcli export`` run by onnxruntime (decoding is in the
  graph; colorcli metadata gives the chroma space, default size and temperature).
- :class:`ZeroChroma`: no chroma at all (the gray baseline of ``eval``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from colorcli.bounds import ConfigError, check_default_size
from colorcli.errors import ColorcliError, WeightsError
from colorcli.sizing import MULTIPLE

if TYPE_CHECKING:
    from colorcli.models import ColorModel

# Metadata written by colorcli.export and checked here (all values are strings).
ONNX_FORMAT = "colorcli-onnx"
ONNX_FORMAT_VERSION = 1
INPUT_NAME = "L"
OUTPUT_NAME = "chroma"


@runtime_checkable
class Backend(Protocol):
    """The network step: ``predict(L (B, 1, h, w)) -> chroma (B, 2, h', w')``, float32 numpy."""

    chroma_space: str  # "lab" or "luv"
    default_size: int  # short side the network sees unless settings say otherwise
    temperature: float | None  # the decoding temperature in use (None: regression)
    source: str  # where the network came from, for reports

    def predict(self, L: np.ndarray) -> np.ndarray: ...


def check_input(L: np.ndarray) -> None:
    if L.ndim != 4 or L.shape[1] != 1 or L.shape[2] % MULTIPLE or L.shape[3] % MULTIPLE:
        raise ValueError(f"expected L (B, 1, H, W) with H, W multiples of {MULTIPLE}, got {L.shape}")


class ZeroChroma:
    """A backend with no chroma: the output is the neutral image with the photo's L."""

    chroma_space = "lab"
    temperature = None
    source = "neutral image with the photo's L"

    def __init__(self, default_size: int = 224) -> None:
        self.default_size = default_size

    def predict(self, L: np.ndarray) -> np.ndarray:
        return np.zeros((L.shape[0], 2, *L.shape[-2:]), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# torch


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str = "auto"):
    """``auto``/``cpu``/``cuda``/``mps`` -> a ``torch.device`` (imports torch). ``auto``: cuda,
    then mps (Apple Silicon), then cpu; an asked-for device that is not there is a one-line error."""
    import torch

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


class TorchBackend:
    """A PyTorch model plus its decoding (moved to ``device`` and set to eval mode)."""

    def __init__(self, model: ColorModel, *, device: str = "cpu", temperature: float | None = None) -> None:
        from colorcli.models.base import effective_temperature

        self.model = model
        self.device = resolve_device(device) if isinstance(device, str) else device
        model.to(self.device).eval()
        self.chroma_space = model.chroma_space
        self.default_size = model.config.default_size
        self.temperature = effective_temperature(model, temperature)
        path = getattr(model, "weights_path", None)
        self.source = str(path) if path is not None else f"{model.arch} (in memory)"
        info = model.decode_info()
        # Bin centres of annealed-mean models: a reference photo steers them as a prior on the
        # bin logits (colorcli.steer); None for every other model.
        self.bin_centres = np.asarray(info["centres"], np.float32) if info.get("kind") == "annealed_mean" else None

    @classmethod
    def from_name(cls, name: str | None, weights: Path | None = None, *, device: str = "auto",
                  temperature: float | None = None) -> TorchBackend:
        """Model ``name`` from ``weights`` (default: its shipped file); ``name=None``: the model
        ``weights`` holds."""
        from colorcli.weights import load_named

        return cls(load_named(name, weights), device=device, temperature=temperature)

    def predict(self, L: np.ndarray, *, log_prior: np.ndarray | None = None) -> np.ndarray:
        """As every backend; ``log_prior`` ``(Q,)`` is added to the bin logits before decoding
        (``logits + log r = log(p * r)``: the network's distribution times the prior's)."""
        import torch

        check_input(L)
        with torch.inference_mode():
            x = torch.from_numpy(np.array(L, dtype=np.float32)).to(self.device)  # a writable copy
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    raw = self.model(x)
            else:
                raw = self.model(x)
            raw = raw.float()
            if log_prior is not None:
                # The bin logits are the first Q channels (mcl's cf_head adds its gain after them).
                prior = torch.from_numpy(np.asarray(log_prior, np.float32)).to(raw).view(1, -1, 1, 1)
                raw = torch.cat([raw[:, :prior.shape[1]] + prior, raw[:, prior.shape[1]:]], dim=1)
            out = self.model.decode(raw, temperature=self.temperature)
            return out.float().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# onnxruntime


def _ort():
    """onnxruntime, or one clear line saying how to get it."""
    try:
        import onnxruntime
    except ImportError:
        raise ColorcliError(
            "the onnx backend needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu for CUDA)"
        ) from None
    return onnxruntime


@dataclass(frozen=True)
class OnnxInfo:
    """What colorcli wrote into an exported file's metadata."""

    model: str
    chroma_space: str
    default_size: int
    temperature: float | None
    precision: str
    meta: dict[str, str]


def read_onnx_info(meta: dict[str, str], path: Path) -> OnnxInfo:
    """Check and parse the metadata map of an exported file; :class:`WeightsError` if not ours."""
    if meta.get("colorcli_format") != ONNX_FORMAT:
        raise WeightsError(f"{path}: not an ONNX file exported by `colorcli export` (no colorcli metadata)")
    if meta.get("colorcli_format_version") != str(ONNX_FORMAT_VERSION):
        raise WeightsError(
            f"{path}: colorcli ONNX format version {meta.get('colorcli_format_version')} is not "
            f"supported (this colorcli reads version {ONNX_FORMAT_VERSION}); export it again"
        )
    try:
        space = meta["chroma_space"]
        size = int(meta["default_size"])
        temp = json.loads(meta.get("temperature", "null"))
        model = meta["model"]
    except (KeyError, ValueError) as exc:
        raise WeightsError(f"{path}: colorcli metadata is incomplete or broken ({exc})") from None
    if space not in ("lab", "luv"):
        raise WeightsError(f"{path}: unknown chroma space {space!r} in its metadata")
    try:
        size = check_default_size(size)  # bounded before any buffer is sized from it
    except ConfigError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    return OnnxInfo(model, space, size, temp, meta.get("precision", "fp32"), dict(meta))


def providers_for(device: str) -> list[str]:
    """onnxruntime providers for ``device``: CUDA when asked or available (auto), else CPU."""
    if device == "mps":
        raise ColorcliError("--device mps needs the torch backend (onnxruntime has no MPS provider): use --backend torch")
    if device not in ("auto", "cpu", "cuda"):
        raise ColorcliError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
    available = _ort().get_available_providers()
    cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not cuda:
        raise ColorcliError(
            "--device cuda was asked for but onnxruntime has no CUDA provider (pip install onnxruntime-gpu)"
        )
    if device == "cpu" or not cuda:
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class OnnxBackend:
    """An exported model run by onnxruntime (no torch needed)."""

    def __init__(self, path: Path, *, device: str = "auto", threads: int | None = None,
                 temperature: float | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"{path}: ONNX file not found")
        self.path = path
        self.source = str(path)
        self.providers = providers_for(device)
        ort = _ort()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: provider-placement notes are not for users
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=self.providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise WeightsError(f"{path}: cannot load the ONNX model ({first})") from None
        self.info = read_onnx_info(self.session.get_modelmeta().custom_metadata_map, path)
        if temperature is not None and self.info.temperature is not None and not math.isclose(
            temperature, self.info.temperature, abs_tol=1e-6
        ):
            # Decoding lives inside the graph, so its temperature is fixed at export time.
            raise ColorcliError(
                f"{path}: exported with temperature {self.info.temperature}; the onnx backend "
                f"cannot change it: export again with `colorcli export --temperature {temperature}`"
            )
        self.chroma_space = self.info.chroma_space
        self.default_size = self.info.default_size
        self.temperature = self.info.temperature

    @classmethod
    def from_name(cls, name: str | None, onnx: Path | None = None, *, device: str = "auto",
                  threads: int | None = None, temperature: float | None = None) -> OnnxBackend:
        """Model ``name`` from ``onnx`` (default: its shipped ``<name>.onnx``); ``name=None``:
        the model ``onnx`` holds."""
        from colorcli.paths import find_shipped, weights_dirs

        if name is None and onnx is None:
            raise ColorcliError("an ONNX file is needed when no model is named")
        if onnx is None:
            onnx = find_shipped(f"{name}.onnx")
            if onnx is None:
                raise ColorcliError(
                    f"model {name!r} has no ONNX file ({name}.onnx in "
                    f"{', '.join(str(d) for d in weights_dirs())}); make one with "
                    f"`colorcli export --shipped {name}` or `colorcli export --model {name} -o FILE`, "
                    f"or install colorcli[train] for the torch backend"
                )
        backend = cls(onnx, device=device, threads=threads, temperature=temperature)
        if name is not None and backend.info.model != name:
            raise WeightsError(f"{onnx}: holds model {backend.info.model!r}, not {name!r}")
        return backend

    def predict(self, L: np.ndarray) -> np.ndarray:
        check_input(L)
        try:
            return self.session.run(None, {INPUT_NAME: np.ascontiguousarray(L, dtype=np.float32)})[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors have no useful types
            if "alloc" in str(exc).lower():
                # The batch runner reports MemoryError per file and goes on with the rest.
                raise MemoryError(str(exc).strip().splitlines()[0]) from exc
            raise
