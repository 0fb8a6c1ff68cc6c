"""Training loop: cached data, augmentation, validation, checkpoints, resume, Ctrl-C, NaN guard.

The library reports progress through :class:`TrainCallbacks`; the CLI turns it into a rich
progress bar. Schedules run on *progress* p in [0, 1] (steps done / total steps), where total
steps come from ``epochs`` or are re-estimated from measured speed under ``minutes``, so the
same run works on a 2-core CPU and on a GPU, and resumes across sessions.

Three ways to go on from earlier work:

* ``resume``: a checkpoint (``OUT.ckpt``) holds model, optimizer, RNG state and data order;
  the resumed run continues exactly where the checkpoint was written, step for step.
* ``init``: a shipped ``.safetensors`` weights file (what gets committed; checkpoints are not).
  The model is rebuilt from the file's metadata, its tensors loaded strictly, and training
  starts again at step 0 with a fresh optimizer and schedule.
* Ctrl-C saves a checkpoint at the last completed step and returns normally.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colorcli import __version__, color, metrics
from colorcli.bounds import ConfigError, check_config
from colorcli.data import CachedImages, augment_batch, iterate_batches, load_folder_rgb, prepare
from colorcli.errors import TrainingError
from colorcli.files import atomic_write_stream
from colorcli.models import ColorModel, count_parameters, create_model
from colorcli.pipeline import Colorizer
from colorcli.weights import load_matching, load_weights, read_metadata, save_weights


@dataclasses.dataclass
class TrainConfig:
    model: str
    data: list[str]
    out: str
    val: str | None = None
    resume: str | None = None
    init: str | None = None  # shipped weights file to start from (see module docstring)
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
    select: str | None = None  # validation figure that picks the weights kept (None: "loss")
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    command: str = ""


# A resumed run keeps the checkpoint's settings, except these, which belong to the session
# (where files go, which device, the command typed) rather than to the run ...
_SESSION_FIELDS = ("out", "device", "cache_dir", "resume", "command")
# ... and the budget: naming any of these on resume replaces the whole budget.
_BUDGET_FIELDS = ("minutes", "epochs", "max_steps")

# What --select can keep the best weights by: validation figure -> higher is better. The loss
# is the training objective; for the bin models it rewards rare colours (class rebalancing), so
# it does not always agree with what eval reports: "psnr" keeps the most accurate colours.
# "combined" is PSNR less 0.2 dB for each unit of CF gap past 3 and of neutral chroma past 7:
# the most accurate weights among those that are neither dull nor casting colour on gray things.
SELECT = {"loss": False, "psnr": True, "auc": True, "delta_cf": False, "neutral_chroma": False, "combined": True}


def combined_score(res: dict[str, float]) -> float:
    """The ``--select combined`` figure of a validation summary (higher is better)."""
    neutral = res["neutral_chroma"] if math.isfinite(res["neutral_chroma"]) else 0.0
    return res["psnr"] - 0.2 * max(0.0, res["cf_gap"] - 3.0) - 0.2 * max(0.0, neutral - 7.0)


def _improves(res: dict[str, float], best: dict[str, float], key: str) -> bool:
    """``res`` is at least as good as ``best`` on ``key`` (anything beats nothing)."""
    if key not in best:
        return True
    return res[key] >= best[key] if SELECT[key] else res[key] <= best[key]


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
    atomic_write_stream(path, lambda fh: torch.save(obj, fh))


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, so that a training step is done whole or not at all.

    A step moves the data order and RNG, BatchNorm statistics (in the forward pass) and every
    weight (in ``optimizer.step()``); a checkpoint written in the middle of one would match no
    step. The first SIGINT inside the block is raised as ``KeyboardInterrupt`` when the block
    ends; a second one is raised at once, for a user who will not wait. Signal handlers can only
    be set from the main thread; elsewhere, or where SIGINT is ignored (a background job) or
    handled outside Python, this does nothing.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    caught: list[tuple[int, Any]] = []

    def hold(signum: int, frame: Any) -> None:
        if caught:
            previous(signum, frame)  # the second Ctrl-C: the usual handler raises now
        caught.append((signum, frame))

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        previous(*caught[0])  # the usual handler: raises KeyboardInterrupt


def resolve_data(cfg: TrainConfig, callbacks: TrainCallbacks) -> Path:
    """A prepared cache for ``cfg.data``: an ``.npz`` given directly, or made once from folders."""
    if not cfg.data:
        raise TrainingError("no training data: give --data FOLDER (or a prepared .npz cache)")
    if len(cfg.data) == 1 and cfg.data[0].endswith(".npz"):
        return Path(cfg.data[0])
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
    # Freezing protects ImageNet features from a random decoder's first gradients; a run that
    # starts from trained colorcli weights (--init) has no random decoder to protect against.
    return (
        bool(model.config.pretrained) and not cfg.init and p < cfg.freeze_frac
        and hasattr(model, "encoder")
    )


def _with_pretrained_flag(model: ColorModel, pretrained: bool) -> ColorModel:
    """Record whether the encoder started from ImageNet weights on a model built without loading
    them (resume, init: its tensors come from the file). The flag sets the encoder's learning-rate
    multiplier and the freeze phase, and travels into the metadata of the weights written."""
    if hasattr(model.config, "pretrained") and model.config.pretrained != pretrained:
        model.config = dataclasses.replace(model.config, pretrained=pretrained)
    return model


def _tune_config(model: ColorModel, overrides: dict[str, Any], init_path: Path) -> None:
    """Apply ``--model-arg`` values to a model warm-started from ``init_path``: only the fields
    its config calls tunable (loss and decoding), each converted to that field's type."""
    if not overrides:
        return
    tunable = type(model.config).tunable
    bad = sorted(set(overrides) - set(tunable))
    if bad:
        raise TrainingError(
            f"{init_path}: --model-arg {', '.join(bad)} would change the architecture of a trained "
            f"file; on --init only {', '.join(tunable) or 'nothing'} may change"
        )
    types = {f.name: type(f.default) for f in dataclasses.fields(model.config)}
    try:
        values = {k: types[k](v) for k, v in overrides.items()}
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"--model-arg: {exc}") from None
    model.config = dataclasses.replace(model.config, **values)


