"""Process-group helpers for training under ``torchrun --nproc-per-node N`` (torch DDP).

torchrun starts N copies of ``colorcli train`` and tells each its place through the environment
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). Without those
variables (or with ``WORLD_SIZE=1``) training runs as a single process, as before. The backend
follows the device: NCCL on GPUs (one per process, by ``LOCAL_RANK``), gloo on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

from colorcli.errors import TrainingError


@dataclasses.dataclass(frozen=True)
class Dist:
    """This process's place in the run: ``rank`` of ``world_size`` processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 validates and writes weights and checkpoints."""
        return self.rank == 0

    def any(self, *flags: bool) -> list[bool]:
        """Each flag, true if it is true on any rank (the same answer on every rank)."""
        if not self.enabled:
            return list(flags)
        t = torch.tensor([float(f) for f in flags], dtype=torch.float64, device=_comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Give every process rank 0's buffers (BatchNorm statistics are gathered per process;
        DDP hands rank 0's out before each forward pass, and once more here at the end)."""
        if self.enabled:
            for buf in module.buffers():
                dist.broadcast(buf, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. writes a shared cache), then the others."""
        if not self.is_main:
            self.barrier()
        try:
            yield
        finally:
            if self.is_main:
                self.barrier()


def _comm_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise TrainingError(f"environment variable {name}={raw!r} is not a whole number") from None


def from_env() -> Dist:
    """This process's place as torchrun states it (a single process without torchrun)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise TrainingError(f"RANK={rank} and WORLD_SIZE={world} do not describe a process group")
    return Dist(rank=rank, world_size=world, local_rank=local)


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[tuple[Dist, torch.device]]:
    """Join the process group torchrun describes, for training on ``device`` -> (dist, the
    device this process uses: ``cuda:LOCAL_RANK`` on GPUs). A single process joins nothing."""
    d = from_env()
    if not d.enabled:
        yield d, device
        return
    if device.type == "cuda":
        if d.local_rank >= torch.cuda.device_count():
            raise TrainingError(
                f"LOCAL_RANK {d.local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                "start at most one process per GPU"
            )
        torch.cuda.set_device(d.local_rank)
        device = torch.device("cuda", d.local_rank)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise TrainingError(f"distributed training runs on cpu or cuda, not {device.type}")
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend=backend, rank=d.rank, world_size=d.world_size)
    try:
        yield d, device
    finally:
        if created:
            dist.destroy_process_group()
