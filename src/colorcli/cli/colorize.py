"""``colorcli colorize``: files and folders in, colour images (and films) out.

Films (mp4, mov, m4v, avi, mkv, webm, animated GIF; told apart by content) go in the same batch
and come out as ``NAME_color.mp4`` (``.mov`` and ``.mkv`` keep their container); a second bar
counts their frames.

stdout carries one line per output written (its path); the progress bar, notes, per-file
failures and the summary go to stderr. Exit codes: 0 all done or skipped, 1 some file failed,
2 a usage problem (unknown model, bad weights, output folder not writable), 130 interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from colorcli.cli.common import (
    HintOption,
    HintsFileOption,
    ReferenceStrengthOption,
    RefineOption,
    TtaOption,
    err,
    out,
    print_line,
    safe_text,
    user_errors,
)
from colorcli.errors import ColorcliError


def colorize(
    inputs: Annotated[list[Path], typer.Argument(help="Photos or folders of photos.")],
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
    workers: Annotated[int, typer.Option("--workers", min=0, help="Local engine: threads reading and writing files beside inference (0: none). Ray: actors, each with its own model.")] = 2,
    backend: Annotated[Literal["auto", "torch", "onnx"], typer.Option("--backend", help="Run the network with PyTorch, or with onnxruntime from the model's ONNX file (no torch needed); auto: onnxruntime when the model's ONNX twin is shipped (faster), else torch when installed.")] = "auto",
    onnx: Annotated[Path | None, typer.Option("--onnx", help="ONNX file for the onnx backend (default: the model's shipped <model>.onnx).")] = None,
    codec: Annotated[str, typer.Option("--codec", help="Films: FFmpeg video encoder (h264 = libx264, hevc, vp9, mpeg4, ...).")] = "libx264",
    crf: Annotated[int | None, typer.Option("--crf", help="Films: constant rate factor, lower = better and bigger (x264: 0-51; default 18).")] = None,
    start: Annotated[float, typer.Option("--start", min=0, help="Films: seconds to skip at the start.")] = 0.0,
    duration: Annotated[float | None, typer.Option("--duration", help="Films: seconds to colorize from --start (default: to the end).")] = None,
    temporal: Annotated[bool, typer.Option("--temporal/--no-temporal", help="Films: keep colour steady from frame to frame (no flicker).")] = True,
    engine: Annotated[Literal["local", "ray"], typer.Option("--engine", help="local: this process; ray: a pool of Ray actors, on this machine or a cluster (pip install 'colorcli[ray]'; photos only).")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray: auto (the cluster running here) or HOST:PORT of the head (default: start Ray on this machine, or RAY_ADDRESS).")] = None,
    cpus_per_worker: Annotated[float | None, typer.Option("--cpus-per-worker", help="Ray: CPUs each actor reserves, and its torch threads [default: 1].")] = None,
    gpus_per_worker: Annotated[float | None, typer.Option("--gpus-per-worker", help="Ray: GPUs each actor reserves (0: run on CPU) [default: 0].")] = None,
    saturation: Annotated[float, typer.Option("--saturation", min=0.0, max=10.0, help="Colour strength: 0 gray, 1 as predicted, above 1 more vivid (kept in the sRGB gamut).")] = 1.0,
    reference: Annotated[Path | None, typer.Option("--reference", help="A photo whose colours steer the result, or a folder of them paired with the inputs by file stem.")] = None,
    reference_strength: ReferenceStrengthOption = 1.0,
    hint: HintOption = None,
    hints: HintsFileOption = None,
) -> None:
    """Colorize black-and-white photos and films at their full resolution."""
    from colorcli.batch import ColorizerSpec, plan_jobs, prepare_out_dir, run_jobs
    from colorcli.video import FilmSettings

    if bit_depth == "16" and fmt == "jpg":
        print_line("error", "bold red", "--bit-depth 16 needs PNG or TIFF outputs; JPEG is 8-bit only")
        raise typer.Exit(2)
    if (backend == "onnx" and weights is not None) or (backend == "torch" and onnx is not None):
        print_line("error", "bold red", "--weights goes with --backend torch, --onnx with --backend onnx")
        raise typer.Exit(2)
    if engine == "local" and (address, cpus_per_worker, gpus_per_worker) != (None, None, None):
        print_line("error", "bold red", "--address, --cpus-per-worker and --gpus-per-worker go with --engine ray")
        raise typer.Exit(2)
    if engine == "ray" and (codec, crf, start, duration, temporal) != ("libx264", None, 0.0, None, True):
        print_line("error", "bold red", "--codec, --crf, --start, --duration and --no-temporal are for films, "
                   "which --engine ray does not colorize; use the local engine")
        raise typer.Exit(2)
    if engine == "ray" and (hint or hints or reference):
        print_line("error", "bold red", "--hint, --hints and --reference are not available with --engine ray yet; "
                   "use the local engine")
        raise typer.Exit(2)
    spec = ColorizerSpec(model=model, backend=backend, weights=weights, onnx=onnx, device=device, size=size,
                         temperature=temperature, tta=tta, refine=refine, saturation=saturation,
                         reference_strength=reference_strength)
    with user_errors():
        from colorcli.steer import BatchSteering

        steering = BatchSteering(hints=hint, hints_file=hints, reference=reference)
        plan = plan_jobs(inputs, out_dir, suffix=suffix, fmt=fmt, recursive=recursive)
        if not plan.jobs and not plan.failed:
            raise ColorcliError(f"no image files found in {', '.join(str(p) for p in inputs)}")
        film = FilmSettings(codec=codec, crf=crf, start=start, duration=duration, temporal=temporal)
        if any(job.film for job in plan.jobs) and engine == "local":
            film.check()
        if engine == "ray":
            from colorcli.engines.ray_engine import RayOptions, import_ray, run_jobs_ray

            import_ray()  # says how to install it before any work
            ray_options = RayOptions(address=address, workers=workers, cpus_per_worker=1.0 if cpus_per_worker is None else cpus_per_worker,
                                     gpus_per_worker=0.0 if gpus_per_worker is None else gpus_per_worker)
        else:
            colorizer = spec.load()
        if out_dir is not None:
            prepare_out_dir(out_dir)
    for _, msg in plan.failed:
        print_line("failed", "red", msg)
    if plan.previous_outputs:
        print_line("note", "cyan", f"{len(plan.previous_outputs)} file(s) named like outputs of other inputs "
                   f"(e.g. {plan.previous_outputs[0]}) were not taken as inputs")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    # On a terminal a live bar; in a log or a pipe only the lines below.
    with Progress(*columns, console=err, disable=not err.is_terminal) as progress:
        task = progress.add_task("colorize", total=len(plan.jobs))
        frames_task = None

        def on_frames(job, done, total):
            nonlocal frames_task
            if frames_task is None:
                frames_task = progress.add_task("frames", total=total)
            if done == 1:
                progress.reset(frames_task, total=total)
            progress.update(frames_task, completed=done, total=total)

        def on_event(job, status, detail):
            if status == "failed":
                print_line("failed", "red", detail, console=progress.console)
            elif status == "done":
                out.print(safe_text(str(job.target)), markup=False, highlight=False)
                if detail:
                    print_line("note", "cyan", f"{job.source}: {detail}", console=progress.console)
            progress.advance(task)

        with user_errors():
            if engine == "ray":
                result = run_jobs_ray(spec, plan.jobs, ray_options=ray_options, overwrite=overwrite,
                                      quality=quality, bit_depth=bit_depth, on_event=on_event)
            else:
                result = run_jobs(colorizer, plan.jobs, overwrite=overwrite, quality=quality,
                                  bit_depth=bit_depth, workers=workers, on_event=on_event,
                                  film=film, on_frames=on_frames,
                                  steering=steering.for_photo if steering else None)
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
    if failed:
        raise typer.Exit(1)

