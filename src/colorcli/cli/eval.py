"""``colorcli eval``: score models (and baselines, and other tools' outputs) against colour photos.

stdout carries the summary table (and the report folder's files when ``--report`` is given);
the progress bar, notes and unreadable photos go to stderr. Exit codes: 0 done, 1 some photo
could not be read, 2 a usage problem (unknown model, bad weights, no photos).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from colorcli.cli.common import (
    DeviceOption, QuietOption, RefineOption, ThreadsOption, TtaOption, VerboseOption, available_cores, check_temperature,
    err, out, parse_named, print_line, print_table, require_torch, result_table, safe_text, set_verbosity,
    show_progress, user_errors,
)


def eval_command(
    folder: Annotated[Path, typer.Argument(help="Folder of colour photos (the ground truth).")],
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model to evaluate (repeatable). Default: mcl, unless --weights, --pred-dir or --baseline say what to score.")] = None,
    weights: Annotated[list[str] | None, typer.Option("--weights", help="NAME=FILE: evaluate model NAME from this weights file: .safetensors runs on PyTorch, .onnx (from `colorcli export`, fp32 or --int8) on onnxruntime (repeatable; implies --model NAME). A NAME that is no model's labels the file, which brings its own model: --weights old=a.safetensors --weights new=b.safetensors --against old.")] = None,
    pred_dir: Annotated[list[str] | None, typer.Option("--pred-dir", help="NAME=DIR: score finished predictions in DIR, matched to photos by file stem (or stem_color) (repeatable).")] = None,
    baseline: Annotated[Literal["gray"] | None, typer.Option("--baseline", help="Add a baseline row; gray: the neutral image with the photo's own L.")] = None,
    against: Annotated[str | None, typer.Option("--against", help="System the others are compared with photo by photo (mean difference and its 95 % paired bootstrap interval). Default: gray with --baseline gray, else the first system.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Score only the first N photos (sorted by name).")] = None,
    size: Annotated[int | None, typer.Option("--size", help="Short side the networks see, a multiple of 32 (default: each model's).")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Annealed-mean temperature for bin models.")] = None,
    tta: TtaOption = True,
    refine: RefineOption = True,
    threshold: Annotated[float, typer.Option("--threshold", min=0, help="ab distance under which a pixel counts as correct.")] = 10.0,
    semantic: Annotated[bool, typer.Option("--semantic", help="Also classify ground truth, gray and colorized photos with an ImageNet EfficientNet-Lite0 (top-1/top-5; slower).")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="Folder for per-image CSV, summary JSON/Markdown, contact sheet and accuracy plot.")] = None,
    sheet: Annotated[int, typer.Option("--sheet", min=1, help="Photos in each contact-sheet section (first N, worst N by ΔCF).")] = 8,
    device: DeviceOption = "auto",
    threads: ThreadsOption = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout instead of the table.")] = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Score colorizers on colour photos: ab L2, pixel accuracy, AuC, PSNR, SSIM, colourfulness, ..."""
    set_verbosity(quiet, verbose)
    require_torch("eval")
    from colorcli.evaluate import evaluate
    from colorcli.report import paired_note, paired_table, paired_title, summary_json, table, write_report

    with user_errors():
        check_temperature(temperature)
    if not model and not weights and not pred_dir and baseline is None:
        model = ["mcl"]  # the default model, as colorize and compare use

    columns = (TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=not show_progress()) as progress:
        task = progress.add_task("eval", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        with user_errors():
            result = evaluate(
                folder,
                models=model or [],
                weights=parse_named(weights or [], "--weights"),
                pred_dirs=parse_named(pred_dir or [], "--pred-dir"),
                baseline=baseline,
                against=against,
                limit=limit,
                size=size,
                temperature=temperature,
                tta=tta,
                refine=refine,
                threshold=threshold,
                device=device,
                semantic=semantic,
                sheet_count=sheet if report is not None else 0,
                threads=threads or available_cores(),
                on_progress=on_progress,
            )
    for _, reason in result.failed:
        print_line("failed", "red", reason)
    for note in result.notes():
        print_line("note", "cyan", note, level=0)

    if as_json:
        out.print_json(json.dumps(summary_json(result), ensure_ascii=False))
    else:
        _print_rows(*table(result), title=f"{len(result.images)} photo(s) from {safe_text(str(folder))}")
        out.print("ΔCF = mean |CF(pred) − CF(gt)| per photo; CF gap = |mean CF(pred) − mean CF(gt)|",
                  markup=False, highlight=False)
        headers, rows = paired_table(result)
        if rows:
            out.print(f"\nPaired: {safe_text(paired_title(result))}", markup=False, highlight=False)
            _print_rows(headers, rows)
            out.print(paired_note(result), markup=False, highlight=False)
    if report is not None:
        with user_errors():
            paths = write_report(result, report)
        for p in paths.values():
            out.print(safe_text(str(p)), markup=False, highlight=False)
    if result.failed:
        raise typer.Exit(1)


def _print_rows(headers: list[str], rows: list[list[str]], title: str | None = None) -> None:
    """One table of formatted cells on stdout (boxed on a terminal, plain columns in a pipe)."""
    tbl = result_table(*headers, title=title)
    for row in rows:
        tbl.add_row(*(safe_text(c) for c in row))
    print_table(tbl)
