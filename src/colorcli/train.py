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
import pickle
import platform
import re
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
from colorcli.distributed import Dist, process_group
from colorcli.calibrate import GainRecorder, fit_gain, log_gain_grid, measure_photo
from colorcli.data import CachedImages, PhotoFiles, augment_batch, iterate_batches, load_folder_rgb, prepare
from colorcli.errors import ColorcliError, TrainingError
from colorcli.files import atomic_write_stream, sha256_file
from colorcli.interrupts import sigint_deferred
from colorcli.models import ColorModel, count_parameters, create_model
from colorcli.inference import Colorizer, InferenceSettings
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
    calibration_lr_mult: float = 10.0  # a calibration part (``calibration_parameters``) starts from nothing
    freeze_frac: float = 0.3  # pretrained encoder frozen for this first part of training
    # Fit only the per-photo gain (``mcl``'s ``cf_head``) to what colorize renders, the rest of
    # the network frozen in eval mode (:mod:`colorcli.calibrate`): a step is one photo colorized
    # whole, as colorize sees it (``size`` is not used). Needs --init (or a resume of such a run).
    calibrate_only: bool = False
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


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint read as plain data only (``weights_only=True``).

    A checkpoint is a pickle, and unpickling can call any function a file names: a file handed
    to ``--resume`` must never run code. Only tensors, numbers, strings, lists, tuples and dicts
    are accepted, which is all :func:`save_checkpoint` writes; anything else is refused unrun.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if unsafe:
            raise TrainingError(
                f"{path}: cannot read checkpoint: it names {unsafe.group(1)}, not plain data "
                "(tensors, numbers, strings, lists, dicts); refused, as loading it could run code"
            ) from None
        raise TrainingError(f"{path}: cannot read checkpoint (not a torch checkpoint)") from None
    except Exception as exc:  # noqa: BLE001 - reading fails in many ways (truncated zip, I/O)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"{path}: cannot read checkpoint ({reason})") from None
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise TrainingError(f"{path}: not a colorcli training checkpoint")
    return state


def resolve_data(cfg: TrainConfig, callbacks: TrainCallbacks) -> list[Path]:
    """The prepared caches for ``cfg.data``: ``.npz`` files given directly (in order, repeats
    kept: a cache named twice weighs twice), or one cache made once from folders."""
    if not cfg.data:
        raise TrainingError("no training data: give --data FOLDER (or a prepared .npz cache)")
    caches = [d for d in cfg.data if d.endswith(".npz")]
    if caches:
        if len(caches) != len(cfg.data):
            raise TrainingError("--data takes folders or prepared .npz caches, not both: "
                                "prepare the folders into a cache (colorcli prepare) and name the caches")
        return [Path(d) for d in caches]
    key = "|".join(str(Path(d).resolve()) for d in cfg.data) + f"|{cfg.size}"
    cache = Path(cfg.cache_dir) / f"train-{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz"
    if not cache.exists():
        callbacks.on_message(f"preparing training cache {cache} (once)")
        res = prepare([Path(d) for d in cfg.data], cache, size=cfg.size)
        callbacks.on_message(
            f"cache: {res.kept} photos, {res.skipped_gray} grayscale skipped, "
            f"{len(res.failed)} unreadable, {res.bytes / 2**20:.1f} MiB"
        )
    return [cache]


def _param_groups(model: ColorModel, cfg: TrainConfig) -> list[dict[str, Any]]:
    encoder = model.image_encoder()
    enc = list(encoder.parameters()) if encoder is not None else []
    calib = model.calibration_parameters()
    own = {id(p) for p in enc} | {id(p) for p in calib}
    rest = [p for p in model.parameters() if id(p) not in own]
    mult = cfg.encoder_lr_mult if model.pretrained_encoder() is not None else 1.0
    groups = [{"params": rest, "lr_mult": 1.0, "name": "decoder"}]
    if enc:
        groups.append({"params": enc, "lr_mult": mult, "name": "encoder"})
    if calib:
        groups.append({"params": calib, "lr_mult": cfg.calibration_lr_mult, "name": "calibration"})
    return groups


def _lr_at(p: float, cfg: TrainConfig) -> float:
    if p < cfg.warmup_frac:
        return cfg.lr * max(p / cfg.warmup_frac, 0.01)
    q = (p - cfg.warmup_frac) / max(1e-8, 1 - cfg.warmup_frac)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(q, 1.0))))


def _frozen(model: ColorModel, p: float, cfg: TrainConfig) -> bool:
    # Freezing protects ImageNet features from a random decoder's first gradients; a run that
    # starts from trained colorcli weights (--init) has no random decoder to protect against.
    return model.pretrained_encoder() is not None and not cfg.init and p < cfg.freeze_frac


