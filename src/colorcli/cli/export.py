"""``colorcli export``: a model to ONNX (decoding included), checked against PyTorch; with
``--int8`` then quantized (:mod:`colorcli.quantize`).

stdout carries the path of the file written; the parity figures go to stderr. Exit code 2 when
the model cannot be exported or the export does not match PyTorch (no file is written then).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from colorcli.cli.common import QuietOption, VerboseOption, out, parse_weights, safe_text, say, set_verbosity, user_errors


def export(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="The .onnx file to write.")] = None,
    shipped: Annotated[str | None, typer.Option("--shipped", help="Make the ONNX twin of shipped model NAME: weights/NAME.safetensors -> weights/NAME.onnx (fp16 weights; used by the torch-free install).")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Model name (see `colorcli models`).")] = "mcl",
    weights: Annotated[str | None, typer.Option("--weights", help="NAME=FILE: model NAME from this weights file (implies --model NAME). Default: the model's weights from $COLORCLI_WEIGHTS, the installation's weights/, or ./weights.")] = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset version.")] = 17,
    fp16: Annotated[bool, typer.Option("--fp16", help="Store the weights in half precision: half the file, lossless for colorcli weights (kept in fp16); computation stays float32.")] = False,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Annealed-mean temperature baked into bin models (default: the model's).")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Write an INT8-quantized model (onnxruntime QDQ: int8 weights per channel, uint8 activations; the decoding stays float), calibrated on the photos of --calibrate.")] = False,
    calibrate: Annotated[Path | None, typer.Option("--calibrate", help="With --int8: a folder of colour or gray photos to calibrate the int8 ranges on (e.g. training photos).")] = None,
    calibrate_count: Annotated[int, typer.Option("--calibrate-count", help="With --int8: how many photos of --calibrate to use, spread evenly over its sorted listing.")] = 64,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the output file if it exists.")] = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Export a model to ONNX with dynamic batch, height and width (multiples of 32)."""
    set_verbosity(quiet, verbose)
    from colorcli.cli.common import require_torch

    require_torch("export")
    from colorcli.errors import ColorcliError
    from colorcli.export import export_onnx, export_shipped

    with user_errors():
        if (output is None) == (shipped is None):
            raise ColorcliError("give --output FILE or --shipped NAME (one of them)")
        if int8 or calibrate is not None:
            if not int8:
                raise ColorcliError("--calibrate is for --int8 (the fp32 and fp16 exports need no calibration)")
            if calibrate is None:
                raise ColorcliError("--int8 needs --calibrate FOLDER: photos to calibrate the int8 ranges on")
            if shipped is not None or fp16:
                raise ColorcliError(f"--int8 cannot be combined with {'--shipped' if shipped else '--fp16'}"
                                    + (" (the shipped twins are fp16)" if shipped else ""))
            from colorcli.quantize import export_int8

            model, weights_file = parse_weights(weights, model)
            q = export_int8(model, output, calibrate=calibrate, count=calibrate_count, weights=weights_file,
                            opset=opset, temperature=temperature, overwrite=overwrite)
            for _, reason in q.skipped:
                say(f"calibration: skipped {safe_text(reason)}")
            say(f"{q.model}: int8, calibrated on {q.calibrated_on} photo(s) of {safe_text(str(calibrate))}; "
                f"|Δchroma| against fp32 on them: mean {q.mean_abs_diff:.2f}, max {q.max_abs_diff:.1f}; "
                f"{q.bytes / 2**20:.1f} MiB (fp32 {q.fp32_bytes / 2**20:.1f} MiB)")
            out.print(safe_text(str(q.path)), markup=False, highlight=False)
            return
        if shipped is not None:
            report = export_shipped(shipped, opset=opset)
        else:
            model, weights_file = parse_weights(weights, model)
            report = export_onnx(model, output, weights=weights_file, opset=opset, fp16=fp16, temperature=temperature,
                                 overwrite=overwrite)
    for (b, h, w), diff in report.parity:
        say(f"parity {b}x{h}x{w}: max |Δchroma| {diff:.2e} (limit 0.5)")
    say(f"{report.model}: opset {report.opset}, {report.precision}, {report.bytes / 2**20:.1f} MiB")
    out.print(safe_text(str(report.path)), markup=False, highlight=False)
