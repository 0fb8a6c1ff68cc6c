"""Export a model to ONNX, with its decoding inside the graph, checked against PyTorch.

The exported graph maps L ``(B, 1, H, W)`` float32 in [0, 100] (batch, height and width
dynamic; H and W multiples of 32) to decoded chroma ``(B, 2, H/s, W/s)`` float32 (a/b for Lab
models, u/v for the Luv one; ``s`` is the model's output stride): the model's own ``decode``
(annealed mean over bin centres at a fixed temperature, or regression scaling) is traced into
the graph, so a runtime needs no knowledge of the model family. colorcli metadata goes into the
file's ``metadata_props`` (see :func:`export_model`). Before anything is written, onnx.checker
runs and onnxruntime is compared with PyTorch at three input sizes (max |Δchroma| ≤ 0.5 after
decoding); a failure raises :class:`ExportError` and leaves no file.

The shipped ONNX twins (``weights/NAME.onnx``, package data beside ``NAME.safetensors``, for
the torch-free install) are made by one reproducible command, ``colorcli export --shipped NAME``
(:func:`export_shipped`): fp16 weights, fp32 computation, the sha256 of the safetensors they
came from in their metadata; ``tests/test_shipped.py`` checks them.

We use torch's TorchScript-based exporter (``dynamo=False``): the torch.export-based one needs
onnxscript, which colorcli does not depend on, and ``dynamic_axes`` covers our dynamic H, W.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from colorcli import __version__
from colorcli.errors import ColorcliError
from colorcli.files import atomic_write_bytes, sha256_file
from colorcli.inference import Colorizer, InferenceSettings
from colorcli.inference.backends import INPUT_NAME, ONNX_FORMAT, ONNX_FORMAT_VERSION, OUTPUT_NAME
from colorcli.models import ColorModel
from colorcli.models.base import effective_temperature
from colorcli.paths import REPO_WEIGHTS
from colorcli.sizing import MULTIPLE

DEFAULT_OPSET = 17
MIN_OPSET = 13  # Resize with half_pixel and Einsum as our graphs use them
PARITY_TOL = 0.5  # max |Δ chroma| (ab or uv units) between onnxruntime and PyTorch
# (batch, height, width): batch > 1, both orientations of non-square, and the usual 224 side.
PARITY_SHAPES: tuple[tuple[int, int, int], ...] = ((1, 96, 64), (2, 64, 128), (1, 224, 160))
_TRACE_SHAPE = (1, 96, 128)  # (batch, height, width), non-square, so no H == W coincidence is traced in


class ExportError(ColorcliError):
    """A model cannot be exported, or its export does not match PyTorch."""


@dataclasses.dataclass
class ExportReport:
    """What :func:`export_model` wrote and how closely it matches PyTorch."""

    path: Path
    model: str
    bytes: int
    opset: int
    precision: str
    # ((batch, height, width), max |Δ chroma|) per parity shape
    parity: list[tuple[tuple[int, int, int], float]]
    metadata: dict[str, str]


class _Decoded(nn.Module):
    """The exported network: L -> raw -> the model's own ``decode`` -> chroma (float32)."""

    def __init__(self, model: ColorModel, *, temperature: float | None) -> None:
        super().__init__()
        self.model = model
        self.temperature = temperature

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return self.model.decode(self.model(L), temperature=self.temperature).float()


def _weights_to_fp16(proto) -> None:
    """Store every float32 weight of ``proto`` as float16, cast back to float32 in the graph.

    Half the file; the computation stays float32. Why not a float16 network: the annealed mean
    at T = 0.38 turns float16 rounding of activations into up to ~0.6 ab (measured on mcl), over
    the parity limit. colorcli weights files hold float16 values already, so with batch norm
    left unfolded (see ``training`` in export_model) storing them as float16 loses nothing.
    """
    from onnx import TensorProto, helper, numpy_helper

    keep, casts = [], []
    for init in proto.graph.initializer:
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims, dtype=np.int64) <= 1:
            keep.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{init.name}__fp16")
        keep.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}__to_float"))
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(casts + nodes)


def _trace_to_bytes(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    *,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
    fold_batchnorm: bool = True,
) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter's deprecation notice and tracer warnings about Python
        # constants (colour matrices, channel checks) say nothing a user can act on.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, buf, dynamo=False, input_names=input_names, output_names=output_names,
            dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True,
            # EVAL folds batch norm into the convolutions; PRESERVE (of a module in eval mode)
            # exports the same inference graph with batch norm as its own nodes.
            training=torch.onnx.TrainingMode.EVAL if fold_batchnorm else torch.onnx.TrainingMode.PRESERVE,
        )
    return buf.getvalue()


