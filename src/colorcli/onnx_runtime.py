"""Colorize with onnxruntime: the inference path for users who only colorize (no torch).

``OnnxColorizer`` has the API of :class:`colorcli.pipeline.Colorizer` (``colorize_rgb``,
``colorize_l``, ``predict_chroma``, ``network_input``) and follows the same steps: L of the
photo -> L resized to network size (aspect kept, sides multiples of 32, antialiased bilinear)
-> network (averaged with its mirror image unless ``tta=False``) -> chroma -> guided-filter
coefficients (:mod:`colorcli.refine`, unless ``refine=False``) -> bilinear upsampling to the
photo's exact size -> recombined with the ORIGINAL full-resolution L -> sRGB, in memory-bounded
bands.

Nothing here imports torch: ``onnxruntime``, ``numpy``, ``pillow`` and (for the refinement)
``scipy`` are enough.

- The network file comes from ``colorcli export``: it maps L ``(B, 1, H, W)`` in [0, 100]
  (H, W multiples of 32) to DECODED chroma ``(B, 2, H/s, W/s)`` (the annealed mean or the
  regression scaling is inside the graph) and carries colorcli metadata (model, chroma space,
  default size, temperature).
- Colour conversions are not re-implemented here (``colorcli.color`` is the one module that owns
  colour): the three conversions needed at full resolution are tiny ONNX graphs exported from
  ``color.rgb_to_gray_l``, ``color.lab_to_rgb`` and ``color.luv_to_rgb`` by the build step
  ``python -m colorcli.export`` into ``colorcli/onnx_graphs/``; tests check them against
  ``color.py``.
- Only resampling is numpy/Pillow here: Pillow's BILINEAR resize of a float image is the same
  antialiased triangle filter as torch's ``interpolate(..., antialias=True)`` (torch's is a port
  of it), and the chroma upsampling is the align_corners=False bilinear mapping of
  ``torch.nn.functional.interpolate``, computed band by band.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from colorcli import refine
from colorcli.bounds import ConfigError, check_default_size
from colorcli.errors import ColorcliError, WeightsError
from colorcli.paths import find_shipped, weights_dirs
from colorcli.sizing import MAX_ASPECT, MULTIPLE, network_size

# Metadata written by colorcli.export and checked here (all values are strings).
ONNX_FORMAT = "colorcli-onnx"
ONNX_FORMAT_VERSION = 1
INPUT_NAME = "L"
OUTPUT_NAME = "chroma"

# Full-resolution colour conversion runs in bands of this many pixels: bounded memory, and
# each band's float planes (1 MB each) stay in cache across the conversion's many elementwise
# steps, 1.3-1.8x faster than 2M-pixel bands on a 2-core CPU.
BAND_PIXELS = 1 << 18

GRAPH_DIR = Path(__file__).resolve().parent / "onnx_graphs"
# name -> (file, the color.py function it was exported from); see colorcli.export.
COLOR_GRAPHS = {
    "rgb_to_l": "rgb_to_l.onnx",
    "lab": "lab_to_rgb.onnx",
    "luv": "luv_to_rgb.onnx",
}



def _ort():
    """onnxruntime, or one clear line saying how to get it."""
    try:
        import onnxruntime
    except ImportError:
        raise ColorcliError(
            "the onnx backend needs onnxruntime: pip install onnxruntime "
            "(or onnxruntime-gpu for CUDA)"
        ) from None
    return onnxruntime


def default_onnx_path(name: str) -> Path | None:
    """``<name>.onnx`` in the first weights folder that has it, or None."""
    return find_shipped(f"{name}.onnx")


def bands(h: int, w: int) -> list[tuple[int, int]]:
    """Row ranges of at most ~BAND_PIXELS pixels covering an ``h`` x ``w`` image."""
    step = max(1, BAND_PIXELS // max(w, 1))
    return [(r, min(h, r + step)) for r in range(0, h, step)]


def gray_codes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """For a gray photo of 8- or 16-bit values: integer codes ``(H, W)`` and the float32 levels
    they index (``levels[codes]`` equals the plane bit for bit); None for anything else.

    ``colorcli.imageio`` gives gray inputs as a broadcast view of one plane holding
    ``code / 255`` (or ``/ 65535``) in float32. Such a photo has at most 65536 distinct values,
    so converting the levels and indexing gives the per-pixel result (to the last float32 ulp,
    as vectorised and leftover elements of the per-pixel path round), 10x+ faster.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.strides[2] != 0 or rgb.dtype != np.float32:
        return None  # colour, or a gray copy we cannot recognise cheaply
    plane = rgb[..., 0]
    for top, dtype in ((255, np.uint8), (65535, np.uint16)):
        scaled = np.clip(plane * np.float32(top), 0, top)
        with np.errstate(invalid="ignore"):  # NaN casts to some code; the check below fails it
            codes = np.rint(scaled, out=scaled).astype(dtype)
        del scaled
        # The same float32 division the reader did, so equal means equal bit for bit.
        if np.array_equal(codes.astype(np.float32) / np.float32(top), plane):
            return codes, np.arange(top + 1, dtype=np.float32) / np.float32(top)
    return None


