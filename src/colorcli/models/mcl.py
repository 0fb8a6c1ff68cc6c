"""Zhang et al. "Colorful Image Colorization" on an EfficientNet-Lite0 encoder.

``mcl`` predicts a distribution over the in-gamut ab bins at 1/4 resolution, trained with
class-rebalanced multinomial cross-entropy on soft-encoded targets and decoded with the
annealed mean (T = 0.38). ``l2`` is the same network with a 2-channel regression head and L2
loss, the comparison the paper makes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from colorcli import color
from colorcli.models.base import ColorModel, ModelConfig, normalise_l
from colorcli.models.effnet import EfficientNetLite0Encoder, load_pretrained_lite0
from colorcli.models.layers import UpBlock
from colorcli.models.registry import register_model


@dataclasses.dataclass(frozen=True)
class ColorNetConfig(ModelConfig):
    # Loss and decoding settings: ``train --init FILE --model-arg KEY=VALUE`` may change these
    # without changing any tensor's shape.
    tunable: ClassVar[tuple[str, ...]] = (
        "temperature", "lam", "sigma", "neighbours", "reg_weight", "cf_weight", "neutral_radius", "chroma_gain",
    )
    addable: ClassVar[tuple[str, ...]] = ("cf_head", "cf_hidden")

    head: str = "bins"  # "bins" (multinomial, Zhang) or "l2" (regression)
    decoder_width: int = 128  # channels of the deepest decoder stage; halves towards stride 4
    width_div: int = 1  # >1 shrinks the encoder (tiny test variants only)
    pretrained: bool = True  # load the ImageNet encoder when building for training
    temperature: float = 0.38
    lam: float = 0.5  # class-rebalancing mix with the uniform distribution
    sigma: float = 5.0  # soft-encoding and prior-smoothing Gaussian, ab units
    neighbours: int = 5
    # Weight of an L2 term on the decoded (annealed-mean) ab, in units of (ab / 110)^2, beside
    # the rebalanced cross-entropy: it pulls the decoded colour toward the truth where the
    # distribution is unsure, against the confident wrong colours of the pure classifier.
    reg_weight: float = 0.0
    # Weight of a per-photo colourfulness match on the decoded ab (``ab_colourfulness``, in
    # ab / 110): pulls each photo toward its own amount of colour, as DDColor's colourfulness
    # term pulls toward more of it.
    cf_weight: float = 0.0
    # Decoding (``color.neutral_gated_mean``): the chroma fades by the annealed mass on the bins
    # within ``neutral_radius`` of gray (0: off), then is scaled by ``chroma_gain``.
    neutral_radius: float = 0.0
    chroma_gain: float = 1.0
    # A per-photo chroma gain (bins head only): a map of the deepest encoder features, averaged
    # over the photo, to a log gain on the decoded chroma, so that photos alike get their
    # colourfulness (as ``eval`` measures it, in sRGB) on average (``gain_loss``). Its input is
    # detached, so it calibrates the decoding without changing what the network learns. ``train
    # --init FILE --model-arg cf_head=true`` adds it to a trained file, starting at gain 1;
    # ``train --calibrate-only`` fits it alone to what colorize renders (colorcli.calibrate).
    cf_head: bool = False
    # The gain head's hidden ReLU units (0: a linear map). One hidden layer of 32 fitted held-out
    # training photos better than the linear map (half Poisson deviance 4.78 against 5.44, 1,482
    # photos held out of 7,413; 2026-12-05, by a session script not kept in the repository).
    cf_hidden: int = 0
    default_size: int = 160


# The per-photo gain stays between a third and three times the decoded chroma (a soft bound,
# tanh). Twice was too tight: photos like train/'s (Imagenette, COCO) need about 2x on average
# to get their colourfulness, so their gains piled up against it (measured, 2026-12-05).
MAX_LOG_GAIN = math.log(3.0)


class ColorNet(ColorModel):
    """L ``(B, 1, H, W)`` in [0, 100] -> raw output at stride 4: bin logits ``(B, Q, H/4, W/4)``
    for the "bins" head, ab / 110 ``(B, 2, H/4, W/4)`` for the "l2" head. With ``cf_head`` one
    more channel follows the logits: the photo's log chroma gain, the same at every pixel."""

    family = "colornet"

    def __init__(self, config: ColorNetConfig, *, arch: str) -> None:
        super().__init__(config, arch=arch)
        self.encoder = EfficientNetLite0Encoder(in_chans=1, width_div=config.width_div)
        if config.pretrained and config.width_div == 1:
            load_pretrained_lite0(self.encoder)
        c2, c4, c8, c16, c32 = self.encoder.channels
        w = config.decoder_width
        self.bottleneck = nn.Sequential(nn.Conv2d(c32, w, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True))
        self.up16 = UpBlock(w, c16, w)
        self.up8 = UpBlock(w, c8, w * 3 // 4)
        self.up4 = UpBlock(w * 3 // 4, c4, w // 2)
        centres = torch.from_numpy(color.gamut_bins())
        q = centres.shape[0]
        out = q if config.head == "bins" else 2
        self.head = nn.Conv2d(w // 2, out, 1)
        if config.head == "bins":
            self.register_buffer("centres", centres)
            # Uniform until training data sets the prior (see ``set_prior``).
            self.register_buffer("prior", torch.full((q,), 1.0 / q))
            self.register_buffer("class_weights", torch.ones(q))
        self.cf_head: nn.Module | None = None
        if config.cf_head:
            if config.head != "bins":
                raise ValueError("cf_head needs the bins head (it scales the annealed mean)")
            k = config.cf_hidden
            self.cf_head = nn.Sequential(nn.Linear(c32, k), nn.ReLU(), nn.Linear(k, 1)) if k else nn.Linear(c32, 1)
            out = self.cf_head[-1] if k else self.cf_head
            nn.init.zeros_(out.weight)  # gain 1 at the start
            nn.init.zeros_(out.bias)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        x = normalise_l(L)
        _, f4, f8, f16, f32 = self.encoder(x)
        y = self.bottleneck(f32)
        y = self.up16(y, f16)
        y = self.up8(y, f8)
        y = self.up4(y, f4)
        out = self.head(y)
        if self.cf_head is not None:
            # Features scaled by 1 / sqrt(C): an Adam step of size lr on every weight moves the
            # log gain by about sqrt(C) * lr * |feature|, not C times that.
            pooled = f32.detach().mean(dim=(2, 3)) * (1.0 / math.sqrt(f32.shape[1]))
            log_gain = self.cf_head(pooled)  # (B, 1)
            out = torch.cat([out, log_gain[:, :, None, None].expand(-1, -1, *out.shape[-2:])], dim=1)
        return out

    def split_raw(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw output -> (bin logits or ab, the per-photo log gain ``(B, 1, 1, 1)`` or None)."""
        if self.cf_head is None:
            return raw, None
        return raw[:, :-1], self.clamp_log_gain(raw[:, -1:].mean(dim=(2, 3), keepdim=True))

    def image_encoder(self) -> nn.Module:
        return self.encoder

    def prepare_targets(self, bin_counts: np.ndarray) -> None:
        """The class-rebalancing prior comes from the training data's ab-bin counts."""
        self.set_prior(bin_counts)

    def set_prior(self, counts: np.ndarray) -> None:
        """Set the class-rebalancing prior from ab-bin counts over the training data."""
        if self.config.head != "bins":
            return
        centres = self.centres.numpy()
        prior = color.smooth_prior(counts, centres, sigma=self.config.sigma)
        self.prior.copy_(torch.from_numpy(prior).float())
        self.class_weights.copy_(torch.from_numpy(color.rebalance_weights(prior, lam=self.config.lam)))

    def decode(self, raw: torch.Tensor, *, temperature: float | None = None) -> torch.Tensor:
        if self.config.head == "bins":
            logits, log_gain = self.split_raw(raw)
            ab = self._gated_mean(logits, temperature)
            return ab if log_gain is None else ab * torch.exp(log_gain)
        return raw * color.AB_NORM

    def _gated_mean(self, logits: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """Bin logits -> ab by the model's decoding settings (neutral gate, ``chroma_gain``)."""
        t = self.config.temperature if temperature is None else temperature
        return color.neutral_gated_mean(logits, self.centres, temperature=t,
                                        neutral_radius=self.config.neutral_radius, gain=self.config.chroma_gain)

    def loss(self, raw: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ab = F.adaptive_avg_pool2d(batch["ab"], raw.shape[-2:])
        if self.config.head == "bins":
            # The regression term sees the plain annealed mean: the neutral gate and gain are
            # decoding choices made after training (see ``neutral_radius``), not something the
            # network learns around.
            logits, _ = self.split_raw(raw)
            loss = rebalanced_cross_entropy(
                logits, ab, self.centres, self.class_weights, neighbours=self.config.neighbours,
                sigma=self.config.sigma, reg_weight=self.config.reg_weight, cf_weight=self.config.cf_weight,
                temperature=self.config.temperature,
            )
            if self.cf_head is not None:
                loss = loss + self._gain_loss(raw, batch)
            return loss
        return F.mse_loss(raw.float(), ab / color.AB_NORM)

    def _gain_loss(self, raw: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The per-photo gain's loss (:func:`gain_loss`): the colourfulness of the model's own
        decoding (neutral gate and ``chroma_gain``; no gradient: only the gain learns here)
        times the gain, against the photo's, measured as ``eval`` measures them
        (:func:`colorcli.color.colourfulness`, in sRGB) and as ``colorize`` renders: the chroma
        upsampled (bilinear) and joined to the photo's full-resolution L. (At the network's
        resolution the photo's fine colour texture is averaged away, more on some sources than
        on others, and the gain learned fell short on them.)"""
        L = batch["L"].float()
        logits, log_gain = self.split_raw(raw.float())
        with torch.no_grad():
            decoded = F.interpolate(self._gated_mean(logits), size=L.shape[-2:], mode="bilinear", align_corners=False)
            cf_true = color.colourfulness(color.lab_to_rgb(torch.cat([L, batch["ab"].float()], dim=1)))
        gained = decoded * torch.exp(log_gain)
        cf_pred = color.colourfulness(color.lab_to_rgb(torch.cat([L, gained], dim=1)), eps=1e-6)
        return gain_loss(cf_pred, cf_true)

    def gain_head(self) -> nn.Module | None:
        return self.cf_head

    def clamp_log_gain(self, x: torch.Tensor) -> torch.Tensor:
        # A soft clamp (tanh): a gain pushed to a bound still gets a gradient back.
        return MAX_LOG_GAIN * torch.tanh(x / MAX_LOG_GAIN)

    def decode_info(self) -> dict[str, Any]:
        if self.config.head == "bins":
            return {
                "kind": "annealed_mean",
                "temperature": self.config.temperature,
                "neutral_radius": self.config.neutral_radius,
                "chroma_gain": self.config.chroma_gain,
                # With a cf_head the raw output's last channel is the photo's log gain
                # (averaged over pixels, then max_log_gain * tanh(x / max_log_gain)), applied after chroma_gain.
                "log_gain_channel": self.cf_head is not None,
                "max_log_gain": MAX_LOG_GAIN,
                "centres": self.centres.tolist(),
                "stride": 4,
            }
        return {"kind": "regression", "scale": color.AB_NORM, "stride": 4}

    def target_normalisation(self) -> dict[str, Any]:
        if self.config.head == "bins":
            return {"target": f"ab soft-encoded over {len(self.centres)} bins of side {color.AB_GRID:g} "
                              f"(annealed-mean decoding); reg_weight term on ab / {color.AB_NORM:g}",
                    "ab_norm": color.AB_NORM}
        return {"target": f"ab / {color.AB_NORM:g}", "ab_norm": color.AB_NORM}


def rebalanced_cross_entropy(
    logits: torch.Tensor,
    ab: torch.Tensor,
    centres: torch.Tensor,
    class_weights: torch.Tensor,
    *,
    neighbours: int = 5,
    sigma: float = 5.0,
    reg_weight: float = 0.0,
    cf_weight: float = 0.0,
    temperature: float = 0.38,
) -> torch.Tensor:
    """Zhang et al.'s loss: soft-encoded targets, each pixel weighted by the rebalancing weight
    of its nearest bin. logits ``(B, Q, h, w)``, ab ``(B, 2, h, w)``. Two optional terms on the
    annealed mean ``m`` (at ``temperature``, :func:`colorcli.color.annealed_mean`), in units of
    ab / ``AB_NORM``:

    - ``reg_weight`` times the mean squared error of ``m`` against ab;
    - ``cf_weight`` times the mean over photos of the squared difference between the
      colourfulness of ``m`` and of ab (:func:`ab_colourfulness`): each photo is pulled toward
      its own amount of colour, a dull photo down as much as a colourful one up.

    The target stays sparse (:func:`colorcli.color.soft_encode_sparse`), the bins lie on the
    last axis (as channels-last logits lie in memory), and the cross-entropy, the annealed mean
    and their gradient come from one pass of :class:`_BinsLoss`: the same values as autograd
    through the dense steps, with a third of the passes over the ``(N, Q)`` logits.
    """
    b, q = logits.shape[:2]
    flat = logits.float().permute(0, 2, 3, 1).reshape(-1, q)
    target = ab.float().permute(0, 2, 3, 1).reshape(-1, 2)
    idx, wts = color.soft_encode_sparse(target, centres, neighbours=neighbours, sigma=sigma)
    pixel_w = class_weights.to(flat)[idx[:, 0]]
    decoded = bool(reg_weight or cf_weight)
    ce, mean = _BinsLoss.apply(flat, idx, wts, pixel_w, centres.to(flat), float(temperature), decoded)
    loss = ce
    if reg_weight:
        loss = loss + reg_weight * ((mean - target) / color.AB_NORM).square().mean()
    if cf_weight:
        per_photo = lambda v: ab_colourfulness(v.view(b, -1, 2) / color.AB_NORM)  # noqa: E731
        loss = loss + cf_weight * (per_photo(mean) - per_photo(target)).square().mean()
    return loss


def gain_loss(cf_pred: torch.Tensor, cf_true: torch.Tensor) -> torch.Tensor:
    """Half the Poisson deviance of the gained decoding's colourfulness ``p`` against the
    photo's ``t`` (one each a photo), averaged over photos: ``p − t − t log(p / t)``, zero
    where ``p = t``. With ``p = g · d`` (colourfulness in proportion to the gain ``g``, i.e. no
    clipping at the gamut) its gradient in ``log g`` is ``g d − t``, so among photos the head
    cannot tell apart the optimum is ``g = Σt / Σd``: the decoded colourfulness matches the
    truth's on average, which is what the CF gap measures. (Least squares would give
    ``Σ d t / Σ d²``, short of that wherever ``d`` varies.)"""
    eps = 1e-6
    return (cf_pred - cf_true - cf_true * torch.log((cf_pred + eps) / (cf_true + eps))).mean()


def ab_colourfulness(ab: torch.Tensor) -> torch.Tensor:
    """Colourfulness of each photo's pixels ``ab (B, N, 2)`` -> ``(B,)``: Hasler and
    Süsstrunk's form in ab, ``sqrt(σ_a² + σ_b²) + 0.3 · mean chroma`` (smooth at zero)."""
    spread = torch.sqrt(ab.var(dim=1, unbiased=False).sum(dim=1) + 1e-8)
    chroma = torch.sqrt(ab.square().sum(dim=2) + 1e-8).mean(dim=1)
    return spread + 0.3 * chroma


class _BinsLoss(torch.autograd.Function):
    """Flat logits ``x (N, Q)`` -> ``mean(w · CE(softmax(x), target))`` and, when asked, the
    annealed mean ``m = softmax(x / T) @ c`` ``(N, 2)``, with the gradient written out:

    - CE: ``w / N · (softmax(x) − target)``, the target scattered from its k bins;
    - annealed mean: ``∂m/∂x_j = p_T,j (c_j − m) / T``, so an upstream ``G (N, 2)`` gives
      ``p_T ⊙ (G cᵀ − G·m) / T``.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, x, idx, wts, pixel_w, centres, temperature, decoded):  # noqa: ANN001 - autograd signature
        p = torch.softmax(x, dim=1)
        top, arg = x.max(dim=1, keepdim=True)
        lse = top - torch.log(p.gather(1, arg))  # log Σ exp x, from the largest p (>= 1/Q)
        ce = -(wts * (x.gather(1, idx) - lse)).sum(dim=1)
        loss = (pixel_w * ce).mean()
        p_t = mean = None
        if decoded:
            p_t = torch.softmax(x / temperature, dim=1)
            mean = p_t @ centres
        ctx.save_for_backward(p, idx, wts, pixel_w, centres, p_t, mean)
        ctx.temperature = temperature
        if not decoded:
            mean = x.new_zeros(0, 2)  # autograd needs a tensor; nothing flows back through it
            ctx.mark_non_differentiable(mean)
        return loss, mean

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_loss, grad_mean):  # noqa: ANN001 - autograd signature
        p, idx, wts, pixel_w, centres, p_t, mean = ctx.saved_tensors
        a = (pixel_w * (grad_loss / p.shape[0]))[:, None]
        grad = p * a
        grad.scatter_add_(1, idx, -a * wts)
        if p_t is not None and grad_mean is not None:
            s = torch.addmm(-(grad_mean * mean).sum(dim=1, keepdim=True), grad_mean, centres.T)
            grad.addcmul_(s, p_t, value=1.0 / ctx.temperature)
        return grad, None, None, None, None, None, None


def _colornet(arch: str, **kwargs: Any) -> ColorNet:
    return ColorNet(ColorNetConfig(**kwargs), arch=arch)


@register_model
def mcl(**kwargs: Any) -> ColorNet:
    """Flagship: multinomial classification over ab bins, annealed-mean decoding."""
    return _colornet("mcl", **{"head": "bins", **kwargs})


@register_model
def l2(**kwargs: Any) -> ColorNet:
    """The flagship's network with an ab regression head and L2 loss."""
    return _colornet("l2", **{"head": "l2", **kwargs})


@register_model
def test_mcl(**kwargs: Any) -> ColorNet:
    return _colornet(
        "test_mcl",
        **{"head": "bins", "width_div": 4, "decoder_width": 16, "pretrained": False,
           "default_size": 64, **kwargs},
    )


@register_model
def test_l2(**kwargs: Any) -> ColorNet:
    return _colornet(
        "test_l2",
        **{"head": "l2", "width_div": 4, "decoder_width": 16, "pretrained": False,
           "default_size": 64, **kwargs},
    )
