"""Iizuka et al. 2016, "Let there be Color!": local features fused with a global image vector.

A shared low-level network (strided 3x3 convs, no pooling) runs twice: on the input, feeding the
mid-level network at 1/8 resolution, and on a fixed ``global_size`` x ``global_size`` rescale of
the input, feeding the global network (strided convs, then fully connected 4g-2g-g with
g = ``global_dim``, i.e. 1024-512-256 by default). Because the global branch always sees the
same size, its FC input size is independent of the photo's size. The fusion layer appends the
g-d global vector to every position of the mid-level features and mixes them with a 1x1 conv;
the colorization network then alternates convs and nearest x2 upsampling down to 2 channels
with a sigmoid, at 1/2 resolution. ab = (sigmoid * 2 - 1) * AB_NORM; MSE loss on the sigmoid
scale, as in the paper. No pretrained weights exist: it trains from scratch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from colorcli import color
from colorcli.errors import ColorcliError, WeightsError
from colorcli.models.base import ColorModel, ModelConfig, normalise_l
from colorcli.models.registry import register_model


@dataclasses.dataclass(frozen=True)
class FusionConfig(ModelConfig):
    """Fusion-network hyper-parameters.

    Every convolution width is the paper's times ``width`` / 64: the paper is width 64
    (low-level 64-128-128-256-256-512, mid-level 512-256, global convs 512, fusion 256,
    colorization 128-64-64-32): 42M parameters (25.7M of them in the first FC layer) and
    12.3 GMAC per 224 px image. The default width 16 (a quarter of every conv width) has 8.1M
    parameters and 0.47 GMAC per 128 px image (global branch at 224 included), so it trains on
    a 2-core CPU while keeping the paper's structure; the FC layers keep 1024-512-256.
    """

    width: int = 16
    global_dim: int = 256  # the global vector; the FC layers are 4x, 2x, 1x this
    global_size: int = 224  # side of the square rescale the global branch sees (multiple of 32)
    pretrained: bool = False  # no pretrained weights exist; must stay False
    default_size: int = 160

    def __post_init__(self) -> None:
        if self.global_size < 32 or self.global_size % 32:
            raise ColorcliError(f"fusion: global_size must be a multiple of 32, got {self.global_size}")


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    # Batch norm after every conv except the output, as in the paper.
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class FusionNet(ColorModel):
    """L ``(B, 1, H, W)`` in [0, 100] -> raw ``(B, 2, H/2, W/2)`` in (0, 1) (sigmoid output)."""

    family = "fusion"

    def __init__(self, config: FusionConfig, *, arch: str) -> None:
        super().__init__(config, arch=arch)
        if config.pretrained:
            raise WeightsError(f"{arch}: no pretrained weights exist for the fusion model; use pretrained=False")
        c = lambda n: max(4, n * config.width // 64)  # noqa: E731 - the paper's width, scaled
        g = config.global_dim
        self.low = nn.Sequential(
            _conv(1, c(64), 2), _conv(c(64), c(128)),
            _conv(c(128), c(128), 2), _conv(c(128), c(256)),
            _conv(c(256), c(256), 2), _conv(c(256), c(512)),
        )
        self.mid = nn.Sequential(_conv(c(512), c(512)), _conv(c(512), c(256)))
        self.global_convs = nn.Sequential(
            _conv(c(512), c(512), 2), _conv(c(512), c(512)),
            _conv(c(512), c(512), 2), _conv(c(512), c(512)),
        )
        side = config.global_size // 32  # 1/8 from the low-level net, 1/4 more from these convs
        self.global_fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c(512) * side * side, 4 * g), nn.ReLU(inplace=True),
            nn.Linear(4 * g, 2 * g), nn.ReLU(inplace=True),
            nn.Linear(2 * g, g), nn.ReLU(inplace=True),
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(c(256) + g, c(256), 1, bias=False), nn.BatchNorm2d(c(256)), nn.ReLU(inplace=True)
        )
        self.color8 = _conv(c(256), c(128))
        self.color4 = nn.Sequential(_conv(c(128), c(64)), _conv(c(64), c(64)))
        self.color2 = _conv(c(64), c(32))
        self.head = nn.Conv2d(c(32), 2, 3, padding=1)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        x = normalise_l(L)
        s = self.config.global_size
        xg = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        gvec = self.global_fc(self.global_convs(self.low(xg)))  # (B, g)
        y = self.mid(self.low(x))  # (B, C, H/8, W/8)
        gmap = gvec[:, :, None, None].expand(-1, -1, y.shape[-2], y.shape[-1])
        y = self.fuse(torch.cat([y, gmap.to(y.dtype)], dim=1))
        y = self.color8(y)
        y = self.color4(F.interpolate(y, scale_factor=2.0, mode="nearest"))
        y = self.color2(F.interpolate(y, scale_factor=2.0, mode="nearest"))
        return torch.sigmoid(self.head(y))

    def decode(self, raw: torch.Tensor, *, temperature: float | None = None) -> torch.Tensor:
        """raw ``(B, 2, h, w)`` in (0, 1) -> ab in (-AB_NORM, AB_NORM); temperature unused."""
        return (raw * 2 - 1) * color.AB_NORM

    def loss(self, raw: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ab = F.adaptive_avg_pool2d(batch["ab"].float(), raw.shape[-2:])
        target = (ab / color.AB_NORM + 1) / 2
        return F.mse_loss(raw.float(), target)

    def decode_info(self) -> dict[str, Any]:
        # chroma = raw * scale + offset, i.e. (sigmoid * 2 - 1) * AB_NORM.
        return {"kind": "regression", "scale": 2 * color.AB_NORM, "offset": -color.AB_NORM,
                "stride": 2, "activation": "sigmoid"}

    def target_normalisation(self) -> dict[str, Any]:
        return {"target": f"(ab / {color.AB_NORM:g} + 1) / 2 (sigmoid output)", "ab_norm": color.AB_NORM}


def _fusion(arch: str, **kwargs: Any) -> FusionNet:
    return FusionNet(FusionConfig(**kwargs), arch=arch)


@register_model
def fusion(**kwargs: Any) -> FusionNet:
    """Iizuka et al.'s global/local fusion network at a quarter of the paper's conv widths."""
    return _fusion("fusion", **kwargs)


@register_model
def test_fusion(**kwargs: Any) -> FusionNet:
    return _fusion("test_fusion", **{"width": 4, "global_dim": 16, "default_size": 64, **kwargs})
