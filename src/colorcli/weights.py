"""Shipped weights: ``.safetensors`` (fp16) plus metadata that rebuilds the model.

Metadata keys (all strings, JSON where structured): ``format``, ``format_version``, ``arch``,
``config``, ``normalisation``, ``training``, ``metrics``, ``colorcli_version`` and
``tensors_sha256`` (see :func:`tensors_digest`). Loading checks the file's size, the config's
values (:mod:`colorcli.bounds`) before anything is built, the tensors' digest when the file
has one and that every float tensor is finite; then it rebuilds the architecture from the
stored ``arch`` and ``config`` and loads the tensors with ``strict=True``. Any problem is a
:class:`WeightsError` naming the file.

``python -m colorcli.weights stamp FILE...`` brings older files up to date without touching a
tensor (bit for bit): it writes the digest into files made before it existed, and rewrites the
``normalisation`` field from the model's own code (the model rebuilt from the file, asked
:meth:`~colorcli.models.ColorModel.normalisation`) where an older file states another one. Other
metadata stays as it was; a file already up to date is not rewritten.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError
from safetensors import safe_open

from colorcli import __version__
from colorcli.bounds import ConfigError, check_config
from colorcli.errors import ColorcliError, UnknownModelError, WeightsError
from colorcli.files import atomic_write_bytes
from colorcli.paths import find_shipped, weights_dirs  # noqa: F401 - weights_dirs re-exported

if TYPE_CHECKING:  # torch is imported where tensors are loaded: `colorcli models` needs none
    import torch

    from colorcli.models import ColorModel

FORMAT = "colorcli-weights"
FORMAT_VERSION = 1
# The largest shipped file is 16 MB and the paper-width unet 62 MB in fp16: a weights file over
# this is refused by its size before a byte is read. The header (JSON metadata) is read whole.
MAX_WEIGHTS_BYTES = 1 << 29  # 512 MiB
MAX_HEADER_BYTES = 1 << 20  # 1 MiB
DIGEST_KEY = "tensors_sha256"


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors by name: each name, dtype, shape and raw bytes, names sorted.

    Independent of the order tensors sit in the file; the same for the state dict written and
    the tensors read back, since safetensors keeps dtypes and bytes exactly.
    """
    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def serialise(tensors: dict[str, torch.Tensor], *, metadata: dict[str, str]) -> bytes:
    """A safetensors file's bytes (safetensors' torch serialiser, imported on use: reading
    metadata needs no torch). They are written through :func:`colorcli.files.atomic_write_bytes`,
    not safetensors' own file writer, which replaces the file with a private (0600) one: a
    weights file gets the umask's mode like any other, and a full disk is an ``OSError``."""
    from safetensors.torch import save

    return save(tensors, metadata=metadata)


def create_model(name: str, **kwargs) -> ColorModel:
    """The model registry's ``create_model``, imported on use (it needs torch)."""
    from colorcli.models import create_model as create

    return create(name, **kwargs)


def list_models(*, include_test: bool = False) -> list[str]:
    """The model registry's ``list_models``, imported on use (it needs torch)."""
    from colorcli.models import list_models as names

    return names(include_test=include_test)


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
        "normalisation": json.dumps(model.normalisation()),
        "training": json.dumps(training or {}),
        "metrics": json.dumps(metrics or {}),
        "colorcli_version": __version__,
        DIGEST_KEY: tensors_digest(state),
    }
    _save_atomic(state, path, meta)
    return path


def _save_atomic(state: dict[str, torch.Tensor], path: Path, meta: dict[str, str]) -> None:
    atomic_write_bytes(path, serialise(state, metadata=meta))


def read_metadata(path: Path) -> dict[str, Any]:
    """The decoded metadata of a weights file (JSON fields parsed)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    _check_sizes(path)
    try:
        with safe_open(str(path), framework="numpy") as fh:
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
        except (json.JSONDecodeError, RecursionError):
            raise WeightsError(f"{path}: metadata field {key!r} is not valid JSON") from None
    arch = str(meta.get("arch", ""))
    try:
        check_config(arch, meta["config"])
    except ConfigError as exc:
        raise WeightsError(f"{path}: config does not match model {arch!r} ({exc})") from None
    return meta


def _check_sizes(path: Path) -> None:
    """Refuse a file, or a metadata header, too large to be ours before reading it."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size > MAX_WEIGHTS_BYTES:
        raise WeightsError(
            f"{path}: file too large for a weights file ({size / 2**20:.0f} MiB, limit {MAX_WEIGHTS_BYTES >> 20} MiB)"
        )
    if len(head) == 8 and (n := struct.unpack("<Q", head)[0]) > MAX_HEADER_BYTES:
        raise WeightsError(
            f"{path}: not a valid safetensors file (header of {n} bytes, limit {MAX_HEADER_BYTES >> 20} MiB)"
        )