def _parity_input(shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """A photo-like L ``(B, 1, H, W)`` in [0, 100]: smooth gradients plus texture."""
    b, h, w = shape
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, h).view(1, 1, h, 1)
    x = torch.linspace(0, 1, w).view(1, 1, 1, w)
    phase = torch.rand(b, 1, 1, 1, generator=g) * 6
    smooth = 50 + 35 * torch.sin(6 * x + phase) * torch.cos(5 * y - phase)
    return (smooth + 10 * torch.rand(b, 1, h, w, generator=g)).clamp(0, 100)


def _check_opset(opset: int) -> None:
    from torch.onnx._constants import ONNX_MAX_OPSET

    if not MIN_OPSET <= opset <= ONNX_MAX_OPSET:
        raise ExportError(f"--opset must be between {MIN_OPSET} and {ONNX_MAX_OPSET}, got {opset}")


def _ort_session(data: bytes):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("export checks its output with onnxruntime: pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


def _check_model(data: bytes, what: str):
    try:
        import onnx
    except ImportError:
        raise ExportError("export needs the onnx package: pip install onnx onnxruntime") from None
    proto = onnx.load_from_string(data)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{what}: onnx.checker rejects the exported graph ({str(exc).splitlines()[0]})") from None
    return proto


def export_model(
    model: ColorModel,
    out: Path,
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    temperature: float | None = None,
    parity_shapes: Sequence[tuple[int, int, int]] = PARITY_SHAPES,
    weights_path: Path | None = None,
    weights_meta: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Export ``model`` (its decoding included) to ``out`` after checking it against PyTorch.

    Metadata (``metadata_props``, strings; JSON where structured): ``colorcli_format``,
    ``colorcli_format_version``, ``colorcli_version``, ``model``, ``model_config``,
    ``chroma_space``, ``default_size``, ``multiple`` (32), ``temperature`` (JSON, null for
    regression models), ``decode`` (the model's ``decode_info()``, applied in the graph),
    ``precision``, ``input``, ``normalisation`` (the model's :meth:`~ColorModel.normalisation`,
    as in its weights file), ``output``, ``weights`` (file, sha256, training metrics) and
    ``parity`` (the max |Δchroma| found per shape). Raises :class:`ExportError` if tracing,
    onnx.checker or the parity check fails; nothing is written then. An existing ``out`` is
    replaced only with ``overwrite`` (checked first, and again at the atomic rename).
    """
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"{out}: the output file name must end in .onnx")
    if not overwrite and os.path.lexists(out):
        raise ExportError(f"{out}: exists (use --overwrite to replace it)")
    _check_opset(opset)
    arch = model.arch
    model = copy.deepcopy(model).float().cpu().eval()  # the caller's model stays where it is
    temp = effective_temperature(model, temperature)
    if temp is not None and not (math.isfinite(temp) and temp > 0):
        raise ExportError(f"--temperature must be a positive number, got {temp}")
    wrapper = _Decoded(model, temperature=temp).eval()
    example = _parity_input(_TRACE_SHAPE, seed=1)
    try:
        with torch.inference_mode():
            wrapper(example)  # a model that cannot even run at this size fails here, clearly
        data = _trace_to_bytes(
            wrapper, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                          OUTPUT_NAME: {0: "batch", 2: "chroma_height", 3: "chroma_width"}},
            opset=opset, fold_batchnorm=not fp16,
        )
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the reason matters
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ExportError(f"model {arch!r} cannot be exported to ONNX: {first}") from None
    if fp16:
        import onnx

        proto = onnx.load_from_string(data)
        _weights_to_fp16(proto)
        data = proto.SerializeToString()
    proto = _check_model(data, f"model {arch!r}")

    session = _ort_session(proto.SerializeToString())
    # The reference is the one inference path's own network step, as `colorize` runs it (the
    # graph is the network alone: mirror averaging and refinement happen outside it).
    reference = Colorizer.from_model(model, InferenceSettings(temperature=temp, tta=False, refine=False, device="cpu"))
    parity: list[tuple[tuple[int, int, int], float]] = []
    for i, shape in enumerate(parity_shapes):
        if shape[1] % MULTIPLE or shape[2] % MULTIPLE:
            raise ValueError(f"parity shape {shape}: sides must be multiples of {MULTIPLE}")
        L = _parity_input(shape, seed=100 + i)
        ref = reference.predict_chroma(L.numpy())
        got = session.run(None, {INPUT_NAME: L.numpy()})[0]
        if got.shape != ref.shape:
            raise ExportError(
                f"model {arch!r}: ONNX output shape {got.shape} != PyTorch {ref.shape} at input {shape}; not written"
            )
        diff = float(np.nanmax(np.abs(got - ref))) if np.isfinite(got).all() else math.inf
        parity.append((tuple(shape), diff))
        if not diff <= PARITY_TOL:
            raise ExportError(
                f"model {arch!r}: onnxruntime differs from PyTorch by {diff:.3f} (max |Δchroma|) at "
                f"input {shape}, limit {PARITY_TOL}; {out} not written"
            )

    info = dict(model.decode_info())
    if temp is not None:
        info["temperature"] = temp
    info["applied_in_graph"] = True
    stride = info.get("stride")
    weights = {}
    if weights_path is not None:
        weights = {"file": Path(weights_path).name, "sha256": sha256_file(Path(weights_path))}
    if weights_meta:
        weights["metrics"] = weights_meta.get("metrics", {})
    meta = {
        "colorcli_format": ONNX_FORMAT,
        "colorcli_format_version": str(ONNX_FORMAT_VERSION),
        "colorcli_version": __version__,
        "model": arch,
        "model_config": json.dumps(model.config_dict()),
        "chroma_space": model.chroma_space,
        "default_size": str(model.config.default_size),
        "multiple": str(MULTIPLE),
        "temperature": json.dumps(temp),
        "decode": json.dumps(info),
        "precision": "fp16 weights, fp32 computation" if fp16 else "fp32",
        "input": f"{INPUT_NAME}: float32 (B, 1, H, W), CIE L in [0, 100], H and W multiples of {MULTIPLE}",
        # What the network inside computes (the same text as the weights file's): the graph
        # takes L in [0, 100] and normalises it itself.
        "normalisation": json.dumps(model.normalisation()),
        "output": (f"{OUTPUT_NAME}: float32 (B, 2, H/{stride}, W/{stride}), decoded "
                   f"{'a/b' if model.chroma_space == 'lab' else 'u/v'}; upsample bilinearly and "
                   f"combine with the full-resolution L"),
        "weights": json.dumps(weights),
        "parity": json.dumps({"tolerance": PARITY_TOL,
                              "max_abs_diff": {f"{b}x{h}x{w}": d for (b, h, w), d in parity}}),
    }
    size = write_onnx(proto, out, meta, doc=f"colorcli {arch}: L -> decoded chroma ({model.chroma_space})",
                      overwrite=overwrite)
    return ExportReport(out, arch, size, opset, "fp16" if fp16 else "fp32", parity, meta)


def write_onnx(proto, out: Path, meta: dict[str, str], *, doc: str, overwrite: bool) -> int:
    """Stamp ``proto`` with colorcli's metadata (``meta``: string values) and write it to ``out``
    atomically (replacing a file only with ``overwrite``); returns its size in bytes."""
    import onnx

    onnx.helper.set_model_props(proto, meta)
    proto.producer_name = "colorcli"
    proto.producer_version = __version__
    proto.doc_string = doc
    data = proto.SerializeToString()
    atomic_write_bytes(out, data, overwrite=overwrite)
    return len(data)


def export_onnx(
    name: str,
    out: Path,
    *,
    weights: Path | None = None,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    temperature: float | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Export registered model ``name`` from ``weights`` (default: its shipped file) to ``out``."""
    from colorcli.weights import load_named

    if not overwrite and os.path.lexists(out):  # before the minutes of tracing, not after
        raise ExportError(f"{out}: exists (use --overwrite to replace it)")
    model = load_named(name, weights)
    weights = weights or model.weights_path
    return export_model(model, out, opset=opset, fp16=fp16, temperature=temperature,
                        weights_path=weights, weights_meta=getattr(model, "weights_meta", None),
                        overwrite=overwrite)


def export_shipped(name: str, *, opset: int = DEFAULT_OPSET) -> ExportReport:
    """The ONNX twin of shipped model ``name``: ``weights/NAME.safetensors`` ->
    ``weights/NAME.onnx`` (fp16 weights, fp32 computation, the model's own temperature), with
    the sha256 of the safetensors in its ``weights`` metadata. One command, reproducible."""
    src = REPO_WEIGHTS / f"{name}.safetensors"
    if not src.is_file():
        raise ExportError(f"{src}: no shipped weights to export (run this in a colorcli source checkout)")
    # The twin always follows its safetensors: replacing the old twin is the point.
    return export_onnx(name, REPO_WEIGHTS / f"{name}.onnx", weights=src, opset=opset, fp16=True, overwrite=True)