def linear_taps(src: int, dst: int, start: int = 0, stop: int | None = None):
    """Source indices and weights of a bilinear resize ``src -> dst`` for outputs start..stop.

    The mapping of ``interpolate(mode="bilinear", align_corners=False)``: output ``i`` samples
    ``(i + 0.5) * src / dst - 0.5``, clamped at 0; returns ``(i0, i1, w1)`` with
    ``out = in[i0] * (1 - w1) + in[i1] * w1``.
    """
    stop = dst if stop is None else stop
    x = (np.arange(start, stop, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    x = np.maximum(x, 0.0)
    i0 = np.minimum(np.floor(x).astype(np.intp), src - 1)
    i1 = np.minimum(i0 + 1, src - 1)
    return i0, i1, (x - i0).astype(np.float32)


def upsample_band(chroma: np.ndarray, h: int, w: int, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0..r1`` of the bilinear resize of chroma ``(C, ch, cw)`` to ``(C, h, w)``."""
    n, ch, cw = chroma.shape
    y0, y1, wy = linear_taps(ch, h, r0, r1)
    rows = chroma[:, y0] * (1 - wy)[:, None] + chroma[:, y1] * wy[:, None]  # (C, r, cw)
    if cw == w:
        return np.ascontiguousarray(rows, dtype=np.float32)
    x0, x1, wx = linear_taps(cw, w)
    # One channel at a time into a C-contiguous result: gathering all channels at once leaves
    # numpy's fancy-index output in a strided layout that made this and every later
    # elementwise step on it several times slower (upsampling and applying the 4 refinement
    # coefficients over all bands of a 12 MP photo, 1 thread: 0.79 s -> 0.27 s).
    out = np.empty((n, r1 - r0, w), dtype=np.float32)
    for c in range(n):
        np.multiply(rows[c][:, x0], 1 - wx, out=out[c])
        out[c] += rows[c][:, x1] * wx
    return out


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
    if device not in ("auto", "cpu", "cuda"):
        raise ColorcliError(f"unknown device {device!r}; use auto, cpu or cuda")
    available = _ort().get_available_providers()
    cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not cuda:
        raise ColorcliError(
            "--device cuda was asked for but onnxruntime has no CUDA provider "
            "(pip install onnxruntime-gpu)"
        )
    if device == "cpu" or not cuda:
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _session(source: Path | bytes, providers: list[str], threads: int | None, path: Path):
    ort = _ort()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: provider-placement notes are not for users
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(source) if isinstance(source, Path) else source,
                                    sess_options=opts, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise WeightsError(f"{path}: cannot load the ONNX model ({first})") from None


def _run(session, feeds: dict[str, np.ndarray]) -> np.ndarray:
    try:
        return session.run(None, feeds)[0]
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors have no useful types
        if "alloc" in str(exc).lower():
            # The batch runner reports MemoryError per file and goes on with the rest.
            raise MemoryError(str(exc).strip().splitlines()[0]) from exc
        raise


class OnnxColorizer:
    """An exported model plus the settings to colorize photos with it (no torch needed)."""

    def __init__(
        self,
        path: Path,
        *,
        device: str = "auto",
        size: int | None = None,
        temperature: float | None = None,
        threads: int | None = None,
        tta: bool = True,
        refine: bool = True,
        saturation: float = 1.0,
        reference_strength: float = 1.0,
    ) -> None:
        from colorcli import steer

        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"{path}: ONNX file not found")
        self.path = path
        self.providers = providers_for(device)
        self.session = _session(path, self.providers, threads, path)
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
        self.size = size or self.info.default_size
        network_size(64, 64, self.size)  # validates size early
        self._threads = threads
        self._graphs: dict[str, Any] = {}
        self.tta = tta
        self.refine = refine
        self.saturation = steer.check_saturation(saturation)
        self.reference_strength = steer.check_strength(reference_strength)

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        onnx: Path | None = None,
        device: str = "auto",
        size: int | None = None,
        temperature: float | None = None,
        tta: bool = True,
        refine: bool = True,
        saturation: float = 1.0,
        reference_strength: float = 1.0,
    ) -> OnnxColorizer:
        """Model ``name`` from ``onnx`` (default: ``<name>.onnx`` in the weights folders)."""
        if onnx is None:
            onnx = default_onnx_path(name)
            if onnx is None:
                raise ColorcliError(
                    f"model {name!r} has no exported ONNX file ({name}.onnx in "
                    f"{', '.join(str(d) for d in weights_dirs())}); make one with "
                    f"`colorcli export --model {name} -o weights/{name}.onnx` or pass --onnx FILE"
                )
        colorizer = cls(onnx, device=device, size=size, temperature=temperature, tta=tta, refine=refine,
                        saturation=saturation, reference_strength=reference_strength)
        if colorizer.info.model != name:
            raise WeightsError(f"{onnx}: holds model {colorizer.info.model!r}, not {name!r}")
        return colorizer

    def _graph(self, name: str):
        """A session for one of the shipped colour graphs (run on the CPU, like the torch path)."""
        if name not in self._graphs:
            path = GRAPH_DIR / COLOR_GRAPHS[name]
            if not path.is_file():
                raise ColorcliError(f"{path}: colour graph missing from the installation; reinstall colorcli")
            self._graphs[name] = _session(path, ["CPUExecutionProvider"], self._threads, path)
        return self._graphs[name]

    def predict_chroma(self, L: np.ndarray) -> np.ndarray:
        """L float32 ``(B, 1, h, w)`` in [0, 100], h and w multiples of 32 -> chroma
        ``(B, 2, h', w')`` (a/b or u/v, decoded); with ``tta`` the mean of the chroma of L and
        (mirrored back) of its mirror image."""
        if L.ndim != 4 or L.shape[1] != 1 or L.shape[2] % MULTIPLE or L.shape[3] % MULTIPLE:
            raise ValueError(f"expected L (B, 1, H, W) with H, W multiples of {MULTIPLE}, got {L.shape}")
        chroma = self._predict(L)
        if self.tta:
            chroma = (chroma + self._predict(L[..., ::-1])[..., ::-1]) / 2
        return chroma

    def _predict(self, L: np.ndarray) -> np.ndarray:
        return _run(self.session, {INPUT_NAME: np.ascontiguousarray(L, dtype=np.float32)})

    def chroma_for(self, L_net: np.ndarray, *, hints=None, reference=None) -> np.ndarray:
        """Network view ``(1, 1, h, w)`` -> what :meth:`recombine` takes: chroma, or with
        ``refine`` the guided-filter coefficients ``(1, 4, h, w)`` for the full-size L.
        Steering as in :meth:`colorcli.pipeline.Colorizer.chroma_for`, except that a reference
        always takes the mean/spread transfer (the graph decodes the bins itself)."""
        from colorcli import steer

        chroma = self.predict_chroma(L_net)
        steered = reference is not None and self.reference_strength > 0
        if steered:
            chroma = steer.transfer_stats(chroma[0], reference, space=self.chroma_space,
                                          strength=self.reference_strength)[None]
        if hints:
            steered = True
            chroma = steer.spread_hints(chroma[0], L_net[0, 0], hints, space=self.chroma_space)[None]
        if self.refine:
            chroma = refine.guided_coefficients(L_net[0, 0], chroma[0])[None]
        if self.saturation != 1.0 or steered:
            chroma = steer.saturate(chroma[0], L_net[0, 0], self.saturation, space=self.chroma_space)[None]
        return chroma

    def network_input(self, L: np.ndarray) -> np.ndarray:
        """Full-size L ``(H, W)`` -> ``(1, 1, h, w)`` at network size (antialiased bilinear)."""
        h, w = network_size(*L.shape, self.size, default=self.info.default_size)
        img = Image.fromarray(np.ascontiguousarray(L, dtype=np.float32))
        small = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
        return small[None, None]

    def rgb_to_l(self, rgb: np.ndarray) -> np.ndarray:
        """sRGB float ``(H, W, 3)`` -> L float32 ``(H, W)`` in [0, 100], in bands."""
        graph = self._graph("rgb_to_l")
        gray = gray_codes(rgb)
        if gray is not None:
            codes, levels = gray
            lut = _run(graph, {"rgb": np.repeat(levels[None, :, None], 3, axis=2)})[0]
            return lut[codes]
        h, w, _ = rgb.shape
        out = np.empty((h, w), dtype=np.float32)
        for r0, r1 in bands(h, w):
            band = np.ascontiguousarray(rgb[r0:r1], dtype=np.float32)
            out[r0:r1] = _run(graph, {"rgb": band})
        return out

    def recombine(self, L: np.ndarray, chroma: np.ndarray) -> np.ndarray:
        """Original L ``(H, W)`` + chroma ``(1, 2, h, w)``, or the ``(1, 4, h, w)`` coefficients
        of :func:`colorcli.refine.guided_coefficients` -> sRGB float32 ``(H, W, 3)``."""
        h, w = L.shape
        refine.check_channels(chroma.shape)
        c = np.asarray(chroma[0], dtype=np.float32)
        graph = self._graph(self.chroma_space)
        out = np.empty((h, w, 3), dtype=np.float32)
        for r0, r1 in bands(h, w):
            up = upsample_band(c, h, w, r0, r1)
            band_l = np.ascontiguousarray(L[r0:r1], dtype=np.float32)
            up = refine.as_chroma(up, band_l[None])
            out[r0:r1] = _run(graph, {"L": band_l, "chroma": up})
        return out

    def colorize_l(self, L: np.ndarray, *, hints=None, reference=None) -> np.ndarray:
        """L float ``(H, W)`` in [0, 100] -> sRGB float32 ``(H, W, 3)`` of the same size;
        ``hints`` and ``reference`` as in :meth:`colorcli.pipeline.Colorizer.colorize_l`."""
        from colorcli import steer

        placed = steer.place_hints(steer.as_hints(hints), L.shape[1], L.shape[0]) if hints else None
        chroma = self.chroma_for(self.network_input(L), hints=placed, reference=steer.as_reference(reference))
        return self.recombine(L, chroma)

    def colorize_rgb(self, rgb: np.ndarray, *, hints=None, reference=None) -> np.ndarray:
        """Any sRGB float ``(H, W, 3)`` (colour or gray) -> recolorized from its L alone."""
        return self.colorize_l(self.rgb_to_l(rgb), hints=hints, reference=reference)


__all__ = [
    "COLOR_GRAPHS", "GRAPH_DIR", "ONNX_FORMAT", "ONNX_FORMAT_VERSION", "OnnxColorizer", "OnnxInfo",
    "default_onnx_path", "gray_codes", "network_size", "providers_for", "read_onnx_info", "upsample_band",
    "weights_dirs",
]
