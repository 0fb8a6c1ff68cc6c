"""A DenseNet-121 front end as encoder, with an upsampling U-Net-style decoder regressing ab.

The encoder is DenseNet-121's (Huang et al. 2017) stem (7x7 stride-2 conv, BN, ReLU, 3x3
stride-2 max pool) and its first ``len(block_config)`` dense blocks, each followed by a
transition (BN, ReLU, 1x1 conv halving the channels, 2x2 average pool), in plain torch with
DenseNet-121's growth rate 32 and bottleneck size 4. With the default block config (6, 12) it
ends at 1/16 resolution with 256 channels. No ImageNet DenseNet weights are available offline,
so the whole network trains from scratch on L.

The decoder upsamples bilinearly x2 and concatenates the encoder feature of the same stride
(dense block outputs, then the stem conv) at each step, with two 3x3 conv + BN + ReLU, down to
1/2 resolution, where a 1x1 conv gives ab / AB_NORM. MSE loss.
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
from colorcli.models.layers import UpBlock
from colorcli.models.registry import register_model


@dataclasses.dataclass(frozen=True)
class DenseNetConfig(ModelConfig):
    """DenseNet encoder + decoder hyper-parameters (DenseNet-121's values by default).

    ``block_config`` is given as "6,12" (a string, so the config round-trips through JSON
    unchanged); ``decoder_width`` is the channels of the deepest decoder stage, halving at each
    finer one.
    """

    block_config: str = "6,12"
    growth_rate: int = 32
    bn_size: int = 4
    init_features: int = 64  # stem channels
    # 64 keeps the model at 0.95 GMAC per 128 px image (encoder 0.65); 128 would cost 1.37.
    decoder_width: int = 64
    pretrained: bool = False  # no DenseNet weights are available offline; must stay False
    default_size: int = 160

    def blocks(self) -> tuple[int, ...]:
        try:
            blocks = tuple(int(b) for b in self.block_config.split(","))
        except ValueError:
            blocks = ()
        if not blocks or min(blocks) < 1:
            raise ColorcliError(
                f"densenet: block_config must be comma-separated positive layer counts, got {self.block_config!r}"
            )
        return blocks

    def __post_init__(self) -> None:
        if len(self.blocks()) > 3:
            # Stem (1/4) + one halving per block: more than 3 blocks would go below 1/32.
            raise ColorcliError(f"densenet: at most 3 dense blocks, got {self.block_config!r}")


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bn_size * growth) - BN-ReLU-3x3 conv (growth); output is appended."""

    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        mid = bn_size * growth
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(y)))


class DenseBlock(nn.Module):
    def __init__(self, layers: int, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth, bn_size) for i in range(layers))
        self.out_channels = cin + layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, dim=1)))
        return torch.cat(feats, dim=1)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False),
            nn.AvgPool2d(2, stride=2),
        )


class DenseNetEncoder(nn.Module):
    """``(B, 1, H, W)`` -> [stem conv at 1/2, dense block outputs at 1/4, 1/8, ..., last
    transition output]; ``channels`` lists their channel counts in that order."""

    def __init__(self, *, blocks: tuple[int, ...], growth: int, bn_size: int, init_features: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(1, init_features, 7, stride=2, padding=3, bias=False)
        self.norm0 = nn.BatchNorm2d(init_features)
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        channels = [init_features]
        c = init_features
        for layers in blocks:
            block = DenseBlock(layers, c, growth, bn_size)
            self.blocks.append(block)
            c = block.out_channels
            channels.append(c)
            self.transitions.append(Transition(c, c // 2))
            c //= 2
        channels.append(c)
        self.channels = tuple(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.norm0(self.conv0(x)))
        feats = [x]
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        for block, trans in zip(self.blocks, self.transitions):
            x = block(x)
            feats.append(x)
            x = trans(x)
        feats.append(x)
        return feats


class DenseNetColor(ColorModel):
    """L ``(B, 1, H, W)`` in [0, 100] -> raw ``(B, 2, H/2, W/2)`` = ab / AB_NORM, about [-1, 1]."""

    family = "densenet"

    def __init__(self, config: DenseNetConfig, *, arch: str) -> None:
        super().__init__(config, arch=arch)
        if config.pretrained:
            raise WeightsError(
                f"{arch}: no ImageNet DenseNet weights are available offline; use pretrained=False"
            )
        self.encoder = DenseNetEncoder(
            blocks=config.blocks(), growth=config.growth_rate, bn_size=config.bn_size,
            init_features=config.init_features,
        )
        # Skips from deep to fine: dense block outputs (1/8, 1/4, ...) then the stem (1/2).
        skips = list(reversed(self.encoder.channels[:-1]))
        cin = self.encoder.channels[-1]
        w = config.decoder_width
        stages = []
        for i, cskip in enumerate(skips):
            cout = max(8, w >> i)
            stages.append(UpBlock(cin, cskip, cout))
            cin = cout
        self.decoder = nn.ModuleList(stages)
        self.head = nn.Conv2d(cin, 2, 1)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        x = normalise_l(L)
        feats = self.encoder(x)
        y = feats[-1]
        for stage, skip in zip(self.decoder, reversed(feats[:-1])):
            y = stage(y, skip)
        return self.head(y)

    def decode(self, raw: torch.Tensor, *, temperature: float | None = None) -> torch.Tensor:
        """raw ``(B, 2, h, w)`` -> ab ``raw * AB_NORM``; temperature unused."""
        return raw * color.AB_NORM

    def loss(self, raw: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ab = F.adaptive_avg_pool2d(batch["ab"].float(), raw.shape[-2:])
        return F.mse_loss(raw.float(), ab / color.AB_NORM)

    def decode_info(self) -> dict[str, Any]:
        return {"kind": "regression", "scale": color.AB_NORM, "offset": 0.0, "stride": 2}

    def target_normalisation(self) -> dict[str, Any]:
        return {"target": f"ab / {color.AB_NORM:g}", "ab_norm": color.AB_NORM}

    def image_encoder(self) -> nn.Module:
        return self.encoder


def _densenet(arch: str, **kwargs: Any) -> DenseNetColor:
    return DenseNetColor(DenseNetConfig(**kwargs), arch=arch)


@register_model
def densenet(**kwargs: Any) -> DenseNetColor:
    """DenseNet-121 stem + dense blocks (6, 12) from scratch, skip-connected decoder, MSE on ab."""
    return _densenet("densenet", **kwargs)


@register_model
def test_densenet(**kwargs: Any) -> DenseNetColor:
    return _densenet(
        "test_densenet",
        **{"block_config": "2,2", "growth_rate": 4, "bn_size": 2, "init_features": 8,
           "decoder_width": 16, "default_size": 64, **kwargs},
    )
