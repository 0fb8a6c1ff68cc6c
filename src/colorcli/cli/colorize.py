"""``colorcli colorize``: files and folders in, colour images out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from colorcli.cli.common import err, out, user_errors


def colorize(
    inputs: Annotated[list[Path], typer.Argument(help="Photos or folders of photos.")],
    out_dir: Annotated[Path | None, typer.Option("--out-dir", "-o", help="Folder for the results (default: beside each input).")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Model name (see `colorcli models`).")] = "mcl",
    weights: Annotated[Path | None, typer.Option("--weights", help="Weights file (default: the model's shipped weights).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    size: Annotated[int | None, typer.Option("--size", help="Short side the network sees, a multiple of 32 (default: the model's).")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Annealed-mean temperature for bin models (lower = more vivid).")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    suffix: Annotated[str, typer.Option("--suffix", help="Added to each output file name.")] = "_color",
    fmt: Annotated[str, typer.Option("--format", help="png, jpg or same (as the input).")] = "png",
    quality: Annotated[int, typer.Option("--quality", help="JPEG/WebP quality of outputs.")] = 95,
) -> None:
    """Colorize black-and-white photos at their full resolution."""
    from colorcli.batch import plan_jobs, run_jobs
    from colorcli.pipeline import Colorizer

    with user_errors():
        jobs, problems = plan_jobs(inputs, out_dir, suffix=suffix, fmt=fmt, recursive=recursive)
        colorizer = Colorizer.from_name(model, weights=weights, device=device, size=size, temperature=temperature)
    for _, msg in problems:
        err.print(f"[red]failed:[/] {msg}", highlight=False)
    columns = (TextColumn("colorize"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=err) as progress:
        task = progress.add_task("colorize", total=len(jobs))

        def on_done(job, status, note):
            if status == "failed":
                progress.console.print(f"[red]failed:[/] {note}", highlight=False)
            elif status == "done":
                out.print(str(job.target), highlight=False)
                if note:
                    progress.console.print(f"note: {job.source}: {note}", highlight=False)
            progress.advance(task)

        try:
            result = run_jobs(colorizer, jobs, overwrite=overwrite, quality=quality, on_done=on_done)
        except KeyboardInterrupt:
            progress.stop()
            err.print("interrupted: finished outputs are kept, no partial file was left; "
                      "run the same command again to do the rest")
            raise typer.Exit(130) from None
    failed = len(result.failed) + len(problems)
    err.print(f"done {len(result.done)}, skipped {len(result.skipped)} (exist; --overwrite replaces), failed {failed}")
    if failed:
        raise typer.Exit(1)
