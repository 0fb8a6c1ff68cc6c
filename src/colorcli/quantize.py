"""INT8 export (``colorcli export --int8``): the fp32 export, quantized by onnxruntime's own tools.

The model is first exported as :func:`colorcli.export.export_model` always does (fp32, batch
norm folded, checked against PyTorch), then ``onnxruntime.quantization.quantize_static`` turns
it into a QDQ graph: int8 weights (per output channel), uint8 activations whose ranges come from
calibration on real photos. The calibration inputs are made by the one inference path
(:meth:`colorcli.inference.Colorizer.network_input` at the model's default size, the view and
its mirror image in one batch of two as mirror averaging runs them), so the ranges are those of
what the network sees when it colorizes.

What stays float (``nodes_to_exclude``): the decoding (temperature division, softmax, annealed
mean; left to itself quantize_static would quantize the softmax's input and output to 8 bits)
and the last ``FLOAT_TAIL`` weight layer(s) before it, the head that gives the bin logits; and
every ``Gemm``, the fully connected layers on one vector a photo (``fusion``'s global features,
``mcl``'s per-photo gain), a handful of multiply-adds that 8 bits would only blur. The
choice and its measurement are in the README (``export --int8``). The file keeps the fp32
file's colorcli metadata, with ``precision`` saying int8, ``quantization`` saying how it was
calibrated, and ``parity`` the int8 output's difference from the fp32 export it came from (an
int8 file is never a bit-exact twin of its safetensors).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colorcli.errors import ColorcliError
from colorcli.inference import Colorizer, InferenceSettings, OnnxBackend
from colorcli.inference.backends import INPUT_NAME

DEFAULT_CALIBRATE_COUNT = 64
MAX_CALIBRATE_COUNT = 1024  # the views are held in memory while calibrating: bounded
FLOAT_TAIL = 1  # weight layers before the decoding kept float (see the module docstring)
ACTIVATIONS = ("uint8", "int8")
_WEIGHT_OPS = ("Conv", "ConvTranspose", "MatMul")  # the network's layers over pixels
_VECTOR_OPS = ("Gemm",)  # fully connected, on a vector a photo: always float


class QuantizeError(ColorcliError):
    """A model cannot be quantized, or its calibration photos are missing."""


@dataclass
class Int8Report:
    """What :func:`export_int8` wrote and how far its output is from the fp32 export's."""

    path: Path
    model: str
    bytes: int
    fp32_bytes: int
    calibrated_on: int  # photos actually read
    skipped: list[tuple[Path, str]]  # calibration photos that could not be read
    float_nodes: list[str]
    # on the calibration views: mean and max |Δ chroma| of int8 against fp32 (ab or uv units)
    mean_abs_diff: float
    max_abs_diff: float
    metadata: dict[str, str]


