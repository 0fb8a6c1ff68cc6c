"""``colorcli compare``: a before/after sheet, the input beside each model's colorization.

Made for photos with no ground truth (real black-and-white ones): the sheet shows what each
model does, one row per photo. stdout carries the sheet's path; the progress bar and the photos
that could not be read go to stderr. Exit codes: 0 done, 1 some photo could not be read (the
sheet holds the others), 2 a usage problem (unknown model, bad weights, sheet exists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from colorcli.cli.common import (
    DeviceOption, HintOption, HintsFileOption, QuietOption, ReferenceStrengthOption, RefineOption, ThreadsOption,
    TtaOption, VerboseOption, apply_threads, check_temperature, err, out, print_line, safe_text, set_verbosity,
    show_progress, user_errors,
)
from colorcli.errors import ColorcliError


def compare(
    inputs: Annotated[list[Path], typer.Argument(help="Photos or folders of photos.", readable=False)],
    output: Annotated[Path, typer.Option("--out", "-o", help="Sheet to write (.png or .jpg).")],
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model to show (repeatable; 'all': every model with weights). Default: mcl.")] = None,
    weights: Annotated[list[str] | None, typer.Option("--weights", help="NAME=FILE: model NAME from this weights file (repeatable; implies --model NAME).")] = None,
    size: Annotated[int | None, typer.Option("--size", help="Short side the networks see, a multiple of 32 (default: each model's).")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Annealed-mean temperature for bin models.")] = None,
    tta: TtaOption = True,
    refine: RefineOption = True,
    cell: Annotated[int, typer.Option("--cell", min=32, max=2048, help="Long side of each picture on the sheet, pixels.")] = 256,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Show only the first N photos.")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing sheet.")] = False,
    device: DeviceOption = "auto",
    saturation: Annotated[list[float] | None, typer.Option("--saturation", min=0.0, max=10.0, help="Colour strength (repeatable: one column per value; 0 gray, 1 as predicted).")] = None,
    reference: Annotated[list[str] | None, typer.Option("--reference", help="A photo whose colours steer the result (repeatable: one column each; 'none': without).")] = None,
    reference_strength: ReferenceStrengthOption = 1.0,
    hint: HintOption = None,
    hints: HintsFileOption = None,
    threads: ThreadsOption = 0,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Write a before/after sheet: each photo as it is, then colorized by each model."""
    from colorcli.batch import collect_inputs
    from colorcli.cli.common import parse_named
    import io

    from colorcli.files import atomic_write_bytes
    from colorcli.imageio import read_photo
    from colorcli.inference import Colorizer, InferenceSettings
    from colorcli.report import comparison_sheet

    set_verbosity(quiet, verbose)
    with user_errors():
        check_temperature(temperature)
        apply_threads(threads)
        if output.exists() and not overwrite:
            raise ColorcliError(f"{output}: exists (use --overwrite to replace it)")
        if output.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            raise ColorcliError(f"{output}: the sheet must be a .png or .jpg file")
        named = parse_named(weights or [], "--weights")
        names = _model_names(model, named)
        settings = InferenceSettings(size=size, temperature=temperature, tta=tta, refine=refine, device=device,
                                     reference_strength=reference_strength)
        base = {n: Colorizer.from_name(n, weights=named.get(n), settings=settings) for n in names}
        colorizers, variants = _variants(base, saturation, reference, hint, hints)
        found, failed = collect_inputs(inputs, recursive=recursive)
        found = found[:limit] if limit else found
        if not found and not failed:
            raise ColorcliError(f"no image files found in {', '.join(str(p) for p in inputs)}")
    for _, msg in failed:
        print_line("failed", "red", msg)

    rows = []
    columns = (TextColumn("compare"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=not show_progress()) as progress:
        task = progress.add_task("compare", total=len(found))
        for path, _, _ in found:
            try:
                photo = read_photo(path)
            except ColorcliError as exc:
                failed.append((path, str(exc)))
                print_line("failed", "red", str(exc), console=progress.console)
                progress.advance(task)
                continue
            try:
                cells = _cells(photo.rgb, colorizers, cell, variants, path)
            except ColorcliError as exc:  # a hint outside this photo
                failed.append((path, f"{path}: {exc}"))
                print_line("failed", "red", f"{path}: {exc}", console=progress.console)
                progress.advance(task)
                continue
            rows.append((safe_text(path.name), cells))
            progress.advance(task)
    if not rows:
        print_line("error", "bold red", "no photo could be read; no sheet written")
        raise typer.Exit(1)
    sheet = comparison_sheet(["input", *colorizers], rows, cell=cell)
    with user_errors():
        buf = io.BytesIO()
        if output.suffix.lower() == ".png":
            sheet.save(buf, format="PNG", optimize=True)
        else:
            sheet.save(buf, format="JPEG", quality=90)
        atomic_write_bytes(output, buf.getvalue(), overwrite=overwrite)
    out.print(safe_text(str(output)), markup=False, highlight=False)
    if failed:
        raise typer.Exit(1)


def _model_names(model: list[str] | None, named: dict[str, Path]) -> list[str]:
    from colorcli.cli.models import model_names
    from colorcli.inference import torch_available
    from colorcli.paths import find_shipped

    suffix = ".safetensors" if torch_available() else ".onnx"
    names: list[str] = []
    for m in model or ([] if named else ["mcl"]):
        if m == "all":
            shipped = [n for n in model_names() if find_shipped(f"{n}{suffix}") is not None]
            names += sorted(shipped, key=lambda n: n != "mcl")  # the default model first
        else:
            names.append(m)
    names += list(named)
    return list(dict.fromkeys(names))  # keep order, drop repeats


def _variants(base: dict, saturation, reference, hint, hints_file):
    """One column per model and steering setting: every ``--saturation`` x every
    ``--reference`` (or 'none') x without and with the hints (when hints are given).
    Returns ``{label: colorizer}`` and ``{label: (reference or None, use hints)}``."""
    from colorcli.steer import BatchSteering, Reference

    steering = BatchSteering(hints=hint, hints_file=hints_file)
    refs: list[tuple[str, Reference | None]] = []
    for r in reference or ["none"]:
        refs.append(("", None) if r.lower() == "none" else (f" ref={Path(r).stem}", Reference.from_file(Path(r))))
    sats = saturation or [None]
    hint_sets = [False, True] if steering else [False]
    colorizers, variants = {}, {}
    for n, col in base.items():
        for s in sats:
            c = col if s is None else col.with_steering(saturation=s)
            for ref_label, ref in refs:
                for use_hints in hint_sets:
                    label = n + ("" if s is None else f" sat {s:g}") + ref_label + (" hints" if use_hints else "")
                    colorizers[label] = c
                    variants[label] = (ref, steering if use_hints else None)
    return colorizers, variants


def _cells(rgb, colorizers: dict, cell: int, variants: dict | None = None, path: Path | None = None) -> list:
    """The input and each colorization, no larger than ``cell`` on the long side. The networks
    see the full photo (as ``colorize`` does); only the recombination happens at sheet size,
    through each colorizer's own path."""
    import numpy as np
    from PIL import Image

    from colorcli.imageio import to_uint8

    h, w = rgb.shape[:2]
    scale = min(1.0, cell / max(h, w))
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))

    def shrink(plane: np.ndarray) -> np.ndarray:  # (H, W) float -> (th, tw), antialiased
        img = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
        return np.asarray(img.resize((tw, th), Image.Resampling.BILINEAR), dtype=np.float32)

    cells = [to_uint8(np.clip(np.stack([shrink(rgb[..., c]) for c in range(3)], axis=-1), 0, 1))]
    if not colorizers:
        return cells
    L = next(iter(colorizers.values())).rgb_to_l(rgb)
    L_small = shrink(L)
    from colorcli import steer

    for label, col in colorizers.items():
        ref, steering = (variants or {}).get(label, (None, None))
        placed = None
        if steering is not None:
            placed = steer.place_hints(steering.for_photo(path)["hints"] or [], L.shape[1], L.shape[0])
        chroma = col.chroma_for(col.network_input(L), hints=placed, reference=ref)
        cells.append(to_uint8(col.recombine(L_small, chroma)))
    return cells