def _merge_resume_config(cfg: TrainConfig, saved: dict[str, Any]) -> TrainConfig:
    """The checkpoint's settings, with this session's fields and (if given) budget."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    merged = {k: v for k, v in saved.items() if k in known}  # checkpoints of older versions
    if any(getattr(cfg, k) is not None for k in _BUDGET_FIELDS):
        merged.update({k: getattr(cfg, k) for k in _BUDGET_FIELDS})
    if cfg.select is not None:  # the weights kept from here on; the training itself is the same
        merged["select"] = cfg.select
    merged.update({k: getattr(cfg, k) for k in _SESSION_FIELDS})
    merged["command"] = saved.get("command", "")  # the original; later ones go in "sessions"
    return TrainConfig(**merged)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def validate(
    model: ColorModel, val: list[tuple[str, np.ndarray]], device: torch.device
) -> dict[str, float]:
    """Validation loss and metrics (ΔCF, PSNR, AuC) through the real inference pipeline."""
    was_training = model.training
    model.eval()
    col = Colorizer(model, device=device, size=None)
    rows, losses = [], []
    try:
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
                batch = {"L": lab[:, :1], "ab": lab[:, 1:], "rgb": ts.to(device)}
                losses.append(float(model.loss(raw, batch)))
                pred = col.colorize_rgb(rgb)
                m = metrics.image_metrics(pred, rgb)
                rows.append({k: m[k] for k in ("psnr", "delta_cf", "cf_pred", "cf_gt", "auc", "ab_l2",
                                               "neutral_chroma", "neutral_over20")})
    finally:
        model.train(was_training)
    out = metrics.summarise(rows)
    out["cf_gap"] = abs(out["cf_pred"] - out["cf_gt"])
    out["combined"] = combined_score(out)
    out["loss"] = float(np.mean(losses))
    return out


def train(cfg: TrainConfig, callbacks: TrainCallbacks | None = None) -> TrainResult:
    """Train ``cfg.model``; write best weights to ``cfg.out`` and a checkpoint beside it."""
    cb = callbacks or TrainCallbacks()
    if cfg.resume and cfg.init:
        raise TrainingError("give --resume (a checkpoint) or --init (a weights file), not both")
    from colorcli.pipeline import resolve_device

    session_command = cfg.command

    state: dict[str, Any] | None = None
    if cfg.resume:
        try:
            state = torch.load(cfg.resume, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - unpickling fails in many ways; all mean this
            raise TrainingError(f"{cfg.resume}: cannot read checkpoint ({exc})") from None
        if not isinstance(state, dict) or "config" not in state or "model" not in state:
            raise TrainingError(f"{cfg.resume}: not a colorcli training checkpoint")
        if state.get("arch") != cfg.model:
            raise TrainingError(
                f"{cfg.resume}: checkpoint is for model {state.get('arch')!r}, not {cfg.model!r}"
            )
        cfg = _merge_resume_config(cfg, state["config"])
        try:  # the checkpoint's model config is bounded before anything is built from it
            check_config(cfg.model, cfg.model_args)
            check_config(cfg.model, state.get("model_config") or {})
        except ConfigError as exc:
            raise TrainingError(f"{cfg.resume}: {exc}") from None
    if all(getattr(cfg, k) is None for k in _BUDGET_FIELDS):
        raise TrainingError("give --minutes, --epochs or --max-steps")
    select = cfg.select or "loss"
    if select not in SELECT:
        raise TrainingError(f"unknown --select {select!r}; use {', '.join(SELECT)}")

    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    ckpt_file = checkpoint_path(out)
    torch.manual_seed(cfg.seed)

    cache_path = resolve_data(cfg, cb)
    data = CachedImages(cache_path)
    if len(data) < cfg.batch_size:
        raise TrainingError(f"{cache_path}: {len(data)} photos, fewer than one batch of {cfg.batch_size}")
    steps_per_epoch = len(data) // cfg.batch_size
    if state is not None and state.get("order") is not None:
        # The saved data order indexes the cache it was drawn for.
        order_len = len(state["order"])
        if order_len != steps_per_epoch * cfg.batch_size or int(state["order"].max()) >= len(data):
            raise TrainingError(
                f"{cfg.resume}: was made with a different training cache than {cache_path} "
                f"({len(data)} photos now)"
            )
    val = load_folder_rgb(Path(cfg.val), limit=cfg.val_limit) if cfg.val else []

    init_info: dict[str, Any] = {}
    if state is not None:
        model = create_model(cfg.model, **{**cfg.model_args, "pretrained": False})
        saved_cfg = state.get("model_config")
        if saved_cfg is not None:
            pretrained = bool(saved_cfg.get("pretrained"))
        else:
            # Checkpoints before "model_config": a pretrained encoder had its own lr multiplier.
            groups = state["optimizer"]["param_groups"]
            pretrained = any(g.get("lr_mult", 1.0) != 1.0 for g in groups)
        _with_pretrained_flag(model, pretrained)
    elif cfg.init and read_metadata(Path(cfg.init)).get("arch") != cfg.model:
        # Warm start from another architecture's weights: the tensors that match by name and
        # shape (e.g. encoder and decoder of mcl for l2); the rest start as a fresh build.
        init_path = Path(cfg.init)
        model = create_model(cfg.model, **cfg.model_args)
        if hasattr(model, "set_prior"):
            model.set_prior(data.bin_counts)
        copied, total = load_matching(model, init_path)
        if copied == 0:
            raise TrainingError(f"{init_path}: no tensor matches model {cfg.model!r}; nothing to start from")
        src_meta = read_metadata(init_path)
        prev = src_meta.get("training", {})
        init_info = {
            "file": str(init_path),
            "sha256": _file_digest(init_path),
            "arch": src_meta.get("arch"),
            "tensors_copied": f"{copied}/{total}",
            **{k: prev[k] for k in ("steps", "epochs", "minutes", "command") if k in prev},
        }
        cb.on_message(f"starting from {init_path} ({src_meta.get('arch')}): {copied} of {total} tensors copied")
    elif cfg.init:
        init_path = Path(cfg.init)
        model = load_weights(init_path, expect_arch=cfg.model)  # strict; WeightsError names it
        meta = model.weights_meta
        _with_pretrained_flag(model, bool(meta["config"].get("pretrained")))
        _tune_config(model, cfg.model_args, init_path)
        if hasattr(model, "set_prior"):
            # Rebalance for the data trained on now (it may be wider than the file's).
            model.set_prior(data.bin_counts)
        # The architecture is the file's: a resume of this run must rebuild the same one.
        model_args = {k: v for k, v in model.config_dict().items() if k != "pretrained"}
        cfg = dataclasses.replace(cfg, model_args=model_args)
        prev = meta.get("training", {})
        init_info = {
            "file": str(init_path),
            "sha256": _file_digest(init_path),
            **{k: prev[k] for k in ("steps", "epochs", "minutes", "command", "init") if k in prev},
        }
        cb.on_message(f"starting from {init_path} ({prev.get('steps', '?')} steps trained before)")
    else:
        model = create_model(cfg.model, **cfg.model_args)
        if hasattr(model, "set_prior"):
            model.set_prior(data.bin_counts)
    model.train()
    model.to(device)
    # Channels-last on CPU too: oneDNN's convolutions run faster in NHWC (bench_train.py).
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")

    gen = torch.Generator().manual_seed(cfg.seed)
    step, seconds, best = 0, 0.0, {}
    order, pos = None, 0
    history: list[dict[str, float]] = []
    sessions: list[str] = []
    if state is not None:
        model.load_state_dict(state["model"], strict=True)
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, seconds, best = state["step"], state["seconds"], state["best"]
        history = state.get("history", [])
        sessions = state.get("sessions", [])
        init_info = state.get("init_info", {})
        gen.set_state(state["generator"])
        order, pos = state["order"], state["pos"]
        torch.set_rng_state(state["torch_rng"])
        cb.on_message(f"resumed from {cfg.resume} at step {step} ({seconds / 60:.1f} min trained)")
    elif ckpt_file.exists():
        cb.on_message(f"{ckpt_file} exists and will be replaced (use --resume to continue it)")
    if session_command or state is not None:
        sessions.append(session_command if state is None else f"resume: {session_command}".strip())

    def total_steps_estimate() -> int:
        cands = []
        if cfg.epochs is not None:
            cands.append(max(1, int(cfg.epochs * steps_per_epoch)))
        if cfg.minutes is not None and step > 20 and seconds > 30:
            # Measured over everything the loop does (validation and checkpoints included),
            # so the run ends near the wall-clock budget.
            cands.append(max(step + 1, int(step / seconds * cfg.minutes * 60)))
        if cfg.max_steps is not None:
            cands.append(cfg.max_steps)
        # Minutes only and no speed measured yet: a placeholder, refined every 20 steps.
        return max(1, min(cands)) if cands else 10**9

    def save_checkpoint() -> None:
        _atomic_torch_save(
            {
                "arch": cfg.model,
                "model": model.state_dict(),
                "model_config": model.config_dict(),
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
                "init_info": init_info,
                "sessions": sessions,
                "colorcli_version": __version__,
            },
            ckpt_file,
        )

    def training_meta() -> dict[str, Any]:
        meta = {
            "data": cfg.data,
            "cache": str(cache_path),
            "photos": len(data),
            "command": cfg.command,
            "steps": step,
            "epochs": round(step / steps_per_epoch, 2),
            "batch_size": cfg.batch_size,
            "size": cfg.size,
            "lr": cfg.lr,
            "seed": cfg.seed,
            "select": select,
            "minutes": round(seconds / 60, 1),
            "device": (
                torch.cuda.get_device_name() if device.type == "cuda"
                else f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
            ),
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        }
        if len(sessions) > 1:
            meta["sessions"] = sessions
        if init_info:
            meta["init"] = init_info
        return meta

    def run_validation() -> None:
        nonlocal best
        res = validate(model, val, device) if val else {}  # no --val: nothing to measure
        res = {**res, "step": step, "epoch": round(step / steps_per_epoch, 2)}
        history.append(res)
        # Best on the --select figure; without a validation set the latest weights are the best.
        improved = not val or not best or _improves(res, best, select)
        if improved:
            best = res
            save_weights(model, out, training=training_meta(), metrics={"val": cfg.val, **res})
        cb.on_validate(step, res, improved)

    total = total_steps_estimate()
    cb.on_start(total, {"photos": len(data), "steps_per_epoch": steps_per_epoch,
                        "params": count_parameters(model), "device": str(device), "step": step})
    # seconds counts wall time inside this loop (steps, validation, checkpoints): the budget.
    clock = time.monotonic()
    last_ckpt = last_val = clock
    p_floor = 0.0
    snapshot: tuple[Any, ...] | None = None

    def tick() -> float:
        nonlocal seconds, clock
        now = time.monotonic()
        seconds += now - clock
        clock = now
        return now

    def train_step() -> tuple[float, bool]:
        """One optimizer step on the next batch -> (loss, encoder frozen). Does not count it."""
        nonlocal order, pos, p_floor
        if order is None or pos >= steps_per_epoch:
            order = torch.cat(list(iterate_batches(len(data), cfg.batch_size, generator=gen)))
            pos = 0
        idx = order[pos * cfg.batch_size : (pos + 1) * cfg.batch_size].numpy()
        pos += 1
        # Progress never goes back within a session: a larger re-estimate of the total
        # would otherwise raise the learning rate again or re-freeze the encoder.
        p = p_floor = max(p_floor, step / total)
        frozen = _frozen(model, p, cfg)
        lr = _lr_at(p, cfg)
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_mult"]
        rgb = augment_batch(data.images[np.sort(idx)], size=cfg.size, generator=gen).to(device)
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
            raise TrainingError(_nan_message(f"loss became {loss.item()}", step + 1, ckpt_file))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        # With fp16 the scaler skips steps with inf gradients by design; in fp32 (no
        # scaler) a non-finite gradient would write NaN into every weight.
        if not scaler.is_enabled() and not torch.isfinite(grad_norm):
            raise TrainingError(_nan_message("gradients became non-finite", step + 1, ckpt_file))
        scaler.step(opt)
        scaler.update()
        return loss.item(), frozen

    try:
        while step < total:
            if cfg.minutes is not None and seconds >= cfg.minutes * 60:
                break
            # What a step draws, to put back if a second Ctrl-C breaks into it (the first one
            # waits for the step to finish, see _sigint_deferred).
            snapshot = (gen.get_state(), torch.get_rng_state(), order, pos)
            with _sigint_deferred():
                loss, frozen = train_step()
                step += 1
                snapshot = None
            now = tick()
            cb.on_step(step, total, loss, "frozen encoder" if frozen else "full")
            if step % 20 == 0:
                total = total_steps_estimate()
            if step < total and now - last_val >= cfg.val_every_minutes * 60:
                run_validation()
                last_val = tick()
            if now - last_ckpt >= cfg.ckpt_every_minutes * 60:
                save_checkpoint()
                last_ckpt = tick()
    except KeyboardInterrupt:
        if snapshot is not None:
            # A second Ctrl-C broke into a step before it was counted: undo what can be undone
            # (data order, RNG) so resume repeats it. This checkpoint is close to, not exactly,
            # a step boundary (BatchNorm statistics of the forward pass, perhaps the update);
            # the first Ctrl-C, which waits for the step to end, gives an exact one.
            gen.set_state(snapshot[0])
            torch.set_rng_state(snapshot[1])
            order, pos = snapshot[2], snapshot[3]
        tick()
        save_checkpoint()
        cb.on_message(f"interrupted at step {step}: checkpoint saved to {ckpt_file}")
        return TrainResult(step, step / steps_per_epoch, seconds, best,
                           out if best and out.exists() else None, ckpt_file, interrupted=True)
    if not history or history[-1]["step"] != step:  # a resumed, finished run: nothing new
        run_validation()
    tick()
    save_checkpoint()
    return TrainResult(step, step / steps_per_epoch, seconds, best, out, ckpt_file)


def _nan_message(what: str, step: int, ckpt_file: Path) -> str:
    last = ckpt_file if ckpt_file.exists() else "none"
    return (
        f"{what} at step {step}; stopped without writing weights "
        f"(last good checkpoint: {last}). Try a lower --lr."
    )
