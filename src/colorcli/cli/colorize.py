"""``colorcli colorize``: files and folders in, colour images out.

stdout carries one line per output written (its path); the progress bar, notes, per-file
failures and the summary go to stderr. Exit codes: 0 all done or skipped, 1 some file failed,
2 a usage problem (unknown model, bad weights, output folder not writable), 130 interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from colorcli.cli.common import RefineOption, TtaOption, err, out, print_line, results, safe_text, stdout_problem, user_errors
from colorcli.errors import ColorcliError


def colorize(
    # readable=False: an unreadable file fails alone, with one line, as one inside a folder does.
    inputs: Annotated[list[Path], typer.Argument(help="Photos or folders of photos.", readable=False)],
    out_dir: Annotated[Path | None, typer.Option("--out-dir", "-o", help="Folder for the results (default: beside each input).")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Model name (see `colorcli models`).")] = "mcl",
    weights: Annotated[Path | None, typer.Option("--weights", help="Weights file (default: the model's shipped weights).")] = None,
    device: Annotated[Literal["auto", "cpu", "cuda"], typer.Option("--device", help="Where the network runs.")] = "auto",
    size: Annotated[int | None, typer.Option("--size", help="Short side the network sees, a multiple of 32 (default: the model's).")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Annealed-mean temperature for bin models (lower = more vivid).")] = None,
    tta: TtaOption = True,
    refine: RefineOption = True,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (never an input).")] = False,
    suffix: Annotated[str, typer.Option("--suffix", help="Added to each output file name.")] = "_color",
    fmt: Annotated[Literal["png", "jpg", "same"], typer.Option("--format", help="Output format; same: as the input where it can be written, else png.")] = "png",
    bit_depth: Annotated[Literal["8", "16", "auto"], typer.Option("--bit-depth", help="Bits per channel of PNG/TIFF outputs; auto: 16 for 16-bit inputs.")] = "auto",
    quality: Annotated[int, typer.Option("--quality", min=1, max=100, help="JPEG/WebP quality of outputs.")] = 95,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Threads reading and writing files beside inference (0: none).")] = 2,
    backend: Annotated[Literal["torch", "onnx"], typer.Option("--backend", help="Run the network with PyTorch, or with onnxruntime from a `colorcli export` file (no torch needed).")] = "torch",
    onnx: Annotated[Path | None, typer.Option("--onnx", help="ONNX file for --backend onnx (default: <model>.onnx in the weights folder).")] = None,
) -> None:
    """Colorize black-and-white photos at their full resolution."""
    from colorcli.batch import plan_jobs, prepare_out_dir, run_jobs

    if bit_depth == "16" and fmt == "jpg":
        print_line("error", "bold red", "--bit-depth 16 needs PNG or TIFF outputs; JPEG is 8-bit only")
        raise typer.Exit(2)
    if (backend == "onnx" and weights is not None) or (backend == "torch" and onnx is not None):
        print_line("error", "bold red", "--weights goes with --backend torch, --onnx with --backend onnx")
        raise typer.Exit(2)
    with user_errors():
        plan = plan_jobs(inputs, out_dir, suffix=suffix, fmt=fmt, recursive=recursive)
        if not plan.jobs and not plan.failed:
            raise ColorcliError(f"no image files found in {', '.join(str(p) for p in inputs)}")
        if backend == "onnx":
            from colorcli.onnx_runtime import OnnxColorizer

            colorizer = OnnxColorizer.from_name(model, onnx=onnx, device=device, size=size, temperature=temperature, tta=tta, refine=refine)
        else:
            from colorcli.pipeline import Colorizer  # imports torch

            colorizer = Colorizer.from_name(model, weights=weights, device=device, size=size, temperature=temperature, tta=tta, refine=refine)
        if out_dir is not None:
            prepare_out_dir(out_dir)
    for _, msg in plan.failed:
        print_line("failed", "red", msg)
    if plan.previous_outputs:
        print_line("note", "cyan", f"{len(plan.previous_outputs)} file(s) named like outputs of other inputs "
                   f"(e.g. {plan.previous_outputs[0]}) were not taken as inputs")
    columns = (TextColumn("colorize"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    # On a terminal a live bar; in a log or a pipe only the lines below.
    with Progress(*columns, console=err, disable=not err.is_terminal) as progress:
        task = progress.add_task("colorize", total=len(plan.jobs))

        def on_event(job, status, detail):
            if status == "failed":
                print_line("failed", "red", detail, console=progress.console)
            elif status == "done":
                out.print(safe_text(str(job.target)), markup=False, highlight=False)
                if detail:
                    print_line("note", "cyan", f"{job.source}: {detail}", console=progress.console)
            progress.advance(task)

        with user_errors():
            result = run_jobs(colorizer, plan.jobs, overwrite=overwrite, quality=quality,
                              bit_depth=bit_depth, workers=workers, on_event=on_event)
    failed = len(result.failed) + len(plan.failed)
    summary = f"done {len(result.done)}, skipped {len(result.skipped)}, failed {failed}"
    if result.skipped:
        summary += " (skipped: output exists; --overwrite replaces it)"
    if result.interrupted:
        print_line("interrupted", "bold yellow",
                   f"{summary}, not started {len(result.not_started)}; finished outputs are kept and "
                   "no partial file was left; run the same command again to do the rest")
        raise typer.Exit(130)
    err.print(summary, markup=False, highlight=False)
    if results.error is not None:  # stdout closed (| head -n1) or full: the work is done anyway
        results.reported = True
        print_line("error", "bold red", stdout_problem("output path(s)"))
        raise typer.Exit(1)
    if failed:
        raise typer.Exit(1)

