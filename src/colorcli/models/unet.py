"""U-Net (Ronneberger et al. 2015) regressing ab directly at full resolution.

Each level has two 3x3 conv + batch norm + ReLU; the encoder levels end in dropout 0.2 and go
down with 2x2 max pooling. The decoder goes up with bilinear x2 upsampling followed by a 2x2
convolution that halves the channels (the paper's "up-convolution" without a transposed conv,
so there are no checkerboard artefacts), concatenates the skip feature, and applies two 3x3
convs. A 1x1 conv and tanh give ab / ``ab_scale``. L1 loss by default (sharper, less
sepia-averaging than L2), L2 selectable with ``loss="l2"``.

``unet`` is a narrow variant (base width 16, about 1.9M parameters) that trains on a 2-core CPU;
``unet_paper`` has the paper's widths (64 ... 1024, about 31M parameters). No pretrained weights
exist for either: they train from scratch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from colorcli.errors import ColorcliError, WeightsError
from colorcli.models.base import ColorModel, ModelConfig, normalise_l
from colorcli.models.registry import register_model

LOSSES = ("l1", "l2")


@dataclasses.dataclass(frozen=True)
class UNetConfig(ModelConfig):
    """U-Net hyper-parameters.

    ``base_width`` is the first level's channels, doubling at every level down (the paper: 64,
    giving 64-128-256-512-1024 over ``depth`` = 5 levels). ``ab_scale`` = 128 lets tanh cover the
    whole ab range (about ±110) without pushing it into saturation.
    """

    base_width: int = 16
    depth: int = 5  # levels including the bottom one; depth - 1 poolings
    dropout: float = 0.2
    loss: str = "l1"  # "l1" or "l2"
    ab_scale: float = 128.0
    pretrained: bool = False  # no pretrained U-Net weights exist; must stay False
    default_size: int = 160

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ColorcliError(f"unet: loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.depth < 2:
            raise ColorcliError(f"unet: depth must be at least 2, got {self.depth}")


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class Up(nn.Module):
    """Bilinear x2 upsampling + 2x2 conv halving channels, skip concatenation, double conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up_conv = nn.Conv2d(cin, cout, 2)
        self.body = _double_conv(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        # A 2x2 kernel needs one extra row/column to keep the size (the paper's up-conv
        # is a 2x2 transposed conv; this is its upsample-then-convolve equivalent).
        x = self.up_conv(F.pad(x, (0, 1, 0, 1), mode="replicate"))
        return self.body(torch.cat([skip, x], dim=1))


class UNet(ColorModel):
    """L ``(B, 1, H, W)`` in [0, 100] -> raw ``(B, 2, H, W)`` = ab / ``ab_scale`` in (-1, 1).

    H and W must be multiples of ``2 ** (depth - 1)`` (any multiple of 32 works for depth <= 6).
    """

    family = "unet"

    def __init__(self, config: UNetConfig, *, arch: str) -> None:
        super().__init__(config, arch=arch)
        if config.pretrained:
            raise WeightsError(f"{arch}: no pretrained weights exist for the U-Net; use pretrained=False")
        widths = [config.base_width * 2**i for i in range(config.depth)]
        self.down = nn.ModuleList()
        cin = 1
        for w in widths:
            self.down.append(_double_conv(cin, w))
            cin = w
        self.drop = nn.Dropout(config.dropout)
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i]) for i in reversed(range(config.depth - 1)))
        self.head = nn.Conv2d(widths[0], 2, 1)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        x = normalise_l(L)
        skips = []
        for i, level in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = self.drop(level(x))
            skips.append(x)
        for up, skip in zip(self.up, reversed(skips[:-1])):
            x = up(x, skip)
        return torch.tanh(self.head(x))

    def decode(self, raw: torch.Tensor, *, temperature: float | None = None) -> torch.Tensor:
        """raw ``(B, 2, H, W)`` in (-1, 1) -> ab in (-ab_scale, ab_scale); temperature unused."""
        return raw * self.config.ab_scale

    def loss(self, raw: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        target = batch["ab"].float() / self.config.ab_scale
        if self.config.loss == "l1":
            return F.l1_loss(raw.float(), target)
        return F.mse_loss(raw.float(), target)

    def decode_info(self) -> dict[str, Any]:
        return {"kind": "regression", "scale": self.config.ab_scale, "offset": 0.0, "stride": 1,
                "activation": "tanh"}

    def target_normalisation(self) -> dict[str, Any]:
        return {"target": f"ab / {self.config.ab_scale:g} (tanh output)", "ab_norm": self.config.ab_scale}


def _unet(arch: str, **kwargs: Any) -> UNet:
    return UNet(UNetConfig(**kwargs), arch=arch)


@register_model
def unet(**kwargs: Any) -> UNet:
    """U-Net at a CPU-trainable width (base 16, ~1.9M parameters), L1 loss on ab / 128."""
    return _unet("unet", **kwargs)


@register_model
def unet_paper(**kwargs: Any) -> UNet:
    """U-Net at the paper's width (base 64, 5 levels, ~31M parameters)."""
    return _unet("unet_paper", **{"base_width": 64, **kwargs})


@register_model
def test_unet(**kwargs: Any) -> UNet:
    return _unet("test_unet", **{"base_width": 4, "depth": 4, "default_size": 64, **kwargs})