def _with_pretrained_flag(model: ColorModel, pretrained: bool) -> ColorModel:
    """Record whether the encoder started from ImageNet weights on a model built without loading
    them (resume, init: its tensors come from the file). The flag sets the encoder's learning-rate
    multiplier and the freeze phase, and travels into the metadata of the weights written."""
    if model.config.pretrained != pretrained:
        model.config = dataclasses.replace(model.config, pretrained=pretrained)
    return model


def _tune_config(model: ColorModel, overrides: dict[str, Any], init_path: Path) -> ColorModel:
    """Apply ``--model-arg`` values to a model warm-started from ``init_path``: the fields its
    config calls tunable (loss and decoding) or addable (a part added at its neutral start, e.g.
    ``mcl``'s ``cf_head``), each converted to that field's type. Returns the model (a new one
    when a part was added: the file's tensors loaded into it, the new ones at their start)."""
    if not overrides:
        return model
    config_type = type(model.config)
    allowed = config_type.tunable + config_type.addable
    bad = sorted(set(overrides) - set(allowed))
    if bad:
        raise TrainingError(
            f"{init_path}: --model-arg {', '.join(bad)} would change the architecture of a trained "
            f"file; on --init only {', '.join(allowed) or 'nothing'} may change"
        )
    types = {f.name: type(f.default) for f in dataclasses.fields(model.config)}
    try:
        values = {k: types[k](v) for k, v in overrides.items()}
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"--model-arg: {exc}") from None
    added = {k: v for k, v in values.items() if k in config_type.addable and v != getattr(model.config, k)}
    if not added:
        model.config = dataclasses.replace(model.config, **values)
        return model
    grown = create_model(model.arch, **{**model.config_dict(), **values, "pretrained": False})
    result = grown.load_state_dict(model.state_dict(), strict=False)
    if result.unexpected_keys:
        raise TrainingError(
            f"{init_path}: --model-arg {', '.join(sorted(added))} would remove a trained part "
            f"({', '.join(result.unexpected_keys[:3])}); start from a file without it"
        )
    grown.config = dataclasses.replace(grown.config, pretrained=model.config.pretrained)
    grown.weights_meta, grown.weights_path = model.weights_meta, model.weights_path
    return grown


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
    return sha256_file(path)[:12]


def validate(
    model: ColorModel, val: list[tuple[str, np.ndarray]], device: torch.device
) -> dict[str, float]:
    """Validation loss and metrics (ΔCF, PSNR, AuC) through the real inference pipeline."""
    was_training = model.training
    model.eval()
    col = Colorizer.from_model(model, InferenceSettings(), device=device)
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


@dataclasses.dataclass
class TrainSetup:
    """What a run works with and does not change while it trains."""

    cfg: TrainConfig
    device: torch.device
    data: CachedImages | PhotoFiles
    cache_paths: list[Path]
    val: list[tuple[str, np.ndarray]]
    out: Path
    ckpt_file: Path
    select: str
    dist: Dist = Dist()

    @property
    def global_batch(self) -> int:
        """Rows of one step over all processes (``--batch-size`` is per process)."""
        return self.cfg.batch_size * self.dist.world_size

    @property
    def steps_per_epoch(self) -> int:
        return len(self.data) // self.global_batch


