"""What every colorization model shares: its config, how raw output becomes chroma, its loss."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Fields every family has; families extend this with their own frozen dataclass."""

    default_size: int = 160  # short side the network sees at inference, a multiple of 32; 160 measured best for
    # models trained on the 128-px cache (val, first 150 photos: mcl PSNR 21.57 at 160, 20.49 at 224, 21.28 at 128)
    pretrained: bool = False  # load pretrained encoder weights when building for training
    # Fields that only change the loss or the decoding, never a tensor's shape: a warm start
    # from a trained file (``train --init``) may change them with ``--model-arg``.
    tunable: ClassVar[tuple[str, ...]] = ()


class ColorModel(nn.Module):
    """Base class: ``forward(L) -> raw``, ``decode(raw) -> chroma``, ``loss(raw, batch)``.

    ``L`` is ``(B, 1, H, W)`` in [0, 100] with H and W multiples of 32. ``decode`` gives chroma
    ``(B, 2, h, w)`` in the model's ``chroma_space`` ("lab": a/b, "luv": u/v), possibly at a lower
    resolution than the input; the pipeline upsamples it and recombines it with the original L.
    """

    chroma_space: ClassVar[str] = "lab"
    family: ClassVar[str] = ""

    def __init__(self, config: ModelConfig, *, arch: str) -> None:
        super().__init__()
        self.config = config
        self.arch = arch

    # The extra tensors a model needs to decode (bin centres, priors) are buffers, so they
    # travel with the state dict into the weights file.

    def decode(self, raw: torch.Tensor, *, temperature: float | None = None) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, raw: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def decode_info(self) -> dict[str, Any]:
        """How raw output becomes chroma, for ONNX metadata and the docs."""
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def prepare_targets(self, prior_counts: Any) -> None:  # pragma: no cover - default no-op
        """Classification models set their class-rebalancing prior from training data."""


def effective_temperature(model: ColorModel, temperature: float | None) -> float | None:
    """The decoding temperature ``model`` runs at given a ``--temperature`` (None: its own), or
    None for models whose decoding has none (regression: the option is ignored)."""
    info = model.decode_info()
    if "temperature" not in info:
        return None
    return float(info["temperature"] if temperature is None else temperature)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