def calibration_photos(folder: Path, count: int) -> list[Path]:
    """``count`` image files directly in ``folder``, evenly spread over its sorted listing (the
    same files on every run); all of them when there are fewer."""
    from colorcli.batch import collect_inputs
    from colorcli.imageio import IMAGE_SUFFIXES

    folder = Path(folder)
    if not 1 <= count <= MAX_CALIBRATE_COUNT:
        raise QuantizeError(f"--calibrate-count must be between 1 and {MAX_CALIBRATE_COUNT}, got {count}")
    if not folder.is_dir():
        raise QuantizeError(f"{folder}: no such folder (--calibrate takes a folder of photos)")
    found, errors = collect_inputs([folder])
    if errors:
        raise QuantizeError(errors[0][1])
    files = sorted(p for p, _, _ in found if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise QuantizeError(f"{folder}: no photos to calibrate on")
    if len(files) <= count:
        return files
    return [files[(i * len(files)) // count] for i in range(count)]


def calibration_views(colorizer: Colorizer, photos: Sequence[Path],
                      skipped: list[tuple[Path, str]]) -> Iterator[np.ndarray]:
    """Per photo, the network's input ``(2, 1, h, w)`` float32: the view at the colorizer's size
    and its mirror image, as :meth:`Colorizer.predict_chroma` runs them with mirror averaging.
    Unreadable photos are added to ``skipped`` and left out."""
    from colorcli.imageio import read_photo

    for path in photos:
        try:
            rgb = read_photo(path).rgb
        except ColorcliError as exc:
            skipped.append((path, str(exc)))
            continue
        view = colorizer.network_input(colorizer.rgb_to_l(rgb))
        yield np.ascontiguousarray(np.concatenate([view, view[..., ::-1]]), dtype=np.float32)


def float_node_names(proto, *, tail: int = FLOAT_TAIL, decode: bool = True) -> list[str]:
    """Nodes of ``proto`` to keep float: with ``decode`` every node after the network's last
    weight layer (Conv, MatMul, ...: the decoding, temperature division, softmax, annealed mean),
    the last ``tail`` weight layers, and (either way) every fully connected ``Gemm``. Nodes are stored in topological order, so "after" is by
    index. The network ends before the first Softmax where there is one: the annealed mean's
    product with the bin centres is a MatMul too, but a step of the decoding, not a layer."""
    nodes = list(proto.graph.node)
    end = next((i for i, node in enumerate(nodes) if node.op_type == "Softmax"), len(nodes))
    weights = [i for i, node in enumerate(nodes[:end]) if node.op_type in _WEIGHT_OPS]
    keep = [nodes[i].name for i in weights[len(weights) - tail:]] if tail > 0 else []
    if decode and weights:
        keep += [node.name for node in nodes[weights[-1] + 1:] if node.op_type != "Constant"]
    if tail > 0 or decode:
        keep += [node.name for node in nodes if node.op_type in _VECTOR_OPS and node.name not in keep]
    return keep


def quantize_graph(fp32: Path, out: Path, views: Sequence[np.ndarray], *, float_nodes: Sequence[str] = (),
                   per_channel: bool = True, activations: str = "uint8") -> None:
    """``quantize_static`` of the fp32 file ``fp32`` into ``out``: QDQ, int8 weights (per output
    channel with ``per_channel``), ``activations`` uint8 or int8 with MinMax ranges from
    ``views``; the nodes ``float_nodes`` stay float."""
    import logging

    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError:
        raise QuantizeError("--int8 needs onnxruntime's quantization tools: pip install onnx onnxruntime") from None
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(views)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

    # quantize_static logs a root-logger warning to run its pre-processing first; on our exports
    # (constants and batch norm folded at export) it only turned Constant nodes into
    # initializers (measured on mcl), so the warning says nothing a user can act on.
    logging.disable(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory(prefix="colorcli-int8-") as tmp:
            quantize_static(
                str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8, nodes_to_exclude=list(float_nodes),
                # MinMax ranges (ReduceMin/ReduceMax per tensor: small to hold). Not
                # CalibMaxIntermediateOutputs: onnxruntime 1.32 drops the ranges of each flushed
                # group instead of merging them.
                extra_options={"TmpDir": tmp},
            )
    finally:
        logging.disable(logging.NOTSET)


def export_int8(
    name: str,
    out: Path,
    *,
    calibrate: Path,
    count: int = DEFAULT_CALIBRATE_COUNT,
    weights: Path | None = None,
    opset: int | None = None,
    temperature: float | None = None,
    overwrite: bool = False,
    float_tail: int = FLOAT_TAIL,
    float_decode: bool = True,
    per_channel: bool = True,
    activations: str = "uint8",
) -> Int8Report:
    """Registered model ``name`` (from ``weights``, default its shipped file) -> an int8 ONNX file
    ``out``, calibrated on ``count`` photos of the folder ``calibrate``.

    The fp32 export (with its parity check against PyTorch) is made first in a temp folder, then
    quantized; ``out`` is written atomically and replaced only with ``overwrite``. The keyword
    arguments after ``overwrite`` are the choices measured for the README (defaults: the chosen
    ones). Raises :class:`QuantizeError` (or :class:`colorcli.export.ExportError`) and writes
    nothing on failure.
    """
    import onnx
    import onnxruntime

    from colorcli.export import DEFAULT_OPSET, ExportError, export_onnx, write_onnx

    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"{out}: the output file name must end in .onnx")
    if not overwrite and os.path.lexists(out):  # before the export and calibration, not after
        raise ExportError(f"{out}: exists (use --overwrite to replace it)")
    photos = calibration_photos(calibrate, count)
    with tempfile.TemporaryDirectory(prefix="colorcli-int8-") as tmp:
        fp32 = Path(tmp) / f"{name}-fp32.onnx"
        report = export_onnx(name, fp32, weights=weights, opset=opset or DEFAULT_OPSET, temperature=temperature)
        # The fp32 file on the backend colorize uses, so the views are the network's own input.
        colorizer = Colorizer(OnnxBackend(fp32, device="cpu", threads=1), InferenceSettings(device="cpu", threads=1))
        skipped: list[tuple[Path, str]] = []
        views = list(calibration_views(colorizer, photos, skipped))
        if not views:
            raise QuantizeError(f"{calibrate}: none of the {len(photos)} calibration photos could be read "
                                f"({skipped[0][1]})")
        float_nodes = float_node_names(onnx.load(str(fp32)), tail=float_tail, decode=float_decode)
        q_path = Path(tmp) / f"{name}-int8.onnx"
        try:
            quantize_graph(fp32, q_path, views, float_nodes=float_nodes, per_channel=per_channel,
                           activations=activations)
        except Exception as exc:  # noqa: BLE001 - the quantizer raises many types; the reason matters
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise QuantizeError(f"model {name!r} cannot be quantized: {first}") from None

        # How far int8 is from the fp32 export, on the views it was calibrated on.
        int8 = _session(q_path)
        mean_sum, worst = 0.0, 0.0
        for x in views:
            ref = colorizer.backend.predict(x)
            got = int8.run(None, {INPUT_NAME: x})[0]
            if got.shape != ref.shape or not np.isfinite(got).all():
                raise QuantizeError(f"model {name!r}: the int8 graph gives "
                                    f"{'non-finite chroma' if got.shape == ref.shape else 'another shape'}; "
                                    f"{out} not written")
            diff = np.abs(got - ref)
            mean_sum += float(diff.mean())
            worst = max(worst, float(diff.max()))
        mean = mean_sum / len(views)

        meta = dict(report.metadata)
        meta["precision"] = (f"int8 (QDQ: int8 weights{' per channel' if per_channel else ''}, {activations} "
                             f"activations; {len(float_nodes)} node(s) in float32: "
                             f"{'the decoding and ' if float_decode else ''}the last {float_tail} weight layer(s))")
        meta["quantization"] = json.dumps({
            "tool": f"onnxruntime.quantization.quantize_static (onnxruntime {onnxruntime.__version__})",
            "format": "QDQ", "weights": "int8", "per_channel": per_channel, "activations": activations,
            "calibration": {"folder": Path(calibrate).name, "photos": len(views), "asked": count,
                            "unreadable": len(skipped), "method": "MinMax",
                            "input": "Colorizer.network_input at the model's default size, view and mirror"},
            "float_nodes": float_nodes,
        })
        # Not a twin of its safetensors: the difference from the fp32 export it was made from.
        meta["parity"] = json.dumps({
            "against": "the fp32 export of the same weights, on the calibration views",
            "mean_abs_diff": mean, "max_abs_diff": worst,
            "fp32_against_pytorch": json.loads(report.metadata["parity"]),
        })
        size = write_onnx(onnx.load(str(q_path)), out, meta, overwrite=overwrite,
                          doc=f"colorcli {report.model}: L -> decoded chroma, int8 (QDQ)")
    return Int8Report(out, report.model, size, report.bytes, len(views), skipped, float_nodes, mean, worst, meta)


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


__all__ = ["ACTIVATIONS", "DEFAULT_CALIBRATE_COUNT", "FLOAT_TAIL", "Int8Report", "QuantizeError",
           "calibration_photos", "calibration_views", "export_int8", "float_node_names", "quantize_graph"]
