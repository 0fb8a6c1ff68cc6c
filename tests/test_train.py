"""The training loop on a tiny real cache: exact resume after Ctrl-C, --init from shipped
weights, the NaN guard, validation and best-model selection, the time budget, and the CLI."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

import make_corpus

from colorcli import train as T
from colorcli.cli import app
from colorcli.data import CachedImages, prepare
from colorcli.errors import TrainingError, WeightsError
from colorcli.interrupts import sigint_deferred
from colorcli.models.mcl import ColorNet
from colorcli.train import TrainCallbacks, TrainConfig, checkpoint_path, train
from colorcli.weights import read_metadata

N_PHOTOS = 40
BATCH = 4  # 10 steps per epoch


@pytest.fixture(scope="module")
def photos(tmp_path_factory, make_photo) -> Path:
    src = tmp_path_factory.mktemp("photos")
    for i in range(N_PHOTOS):
        Image.fromarray(make_photo(64, 64, seed=i)).save(src / f"p{i:02d}.png")
    return src


@pytest.fixture(scope="module")
def cache(photos, tmp_path_factory) -> Path:
    res = prepare([photos], tmp_path_factory.mktemp("cache") / "train.npz", size=64)
    assert res.kept == N_PHOTOS
    return res.path


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory, make_photo) -> Path:
    d = tmp_path_factory.mktemp("val")
    for i in range(2):
        Image.fromarray(make_photo(40, 56, seed=100 + i)).save(d / f"v{i}.png")
    return d


def _cfg(cache: Path, out: Path, **kw) -> TrainConfig:
    kw = {"model": "test_mcl", "max_steps": 12, "batch_size": BATCH, "size": 32, "device": "cpu",
          "cache_dir": str(out.parent / "cache"), "data": [str(cache)], **kw}
    return TrainConfig(out=str(out), **kw)


def _ckpt(path: Path) -> dict:
    return T.load_checkpoint(path)


def _assert_same_model(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class _InterruptAt(TrainCallbacks):
    """Ctrl-C as the user would press it, right after step ``at`` completes."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.steps: list[int] = []

    def on_step(self, step, total_steps, loss, phase) -> None:
        self.steps.append(step)
        if step == self.at:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def straight(cache, tmp_path_factory) -> dict:
    """12 steps without interruption (crossing the epoch end at step 10): the reference."""
    out = tmp_path_factory.mktemp("straight") / "m.safetensors"
    res = train(_cfg(cache, out))
    assert res.steps == 12 and not res.interrupted and res.weights == out
    return _ckpt(res.checkpoint)


