"""Training loop: cached data, augmentation, validation, checkpoints, resume, Ctrl-C, NaN guard.

The library reports progress through :class:`TrainCallbacks`; the CLI turns it into a rich
progress bar. Schedules run on *progress* p in [0, 1] (steps done / total steps), where total
steps come from ``epochs`` or are re-estimated from measured speed under ``minutes``, so the
same run works on a 2-core CPU and on a GPU, and resumes across sessions.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colorcli import __version__, color, metrics
from colorcli.data import CachedImages, augment_batch, iterate_batches, load_folder_rgb, prepare
from colorcli.errors import TrainingError
from colorcli.models import ColorModel, count_parameters, create_model
from colorcli.pipeline import Colorizer
from colorcli.weights import save_weights


@dataclasses.dataclass
class TrainConfig:
    model: str
    data: list[str]
    out: str
    val: str | None = None
    resume: str | None = None
    minutes: float | None = None
    epochs: float | None = None
    batch_size: int = 32
    size: int = 128
    device: str = "auto"
    lr: float = 1e-3
    encoder_lr_mult: float = 0.1  # fine-tuning a pretrained encoder gently
    freeze_frac: float = 0.3  # pretrained encoder frozen for this first part of training
    weight_decay: float = 1e-4
    warmup_frac: float = 0.03
    seed: int = 0
    val_limit: int | None = None
    val_every_minutes: float = 15.0
    ckpt_every_minutes: float = 5.0
    cache_dir: str = ".cache"
    max_steps: int | None = None  # hard cap (tests, smoke runs)
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    command: str = ""


@dataclasses.dataclass
class TrainResult:
    steps: int
    epochs: float
    seconds: float
    best: dict[str, float]
    weights: Path | None
    checkpoint: Path
    interrupted: bool = False


class TrainCallbacks:
    """Hooks the CLI overrides; the library itself never prints."""

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None: ...
    def on_step(self, step: int, total_steps: int, loss: float, phase: str) -> None: ...
    def on_validate(self, step: int, result: dict[str, float], best: bool) -> None: ...
    def on_message(self, text: str) -> None: ...


def checkpoint_path(out: Path) -> Path:
    return Path(str(out) + ".ckpt")


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve_data(cfg: TrainConfig, callbacks: TrainCallbacks) -> Path:
    """A prepared cache for ``cfg.data``: an ``.npz`` given directly, or made once from folders."""
    if len(cfg.data) == 1 and cfg.data[0].endswith(".npz"):
        return Path(cfg.data[0])
    import hashlib

    key = "|".join(str(Path(d).resolve()) for d in cfg.data) + f"|{cfg.size}"
    cache = Path(cfg.cache_dir) / f"train-{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz"
    if not cache.exists():
        callbacks.on_message(f"preparing training cache {cache} (once)")
        res = prepare([Path(d) for d in cfg.data], cache, size=cfg.size)
        callbacks.on_message(
            f"cache: {res.kept} photos, {res.skipped_gray} grayscale skipped, "
            f"{len(res.failed)} unreadable, {res.bytes / 2**20:.1f} MiB"
        )
    return cache


def _param_groups(model: ColorModel, cfg: TrainConfig) -> list[dict[str, Any]]:
    enc = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    mult = cfg.encoder_lr_mult if model.config.pretrained else 1.0
    groups = [{"params": rest, "lr_mult": 1.0, "name": "decoder"}]
    if enc:
        groups.append({"params": enc, "lr_mult": mult, "name": "encoder"})
    return groups


def _lr_at(p: float, cfg: TrainConfig) -> float:
    if p < cfg.warmup_frac:
        return cfg.lr * max(p / cfg.warmup_frac, 0.01)
    q = (p - cfg.warmup_frac) / max(1e-8, 1 - cfg.warmup_frac)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(q, 1.0))))


def _frozen(model: ColorModel, p: float, cfg: TrainConfig) -> bool:
    return bool(model.config.pretrained) and p < cfg.freeze_frac and hasattr(model, "encoder")


def validate(
    model: ColorModel, val: list[tuple[str, np.ndarray]], device: torch.device
) -> dict[str, float]:
    """Validation loss and metrics (ΔCF, PSNR, AuC) through the real inference pipeline."""
    model.eval()
    col = Colorizer(model, device=device, size=None)
    rows, losses = [], []
    with torch.inference_mode():
        for _, rgb8 in val:
            rgb = rgb8.astype(np.float32) / 255
            h, w = rgb.shape[:2]
            t = torch.from_numpy(rgb).permute(2, 0, 1)[None]
            # Loss at the training geometry: the photo resized to multiples of 32.
            hh, ww = max(32, h // 32 * 32), max(32, w // 32 * 32)
            ts = torch.nn.functional.interpolate(t, size=(hh, ww), mode="bilinear", antialias=True)
            lab = color.rgb_to_lab(ts).to(device)
            raw = model(lab[:, :1])
            losses.append(float(model.loss(raw, {"L": lab[:, :1], "ab": lab[:, 1:], "rgb": ts.to(device)})))
            pred = col.colorize_rgb(rgb)
            m = metrics.image_metrics(pred, rgb)
            rows.append({k: m[k] for k in ("psnr", "delta_cf", "cf_pred", "cf_gt", "auc", "ab_l2")})
    out = metrics.summarise(rows)
    out["cf_gap"] = abs(out["cf_pred"] - out["cf_gt"])
    out["loss"] = float(np.mean(losses))
    model.train()
    return out


def train(cfg: TrainConfig, callbacks: TrainCallbacks | None = None) -> TrainResult:
    """Train ``cfg.model``; write best weights to ``cfg.out`` and a checkpoint beside it."""
    cb = callbacks or TrainCallbacks()
    if cfg.minutes is None and cfg.epochs is None and cfg.max_steps is None:
        raise TrainingError("give --minutes or --epochs")
    from colorcli.pipeline import resolve_device

    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    ckpt_file = checkpoint_path(out)
    torch.manual_seed(cfg.seed)

    state: dict[str, Any] | None = None
    if cfg.resume:
        try:
            state = torch.load(cfg.resume, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError) as exc:
            raise TrainingError(f"{cfg.resume}: cannot read checkpoint ({exc})") from None
        if not isinstance(state, dict) or state.get("arch") != cfg.model:
            found = state.get("arch") if isinstance(state, dict) else "?"
            raise TrainingError(f"{cfg.resume}: checkpoint is for model {found!r}, not {cfg.model!r}")
        # The checkpoint's settings win, except the time budget which may be extended.
        saved = state["config"]
        for key in ("minutes", "epochs", "max_steps"):
            if getattr(cfg, key) is not None:
                saved[key] = getattr(cfg, key)
        cfg = TrainConfig(**{**saved, "resume": cfg.resume})

    cache_path = resolve_data(cfg, cb)
    data = CachedImages(cache_path)
    if len(data) < cfg.batch_size:
        raise TrainingError(f"{cache_path}: {len(data)} photos, fewer than one batch of {cfg.batch_size}")
    val = load_folder_rgb(Path(cfg.val), limit=cfg.val_limit) if cfg.val else []

    model_args = dict(cfg.model_args)
    if state is not None:
        model_args["pretrained"] = False  # weights come from the checkpoint
    model = create_model(cfg.model, **model_args)
    if state is None and hasattr(model, "set_prior"):
        model.set_prior(data.bin_counts)
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")

    steps_per_epoch = len(data) // cfg.batch_size
    gen = torch.Generator().manual_seed(cfg.seed)
    step, seconds, best = 0, 0.0, {}
    order, pos = None, 0
    history: list[dict[str, float]] = []
    if state is not None:
        model.load_state_dict(state["model"], strict=True)
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, seconds, best = state["step"], state["seconds"], state["best"]
        history = state.get("history", [])
        gen.set_state(state["generator"])
        order, pos = state["order"], state["pos"]
        torch.set_rng_state(state["torch_rng"])
        cb.on_message(f"resumed from {cfg.resume} at step {step} ({seconds / 60:.1f} min trained)")

    def total_steps_estimate() -> int:
        cands = []
        if cfg.epochs is not None:
            cands.append(int(cfg.epochs * steps_per_epoch))
        if cfg.minutes is not None:
            rate = step / seconds if seconds > 30 and step > 20 else None
            if rate is None:
                cands.append(max(step + 1, int(cfg.epochs * steps_per_epoch)) if cfg.epochs else 10**9)
            else:
                cands.append(max(step + 1, int(rate * cfg.minutes * 60)))
        if cfg.max_steps is not None:
            cands.append(cfg.max_steps)
        return max(1, min(cands))

    def save_checkpoint() -> None:
        _atomic_torch_save(
            {
                "arch": cfg.model,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
                "seconds": seconds,
                "best": best,
                "history": history,
                "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "order": order,
                "pos": pos,
                "config": dataclasses.asdict(cfg),
                "colorcli_version": __version__,
            },
            ckpt_file,
        )

    def training_meta() -> dict[str, Any]:
        return {
            "data": cfg.data,
            "cache": str(cache_path),
            "photos": len(data),
            "command": cfg.command,
            "steps": step,
            "epochs": round(step / steps_per_epoch, 2),
            "batch_size": cfg.batch_size,
            "size": cfg.size,
            "minutes": round(seconds / 60, 1),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        }

    def run_validation() -> None:
        nonlocal best
        if not val:
            res = {"loss": float("nan")}
        else:
            res = validate(model, val, device)
        res = {**res, "step": step, "epoch": round(step / steps_per_epoch, 2)}
        history.append(res)
        improved = not val or not best or res["loss"] <= best.get("loss", float("inf"))
        if improved:
            best = res
            save_weights(model, out, training=training_meta(), metrics={"val": cfg.val, **res})
        cb.on_validate(step, res, improved)

    total = total_steps_estimate()
    cb.on_start(total, {"photos": len(data), "steps_per_epoch": steps_per_epoch,
                        "params": count_parameters(model), "device": str(device)})
    model.train()
    last_ckpt = last_val = time.monotonic()
    interrupted = False
    t_last = time.monotonic()
    try:
        while step < total:
            if order is None or pos >= steps_per_epoch:
                order = torch.cat(list(iterate_batches(len(data), cfg.batch_size, generator=gen)))
                pos = 0
            idx = order[pos * cfg.batch_size : (pos + 1) * cfg.batch_size].numpy()
            pos += 1
            p = step / total
            frozen = _frozen(model, p, cfg)
            lr = _lr_at(p, cfg)
            for g in opt.param_groups:
                g["lr"] = lr * g["lr_mult"]
            rgb = augment_batch(data.images[np.sort(idx)], size=cfg.size, generator=gen).to(device)
            if device.type == "cuda":
                rgb = rgb.contiguous(memory_format=torch.channels_last)
            lab = color.rgb_to_lab(rgb)
            batch = {"L": lab[:, :1], "ab": lab[:, 1:], "rgb": rgb}
            if hasattr(model, "encoder"):
                model.encoder.requires_grad_(not frozen)
                if frozen:
                    model.encoder.eval()  # BN statistics of the pretrained encoder stay put
                else:
                    model.encoder.train()
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                raw = model(batch["L"])
                loss = model.loss(raw, batch)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss.item()} at step {step}; stopped without writing weights "
                    f"(last good checkpoint: {ckpt_file if ckpt_file.exists() else 'none'}). "
                    "Try a lower --lr."
                )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            scaler.step(opt)
            scaler.update()
            step += 1
            now = time.monotonic()
            seconds += now - t_last
            t_last = now
            cb.on_step(step, total, loss.item(), "frozen encoder" if frozen else "full")
            if step % 20 == 0:
                total = total_steps_estimate()
            end_of_epoch = pos >= steps_per_epoch
            if (end_of_epoch or now - last_val > cfg.val_every_minutes * 60) and step < total:
                run_validation()
                last_val = t_last = time.monotonic()
            if now - last_ckpt > cfg.ckpt_every_minutes * 60:
                save_checkpoint()
                last_ckpt = time.monotonic()
    except KeyboardInterrupt:
        interrupted = True
        save_checkpoint()
        cb.on_message(f"interrupted at step {step}: checkpoint saved to {ckpt_file}")
        return TrainResult(step, step / steps_per_epoch, seconds, best,
                           out if out.exists() else None, ckpt_file, interrupted=True)
    run_validation()
    save_checkpoint()
    return TrainResult(step, step / steps_per_epoch, seconds, best, out, ckpt_file, interrupted)
