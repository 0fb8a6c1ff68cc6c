"""``colorcli train`` as torchrun runs it: 2 gloo processes on localhost (torch.multiprocessing),
a tiny model, a few steps. Afterwards both ranks hold the same weights, the loss follows a
single process that trains on the same global batches, and rank 0 alone wrote the files."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from colorcli import train as T
from colorcli.data import prepare
from colorcli.errors import TrainingError
from colorcli.train import TrainCallbacks, TrainConfig, train
from colorcli.weights import read_metadata

WORLD = 2
PER_RANK = 2  # --batch-size: rows per process; the global batch is 4
STEPS = 4
# BatchNorm normalises each process's 2 rows (DDP's default; SyncBatchNorm is GPU-only), the
# single process all 4: the losses agree within 1%, not bit for bit (measured: at most 0.15% over the
# 4 steps, 5.720 vs 5.728).
LOSS_RTOL = 0.01


def _cfg(cache: Path, out: Path, batch_size: int, **kw) -> TrainConfig:
    kw = {"max_steps": STEPS, **kw}
    return TrainConfig(model="test_mcl", data=[str(cache)], out=str(out), batch_size=batch_size,
                       size=32, device="cpu", seed=1, cache_dir=str(out.parent / "cache"), **kw)


class _Losses(TrainCallbacks):
    def __init__(self, ctrl_c_at: int | None = None) -> None:
        self.losses: list[float] = []
        self.ctrl_c_at = ctrl_c_at

    def on_step(self, step, total_steps, loss, phase) -> None:
        self.losses.append(loss)
        if step == self.ctrl_c_at:  # as a user's Ctrl-C reaches one process first
            os.kill(os.getpid(), signal.SIGINT)


def _rank(rank: int, port: int, cache: str, out: str, result_dir: str, kw: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)  # oneDNN picks kernels by thread count: the reference uses 1 too
    real_loop = T.train_loop

    def spy(ts, setup, cb):
        res = real_loop(ts, setup, cb)
        torch.save(ts.model.state_dict(), Path(result_dir) / f"rank{rank}.pt")
        return res

    T.train_loop = spy
    cb = _Losses(kw.pop("ctrl_c_at", None))
    res = train(_cfg(Path(cache), Path(out), PER_RANK, **kw), cb)
    (Path(result_dir) / f"rank{rank}.steps").write_text(f"{res.steps} {res.interrupted}")
    (Path(result_dir) / f"rank{rank}.json").write_text(json.dumps(cb.losses))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(cache: Path, out: Path, result_dir: Path, **kw) -> list[dict[str, torch.Tensor]]:
    """Train on WORLD processes -> each rank's final state dict."""
    result_dir.mkdir(parents=True, exist_ok=True)
    mp.spawn(_rank, args=(_free_port(), str(cache), str(out), str(result_dir), kw), nprocs=WORLD)
    return [torch.load(result_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, make_photo) -> Path:
    src = tmp_path_factory.mktemp("photos")
    for i in range(16):
        Image.fromarray(make_photo(48, 48, seed=i)).save(src / f"p{i:02d}.png")
    return prepare([src], tmp_path_factory.mktemp("cache") / "train.npz", size=48).path


def _assert_equal_states(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_processes_train_like_one_on_the_global_batch(cache, tmp_path):
    out = tmp_path / "ddp" / "m.safetensors"
    states = _spawn(cache, out, tmp_path / "res")
    # Both ranks hold identical weights (and BatchNorm statistics).
    _assert_equal_states(states[0], states[1])
    losses = [json.loads((tmp_path / "res" / f"rank{r}.json").read_text()) for r in range(WORLD)]
    # Only rank 0 reports (the loss of the global batch).
    assert len(losses[0]) == STEPS and losses[1] == []
    # Rank 0 wrote the files; the metadata tells the world and global batch sizes.
    meta = read_metadata(out)["training"]
    assert meta["world_size"] == WORLD and meta["batch_size"] == PER_RANK
    assert meta["global_batch_size"] == WORLD * PER_RANK and meta["steps"] == STEPS
    assert T.load_checkpoint(T.checkpoint_path(out))["world_size"] == WORLD

    # One process, one thread, the same seed, the whole global batch: the same data and crops.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref_cb = _Losses()
        ref = train(_cfg(cache, tmp_path / "one" / "m.safetensors", WORLD * PER_RANK), ref_cb)
    finally:
        torch.set_num_threads(threads)
    assert ref.steps == STEPS
    for a, b in zip(losses[0], ref_cb.losses, strict=True):
        assert a == pytest.approx(b, rel=LOSS_RTOL)


def test_resume_is_exact_and_needs_the_same_world_size(cache, tmp_path):
    straight = _spawn(cache, tmp_path / "a" / "m.safetensors", tmp_path / "ra")
    # Ctrl-C on rank 0 after step 2: both ranks agree to stop there, rank 0 saves a checkpoint;
    # the other two steps from it, on 2 processes again, give the same weights.
    half = tmp_path / "b" / "m.safetensors"
    _spawn(cache, half, tmp_path / "rb", ctrl_c_at=2)
    for r in range(WORLD):
        assert (tmp_path / "rb" / f"rank{r}.steps").read_text() == "2 True"
    resumed = _spawn(cache, half, tmp_path / "rc", resume=str(T.checkpoint_path(half)))
    _assert_equal_states(resumed[0], straight[0])
    # One process cannot go on with a two-process run's data shards.
    with pytest.raises(TrainingError, match="was trained by 2 processes; resume it with the same number"):
        train(_cfg(cache, half, PER_RANK, resume=str(T.checkpoint_path(half))))
