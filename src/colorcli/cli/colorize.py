"""``colorcli colorize``: files and folders in, colour images out.

stdout carries one line per output written (its path); the progress bar, notes, per-file
failures and the summary go to stderr. Exit codes: 0 all done or skipped, 1 some file failed,
2 a usage problem (unknown model, bad weights, output folder not writable), 130 interrupted.

Pipes: ``-`` as the input reads one photo from stdin, ``-o -`` writes the one result to stdout
(PNG unless ``--format`` says otherwise): ``colorcli colorize - -o - < old.jpg > new.png``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from colorcli.cli.common import (
    DeviceOption, HintOption, HintsFileOption, QuietOption, ReferenceStrengthOption, RefineOption, ThreadsOption,
    TtaOption, VerboseOption, apply_threads, check_temperature,
    err, out, parse_weights, print_line, results, safe_text, say, set_verbosity, show_progress, stdout_problem, user_errors, warn_unused_temperature,
)
from colorcli.errors import ColorcliError


DEFAULT_MODEL = "mcl"
MAX_STDIN_BYTES = 1 << 30  # one photo from a pipe; a bigger stream is refused, never buffered


def colorize(
    # readable=False: an unreadable file fails alone, with one line, as one inside a folder does.
    inputs: Annotated[list[Path], typer.Argument(help="Photos or folders of photos; - reads one photo from stdin.", readable=False)],
    out_dir: Annotated[Path | None, typer.Option("--out-dir", "-o", help="Folder for the results (default: beside each input); - writes the one result to stdout.")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Model name (see `colorcli models`). Outputs of a model other than mcl carry its name (x_color_l2.png).")] = DEFAULT_MODEL,
    weights: Annotated[str | None, typer.Option("--weights", help="NAME=FILE: model NAME from this weights file (implies --model NAME). Default: the model's weights from $COLORCLI_WEIGHTS, the installation's weights/, or ./weights.")] = None,
    device: DeviceOption = "auto",
    size: Annotated[int | None, typer.Option("--size", help="Short side the network sees, a multiple of 32 up to 1024 (default: the model's); never more than the photo's own.")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Annealed-mean temperature for bin models, > 0 (lower = more vivid).")] = None,
    tta: TtaOption = True,
    refine: RefineOption = True,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders (never into the output folder).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (never an input).")] = False,
    suffix: Annotated[str | None, typer.Option("--suffix", help="Added to each output file name (default: _color, or _color_MODEL for a model other than mcl).")] = None,
    fmt: Annotated[Literal["png", "jpg", "webp", "tiff", "same"], typer.Option("--format", help="Output format; same: as the input where it can be written, else png.")] = "png",
    bit_depth: Annotated[Literal["8", "16", "auto"], typer.Option("--bit-depth", help="Bits per channel of PNG/TIFF outputs; auto: 16 for 16-bit inputs.")] = "auto",
    quality: Annotated[int, typer.Option("--quality", min=1, max=100, help="JPEG/WebP quality of outputs.")] = 95,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Local engine: threads reading and writing files beside inference (0: none). Ray: actors, each with its own model.")] = 2,
    threads: ThreadsOption = 0,
    backend: Annotated[Literal["auto", "torch", "onnx"], typer.Option("--backend", help="Run the network with PyTorch, or with onnxruntime from the model's ONNX file (no torch needed); auto: onnxruntime when the model's ONNX twin is shipped (faster), else torch when installed.")] = "auto",
    onnx: Annotated[Path | None, typer.Option("--onnx", help="ONNX file for the onnx backend (default: the model's shipped <model>.onnx).")] = None,
    summary: Annotated[Path | None, typer.Option("--summary", help="Also write a JSON summary here: each input with its output, skip or error, and the settings.")] = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
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
    from colorcli.batch import ColorizerSpec, plan_jobs, prepare_out_dir
    from colorcli.video import FilmSettings
    from colorcli.sizing import check_size

    from colorcli.cli.models import model_names as known_models

    model_names = known_models()  # the registry with torch; the shipped ONNX twins without it

    set_verbosity(quiet, verbose)
    if bit_depth == "16" and fmt == "jpg":
        print_line("error", "bold red", "--bit-depth 16 needs PNG or TIFF outputs; JPEG is 8-bit only")
        raise typer.Exit(2)
    with user_errors():
        model, weights_file = parse_weights(weights, model)
        if size is not None:
            check_size(size)
        check_temperature(temperature)
    if ((backend == "onnx" and weights_file is not None) or (backend == "torch" and onnx is not None)
            or (weights_file is not None and onnx is not None)):
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
    from_stdin = any(str(p) == "-" for p in inputs)
    to_stdout = out_dir is not None and str(out_dir) == "-"
    if from_stdin and len(inputs) > 1:
        print_line("error", "bold red", "- (stdin) is one photo: name no other input with it")
        raise typer.Exit(2)
    model_suffix = lambda m: "_color" if m == DEFAULT_MODEL else f"_color_{m}"  # noqa: E731
    if suffix is None:
        suffix = model_suffix(model)
    with contextlib.ExitStack() as stack:
        if from_stdin or to_stdout:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="colorcli-")))
        if from_stdin:
            data = sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
            if len(data) > MAX_STDIN_BYTES:
                print_line("error", "bold red", f"-: stdin holds more than {MAX_STDIN_BYTES >> 20} MiB; not one photo")
                raise typer.Exit(2)
            (tmp / "stdin").write_bytes(data)
            inputs = [tmp / "stdin"]
        if to_stdout:
            out_dir = tmp / "out"
            fmt = "png" if fmt == "same" and from_stdin else fmt
        with user_errors():
            plan = plan_jobs(inputs, out_dir, suffix=suffix, fmt=fmt, recursive=recursive,
                             also_suffixes=[model_suffix(m) for m in model_names])
            if not plan.jobs and not plan.failed:
                raise ColorcliError(f"no image files found in {', '.join(str(p) for p in inputs)}")
            if to_stdout and len(plan.jobs) + len(plan.failed) != 1:
                raise ColorcliError("-o - writes one photo to stdout; name exactly one photo (or use a folder)")
            from colorcli.steer import BatchSteering

            steering = BatchSteering(hints=hint, hints_file=hints, reference=reference)
            film = FilmSettings(codec=codec, crf=crf, start=start, duration=duration, temporal=temporal)
            if any(job.film for job in plan.jobs) and engine == "local":
                film.check()
            apply_threads(threads)
            spec = ColorizerSpec(model=model, backend=backend, weights=weights_file, onnx=onnx, device=device,
                                 size=size, temperature=temperature, tta=tta, refine=refine,
                                 saturation=saturation, reference_strength=reference_strength)
            colorizer = spec.load()  # also on the driver with Ray: a bad model fails here, once
            ray_options = None
            if engine == "ray":
                from colorcli.engines.ray_engine import RayOptions, import_ray

                import_ray()  # says how to install it before any work
                ray_options = RayOptions(
                    address=address, workers=workers,
                    cpus_per_worker=1.0 if cpus_per_worker is None else cpus_per_worker,
                    gpus_per_worker=0.0 if gpus_per_worker is None else gpus_per_worker)
            if out_dir is not None:
                prepare_out_dir(out_dir)
        warn_unused_temperature(colorizer, model, temperature)
        provenance = _provenance(colorizer, model, backend)
        say(f"settings: {json.dumps(provenance, sort_keys=True)}", level=1)
        _run(plan, colorizer, provenance, overwrite=overwrite, quality=quality, bit_depth=bit_depth,
             workers=workers, summary=summary, to_stdout=to_stdout, film=film,
             steering=steering.for_photo if steering else None, spec=spec, ray_options=ray_options)


def _run(plan, colorizer, provenance, *, overwrite, quality, bit_depth, workers, summary, to_stdout, film,
         steering, spec, ray_options) -> None:
    from colorcli.batch import run_jobs
    from colorcli.files import atomic_write_bytes

    for _, msg in plan.failed:
        print_line("failed", "red", msg)
    if plan.previous_outputs:
        print_line("note", "cyan", f"{len(plan.previous_outputs)} file(s) named like outputs of other inputs "
                   f"(e.g. {plan.previous_outputs[0]}) were not taken as inputs", level=0)
    records = [{"input": str(p), "status": "failed", "error": msg} for p, msg in plan.failed]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    # On a terminal a live bar; in a log or a pipe only the lines below.
    with Progress(*columns, console=err, disable=not show_progress()) as progress:
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
            record = {"input": str(job.source), "output": str(job.target), "status": status}
            if status == "failed":
                record["error"] = detail
                print_line("failed", "red", detail, console=progress.console)
            elif status == "done":
                if not to_stdout:
                    out.print(safe_text(str(job.target)), markup=False, highlight=False)
                if detail:
                    record["notes"] = detail
                    print_line("note", "cyan", f"{job.source}: {detail}", console=progress.console, level=0)
            elif status == "skipped":
                if detail:
                    record["reason"] = f"output exists, {detail}"
                    print_line("skipped", "yellow", f"{job.source}: {job.target} exists, {detail}; --overwrite replaces it",
                               console=progress.console, level=0)
                else:
                    record["reason"] = "output exists"
                    print_line("skipped", "yellow", f"{job.source}: {job.target} exists", console=progress.console, level=1)
            records.append(record)
            progress.advance(task)

        with user_errors():
            if ray_options is not None:
                from colorcli.engines.ray_engine import run_jobs_ray

                result = run_jobs_ray(spec, plan.jobs, ray_options=ray_options, overwrite=overwrite,
                                      quality=quality, bit_depth=bit_depth, on_event=on_event)
            else:
                result = run_jobs(colorizer, plan.jobs, overwrite=overwrite, quality=quality, bit_depth=bit_depth,
                                  workers=workers, on_event=on_event, provenance=provenance, film=film,
                                  on_frames=on_frames, steering=steering)
    if to_stdout and result.done:
        try:
            sys.stdout.buffer.write(result.done[0].read_bytes())
            sys.stdout.buffer.flush()
        except OSError as exc:
            results._fail(exc)
            results.lost += 1
        for r in records:
            r["output"] = "-"
    failed = len(result.failed) + len(plan.failed)
    text = f"done {len(result.done)}, skipped {len(result.skipped)}, failed {failed}"
    if result.skipped:
        text += " (skipped: output exists; --overwrite replaces it)"
    if summary is not None:
        doc = {"settings": provenance, "done": len(result.done), "skipped": len(result.skipped),
               "failed": failed, "interrupted": result.interrupted, "files": records}
        with user_errors():
            atomic_write_bytes(summary, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    if result.interrupted:
        print_line("interrupted", "bold yellow",
                   f"{text}, not started {len(result.not_started)}; finished outputs are kept and "
                   "no partial file was left; run the same command again to do the rest")
        raise typer.Exit(130)
    say(text)
    if results.error is not None:  # stdout closed (| head -n1) or full: the work is done anyway
        results.reported = True
        print_line("error", "bold red", stdout_problem("output path(s)") if not to_stdout else stdout_problem("photo(s)"))
        raise typer.Exit(1)
    if failed:
        raise typer.Exit(1)


def _provenance(colorizer, model: str, backend: str) -> dict:
    """What made the outputs, recorded in each of them: tool, model, weights, backend (the one
    ``auto`` chose), device and settings."""
    from colorcli import __version__
    from colorcli.files import sha256_file
    from colorcli.inference.backends import OnnxBackend, TorchBackend

    net = colorizer.backend
    if isinstance(net, TorchBackend):
        used, source, device = "torch", getattr(net.model, "weights_path", None), net.device
    elif isinstance(net, OnnxBackend):
        used, source, device = "onnx", net.path, net.providers[0]
    else:
        used, source, device = backend, None, "?"
    return {
        "software": f"colorcli {__version__}",
        "colorized": True,
        "model": model,
        "weights": Path(source).name if source else None,
        "weights_sha256": sha256_file(Path(source)) if source else None,
        "backend": used,
        "device": str(device),
        "settings": {"size": colorizer.size, "temperature": colorizer.temperature, "tta": colorizer.tta,
                     "refine": colorizer.refine},
    }