@dataclasses.dataclass
class TrainState:
    """What changes as training goes: the model, its optimizer, the data order and RNG, the
    step and time counted so far, the validation history. A checkpoint holds all of it but the
    two session-only fields at the end."""

    model: ColorModel
    net: torch.nn.Module  # what the forward pass calls: ``model``, or its DDP wrapper
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    gen: torch.Generator  # data order and augmentation
    step: int = 0
    seconds: float = 0.0  # wall time inside the loop (steps, validation, checkpoints): the budget
    best: dict[str, float] = dataclasses.field(default_factory=dict)
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    order: torch.Tensor | None = None  # this epoch's sample order
    pos: int = 0  # batches of ``order`` used
    sessions: list[str] = dataclasses.field(default_factory=list)
    init_info: dict[str, Any] = dataclasses.field(default_factory=dict)
    # A calibration run's (``calibrate_only``, :mod:`colorcli.calibrate`) photo order and rows
    # collected, and what its fit did (for the weights' metadata).
    calibration: dict[str, torch.Tensor] | None = None
    calibration_report: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Session only: progress never goes back within a session (a larger re-estimate of the
    # total would otherwise raise the learning rate again or re-freeze the encoder) ...
    p_floor: float = 0.0
    # ... the monotonic time ``seconds`` was last brought up to date ...
    clock: float = 0.0
    # ... and a Ctrl-C held until every process agrees to stop (distributed runs).
    stop_requested: bool = False

    def tick(self) -> float:
        """Count the wall time since the last tick into ``seconds``; returns now."""
        now = time.monotonic()
        self.seconds += now - self.clock
        self.clock = now
        return now

    def draws(self) -> tuple[Any, ...]:
        """What a step draws (data order, RNG), to put back if the step is broken into."""
        return (self.gen.get_state(), torch.get_rng_state(), self.order, self.pos)

    def put_back(self, draws: tuple[Any, ...]) -> None:
        self.gen.set_state(draws[0])
        torch.set_rng_state(draws[1])
        self.order, self.pos = draws[2], draws[3]


def read_resume(cfg: TrainConfig) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The run's settings and, with ``--resume``, the checkpoint's contents."""
    if cfg.resume and cfg.init:
        raise TrainingError("give --resume (a checkpoint) or --init (a weights file), not both")
    saved = None
    if cfg.resume:
        saved = load_checkpoint(Path(cfg.resume))
        if saved.get("arch") != cfg.model:
            raise TrainingError(
                f"{cfg.resume}: checkpoint is for model {saved.get('arch')!r}, not {cfg.model!r}"
            )
        cfg = _merge_resume_config(cfg, saved["config"])
        try:  # the checkpoint's model config is bounded before anything is built from it
            check_config(cfg.model, cfg.model_args)
            check_config(cfg.model, saved.get("model_config") or {})
        except ConfigError as exc:
            raise TrainingError(f"{cfg.resume}: {exc}") from None
    if all(getattr(cfg, k) is None for k in _BUDGET_FIELDS):
        raise TrainingError("give --minutes, --epochs or --max-steps")
    if cfg.max_steps is not None and cfg.max_steps < 0:
        raise TrainingError(f"--max-steps must be 0 or more, not {cfg.max_steps}")
    if cfg.max_steps == 0 and not cfg.init:
        raise TrainingError("--max-steps 0 trains nothing: it re-validates and re-writes --init weights "
                            "(e.g. with new --model-arg decoding settings), so give --init")
    if (cfg.select or "loss") not in SELECT:
        raise TrainingError(f"unknown --select {cfg.select!r}; use {', '.join(SELECT)}")
    return cfg, saved


def load_data(
    cfg: TrainConfig, saved: dict[str, Any] | None, cb: TrainCallbacks, dist: Dist
) -> tuple[CachedImages, list[Path]]:
    """The training caches, checked against a resumed checkpoint's data order; for a
    calibration run, the photo folders themselves (:class:`colorcli.data.PhotoFiles`)."""
    if cfg.calibrate_only:
        caches = [d for d in cfg.data if d.endswith(".npz")]
        if caches:
            raise TrainingError(f"--calibrate-only colorizes the photos as colorize sees them (own size and "
                                f"shape): give it photo folders, not prepared caches ({caches[0]})")
        if not cfg.data:
            raise TrainingError("no photos to calibrate on: give --data FOLDER")
        folders = [Path(d) for d in cfg.data]
        return PhotoFiles(folders), folders
    with dist.main_first():  # one process prepares a missing cache, the others then read it
        cache_paths = resolve_data(cfg, cb)
    data = CachedImages(cache_paths)
    named = ", ".join(map(str, cache_paths))
    batch = cfg.batch_size * dist.world_size
    if len(data) < batch:
        raise TrainingError(f"{named}: {len(data)} photos, fewer than one batch of {batch}")
    if saved is not None and saved.get("order") is not None:
        # The saved data order indexes the cache it was drawn for.
        order_len = len(saved["order"])
        if order_len != len(data) // batch * batch or int(saved["order"].max()) >= len(data):
            raise TrainingError(
                f"{cfg.resume}: was made with a different training cache than {named} "
                f"({len(data)} photos now)"
            )
    return data, cache_paths


def build_model(
    cfg: TrainConfig, data: CachedImages | PhotoFiles, saved: dict[str, Any] | None, cb: TrainCallbacks
) -> tuple[ColorModel, TrainConfig, dict[str, Any]]:
    """The model to train -> (model, cfg, init_info). A resume rebuilds the checkpoint's
    architecture (its tensors are loaded with the rest of the state); ``--init`` starts from a
    weights file, of this model (strictly, and ``cfg.model_args`` becomes the file's) or of
    another (the tensors that match); otherwise a fresh build."""
    init_info: dict[str, Any] = {}
    if saved is not None:
        model = create_model(cfg.model, **{**cfg.model_args, "pretrained": False})
        saved_cfg = saved.get("model_config")
        if saved_cfg is not None:
            pretrained = bool(saved_cfg.get("pretrained"))
        else:
            # Checkpoints before "model_config": a pretrained encoder had its own lr multiplier.
            groups = saved["optimizer"]["param_groups"]
            pretrained = any(g.get("lr_mult", 1.0) != 1.0 for g in groups)
        return _with_pretrained_flag(model, pretrained), cfg, init_info
    if cfg.init and read_metadata(Path(cfg.init)).get("arch") != cfg.model:
        # Warm start from another architecture's weights: the tensors that match by name and
        # shape (e.g. encoder and decoder of mcl for l2); the rest start as a fresh build.
        init_path = Path(cfg.init)
        model = create_model(cfg.model, **cfg.model_args)
        if data.bin_counts is not None:
            model.prepare_targets(data.bin_counts)
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
        return model, cfg, init_info
    if cfg.init:
        init_path = Path(cfg.init)
        model = load_weights(init_path, expect_arch=cfg.model)  # strict; WeightsError names it
        meta = model.weights_meta
        _with_pretrained_flag(model, bool(meta["config"].get("pretrained")))
        model = _tune_config(model, cfg.model_args, init_path)
        # Rebalance for the data trained on now (it may be wider than the file's; a calibration
        # run reads photo files, with no prior: the file's stays).
        if data.bin_counts is not None:
            model.prepare_targets(data.bin_counts)
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
        return model, cfg, init_info
    model = create_model(cfg.model, **cfg.model_args)
    if data.bin_counts is not None:
        model.prepare_targets(data.bin_counts)
    return model, cfg, init_info


def _check_calibrate_only(cfg: TrainConfig, model: ColorModel, dist: Dist) -> None:
    if not cfg.calibrate_only:
        return
    if dist.enabled:
        raise TrainingError("--calibrate-only runs in one process (not under torchrun)")
    if model.gain_head() is None:
        raise TrainingError(f"--calibrate-only: model {cfg.model!r} as built has no calibration part "
                            "(mcl: add one with --model-arg cf_head=true)")
    if not cfg.init and not cfg.resume:
        raise TrainingError("--calibrate-only calibrates a trained network: start from one with --init FILE")


def _set_calibrate_only(model: ColorModel) -> None:
    """Freeze everything but the calibration part, every layer in eval mode (BN statistics and
    dropout as at inference, where the calibration will run)."""
    model.requires_grad_(False)
    model.eval()
    for p in model.calibration_parameters():
        p.requires_grad_(True)


def new_state(model: ColorModel, setup: TrainSetup, init_info: dict[str, Any]) -> TrainState:
    """``model`` on the device, ready to train, with a fresh optimizer, scaler and data RNG;
    wrapped in DDP (gradients averaged over the processes) in a distributed run."""
    cfg, device = setup.cfg, setup.device
    model.train()
    if cfg.calibrate_only:
        _set_calibrate_only(model)
    model.to(device)
    # Channels-last on CPU too: oneDNN's convolutions run faster in NHWC (bench_train.py).
    model = model.to(memory_format=torch.channels_last)
    net: torch.nn.Module = model
    if setup.dist.enabled:
        # A frozen encoder gets no gradients for a while: DDP must be told to expect that.
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=model.pretrained_encoder() is not None,
        )
    # The fused AdamW kernel (CPU and CUDA): one pass over all parameters, 2.7x faster a step
    # than the per-tensor loop on a CPU; the same update and the same state-dict format.
    opt = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=device.type in ("cpu", "cuda"))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    gen = torch.Generator().manual_seed(cfg.seed)
    return TrainState(model=model, net=net, opt=opt, scaler=scaler, gen=gen, init_info=init_info)


def restore_state(ts: TrainState, saved: dict[str, Any]) -> None:
    """Put a checkpoint's contents into ``ts``: the run goes on exactly where it was written."""
    ts.model.load_state_dict(saved["model"], strict=True)
    ts.opt.load_state_dict(saved["optimizer"])
    ts.scaler.load_state_dict(saved["scaler"])
    ts.step, ts.seconds, ts.best = saved["step"], saved["seconds"], saved["best"]
    ts.history = saved.get("history", [])
    ts.sessions = saved.get("sessions", [])
    ts.init_info = saved.get("init_info", {})
    ts.calibration = saved.get("calibration")
    ts.gen.set_state(saved["generator"])
    ts.order, ts.pos = saved["order"], saved["pos"]
    torch.set_rng_state(saved["torch_rng"])


def save_checkpoint(ts: TrainState, setup: TrainSetup) -> None:
    """Everything ``--resume`` needs, as plain data (see :func:`load_checkpoint`), atomically."""
    _atomic_torch_save(
        {
            "arch": setup.cfg.model,
            "model": ts.model.state_dict(),
            "model_config": ts.model.config_dict(),
            "optimizer": ts.opt.state_dict(),
            "scaler": ts.scaler.state_dict(),
            "step": ts.step,
            "seconds": ts.seconds,
            "best": ts.best,
            "history": ts.history,
            "generator": ts.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "order": ts.order,
            "pos": ts.pos,
            "config": dataclasses.asdict(setup.cfg),
            "world_size": setup.dist.world_size,
            "init_info": ts.init_info,
            "sessions": ts.sessions,
            "calibration": ts.calibration,
            "colorcli_version": __version__,
        },
        setup.ckpt_file,
    )


# The most validations a weights file's metadata holds (the latest): about 300 bytes each, far
# inside the reader's header limit (weights.MAX_HEADER_BYTES) however long and often a run
# validates. The checkpoint and the log keep them all.
META_VALIDATIONS = 200


def training_meta(ts: TrainState, setup: TrainSetup) -> dict[str, Any]:
    """How the weights were trained, for their metadata."""
    cfg, device = setup.cfg, setup.device
    meta = {
        "data": cfg.data,
        "cache": ", ".join(map(str, setup.cache_paths)),
        "photos": len(setup.data),
        "command": cfg.command,
        "steps": ts.step,
        "epochs": round(ts.step / setup.steps_per_epoch, 2),
        "batch_size": cfg.batch_size,
        "world_size": setup.dist.world_size,
        "global_batch_size": setup.global_batch,
        "size": cfg.size,
        "lr": cfg.lr,
        "seed": cfg.seed,
        "select": setup.select,
        "minutes": round(ts.seconds / 60, 1),
        "device": (
            torch.cuda.get_device_name() if device.type == "cuda"
            else f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
        ),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
    if ts.history:  # the validations up to the one these weights were kept at (the latest ones)
        meta["validations"] = ts.history[-META_VALIDATIONS:]
    if len(ts.sessions) > 1:
        meta["sessions"] = ts.sessions
    if ts.init_info:
        meta["init"] = ts.init_info
    if ts.calibration_report:
        meta["calibration"] = ts.calibration_report
    return meta


def run_validation(ts: TrainState, setup: TrainSetup, cb: TrainCallbacks) -> None:
    """Validate, record it, and write the weights if they are the best so far."""
    res = validate(ts.model, setup.val, setup.device) if setup.val else {}  # no --val: nothing to measure
    res = {**res, "step": ts.step, "epoch": round(ts.step / setup.steps_per_epoch, 2)}
    ts.history.append(res)
    # Best on the --select figure; without a validation set the latest weights are the best.
    improved = not setup.val or not ts.best or _improves(res, ts.best, setup.select)
    if improved:
        ts.best = res
        save_weights(ts.model, setup.out, training=training_meta(ts, setup),
                     metrics={"val": setup.cfg.val, **res})
    cb.on_validate(ts.step, res, improved)


def total_steps(cfg: TrainConfig, steps_per_epoch: int, step: int, seconds: float) -> int:
    """The run's length in steps from its budget, re-estimated from measured speed under ``minutes``."""
    cands = []
    if cfg.epochs is not None:
        cands.append(max(1, int(cfg.epochs * steps_per_epoch)))
    if cfg.minutes is not None and step > 20 and seconds > 30:
        # Measured over everything the loop does (validation and checkpoints included),
        # so the run ends near the wall-clock budget.
        cands.append(max(step + 1, int(step / seconds * cfg.minutes * 60)))
    if cfg.max_steps == 0:
        return 0  # --init weights re-validated and written as they are (new decoding settings)
    if cfg.max_steps is not None:
        cands.append(cfg.max_steps)
    # Minutes only and no speed measured yet: a placeholder, refined every 20 steps.
    return max(1, min(cands)) if cands else 10**9


def next_batch(ts: TrainState, setup: TrainSetup) -> np.ndarray:
    """Indices into the cache of the next global batch; a new epoch draws a new order. Every
    process draws the same (one seed), so the data order is the same at any world size."""
    bs = setup.global_batch
    if ts.order is None or ts.pos >= setup.steps_per_epoch:
        ts.order = torch.cat(list(iterate_batches(len(setup.data), bs, generator=ts.gen)))
        ts.pos = 0
    idx = ts.order[ts.pos * bs : (ts.pos + 1) * bs].numpy()
    ts.pos += 1
    return idx


def _set_encoder_phase(model: ColorModel, frozen: bool) -> None:
    encoder = model.pretrained_encoder()
    if encoder is None:
        return
    encoder.requires_grad_(not frozen)
    if frozen:
        encoder.eval()  # BN statistics of the pretrained encoder stay put
    else:
        encoder.train()


def train_step(ts: TrainState, setup: TrainSetup, total: int) -> tuple[float, str]:
    """One optimizer step on the next batch -> (loss, phase). Does not count it."""
    cfg, device, model = setup.cfg, setup.device, ts.model
    idx = next_batch(ts, setup)
    p = ts.p_floor = max(ts.p_floor, ts.step / total)
    frozen = _frozen(model, p, cfg)
    lr = _lr_at(p, cfg)
    for g in ts.opt.param_groups:
        g["lr"] = lr * g["lr_mult"]
    # This process's rows of the global batch (all of it in a single process).
    rank, b = setup.dist.rank, cfg.batch_size
    keep = slice(rank * b, (rank + 1) * b) if setup.dist.enabled else None
    rgb = augment_batch(setup.data.images[np.sort(idx)], size=cfg.size, generator=ts.gen, keep=keep).to(device)
    rgb = rgb.contiguous(memory_format=torch.channels_last)
    lab = color.rgb_to_lab(rgb)
    batch = {"L": lab[:, :1], "ab": lab[:, 1:], "rgb": rgb}
    _set_encoder_phase(model, frozen)
    with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        raw = ts.net(batch["L"])
        loss = model.loss(raw, batch)
    # The loss over the global batch: the mean of the processes' (a NaN anywhere makes it NaN,
    # so every process stops at the same step, before a backward pass that would wait forever).
    value = setup.dist.mean(loss.item())
    if not math.isfinite(value):
        raise TrainingError(_nan_message(f"loss became {value}", ts.step + 1, setup.ckpt_file))
    ts.opt.zero_grad(set_to_none=True)
    ts.scaler.scale(loss).backward()
    ts.scaler.unscale_(ts.opt)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    # With fp16 the scaler skips steps with inf gradients by design; in fp32 (no scaler) a
    # non-finite gradient would write NaN into every weight.
    if not ts.scaler.is_enabled() and not torch.isfinite(grad_norm):
        raise TrainingError(_nan_message("gradients became non-finite", ts.step + 1, setup.ckpt_file))
    ts.scaler.step(ts.opt)
    ts.scaler.update()
    phase = "frozen encoder" if frozen else "full"
    return value, phase


@contextlib.contextmanager
def _sigint_requests_stop(ts: TrainState) -> Iterator[None]:
    """In a distributed run, turn the first Ctrl-C into a request that the processes agree on
    after the step (see :func:`train_loop`): each process may see it in a different step, and
    one that stopped alone would leave the others waiting for it forever. A second Ctrl-C is
    raised at once. Like :func:`colorcli.interrupts.sigint_deferred`, only from the main thread."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return

    def request(signum: int, frame: Any) -> None:
        if ts.stop_requested:
            previous(signum, frame)
        ts.stop_requested = True

    signal.signal(signal.SIGINT, request)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def train_loop(ts: TrainState, setup: TrainSetup, cb: TrainCallbacks) -> TrainResult:
    """Steps until the budget is spent, validating and checkpointing on the clock; Ctrl-C
    saves a checkpoint and returns. In a distributed run the processes agree before each step
    whether to go on, and rank 0 alone validates and writes files."""
    cfg, dist = setup.cfg, setup.dist
    total = total_steps(cfg, setup.steps_per_epoch, ts.step, ts.seconds)
    cb.on_start(total, {"photos": len(setup.data), "steps_per_epoch": setup.steps_per_epoch,
                        "params": count_parameters(ts.model), "device": str(setup.device), "step": ts.step,
                        "world_size": dist.world_size})
    ts.clock = time.monotonic()
    last_ckpt = last_val = ts.clock
    draws: tuple[Any, ...] | None = None
    # One process: Ctrl-C waits for the step to end. Several: it waits for all to agree.
    per_step = contextlib.nullcontext if dist.enabled else sigint_deferred
    try:
        with _sigint_requests_stop(ts) if dist.enabled else contextlib.nullcontext():
            while True:
                done = ts.step >= total
                spent = cfg.minutes is not None and ts.seconds >= cfg.minutes * 60
                # The same answer everywhere (time and re-estimated totals differ a little).
                done, spent, stop = dist.any(done, spent, ts.stop_requested)
                if stop:
                    raise KeyboardInterrupt
                if done or spent:
                    break
                # What a step draws, to put back if a second Ctrl-C breaks into it (the first
                # one waits for the step to finish, see _sigint_deferred).
                draws = ts.draws()
                with per_step():
                    loss, phase = train_step(ts, setup, total)
                    ts.step += 1
                    draws = None
                now = ts.tick()
                cb.on_step(ts.step, total, loss, phase)
                if ts.step % 20 == 0:
                    total = total_steps(cfg, setup.steps_per_epoch, ts.step, ts.seconds)
                if dist.is_main and ts.step < total and now - last_val >= cfg.val_every_minutes * 60:
                    run_validation(ts, setup, cb)
                    last_val = ts.tick()
                if dist.is_main and now - last_ckpt >= cfg.ckpt_every_minutes * 60:
                    save_checkpoint(ts, setup)
                    last_ckpt = ts.tick()
    except KeyboardInterrupt:
        if draws is not None:
            # A second Ctrl-C broke into a step before it was counted: undo what can be undone
            # (data order, RNG) so resume repeats it. This checkpoint is close to, not exactly,
            # a step boundary (BatchNorm statistics of the forward pass, perhaps the update);
            # the first Ctrl-C, which waits for the step to end, gives an exact one.
            ts.put_back(draws)
        else:
            dist.sync_buffers(ts.model)
        ts.tick()
        if dist.is_main:
            save_checkpoint(ts, setup)
        cb.on_message(f"interrupted at step {ts.step}: checkpoint saved to {setup.ckpt_file}")
        weights = setup.out if ts.best and setup.out.exists() else None
        return TrainResult(ts.step, ts.step / setup.steps_per_epoch, ts.seconds, ts.best, weights,
                           setup.ckpt_file, interrupted=True)
    dist.sync_buffers(ts.model)
    if dist.is_main:
        if not ts.history or ts.history[-1]["step"] != ts.step:  # a resumed, finished run: nothing new
            run_validation(ts, setup, cb)
        ts.tick()
        save_checkpoint(ts, setup)
    dist.barrier()  # the files exist when any process returns
    return TrainResult(ts.step, ts.step / setup.steps_per_epoch, ts.seconds, ts.best, setup.out, setup.ckpt_file)


def train(cfg: TrainConfig, callbacks: TrainCallbacks | None = None) -> TrainResult:
    """Train ``cfg.model``; write best weights to ``cfg.out`` and a checkpoint beside it.

    Under ``torchrun`` each process trains its ``cfg.batch_size`` rows of every global batch
    (see :mod:`colorcli.distributed`); rank 0 validates and writes the files.
    """
    from colorcli.inference.backends import resolve_device

    session_command = cfg.command
    cfg, saved = read_resume(cfg)
    with process_group(resolve_device(cfg.device)) as (dist, device):
        cb = callbacks or TrainCallbacks()
        if not dist.is_main:
            cb = TrainCallbacks()  # one process reports
        if saved is not None and saved.get("world_size", 1) != dist.world_size:
            n = saved.get("world_size", 1)
            raise TrainingError(
                f"{cfg.resume}: was trained by {n} process{'es' if n != 1 else ''}; resume it with "
                f"the same number (torchrun --nproc-per-node {n}), not {dist.world_size}"
            )
        torch.manual_seed(cfg.seed)  # before the model is built: its initial weights come from it
        data, cache_paths = load_data(cfg, saved, cb, dist)
        val = load_folder_rgb(Path(cfg.val), limit=cfg.val_limit) if cfg.val and dist.is_main else []
        model, cfg, init_info = build_model(cfg, data, saved, cb)
        _check_calibrate_only(cfg, model, dist)
        setup = TrainSetup(cfg=cfg, device=device, data=data, cache_paths=cache_paths, val=val,
                           out=Path(cfg.out), ckpt_file=checkpoint_path(Path(cfg.out)),
                           select=cfg.select or "loss", dist=dist)
        ts = new_state(model, setup, init_info)
        if saved is not None:
            restore_state(ts, saved)
            cb.on_message(f"resumed from {cfg.resume} at step {ts.step} ({ts.seconds / 60:.1f} min trained)")
        elif setup.ckpt_file.exists():
            cb.on_message(f"{setup.ckpt_file} exists and will be replaced (use --resume to continue it)")
        if session_command or saved is not None:
            ts.sessions.append(session_command if saved is None else f"resume: {session_command}".strip())
        if cfg.calibrate_only:
            return calibration_run(ts, setup, cb)
        return train_loop(ts, setup, cb)


# ---------------------------------------------------------------------------------------------
# --calibrate-only (colorcli.calibrate)

# What each photo collected gives, one row each: the head's input for each view, the
# colourfulness curve, the photo's own colourfulness, and which photo it was.
_ROWS = ("features", "curves", "cf_true", "index")


def _calibration_planned(setup: TrainSetup, done: int, seconds: float) -> int:
    """Photos this run will collect: the run's budget (:func:`total_steps`, a step being one
    photo and an epoch all of them), never more than there are."""
    n = len(setup.data)
    return min(n, total_steps(setup.cfg, n, done, seconds))


def calibration_run(ts: TrainState, setup: TrainSetup, cb: TrainCallbacks) -> TrainResult:
    """Collect (resuming what a checkpoint holds), fit, validate and write the weights."""
    cfg, model = setup.cfg, ts.model
    head = model.gain_head()
    grid = log_gain_grid(model)
    saved = ts.calibration or {}
    order = saved.get("order")
    if order is None:
        order = torch.randperm(len(setup.data), generator=ts.gen)
    elif len(order) != len(setup.data):
        raise TrainingError(f"{cfg.resume}: was collected from other photos "
                            f"({len(order)} then, {len(setup.data)} in {', '.join(cfg.data)} now)")
    if "features" in saved and saved["features"].ndim != 3:
        raise TrainingError(f"{cfg.resume}: was collected by an earlier colorcli (the head's input averaged over "
                            "the mirror views, not one for each view); collect afresh, without --resume")
    rows: dict[str, list[torch.Tensor]] = {k: list(saved[k]) if k in saved else [] for k in _ROWS}
    done = len(rows["cf_true"])
    pos = int(saved["pos"]) if "pos" in saved else 0  # photos of ``order`` tried (gray, unreadable ones too)
    skipped = {k: int(saved[k]) if k in saved else 0 for k in ("gray", "unreadable")}

    def snapshot() -> dict[str, torch.Tensor]:
        return {"order": order, "pos": torch.tensor(pos), **{k: torch.tensor(v) for k, v in skipped.items()},
                **({k: torch.stack(v) for k, v in rows.items()} if done else {})}

    total = _calibration_planned(setup, done, ts.seconds)
    cb.on_start(total, {"photos": len(setup.data), "steps_per_epoch": len(setup.data),
                        "params": sum(p.numel() for p in model.calibration_parameters()),
                        "device": str(setup.device), "step": done, "world_size": 1})
    col = Colorizer.from_model(model, InferenceSettings(), device=setup.device)
    recorder = GainRecorder(head)
    ts.clock = last_ckpt = time.monotonic()
    try:
        with torch.no_grad():
            while (done < total and pos < len(order)
                   and not (cfg.minutes is not None and ts.seconds >= cfg.minutes * 60)):
                with sigint_deferred():
                    i = int(order[pos])
                    pos += 1
                    try:
                        photo = setup.data.read(i)
                    except ColorcliError as exc:  # the run goes on past a broken file
                        skipped["unreadable"] += 1
                        cb.on_message(f"skipped: {exc}")
                        continue
                    if photo is None:
                        skipped["gray"] += 1
                        continue
                    f, c, t = measure_photo(col, recorder, photo, grid)
                    for k, v in zip(_ROWS, (f, c, torch.tensor(t, dtype=torch.float64), torch.tensor(i))):
                        rows[k].append(v)
                    done += 1
                    ts.step = done
                now = ts.tick()
                cb.on_step(done, total, float(c[len(grid) // 2] - t), "collecting; CF at gain 1 less the photo's")
                if done % 20 == 0:
                    total = _calibration_planned(setup, done, ts.seconds)
                if now - last_ckpt >= cfg.ckpt_every_minutes * 60:
                    ts.calibration = snapshot()
                    save_checkpoint(ts, setup)
                    last_ckpt = ts.tick()
    except KeyboardInterrupt:
        ts.calibration = snapshot()
        ts.tick()
        save_checkpoint(ts, setup)
        cb.on_message(f"interrupted after {done} photos: checkpoint saved to {setup.ckpt_file}")
        return TrainResult(done, done / len(setup.data), ts.seconds, ts.best, None, setup.ckpt_file,
                           interrupted=True)
    finally:
        recorder.close()
    if not done:
        raise TrainingError("--calibrate-only: no photo collected (raise --minutes or --max-steps)")
    ts.calibration = snapshot()
    # Each photo's group: the folder it came from (each gets its colourfulness on average).
    groups = torch.from_numpy(setup.data.folder_index[ts.calibration["index"].numpy()].astype(np.int64))
    report = fit_gain(model, ts.calibration["features"], ts.calibration["curves"], ts.calibration["cf_true"],
                      grid, groups=groups, seed=cfg.seed)
    report["groups"] = {i: str(p) for i, p in enumerate(dict.fromkeys(setup.cache_paths))}
    report["skipped"] = skipped
    ts.calibration_report = report
    before, after = report["before"], report["after"]
    part = "held_out" if "held_out" in after else "fit"
    cb.on_message(
        f"fitted the gain on {report['photos'] - report['held_out']} photos ({report['held_out']} held out): "
        f"mean CF {before[part]['cf_pred']:.2f} -> {after[part]['cf_pred']:.2f} "
        f"against the photos' {after[part]['cf_true']:.2f} ({part.replace('_', ' ')})"
    )
    run_validation(ts, setup, cb)
    ts.tick()
    save_checkpoint(ts, setup)
    return TrainResult(done, done / len(setup.data), ts.seconds, ts.best, setup.out, setup.ckpt_file)


def _nan_message(what: str, step: int, ckpt_file: Path) -> str:
    last = ckpt_file if ckpt_file.exists() else "none"
    return (
        f"{what} at step {step}; stopped without writing weights "
        f"(last good checkpoint: {last}). Try a lower --lr."
    )
