"""``colorcli train`` and ``colorcli prepare``."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from colorcli.cli.common import (
    QuietOption, VerboseOption, err, out, require_torch, safe_text, say, set_verbosity, show_progress, user_errors,
)


class _RichCallbacks:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = None

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None:
        say(f"training on {info['device']}: {info['photos']} photos, "
            f"{info['steps_per_epoch']} steps/epoch, {info['params'] / 1e6:.2f}M parameters")
        if info.get("step"):
            say(f"continuing at step {info['step']}")
        self.task = self.progress.add_task("train", total=total_steps, completed=info.get("step", 0), loss="")

    def on_step(self, step: int, total_steps: int, loss: float, phase: str) -> None:
        self.progress.update(self.task, completed=step, total=total_steps, loss=f"loss {loss:.4f} ({phase})")

    def on_validate(self, step: int, result: dict[str, float], best: bool) -> None:
        keys = ("loss", "psnr", "delta_cf", "cf_gap", "neutral_chroma", "auc", "combined")
        text = "  ".join(f"{k} {result[k]:.3f}" for k in keys if k in result)
        if not text:
            say(f"saved @ step {step} (epoch {result.get('epoch')}): no --val, the latest weights are kept")
            return
        # say() prints plain text: rich would swallow "[best]" as a style tag.
        say(f"val @ step {step} (epoch {result.get('epoch')}): {text}{'  [best]' if best else ''}")

    def on_message(self, text: str) -> None:
        say(text)  # plain text: messages carry file names ("[1].jpg" is no markup)


def train(
    model: Annotated[str, typer.Option("--model", "-m", help="Model to train (see `colorcli models`).")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Weights file to write (best on validation).")],
    data: Annotated[list[str] | None, typer.Option("--data", help="Folder of colour photos, or a prepared .npz cache. Repeatable: folders make one cache; caches are joined in order, and a cache named twice weighs twice. Not needed with --resume.")] = None,
    val: Annotated[Path | None, typer.Option("--val", help="Folder of colour photos for validation.")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Checkpoint to continue exactly (OUT.ckpt). Its settings are kept; --out, --device, --cache-dir, --select and a new budget (--minutes/--epochs/--max-steps) are taken from this command.")] = None,
    init: Annotated[Path | None, typer.Option("--init", help="Start from a .safetensors weights file, fresh optimizer and schedule. Same model: rebuilt from its metadata; another model (e.g. l2 from mcl): the tensors that match by name and shape are copied.")] = None,
    minutes: Annotated[float | None, typer.Option("--minutes", help="Training time budget in minutes.")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", help="Number of epochs (may be fractional).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size.")] = 32,
    size: Annotated[int, typer.Option("--size", help="Training crop size in pixels.")] = 128,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 1e-3,
    freeze_frac: Annotated[float, typer.Option("--freeze-frac", help="Fraction of training with the pretrained encoder frozen.")] = 0.3,
    calibrate_only: Annotated[bool, typer.Option("--calibrate-only", help="Fit only the per-photo chroma gain (mcl: cf_head) of --init weights to what colorize renders; the rest of the network stays as it is. Each step colorizes one photo of the --data folders (folders, not caches) at its own size and shape, as colorize does (--size is not used); --minutes or --max-steps bounds how many, then the gain is fitted on them all at once.")] = False,
    val_limit: Annotated[int | None, typer.Option("--val-limit", help="Use only the first N validation photos.")] = None,
    val_every: Annotated[float, typer.Option("--val-every", help="Minutes between validations (the best weights are kept).")] = 15.0,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many steps. 0 with --init trains nothing: it validates the --init weights under new --model-arg decoding settings and writes them with those figures.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    select: Annotated[Literal["loss", "psnr", "auc", "delta_cf", "neutral_chroma", "combined"] | None, typer.Option("--select", help="Validation figure that picks the weights kept: loss (the default), psnr, auc, delta_cf, neutral_chroma, or combined (PSNR less 0.2 dB per unit of CF gap past 3 and of neutral chroma past 7). On --resume, changes what is kept from then on.")] = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
    model_arg: Annotated[list[str] | None, typer.Option("--model-arg", help="KEY=VALUE model setting (repeatable). With --init only loss and decoding settings may change (mcl: temperature, lam, sigma, neighbours, reg_weight, cf_weight, neutral_radius, chroma_gain), or a part be added (mcl: cf_head=true, a per-photo chroma gain).")] = None,
    cache_dir: Annotated[Path, typer.Option("--cache-dir", help="Where prepared caches go.")] = Path(".cache"),
) -> None:
    """Train a model on folders of colour photos; Ctrl-C saves a checkpoint to resume from."""
    set_verbosity(quiet, verbose)
    require_torch("train")
    from colorcli.train import TrainConfig
    from colorcli.train import train as run_train

    model_args = {}
    for item in model_arg or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            err.print(f"--model-arg {item!r}: expected KEY=VALUE", highlight=False, markup=False)
            raise typer.Exit(2)
        try:  # numbers and booleans as JSON reads them; anything else stays text
            model_args[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            model_args[key.strip()] = value.strip()
    cfg = TrainConfig(
        model=model, data=[str(d) for d in data or []], out=str(out_path), val=str(val) if val else None,
        resume=str(resume) if resume else None, init=str(init) if init else None,
        minutes=minutes, epochs=epochs, batch_size=batch_size, size=size, device=device, lr=lr,
        freeze_frac=freeze_frac, calibrate_only=calibrate_only, val_limit=val_limit, val_every_minutes=val_every,
        max_steps=max_steps, seed=seed, cache_dir=str(cache_dir), select=select, model_args=model_args,
        command="colorcli " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[loss]}"),
    )
    say(f"settings: {json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)}", level=1)
    with user_errors(), Progress(*columns, console=err, transient=False, disable=not show_progress()) as progress:
        result = run_train(cfg, _RichCallbacks(progress))
    best = ", ".join(f"{k}={v:.3f}" for k, v in result.best.items() if isinstance(v, float))
    written = result.weights if result.weights is not None else result.checkpoint
    out.print(f"{written}  steps={result.steps} epochs={result.epochs:.2f} "
              f"minutes={result.seconds / 60:.1f}  best: {best or 'not validated yet'}", highlight=False)
    if result.interrupted:
        err.print(f"resume with: colorcli train --model {model} --out {shlex.quote(str(out_path))} "
                  f"--resume {shlex.quote(str(result.checkpoint))}", highlight=False)
        raise typer.Exit(130)


def prepare(
    folders: Annotated[list[Path], typer.Argument(help="Folders of colour photos.")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Cache file to write (.npz).")],
    size: Annotated[int, typer.Option("--size", help="Side of the square crops stored.")] = 128,
    quality: Annotated[int, typer.Option("--quality", help="JPEG quality of the stored crops.")] = 82,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Decode, crop and cache training photos once (grayscale ones are skipped)."""
    set_verbosity(quiet, verbose)
    require_torch("prepare")
    from colorcli.data import prepare as run_prepare

    with user_errors(), Progress(*Progress.get_default_columns(), console=err, disable=not show_progress()) as progress:
        task = progress.add_task("prepare", total=None)
        res = run_prepare(
            list(folders), out_path, size=size, quality=quality,
            progress=lambda i, n: progress.update(task, completed=i, total=n),
        )
    for path, why in res.failed:
        say(f"skipped {why}")
    out.print(f"{res.path}: {res.kept} photos ({res.skipped_gray} grayscale skipped, "
              f"{len(res.failed)} unreadable), {res.bytes / 2**20:.1f} MiB", highlight=False)