def test_ctrl_c_saves_a_checkpoint_and_resume_is_exact(cache, tmp_path, straight):
    out = tmp_path / "m.safetensors"
    cb = _InterruptAt(2)
    res = train(_cfg(cache, out), cb)
    assert res.interrupted and res.steps == 2 and cb.steps == [1, 2]
    assert res.checkpoint == checkpoint_path(out) and res.checkpoint.is_file()
    assert res.weights is None and not out.exists()  # never validated: no weights yet
    assert _ckpt(res.checkpoint)["step"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []

    steps: list[int] = []

    class Record(TrainCallbacks):
        def on_step(self, step, total_steps, loss, phase):
            steps.append(step)

    res2 = train(_cfg(cache, out, resume=str(res.checkpoint)), Record())
    assert res2.steps == 12 and not res2.interrupted and steps == list(range(3, 13))
    final = _ckpt(res2.checkpoint)
    _assert_same_model(final["model"], straight["model"])
    # The optimizer moments too: a later resume of either would go on identically.
    for sa, sb in zip(final["optimizer"]["state"].values(), straight["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert torch.equal(final["generator"], straight["generator"])


def _sigint_in_loss(monkeypatch, call: int, times: int) -> None:
    """Send ourselves SIGINT ``times`` times from inside the ``call``-th forward pass, as a
    user's Ctrl-C lands mid-step (the batch and its crops already drawn)."""
    calls = {"n": 0}
    real = ColorNet.loss

    def loss(self, raw, batch):
        calls["n"] += 1
        if calls["n"] == call:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):  # Python runs the handler between bytecodes
                    pass
        return real(self, raw, batch)

    monkeypatch.setattr(ColorNet, "loss", loss)


def test_ctrl_c_inside_a_step_waits_for_it_and_resume_is_exact(cache, tmp_path, straight, monkeypatch):
    out = tmp_path / "m.safetensors"
    with monkeypatch.context() as m:
        _sigint_in_loss(m, 5, times=1)
        res = train(_cfg(cache, out))
    assert res.interrupted and res.steps == 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    res2 = train(_cfg(cache, out, resume=str(res.checkpoint)))
    assert res2.steps == 12
    _assert_same_model(_ckpt(res2.checkpoint)["model"], straight["model"])


def test_second_ctrl_c_breaks_into_the_step_and_rolls_its_draws_back(cache, tmp_path, monkeypatch):
    out = tmp_path / "m.safetensors"
    with monkeypatch.context() as m:
        _sigint_in_loss(m, 5, times=2)
        res = train(_cfg(cache, out))
    assert res.interrupted and res.steps == 4
    ck = _ckpt(res.checkpoint)
    # The fifth batch and its crops are not consumed: resume draws them again.
    assert ck["step"] == 4 and ck["pos"] == 4
    assert train(_cfg(cache, out, resume=str(res.checkpoint))).steps == 12


def test_sigint_deferred_holds_the_first_and_yields_to_the_second():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with sigint_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            reached.append(1)
    assert reached == [1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        with sigint_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            reached.append(2)  # not reached: the second Ctrl-C does not wait
    assert reached == [1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with sigint_deferred():  # no signal: nothing raised
        pass


def test_caches_are_joined_and_a_cache_named_twice_weighs_twice(cache, photos, tmp_path):
    other = prepare([photos], tmp_path / "other.npz", size=64).path
    one = CachedImages(cache)
    joined = CachedImages([cache, other, other])
    assert len(joined) == 3 * len(one)
    assert np.array_equal(joined.images[len(one):2 * len(one)], joined.images[2 * len(one):])
    assert np.array_equal(joined.bin_counts, 3 * one.bin_counts)
    out = tmp_path / "w.safetensors"
    train(_cfg(cache, out, max_steps=2, data=[str(cache), str(other), str(other)]))
    meta = read_metadata(out)["training"]
    assert meta["photos"] == 3 * N_PHOTOS and meta["cache"] == f"{cache}, {other}, {other}"


def test_caches_of_other_sizes_or_mixed_with_folders_are_refused(cache, photos, tmp_path):
    small = prepare([photos], tmp_path / "small.npz", size=32).path
    with pytest.raises(TrainingError, match="different crop sizes"):
        CachedImages([cache, small])
    with pytest.raises(TrainingError, match="not both"):
        train(_cfg(cache, tmp_path / "w.safetensors", data=[str(cache), str(photos)]))


def test_hostile_caches_are_refused_in_one_line(cache, tmp_path):
    # A cache is a file a user may be handed: whatever it holds, it is a TrainingError naming
    # the file, never a traceback or an allocation the file does not pay for.
    z = dict(np.load(cache, allow_pickle=False))
    meta = json.loads(str(z["meta"]))
    cases = {  # name: (arrays, what the message says)
        "bomb": (dict(z, data=np.zeros(50_000_000, np.uint8)), "compressed member data"),  # ~50 KB on disk
        "offsets": (dict(z, offsets=z["offsets"] * 2), "do not tile"),
        "size": (dict(z, meta=np.array(json.dumps({**meta, "size": 100_000}))), "crop size 100000"),
        "photo": (dict(z, meta=np.array(json.dumps({**meta, "size": 16}))), "photo 0 of the cache is unreadable"),
    }
    for name, (arrays, says) in cases.items():
        bad = tmp_path / f"{name}.npz"
        (np.savez_compressed if name == "bomb" else np.savez)(bad, **arrays)
        with pytest.raises(TrainingError, match=says) as err:
            CachedImages(bad)
        assert str(err.value).startswith(f"{bad}: ") and "\n" not in str(err.value), name
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(TrainingError, match="junk.npz: not a colorcli training cache"):
        CachedImages(tmp_path / "junk.npz")


def test_resume_takes_session_fields_and_a_new_budget(cache, tmp_path):
    first = tmp_path / "a" / "m.safetensors"
    res = train(_cfg(cache, first, max_steps=2, lr=5e-4, command="colorcli train first"))
    assert res.steps == 2
    # A new --out, a bigger budget; other flags (lr, batch size) come from the checkpoint.
    moved = tmp_path / "b" / "m.safetensors"
    res2 = train(_cfg(cache, moved, max_steps=4, lr=1.0, batch_size=8, resume=str(res.checkpoint),
                      command="colorcli train again"))
    assert res2.steps == 4 and res2.weights == moved and res2.checkpoint == checkpoint_path(moved)
    ck = _ckpt(res2.checkpoint)
    assert ck["config"]["lr"] == 5e-4 and ck["config"]["batch_size"] == BATCH
    assert ck["config"]["out"] == str(moved)
    meta = read_metadata(moved)["training"]
    assert meta["steps"] == 4 and meta["command"] == "colorcli train first"
    assert meta["sessions"] == ["colorcli train first", "resume: colorcli train again"]
    # Resuming a finished run with no new budget does no steps and no second validation.
    res3 = train(_cfg(cache, moved, max_steps=None, resume=str(res2.checkpoint)))
    assert res3.steps == 4 and len(_ckpt(res3.checkpoint)["history"]) == len(ck["history"])


def test_resume_refuses_a_wrong_checkpoint(cache, tmp_path, photos):
    out = tmp_path / "m.safetensors"
    res = train(_cfg(cache, out, max_steps=1))
    with pytest.raises(TrainingError, match="checkpoint is for model 'test_mcl', not 'test_l2'"):
        train(TrainConfig(model="test_l2", data=[], out=str(out), resume=str(res.checkpoint)))
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match=f"{bad}: cannot read checkpoint"):
        train(_cfg(cache, out, resume=str(bad)))
    # The checkpoint's data order indexes its own cache: a different cache is refused.
    ck = _ckpt(res.checkpoint)
    twenty = tmp_path / "twenty"
    twenty.mkdir()
    for p in sorted(photos.iterdir())[:20]:
        (twenty / p.name).write_bytes(p.read_bytes())
    ck["config"]["data"] = [str(prepare([twenty], tmp_path / "t.npz", size=64).path)]
    torch.save(ck, tmp_path / "other.ckpt")
    with pytest.raises(TrainingError, match="different training cache"):
        train(_cfg(cache, out, resume=str(tmp_path / "other.ckpt")))
    with pytest.raises(TrainingError, match="not both"):
        train(_cfg(cache, out, resume=str(res.checkpoint), init=str(out)))


def test_resume_never_unpickles_code(cache, tmp_path):
    out = tmp_path / "m.safetensors"
    res = train(_cfg(cache, out, max_steps=1))
    # A real checkpoint with one object that runs code when unpickled (the corpus's case).
    marker = tmp_path / "pwned"
    evil = make_corpus.make_evil_checkpoint(tmp_path / "evil.ckpt", res.checkpoint, marker)
    # The payload is live: an unsafe load runs it (so the check below can fail).
    torch.load(evil, map_location="cpu", weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(TrainingError) as exc:
        train(_cfg(cache, out, resume=str(evil)))
    assert not marker.exists()
    msg = str(exc.value)
    assert msg.startswith(f"{evil}: cannot read checkpoint: it names ") and "could run code" in msg
    assert "\n" not in msg
    # Through the CLI: one line on stderr, exit code 2, and still nothing run.
    args = ["train", "--model", "test_mcl", "--out", str(out), "--device", "cpu", "--resume", str(evil)]
    cli = CliRunner().invoke(app, args)
    assert cli.exit_code == 2 and not marker.exists()
    assert cli.stderr.strip().count("\n") == 0 and "could run code" in cli.stderr


@pytest.mark.parametrize("where", ["model_args", "model_config"])
def test_resume_refuses_a_hostile_model_config(cache, tmp_path, monkeypatch, where):
    """A checkpoint whose config asks for a huge network: refused before anything is built."""
    import colorcli.train as train_module

    out = tmp_path / "m.safetensors"
    res = train(_cfg(cache, out, max_steps=1))
    ck = _ckpt(res.checkpoint)
    if where == "model_args":
        ck["config"]["model_args"] = {"decoder_width": 1 << 16}
    else:
        ck["model_config"] = {**ck["model_config"], "decoder_width": 1 << 16}
    evil = tmp_path / "evil.ckpt"
    torch.save(ck, evil)

    def never(*a, **k):
        raise AssertionError("a model was built from a hostile checkpoint config")

    monkeypatch.setattr(train_module, "create_model", never)
    with pytest.raises(TrainingError, match=rf"{evil}: config decoder_width = 65536 is out of bounds"):
        train(_cfg(cache, out, resume=str(evil)))


def test_init_from_shipped_weights(cache, tmp_path):
    # First session: a non-default architecture, which only the weights file remembers.
    first = tmp_path / "first.safetensors"
    train(_cfg(cache, first, max_steps=3, model_args={"decoder_width": 24}, command="first"))
    # Second session from the committed weights only: the checkpoint is gone.
    checkpoint_path(first).unlink()
    second = tmp_path / "second.safetensors"
    res = train(_cfg(cache, second, max_steps=2, init=str(first), lr=0.0, weight_decay=0.0))
    assert res.steps == 2
    meta = read_metadata(second)
    assert meta["config"]["decoder_width"] == 24
    init = meta["training"]["init"]
    assert init["file"] == str(first) and init["steps"] == 3 and init["command"] == "first"
    assert len(init["sha256"]) == 12
    # lr = 0: the parameters are exactly the file's (fresh optimizer, no update), loaded
    # strictly; only BN running statistics moved with the two batches.
    a, b = load_file(str(first)), load_file(str(second))
    params = {n for n, _ in T.create_model("test_mcl", decoder_width=24).named_parameters()}
    for name in params:
        assert torch.equal(a[name], b[name]), name
    assert any(not torch.equal(a[k], b[k]) for k in a if k.endswith("running_mean"))
    assert torch.equal(a["centres"], b["centres"])
    # The rebalancing prior is recomputed from the data trained on now (it may be wider than
    # the file's): the same as a fresh model's on this cache.
    fresh = T.create_model("test_mcl", decoder_width=24)
    fresh.set_prior(CachedImages(cache).bin_counts)
    for name in ("prior", "class_weights"):
        assert torch.equal(fresh.state_dict()[name].half(), b[name])  # weights are stored fp16
    # A resume of the init run rebuilds the file's architecture.
    res2 = train(_cfg(cache, second, max_steps=3, resume=str(res.checkpoint)))
    assert res2.steps == 3 and read_metadata(second)["training"]["init"]["file"] == str(first)


def test_init_model_arg_changes_only_loss_and_decoding(cache, tmp_path):
    first = tmp_path / "first.safetensors"
    train(_cfg(cache, first, max_steps=1))
    second = tmp_path / "second.safetensors"
    train(_cfg(cache, second, max_steps=1, init=str(first), model_args={"reg_weight": 3, "temperature": "0.5"}))
    cfg = read_metadata(second)["config"]
    assert cfg["reg_weight"] == 3.0 and cfg["temperature"] == 0.5
    with pytest.raises(TrainingError, match="decoder_width would change the architecture"):
        train(_cfg(cache, tmp_path / "third.safetensors", max_steps=1, init=str(first),
                   model_args={"decoder_width": 8}))
    with pytest.raises(TrainingError, match="--model-arg"):
        train(_cfg(cache, tmp_path / "third.safetensors", max_steps=1, init=str(first),
                   model_args={"lam": "lots"}))


def test_init_adds_a_cf_head_that_starts_at_gain_one_and_trains_fast(cache, tmp_path):
    first = tmp_path / "first.safetensors"
    train(_cfg(cache, first, max_steps=1))
    second = tmp_path / "second.safetensors"
    train(_cfg(cache, second, max_steps=0, init=str(first), model_args={"cf_head": True}))
    a, b = load_file(first), load_file(second)
    assert set(b) - set(a) == {"cf_head.weight", "cf_head.bias"} and all(torch.equal(a[k], b[k]) for k in a)
    assert not b["cf_head.weight"].any() and not b["cf_head.bias"].any()
    assert read_metadata(second)["config"]["cf_head"] is True
    # With a hidden layer (cf_hidden): its output layer starts at zero, gain 1.
    mlp = tmp_path / "mlp.safetensors"
    train(_cfg(cache, mlp, max_steps=0, init=str(first), model_args={"cf_head": True, "cf_hidden": 4}))
    c = load_file(mlp)
    assert set(c) - set(a) == {"cf_head.0.weight", "cf_head.0.bias", "cf_head.2.weight", "cf_head.2.bias"}
    assert c["cf_head.0.weight"].shape[0] == 4 and not c["cf_head.2.weight"].any()
    # Training moves the head, in its own optimizer group at calibration_lr_mult.
    third = tmp_path / "third.safetensors"
    res = train(_cfg(cache, third, max_steps=3, init=str(second)))
    assert load_file(third)["cf_head.bias"].any()
    ck = T.load_checkpoint(res.checkpoint)
    groups = {g["name"]: g for g in ck["optimizer"]["param_groups"]}
    assert groups["calibration"]["lr_mult"] == 10.0
    with pytest.raises(TrainingError, match="would remove a trained part"):
        train(_cfg(cache, tmp_path / "fourth.safetensors", max_steps=1, init=str(third),
                   model_args={"cf_head": False}))


def test_calibrate_only_fits_the_gain_alone_and_resumes(cache, photos, make_photo, val_dir, tmp_path):
    """``--calibrate-only`` colorizes the photos of folders as they are: the cf_head is fitted
    on them, gray and broken files are skipped (named), and every other tensor (BN statistics
    included) stays bit for bit the --init file's. A run stopped part way resumes from its
    checkpoint with the rows collected so far."""
    first = tmp_path / "first.safetensors"
    train(_cfg(cache, first, max_steps=1))
    extra = tmp_path / "extra"
    extra.mkdir()
    for i in range(3):  # another folder, other sizes and shapes
        Image.fromarray(make_photo(40 + 8 * i, 72, seed=50 + i)).save(extra / f"e{i}.png")
    Image.fromarray(np.full((48, 48, 3), 128, np.uint8)).save(extra / "gray.png")
    (extra / "broken.jpg").write_bytes(b"not a jpeg")
    data = [str(photos), str(extra)]
    second = tmp_path / "second.safetensors"
    messages = []

    class Collect(TrainCallbacks):
        def on_message(self, text):
            messages.append(text)

    res = train(_cfg(cache, second, max_steps=N_PHOTOS + 3, init=str(first), model_args={"cf_head": True},
                     calibrate_only=True, val=str(val_dir), data=data), Collect())
    assert res.steps == N_PHOTOS + 3  # every colour photo of both folders
    assert any("broken.jpg" in m for m in messages)
    a, b = load_file(first), load_file(second)
    assert set(b) - set(a) == {"cf_head.weight", "cf_head.bias"}
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert b["cf_head.bias"].any()
    report = read_metadata(second)["training"]["calibration"]
    assert report["photos"] == N_PHOTOS + 3 and report["held_out"] == 4
    assert report["skipped"] == {"gray": 1, "unreadable": 1}
    assert report["groups"] == {"0": str(photos), "1": str(extra)}
    # The fit brings the mean colourfulness of the rows it fitted to the photos'.
    fit = report["after"]["fit"]
    assert abs(fit["cf_pred"] - fit["cf_true"]) < abs(report["before"]["fit"]["cf_pred"] - fit["cf_true"])
    assert set(fit["groups"]) == {"0", "1"}
    ck = T.load_checkpoint(res.checkpoint)
    assert ck["calibration"]["features"].shape[0] == N_PHOTOS + 3 and len(ck["calibration"]["order"]) == N_PHOTOS + 5
    # Resume a shorter run: it goes on from the rows its checkpoint holds.
    part = tmp_path / "part.safetensors"
    train(_cfg(cache, part, max_steps=5, init=str(first), model_args={"cf_head": True}, calibrate_only=True,
               data=data))
    res = train(_cfg(cache, part, max_steps=8, resume=str(T.checkpoint_path(part)), data=data))
    rows = T.load_checkpoint(res.checkpoint)["calibration"]
    assert res.steps == 8 and rows["features"].shape[:2] == (8, 2)  # a row for each mirror view
    assert torch.equal(rows["index"][:5], ck["calibration"]["index"][:5])  # same order, same seed
    torch.testing.assert_close(rows["curves"][:5], ck["calibration"]["curves"][:5])
    # A checkpoint collected before views were kept apart (one averaged row a photo) is refused.
    old = T.load_checkpoint(res.checkpoint)
    old["calibration"]["features"] = old["calibration"]["features"].mean(dim=1)
    T._atomic_torch_save(old, res.checkpoint)
    with pytest.raises(TrainingError, match="collect afresh"):
        train(_cfg(cache, part, max_steps=9, resume=str(res.checkpoint), data=data))
    with pytest.raises(TrainingError, match="has no calibration part"):
        train(_cfg(cache, tmp_path / "third.safetensors", max_steps=1, init=str(first), calibrate_only=True,
                   data=data))
    with pytest.raises(TrainingError, match="--init FILE"):
        train(_cfg(cache, tmp_path / "third.safetensors", max_steps=1, model_args={"cf_head": True},
                   calibrate_only=True, data=data))
    with pytest.raises(TrainingError, match="photo folders, not prepared caches"):
        train(_cfg(cache, tmp_path / "third.safetensors", max_steps=1, init=str(second), calibrate_only=True))


def test_zero_steps_rewrites_init_weights_with_new_decoding(cache, val_dir, tmp_path):
    """``--max-steps 0 --init``: the same tensors, the new decoding settings, and validation
    figures measured under them."""
    first = tmp_path / "first.safetensors"
    train(_cfg(cache, first, max_steps=2))
    second = tmp_path / "second.safetensors"
    res = train(_cfg(cache, second, max_steps=0, init=str(first), val=str(val_dir),
                     model_args={"neutral_radius": 10, "chroma_gain": "1.2"}))
    assert res.steps == 0
    a, b = load_file(first), load_file(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    meta = read_metadata(second)
    assert meta["config"]["neutral_radius"] == 10.0 and meta["config"]["chroma_gain"] == 1.2
    assert meta["training"]["steps"] == 0 and meta["training"]["init"]["file"] == str(first)
    assert meta["metrics"]["step"] == 0 and meta["metrics"]["val"] == str(val_dir)
    assert res.best["psnr"] == meta["metrics"]["psnr"]
    with pytest.raises(TrainingError, match="--max-steps 0 trains nothing"):
        train(_cfg(cache, tmp_path / "third.safetensors", max_steps=0))
    with pytest.raises(TrainingError, match="0 or more"):
        train(_cfg(cache, tmp_path / "third.safetensors", max_steps=-1, init=str(first)))


def test_init_from_another_model_copies_matching_tensors(cache, tmp_path):
    # l2 from mcl (the MCL paper's comparison on one network): encoder and decoder carry over,
    # the 2-channel head starts fresh.
    mcl = tmp_path / "mcl.safetensors"
    train(_cfg(cache, mcl, max_steps=2))
    l2 = tmp_path / "l2.safetensors"
    messages = []

    class Log(TrainCallbacks):
        def on_message(self, text: str) -> None:
            messages.append(text)

    train(_cfg(cache, l2, model="test_l2", init=str(mcl), max_steps=1, lr=0.0, weight_decay=0.0), Log())
    a, b = load_file(str(mcl)), load_file(str(l2))
    params = {n for n, _ in T.create_model("test_l2").named_parameters()}
    shared = {k for k in params if not k.startswith("head.")}
    assert shared and all(torch.equal(a[k], b[k]) for k in shared)
    assert b["head.weight"].shape[0] == 2 != a["head.weight"].shape[0]
    init = read_metadata(l2)["training"]["init"]
    assert init["arch"] == "test_mcl" and init["tensors_copied"] == f"{len(b) - 2}/{len(b)}"
    assert any("tensors copied" in m for m in messages)


def test_init_with_nothing_in_common_is_refused(cache, tmp_path):
    unet = tmp_path / "unet.safetensors"
    train(TrainConfig(model="test_unet", data=[str(cache)], out=str(unet), max_steps=1,
                      batch_size=BATCH, size=32, device="cpu", cache_dir=str(tmp_path)))
    with pytest.raises(TrainingError, match=f"{unet}: no tensor matches model 'test_mcl'"):
        train(_cfg(cache, tmp_path / "m.safetensors", init=str(unet)))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\0" * 100)
    with pytest.raises(WeightsError, match=str(bad)):
        train(_cfg(cache, tmp_path / "m.safetensors", init=str(bad)))


def _nan_from_call(monkeypatch, n: int, *, grads: bool = False) -> None:
    """Make the model's loss (or only its gradients) non-finite from the ``n``-th call on."""
    calls = {"n": 0}
    real = ColorNet.loss

    def loss(self, raw, batch):
        calls["n"] += 1
        value = real(self, raw, batch)
        if calls["n"] < n:
            return value
        if grads:
            # Finite value, NaN gradient: d/dx sqrt(x) at 0 is inf, times 0 is NaN.
            return value + 0.0 * torch.sqrt(0.0 * self.head.bias.sum())
        return value * float("nan")

    monkeypatch.setattr(ColorNet, "loss", loss)


@pytest.mark.parametrize("grads", [False, True], ids=["loss", "gradients"])
def test_nan_stops_training_without_writing_weights(cache, tmp_path, monkeypatch, grads):
    out = tmp_path / "m.safetensors"
    # Validate (and so write weights) after every step, to see that the bad step writes none.
    written = []

    class Seen(TrainCallbacks):
        def on_validate(self, step, result, best):
            written.append((step, out.read_bytes()))

    _nan_from_call(monkeypatch, 4, grads=grads)
    with pytest.raises(TrainingError, match="at step 4; stopped without writing weights") as exc:
        train(_cfg(cache, out, val_every_minutes=0.0), Seen())
    assert "lower --lr" in str(exc.value)
    assert [s for s, _ in written] == [1, 2, 3]
    assert out.read_bytes() == written[-1][1]
    assert read_metadata(out)["training"]["steps"] == 3
    # From the very first step: nothing at all is written.
    out2 = tmp_path / "first.safetensors"
    _nan_from_call(monkeypatch, 1, grads=grads)
    with pytest.raises(TrainingError, match="at step 1"):
        train(_cfg(cache, out2))
    assert not out2.exists() and not checkpoint_path(out2).exists()


def test_real_validation_and_best_selection(cache, tmp_path, val_dir, monkeypatch):
    out = tmp_path / "m.safetensors"
    res = train(_cfg(cache, out, max_steps=2, val=str(val_dir)))
    for key in ("loss", "psnr", "delta_cf", "cf_gap", "auc"):
        assert np.isfinite(res.best[key]), key
    metrics = read_metadata(out)["metrics"]
    assert metrics["val"] == str(val_dir) and metrics["step"] == 2

    # Scripted validation losses: the weights file must hold the step with the lowest.
    losses = iter([3.0, 1.0, 2.0, 0.5, 0.7])
    monkeypatch.setattr(T, "validate", lambda model, val, device: {"loss": next(losses)})
    seen: list[tuple[int, bool]] = []

    class Seen(TrainCallbacks):
        def on_validate(self, step, result, best):
            seen.append((step, best))

    out2 = tmp_path / "best.safetensors"
    res2 = train(_cfg(cache, out2, max_steps=5, val=str(val_dir), val_every_minutes=0.0), Seen())
    assert seen == [(1, True), (2, True), (3, False), (4, True), (5, False)]
    assert res2.best["loss"] == 0.5 and res2.best["step"] == 4
    assert read_metadata(out2)["metrics"]["step"] == 4
    assert [h["step"] for h in _ckpt(res2.checkpoint)["history"]] == [1, 2, 3, 4, 5]


def test_weights_metadata_keeps_only_the_latest_validations(cache, tmp_path, val_dir, monkeypatch):
    """However often a run validates, the file holds only the latest META_VALIDATIONS of them,
    so its header stays far inside what a reader accepts; the checkpoint keeps them all."""
    losses = iter([3.0, 2.0, 1.0])
    monkeypatch.setattr(T, "validate", lambda model, val, device: {"loss": next(losses)})
    monkeypatch.setattr(T, "META_VALIDATIONS", 2)
    out = tmp_path / "w.safetensors"
    res = train(_cfg(cache, out, max_steps=3, val=str(val_dir), val_every_minutes=0.0, select="loss"))
    assert [v["step"] for v in read_metadata(out)["training"]["validations"]] == [2, 3]
    assert [h["step"] for h in _ckpt(res.checkpoint)["history"]] == [1, 2, 3]


def test_select_by_psnr_and_switching_on_resume(cache, tmp_path, val_dir, monkeypatch):
    """--select psnr keeps the highest PSNR (not the lowest loss); a resume can switch what it
    keeps from then on, and the training itself goes on the same."""
    scripted = iter([(3.0, 20.0), (1.0, 19.0), (2.0, 21.0), (0.5, 20.5),  # run 1: by psnr
                     (0.4, 20.8), (0.9, 21.5)])  # resumed by loss: step 5 (0.4) < 0.5, then 6 no
    monkeypatch.setattr(T, "validate", lambda model, val, device: dict(zip(("loss", "psnr"), next(scripted))))
    seen: list[tuple[int, bool]] = []

    class Seen(TrainCallbacks):
        def on_validate(self, step, result, best):
            seen.append((step, best))

    out = tmp_path / "psnr.safetensors"
    res = train(_cfg(cache, out, max_steps=4, val=str(val_dir), val_every_minutes=0.0, select="psnr"), Seen())
    assert seen == [(1, True), (2, False), (3, True), (4, False)]
    assert res.best["step"] == 3 and read_metadata(out)["metrics"]["psnr"] == 21.0
    assert read_metadata(out)["training"]["select"] == "psnr"
    # The file holds every validation up to the one it was kept at.
    assert [(v["step"], v["psnr"]) for v in read_metadata(out)["training"]["validations"]] == \
        [(1, 20.0), (2, 19.0), (3, 21.0)]
    # Resumed without --select: the checkpoint's choice (psnr) stays ...
    assert _ckpt(res.checkpoint)["config"]["select"] == "psnr"
    # ... and with --select loss it switches: step 5's loss 0.4 beats step 3's 2.0.
    res2 = train(_cfg(cache, out, max_steps=6, val=str(val_dir), val_every_minutes=0.0,
                      resume=str(res.checkpoint), select="loss"), Seen())
    assert seen[4:] == [(5, True), (6, False)]
    assert res2.best["step"] == 5 and read_metadata(out)["training"]["select"] == "loss"
    with pytest.raises(TrainingError, match="unknown --select 'ssim'"):
        train(_cfg(cache, tmp_path / "x.safetensors", max_steps=1, select="ssim"))


def test_time_budget_counts_validation_and_stops_the_run(cache, tmp_path, val_dir, monkeypatch):
    import time

    validations = []

    def slow_validate(model, val, device):
        validations.append(1)
        time.sleep(0.3)
        return {"loss": 1.0}

    monkeypatch.setattr(T, "validate", slow_validate)
    out = tmp_path / "m.safetensors"
    # 0.01 minutes = 0.6 s: the first validation alone uses half of it, so the budget ends
    # after two or three (a budget blind to validation would run one after every step). Counted,
    # not timed: a loaded machine slows the steps but not the count.
    res = train(_cfg(cache, out, max_steps=10_000, minutes=0.01, val=str(val_dir),
                     val_every_minutes=0.0))
    assert not res.interrupted and 1 <= res.steps < 100
    assert res.seconds >= 0.6
    assert len(validations) <= 3


def test_no_budget_and_no_data_are_user_errors(cache, tmp_path):
    with pytest.raises(TrainingError, match="--minutes, --epochs or --max-steps"):
        train(_cfg(cache, tmp_path / "m.safetensors", max_steps=None))
    with pytest.raises(TrainingError, match="--data"):
        train(TrainConfig(model="test_mcl", data=[], out=str(tmp_path / "m"), max_steps=1))
    with pytest.raises(TrainingError, match="fewer than one batch"):
        train(_cfg(cache, tmp_path / "m.safetensors", batch_size=64))


def test_cli_prepare_train_and_resume(photos, tmp_path):
    runner = CliRunner()
    cache = tmp_path / "c.npz"
    res = runner.invoke(app, ["prepare", str(photos), "--out", str(cache), "--size", "64"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"{cache}: {N_PHOTOS} photos")
    out = tmp_path / "w" / "tiny.safetensors"
    args = ["train", "--model", "test_mcl", "--out", str(out), "--batch-size", str(BATCH),
            "--size", "32", "--device", "cpu", "--cache-dir", str(tmp_path / "cc")]
    res = runner.invoke(app, [*args, "--data", str(cache), "--max-steps", "2"])
    assert res.exit_code == 0, res.output
    assert res.stdout.split()[0] == str(out) and "steps=2" in res.stdout
    assert out.is_file() and checkpoint_path(out).is_file()
    assert "training on cpu" in res.stderr
    assert "no --val, the latest weights are kept" in res.stderr and "nan" not in res.stderr
    res = runner.invoke(app, [*args, "--resume", str(checkpoint_path(out)), "--max-steps", "4"])
    assert res.exit_code == 0, res.output
    assert res.stdout.split()[0] == str(out) and "steps=4" in res.stdout
    assert "resumed from" in res.stderr
    assert read_metadata(out)["training"]["steps"] == 4
    # A user error is one line on stderr and exit code 2.
    res = runner.invoke(app, [*args, "--data", str(cache), "--max-steps", "1",
                              "--init", str(tmp_path / "missing.safetensors")])
    assert res.exit_code == 2
    assert res.stderr.strip() == f"error: {tmp_path / 'missing.safetensors'}: weights file not found"


def test_pretrained_encoder_is_frozen_first_then_trained_gently(cache, tmp_path):
    phases: list[str] = []

    class Record(TrainCallbacks):
        def on_step(self, step, total_steps, loss, phase):
            phases.append(phase)

    out = tmp_path / "m.safetensors"
    res = train(_cfg(cache, out, max_steps=4, freeze_frac=0.5, model_args={"pretrained": True}), Record())
    assert phases == ["frozen encoder"] * 2 + ["full"] * 2
    groups = {g["name"]: g["lr_mult"] for g in _ckpt(res.checkpoint)["optimizer"]["param_groups"]}
    assert groups == {"decoder": 1.0, "encoder": 0.1}
    # Not pretrained: nothing frozen, one learning rate for all (the same group layout).
    phases.clear()
    res = train(_cfg(cache, tmp_path / "n.safetensors", max_steps=2, freeze_frac=0.5), Record())
    assert phases == ["full", "full"]
    groups = {g["name"]: g["lr_mult"] for g in _ckpt(res.checkpoint)["optimizer"]["param_groups"]}
    assert groups == {"decoder": 1.0, "encoder": 1.0}
