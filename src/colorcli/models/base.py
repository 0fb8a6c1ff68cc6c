"""What every colorization model shares: its config, how raw output becomes chroma, its loss."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from colorcli import color

# What every model feeds its network: L (B, 1, H, W) in [0, 100] mapped to [-1, 1]. Written into
# the weights metadata (``ColorModel.normalisation``) so that another runtime can feed it too.
INPUT_NORMALISATION: dict[str, Any] = {
    "input": "(L / 100 - 0.5) / 0.5, in [-1, 1]", "L_norm": color.L_NORM, "L_shift": 0.5, "L_scale": 0.5,
}


def normalise_l(L: torch.Tensor) -> torch.Tensor:
    """L ``(B, 1, H, W)`` in [0, 100] -> the network input in [-1, 1] (``INPUT_NORMALISATION``)."""
    return (L / color.L_NORM - 0.5) / 0.5


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Fields every family has; families extend this with their own frozen dataclass."""

    default_size: int = 160  # short side the network sees at inference, a multiple of 32; 160 measured best for
    # models trained on the 128-px cache (val, first 150 photos: mcl PSNR 21.57 at 160, 20.49 at 224, 21.28 at 128)
    pretrained: bool = False  # load pretrained encoder weights when building for training
    # Fields that only change the loss or the decoding, never a tensor's shape: a warm start
    # from a trained file (``train --init``) may change them with ``--model-arg``.
    tunable: ClassVar[tuple[str, ...]] = ()
    # Fields that add a part to a trained file on ``train --init`` (switched on with
    # ``--model-arg``); its new tensors start so that the model computes what it did before.
    addable: ClassVar[tuple[str, ...]] = ()


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

    def target_normalisation(self) -> dict[str, Any]:
        """What the network's raw output is trained towards (e.g. ``ab / 128``), for the metadata."""
        raise NotImplementedError

    def normalisation(self) -> dict[str, Any]:
        """The input and target normalisation this model really computes (weights metadata)."""
        return {**INPUT_NORMALISATION, "chroma_space": self.chroma_space, **self.target_normalisation()}

    # The training interface: what the trainer may ask of a model, beside forward and loss.

    def prepare_targets(self, bin_counts: np.ndarray) -> None:
        """Set up what the loss needs from the training data before training starts.

        ``bin_counts`` ``(Q,)``: how often each ab bin of ``color.gamut_bins()`` occurs in the
        training cache. Classification models set their class-rebalancing prior from it; the
        default does nothing.
        """

    def image_encoder(self) -> nn.Module | None:
        """The image encoder (the part an ImageNet start initialises), or None. The trainer gives
        its parameters their own optimizer group, pretrained or not, so a checkpoint's optimizer
        layout does not depend on how the run started."""
        return None

    def calibration_parameters(self) -> list[nn.Parameter]:
        """Parameters of small calibration parts fed with detached inputs (``mcl``'s ``cf_head``):
        the trainer gives them a learning rate ``TrainConfig.calibration_lr_mult`` times the
        decoder's, since they start from nothing inside a gentle fine-tuning run: those of
        :meth:`gain_head`."""
        head = self.gain_head()
        return list(head.parameters()) if head is not None else []

    def gain_head(self) -> nn.Module | None:
        """The calibration part whose output is a photo's log chroma gain, before
        :meth:`clamp_log_gain` (``mcl``'s ``cf_head``), or None. ``train --calibrate-only``
        (:mod:`colorcli.calibrate`) records its input on each photo and fits it to them."""
        return None

    def clamp_log_gain(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`gain_head`'s output -> the log gain the decoding applies (its bound)."""
        raise NotImplementedError(f"{type(self).__name__} has no gain head")

    def pretrained_encoder(self) -> nn.Module | None:
        """The encoder that starts from pretrained weights, or None: the trainer freezes it for
        the first part of training and then trains it at a lower learning rate."""
        return self.image_encoder() if self.config.pretrained else None


def effective_temperature(model: ColorModel, temperature: float | None) -> float | None:
    """The decoding temperature ``model`` runs at given a ``--temperature`` (None: its own), or
    None for models whose decoding has none (regression: the option is ignored)."""
    info = model.decode_info()
    if "temperature" not in info:
        return None
    return float(info["temperature"] if temperature is None else temperature)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
