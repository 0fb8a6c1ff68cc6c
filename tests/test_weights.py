"""Shipped weights: save -> load round trip, metadata, rebuilding from the file, bad files."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from colorcli import files
from colorcli import weights as W
from colorcli.errors import ImageWriteError, WeightsError
from colorcli.models import create_model
from colorcli.inference import Colorizer, InferenceSettings
from colorcli.weights import DIGEST_KEY, default_weights_path, load_weights, read_metadata, save_weights

L_IN = torch.linspace(0, 100, 64 * 96).reshape(1, 1, 64, 96)


def _perturbed(name: str, **kwargs) -> torch.nn.Module:
    """A tiny model whose BN statistics are not the defaults, so buffers must survive too."""
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.8, 1.2)
    return model


def _rounded(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its float tensors rounded through fp16, as the file stores them."""
    ref = copy.deepcopy(model)
    ref.load_state_dict(
        {k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    )
    return ref


@pytest.fixture(scope="module")
def mcl_file(tmp_path_factory) -> Path:
    model = _perturbed("test_mcl")
    path = tmp_path_factory.mktemp("w") / "test_mcl.safetensors"
    save_weights(model, path, training={"steps": 7, "data": ["x"]}, metrics={"psnr": 21.5})
    return path


@pytest.mark.parametrize("name", ["test_mcl", "test_l2"])
def test_round_trip_gives_the_same_outputs(name, tmp_path):
    model = _perturbed(name)
    path = save_weights(model, tmp_path / "m.safetensors")
    loaded = load_weights(path)
    assert loaded.arch == name and loaded.config == model.config and not loaded.training
    assert all(v.dtype == torch.float32 for v in loaded.state_dict().values() if v.is_floating_point())
    with torch.no_grad():
        torch.testing.assert_close(loaded(L_IN), _rounded(model)(L_IN), atol=1e-5, rtol=1e-5)
        # Against the unrounded model the fp16 storage costs well under 1 ab unit.
        torch.testing.assert_close(
            loaded.decode(loaded(L_IN)), model.decode(model(L_IN)), atol=0.5, rtol=0
        )
    # half=False keeps float32 exactly.
    exact = load_weights(save_weights(model, tmp_path / "f32.safetensors", half=False))
    for k, v in model.state_dict().items():
        assert torch.equal(exact.state_dict()[k], v), k


def test_file_is_fp16_and_about_half_the_size(tmp_path):
    model = _perturbed("test_mcl")
    half = save_weights(model, tmp_path / "h.safetensors")
    full = save_weights(model, tmp_path / "f.safetensors", half=False)
    with safe_open(str(half), framework="pt") as fh:
        dtypes = {fh.get_tensor(k).dtype for k in fh.keys()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    assert half.stat().st_size < 0.6 * full.stat().st_size


def test_metadata_fields(mcl_file):
    meta = read_metadata(mcl_file)
    for key in ("format", "format_version", "arch", "config", "normalisation", "training",
                "metrics", "colorcli_version"):
        assert key in meta, key
    assert meta["format"] == W.FORMAT and meta["format_version"] == str(W.FORMAT_VERSION)
    assert meta["arch"] == "test_mcl"
    assert meta["config"] == create_model("test_mcl").config_dict()
    assert meta["training"] == {"steps": 7, "data": ["x"]}
    assert meta["metrics"] == {"psnr": 21.5}
    assert meta["normalisation"]["chroma_space"] == "lab"
    assert meta["normalisation"]["ab_norm"] == 110.0
    loaded = load_weights(mcl_file)
    assert loaded.weights_meta["training"]["steps"] == 7
    assert loaded.weights_path == mcl_file


def test_load_rebuilds_from_the_stored_architecture(tmp_path):
    # A non-default config: only the file knows it, so loading must not use the defaults.
    model = _perturbed("test_mcl", decoder_width=24, temperature=0.2)
    path = save_weights(model, tmp_path / "odd.safetensors")
    loaded = load_weights(path)
    assert loaded.config.decoder_width == 24 and loaded.config.temperature == 0.2
    assert loaded.config == model.config
    # The pipeline's loader does the same, whatever the name it was given, once names match.
    col = Colorizer.from_name("test_mcl", weights=path, settings=InferenceSettings(device="cpu"))
    assert col.backend.model.config == model.config
    with pytest.raises(WeightsError, match=r"odd\.safetensors.*'test_mcl', not 'test_l2'"):
        Colorizer.from_name("test_l2", weights=path, settings=InferenceSettings(device="cpu"))


def test_expect_arch_mismatch(mcl_file):
    with pytest.raises(WeightsError) as exc:
        load_weights(mcl_file, expect_arch="test_l2")
    assert str(mcl_file) in str(exc.value) and "test_l2" in str(exc.value)
    assert load_weights(mcl_file, expect_arch="test_mcl").arch == "test_mcl"


def _raises_naming(path: Path, match: str) -> None:
    with pytest.raises(WeightsError, match=match) as exc:
        load_weights(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: "), msg
    assert "\n" not in msg


def test_missing_file(tmp_path):
    _raises_naming(tmp_path / "nope.safetensors", "not found")


def test_random_bytes(tmp_path):
    path = tmp_path / "random.safetensors"
    path.write_bytes(os.urandom(4096))
    _raises_naming(path, "not a valid safetensors file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    _raises_naming(path, "not a valid safetensors file")


def test_truncated_file(mcl_file, tmp_path):
    data = mcl_file.read_bytes()
    for keep in (4, 100, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{keep}.safetensors"
        path.write_bytes(data[:keep])
        _raises_naming(path, "safetensors|cannot read tensors")


def test_corrupted_header(mcl_file, tmp_path):
    data = bytearray(mcl_file.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    # Damaged JSON header: not JSON at all; a byte changed in the middle (which may land in
    # a tensor name and so show up as a mismatch instead); a huge declared header length.
    data[8] = ord("x")
    path = tmp_path / "json.safetensors"
    path.write_bytes(bytes(data))
    _raises_naming(path, "not a valid safetensors file")
    data = bytearray(mcl_file.read_bytes())
    data[8 + header_len // 2] = ord("{")
    path = tmp_path / "brace.safetensors"
    path.write_bytes(bytes(data))
    _raises_naming(path, "not a valid safetensors file|tensors do not match")
    data = bytearray(mcl_file.read_bytes())
    data[:8] = (10**12).to_bytes(8, "little")
    path = tmp_path / "len.safetensors"
    path.write_bytes(bytes(data))
    _raises_naming(path, "not a valid safetensors file")


def _rewrite(src: Path, dst: Path, *, meta: dict | None = None, tensors: dict | None = None) -> Path:
    """Copy ``src`` with metadata fields and/or tensors replaced. New tensors drop the tensors'
    digest, as in a file from before digests: the load checks behind it are what is tested."""
    with safe_open(str(src), framework="pt") as fh:
        old_meta = fh.metadata()
        old_tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if tensors is not None:
        old_meta.pop(DIGEST_KEY, None)
    save_file(tensors if tensors is not None else old_tensors, str(dst), metadata={**old_meta, **(meta or {})})
    return dst


def test_wrong_format_version(mcl_file, tmp_path):
    path = _rewrite(mcl_file, tmp_path / "v99.safetensors", meta={"format_version": "99"})
    _raises_naming(path, "format version 99 is not supported")


def test_not_a_colorcli_file(mcl_file, tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(3)}, str(path))
    _raises_naming(path, "not a colorcli weights file")


def test_tensors_of_another_architecture(mcl_file, tmp_path):
    l2 = {k: v.contiguous() for k, v in create_model("test_l2").state_dict().items()}
    path = _rewrite(mcl_file, tmp_path / "swapped.safetensors", tensors=l2)
    _raises_naming(path, "tensors do not match model 'test_mcl'")
    # A missing tensor is refused too (strict loading), not silently left at its init value.
    mcl = load_weights(mcl_file).state_dict()
    mcl.pop("head.bias")
    path = _rewrite(mcl_file, tmp_path / "short.safetensors",
                    tensors={k: v.contiguous() for k, v in mcl.items()})
    _raises_naming(path, "tensors do not match")


def test_unknown_arch_and_bad_config(mcl_file, tmp_path):
    path = _rewrite(mcl_file, tmp_path / "arch.safetensors", meta={"arch": "no_such_model"})
    _raises_naming(path, "unknown architecture 'no_such_model'")
    cfg = json.dumps({**read_metadata(mcl_file)["config"], "bogus_field": 1})
    path = _rewrite(mcl_file, tmp_path / "cfg.safetensors", meta={"config": cfg})
    _raises_naming(path, "config does not match")
    path = _rewrite(mcl_file, tmp_path / "json.safetensors", meta={"metrics": "{not json"})
    _raises_naming(path, "'metrics' is not valid JSON")


def test_failed_save_keeps_the_old_file(mcl_file, tmp_path, monkeypatch):
    path = tmp_path / "keep.safetensors"
    path.write_bytes(mcl_file.read_bytes())

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", boom)  # the bytes are written; flushing them fails
    with pytest.raises(ImageWriteError, match=r"keep.safetensors: cannot write \(disk full\)"):  # one line, no traceback
        save_weights(create_model("test_l2"), path)
    assert path.read_bytes() == mcl_file.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.safetensors"]


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_saved_weights_take_the_umask_mode(tmp_path):
    """A weights file is readable as any new file is (safetensors' own writer made it 0600)."""
    old = os.umask(0o022)
    try:
        path = save_weights(create_model("test_l2"), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert W.read_metadata(path)["arch"] == "test_l2"


def test_default_weights_path_honours_the_environment(mcl_file, tmp_path, monkeypatch):
    monkeypatch.setenv("COLORCLI_WEIGHTS", str(mcl_file.parent))
    assert default_weights_path("test_mcl") == mcl_file
    monkeypatch.setenv("COLORCLI_WEIGHTS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert default_weights_path("test_mcl") is None


def test_models_command_adds_up_the_init_chain():
    from colorcli.cli.models import training_minutes

    chain = {"minutes": 19.8, "init": {"minutes": 76.0, "init": {"file": "x", "minutes": 10}}}
    assert training_minutes(chain) == (105.8, 3)
    assert training_minutes({"steps": 3}) == (0.0, 0)
    assert training_minutes({"minutes": 5, "init": {"file": "no minutes recorded"}}) == (5.0, 1)


# --- hostile metadata, damaged tensors, the digest (issue 13, items 3 and 4) ---------------------


def _without_digest(src: Path, dst: Path) -> Path:
    with safe_open(str(src), framework="pt") as fh:
        meta = {k: v for k, v in fh.metadata().items() if k != DIGEST_KEY}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.mark.parametrize("change", [
    {"base_width": 4096}, {"default_size": 32768}, {"default_size": 100}, {"decoder_width": 1 << 20},
    {"decoder_width": "128"}, {"width_div": 0}, {"temperature": float("nan")}, {"neighbours": True},
    {"no_such_key": 1}, {"block_config": "6,12,24,16"}, {"global_size": 4096},
])
def test_hostile_config_refused_before_anything_is_built(mcl_file, tmp_path, monkeypatch, change):
    cfg = json.dumps({**read_metadata(mcl_file)["config"], **change})
    path = _rewrite(mcl_file, tmp_path / "evil.safetensors", meta={"config": cfg})

    def never(*a, **k):
        raise AssertionError("a model was built from a hostile config")

    monkeypatch.setattr(W, "create_model", never)
    key = next(iter(change))
    _raises_naming(path, rf"config does not match model 'test_mcl' \((unknown )?config (key )?'?{key}")


def test_bounds_accept_every_registered_model_and_shipped_file():
    from colorcli.bounds import ConfigError, check_config, check_default_size
    from colorcli.models import list_models
    from colorcli.paths import REPO_WEIGHTS

    for name in list_models(include_test=True):
        check_config(name, create_model(name, pretrained=False).config_dict())
    for path in sorted(REPO_WEIGHTS.glob("*.safetensors")):
        read_metadata(path)  # shipped files pass the config check
    assert check_default_size("160") == 160
    with pytest.raises(ConfigError, match="default_size = 32768 is out of bounds"):
        check_default_size("32768")


def test_digest_is_written_and_order_stable(mcl_file):
    from safetensors.torch import load_file

    state = load_file(str(mcl_file))
    digest = read_metadata(mcl_file)[DIGEST_KEY]
    assert len(digest) == 64 and W.tensors_digest(state) == digest
    assert W.tensors_digest(dict(reversed(list(state.items())))) == digest
    one = next(iter(state))
    changed = {**state, one: state[one].clone()}
    changed[one].view(-1)[0] += 1
    assert W.tensors_digest(changed) != digest


def _tensor_region(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    return 8 + int.from_bytes(data[:8], "little"), len(data)


def test_bit_flips_are_refused_by_the_digest(mcl_file, tmp_path):
    data = bytearray(mcl_file.read_bytes())
    start, end = _tensor_region(mcl_file)
    rng = np.random.default_rng(0)
    for pos in rng.integers(start, end, 20):
        data[pos] ^= 1 << int(rng.integers(0, 6))  # low mantissa bits: finite, silently wrong
    path = tmp_path / "flipped.safetensors"
    path.write_bytes(bytes(data))
    _raises_naming(path, "tensors do not match the file's sha256")


def test_ff_block_refused_with_or_without_digest(mcl_file, tmp_path):
    for name, src in [("with", mcl_file), ("without", _without_digest(mcl_file, tmp_path / "nodigest.safetensors"))]:
        data = bytearray(src.read_bytes())
        start, end = _tensor_region(src)
        mid = (start + end) // 2
        data[mid:mid + 4096] = b"\xff" * 4096  # fp16 0xFFFF is NaN
        path = tmp_path / f"ff_{name}.safetensors"
        path.write_bytes(bytes(data))
        _raises_naming(path, "sha256" if name == "with" else "holds NaN or infinite values")


def test_file_without_digest_still_loads(mcl_file, tmp_path):
    path = _without_digest(mcl_file, tmp_path / "old.safetensors")
    model = load_weights(path)
    assert DIGEST_KEY not in model.weights_meta


def test_stamp_adds_the_digest_and_keeps_tensors_bit_identical(mcl_file, tmp_path, capsys):
    from safetensors.torch import load_file

    path = _without_digest(mcl_file, tmp_path / "old.safetensors")
    before = load_file(str(path))
    with safe_open(str(path), framework="pt") as fh:
        meta_before = fh.metadata()
    assert W.main(["stamp", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: {DIGEST_KEY} {read_metadata(mcl_file)[DIGEST_KEY]}"
    after = load_file(str(path))
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert v.dtype == after[k].dtype and torch.equal(v.reshape(-1).view(torch.uint8),
                                                         after[k].reshape(-1).view(torch.uint8))
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata() == {**meta_before, DIGEST_KEY: read_metadata(mcl_file)[DIGEST_KEY]}
    load_weights(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.safetensors"]  # no temp file left
    # A damaged file is not stamped into looking whole.
    data = bytearray(path.read_bytes())
    data[-3] ^= 1
    path.write_bytes(bytes(data))
    assert W.main(["stamp", str(path)]) == 1
    assert "sha256" in capsys.readouterr().err


# What the files shipped before 12-04 state, whatever the model computes.
STALE_NORMALISATION = json.dumps({"input": "L / 100 in [0, 1]", "L_norm": 100.0, "ab_norm": 110.0,
                                  "chroma_space": "lab"})


@pytest.mark.parametrize("name", ["test_unet", "test_l2", "test_fusion", "test_densenet"])
def test_stamp_rewrites_a_stale_normalisation_and_keeps_tensors_bit_identical(name, tmp_path, capsys):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = create_model(name).eval()
    fresh = save_weights(model, tmp_path / "fresh.safetensors")
    with safe_open(str(fresh), framework="pt") as fh:
        meta = {**fh.metadata(), "normalisation": STALE_NORMALISATION}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    path = tmp_path / "stale.safetensors"
    save_file(tensors, str(path), metadata=meta)
    assert read_metadata(path)["normalisation"] != model.normalisation()

    assert W.main(["stamp", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{path}: {DIGEST_KEY} {meta[DIGEST_KEY]}",
                                                    f"{path}: normalisation rewritten from the model's code"]
    stamped = read_metadata(path)
    assert stamped["normalisation"] == json.loads(json.dumps(model.normalisation()))
    assert stamped["normalisation"]["input"].startswith("(L / 100 - 0.5) / 0.5")
    if name == "test_unet":
        assert stamped["normalisation"]["ab_norm"] == 128.0
    # Tensors bit-identical, so their digest is the one the file had; every other field kept.
    after = load_file(str(path))
    assert tensors.keys() == after.keys()
    for k, v in tensors.items():
        assert v.dtype == after[k].dtype and torch.equal(v.reshape(-1).view(torch.uint8),
                                                         after[k].reshape(-1).view(torch.uint8))
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata() == {**meta, "normalisation": json.dumps(model.normalisation())}
    assert stamped[DIGEST_KEY] == meta[DIGEST_KEY]
    load_weights(path)
    # Up to date now: a second stamp leaves the file alone.
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    assert W.main(["stamp", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{path}: up to date, not rewritten"
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime


def test_oversized_file_refused_by_its_size(tmp_path):
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as fh:
        fh.truncate(W.MAX_WEIGHTS_BYTES + 1)  # sparse: costs no disk
    try:
        _raises_naming(path, "file too large for a weights file")
    finally:
        path.unlink()


def test_models_command_names_the_validation_set():
    """`colorcli models` says which folder its val figures come from (they are not comparable)."""
    from colorcli.cli.models import validation_set

    assert validation_set({"command": "colorcli train --model mcl --val ../shared/data/val_diverse/ --minutes 3"}) == "val_diverse"
    assert validation_set({"command": "colorcli train --val ../shared/data/val --val-limit 150"}) == "val (first 150)"
    assert validation_set({"command": "colorcli train --model mcl --minutes 3"}) is None
    assert validation_set({}) is None
