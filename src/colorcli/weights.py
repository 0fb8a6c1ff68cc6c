"""Shipped weights: ``.safetensors`` (fp16) plus metadata that rebuilds the model.

Metadata keys (all strings, JSON where structured): ``format``, ``format_version``, ``arch``,
``config``, ``normalisation``, ``training``, ``metrics``, ``colorcli_version``. Loading rebuilds
the architecture from the stored ``arch`` and ``config`` and loads the tensors with
``strict=True``; any mismatch is a :class:`WeightsError` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from colorcli import __version__, color
from colorcli.errors import ColorcliError, UnknownModelError, WeightsError
from colorcli.files import atomic_write
from colorcli.models import ColorModel, create_model, list_models
from colorcli.paths import find_shipped, weights_dirs  # noqa: F401 - weights_dirs re-exported

FORMAT = "colorcli-weights"
FORMAT_VERSION = 1


def default_weights_path(name: str) -> Path | None:
    """The shipped weights file of model ``name``, or None if there is none."""
    return find_shipped(f"{name}.safetensors")


def save_weights(
    model: ColorModel,
    path: Path,
    *,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    half: bool = True,
) -> Path:
    """Write ``model`` to ``path`` atomically (float tensors as fp16 unless ``half=False``)."""
    path = Path(path)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if half and v.is_floating_point():
            v = v.half()
        state[k] = v.contiguous()
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "arch": model.arch,
        "config": json.dumps(model.config_dict()),
        "normalisation": json.dumps(
            {"input": "L / 100 in [0, 1]", "L_norm": color.L_NORM, "ab_norm": color.AB_NORM,
             "chroma_space": model.chroma_space}
        ),
        "training": json.dumps(training or {}),
        "metrics": json.dumps(metrics or {}),
        "colorcli_version": __version__,
    }
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def read_metadata(path: Path) -> dict[str, Any]:
    """The decoded metadata of a weights file (JSON fields parsed)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: not a valid safetensors file ({exc})") from None
    if raw.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a colorcli weights file (format {raw.get('format')!r})")
    if raw.get("format_version") != str(FORMAT_VERSION):
        raise WeightsError(
            f"{path}: weights format version {raw.get('format_version')} is not supported "
            f"(this colorcli reads version {FORMAT_VERSION})"
        )
    meta: dict[str, Any] = dict(raw)
    for key in ("config", "normalisation", "training", "metrics"):
        try:
            meta[key] = json.loads(raw.get(key, "{}"))
        except json.JSONDecodeError:
            raise WeightsError(f"{path}: metadata field {key!r} is not valid JSON") from None
    return meta


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: cannot read tensors ({exc})") from None


def load_matching(model: ColorModel, path: Path) -> tuple[int, int]:
    """Copy into ``model`` every tensor of ``path`` whose name and shape match (a warm start
    across architectures, e.g. ``l2`` from ``mcl``: same encoder and decoder, another head).
    Returns (tensors copied, tensors the model has)."""
    path = Path(path)
    read_metadata(path)  # a clear WeightsError for a file that is not ours
    state = _read_tensors(path)
    ref = model.state_dict()
    matched = {k: v.to(ref[k].dtype) for k, v in state.items() if k in ref and v.shape == ref[k].shape}
    model.load_state_dict(matched, strict=False)
    return len(matched), len(ref)


def load_named(name: str, weights: Path | None = None) -> ColorModel:
    """Registered model ``name`` from ``weights`` (default: its shipped file); one clear error
    for an unknown name (listing the valid ones) or a model with no weights."""
    if name not in list_models(include_test=True):
        create_model(name)  # raises UnknownModelError listing the valid names, even with weights
    if weights is None:
        weights = default_weights_path(name)
        if weights is None:
            raise ColorcliError(
                f"model {name!r} has no weights: {name}.safetensors is in none of "
                f"{', '.join(str(d) for d in weights_dirs())} (set COLORCLI_WEIGHTS to the folder "
                f"holding it, train it with `colorcli train --model {name}`, or pass --weights {name}=FILE)"
            )
    return load_weights(weights, expect_arch=name)


def load_weights(path: Path, *, expect_arch: str | None = None) -> ColorModel:
    """Rebuild the model stored in ``path`` and load its tensors strictly, in float32."""
    path = Path(path)
    meta = read_metadata(path)
    arch = meta.get("arch", "")
    if expect_arch is not None and arch != expect_arch:
        raise WeightsError(f"{path}: holds weights for model {arch!r}, not {expect_arch!r}")
    try:
        model = create_model(arch, **{**meta["config"], "pretrained": False})
    except UnknownModelError:
        raise WeightsError(
            f"{path}: unknown architecture {arch!r} (known: {', '.join(list_models(include_test=True))})"
        ) from None
    except TypeError as exc:
        raise WeightsError(f"{path}: config does not match model {arch!r} ({exc})") from None
    state = _read_tensors(path)
    ref = model.state_dict()
    state = {k: v.to(ref[k].dtype) if k in ref else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise WeightsError(f"{path}: tensors do not match model {arch!r}: {detail}") from None
    model.weights_meta = meta
    model.weights_path = path
    return model.eval()