def _read_tensors(path: Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of ``path``, checked against the digest in ``meta`` (when it has one) and
    for NaN/inf (always): a damaged file is an error, never a silently wrong photo."""
    import torch
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: cannot read tensors ({exc})") from None
    want = meta.get(DIGEST_KEY)
    if want is not None and tensors_digest(state) != want:
        raise WeightsError(f"{path}: tensors do not match the file's sha256 (damaged or modified file)")
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise WeightsError(f"{path}: tensor {name!r} holds NaN or infinite values (damaged file)")
    return state


def load_matching(model: ColorModel, path: Path) -> tuple[int, int]:
    """Copy into ``model`` every tensor of ``path`` whose name and shape match (a warm start
    across architectures, e.g. ``l2`` from ``mcl``: same encoder and decoder, another head).
    Returns (tensors copied, tensors the model has)."""
    path = Path(path)
    meta = read_metadata(path)  # a clear WeightsError for a file that is not ours
    state = _read_tensors(path, meta)
    ref = model.state_dict()
    matched = {k: v.to(ref[k].dtype) for k, v in state.items() if k in ref and v.shape == ref[k].shape}
    model.load_state_dict(matched, strict=False)
    return len(matched), len(ref)


def load_named(name: str | None, weights: Path | None = None) -> ColorModel:
    """Registered model ``name`` from ``weights`` (default: its shipped file); one clear error
    for an unknown name (listing the valid ones) or a model with no weights. ``name=None``: the
    model ``weights`` holds, whichever it is."""
    if name is None:
        if weights is None:
            raise ColorcliError("a weights file is needed when no model is named")
        return load_weights(weights)
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
    state = _read_tensors(path, meta)  # bounded by the file size; checked before building
    model = _build(path, meta, state)
    model.weights_meta = meta
    model.weights_path = path
    return model.eval()


def _build(path: Path, meta: dict[str, Any], state: dict[str, torch.Tensor]) -> ColorModel:
    """The model of ``meta``'s ``arch`` and ``config`` with ``state`` loaded strictly (float32)."""
    arch = meta.get("arch", "")
    try:
        model = create_model(arch, **{**meta["config"], "pretrained": False})
    except UnknownModelError:
        raise WeightsError(
            f"{path}: unknown architecture {arch!r} (known: {', '.join(list_models(include_test=True))})"
        ) from None
    except TypeError as exc:
        raise WeightsError(f"{path}: config does not match model {arch!r} ({exc})") from None
    except ColorcliError as exc:  # a family's own config check (e.g. densenet's block_config)
        raise WeightsError(f"{path}: {exc}") from None
    ref = model.state_dict()
    state = {k: v.to(ref[k].dtype) if k in ref else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise WeightsError(f"{path}: tensors do not match model {arch!r}: {detail}") from None
    return model


def stamp(path: Path) -> tuple[str, list[str]]:
    """Bring ``path``'s metadata up to date, atomically: the tensors' digest, and the
    ``normalisation`` the model really computes (rebuilt from the file's ``arch`` and
    ``config`` with its tensors, then asked). Tensors and every other field stay exactly as
    they were, and a file already up to date is left alone. Returns the digest and the names
    of the fields rewritten. Refuses a file whose tensors do not match a digest it already
    has, or that fails any other load check."""
    path = Path(path)
    meta = read_metadata(path)
    state = _read_tensors(path, meta)
    model = _build(path, meta, state)  # copies the values: state keeps its own dtypes and bytes
    with safe_open(str(path), framework="pt") as fh:
        raw = dict(fh.metadata() or {})
    new = {**raw, DIGEST_KEY: tensors_digest(state), "normalisation": json.dumps(model.normalisation())}
    changed = [k for k in (DIGEST_KEY, "normalisation") if raw.get(k) != new[k]]
    if changed:
        _save_atomic(state, path, new)
    return new[DIGEST_KEY], changed


def main(argv: list[str]) -> int:
    """``python -m colorcli.weights stamp FILE...``: one line per file, exit 1 if any failed."""
    if len(argv) < 2 or argv[0] != "stamp":
        print("usage: python -m colorcli.weights stamp FILE...", file=sys.stderr)
        return 2
    failed = 0
    for name in argv[1:]:
        try:
            digest, changed = stamp(Path(name))
            print(f"{name}: {DIGEST_KEY} {digest}")
            if "normalisation" in changed:
                print(f"{name}: normalisation rewritten from the model's code")
            if not changed:
                print(f"{name}: up to date, not rewritten")
        except ColorcliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
