"""``colorcli models``: the registered models, their shipped weights and val metrics."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer

from colorcli.cli.common import out, print_table, result_table, safe_text, user_errors


def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list (name, weights file, ONNX twin, metrics, training) instead of the table.")] = False,
) -> None:
    """List models with their weights, ONNX twins and validation metrics (PSNR, ΔCF, CF gap and
    neutral chroma on the set named, as `colorcli eval` computes them).

    Weights are looked for in $COLORCLI_WEIGHTS, then the installation's weights/ folder, then
    ./weights; the first folder holding NAME.safetensors wins.
    """
    from colorcli.paths import find_shipped
    from colorcli.weights import default_weights_path, read_metadata, weights_dirs

    figures = ("psnr", "delta_cf", "cf_gap", "neutral_chroma")  # the headline figures of eval
    table = result_table("model", "weights", "onnx", "val set", "PSNR", "ΔCF", "CF gap", "neutral",
                         "trained (to the kept step)", justify_right_from=4)
    entries = []
    with user_errors():
        for name in model_names():
            path = default_weights_path(name)
            twin_path = find_shipped(f"{name}.onnx")
            twin = str(twin_path) if twin_path is not None else None
            onnx = "yes" if twin_path is not None else "-"
            if path is None:
                entries.append({"model": name, "weights": None, "onnx": twin, "metrics": {},
                                "training_minutes": None})
                table.add_row(name, "-", onnx, "-", *("-" for _ in figures), "not trained yet")
                continue
            meta = read_metadata(path)
            m, t = meta.get("metrics", {}), meta.get("training", {})
            fmt = lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
            minutes, runs = training_minutes(t)
            val = validation_set(t)
            entries.append({"model": name, "weights": str(path), "onnx": twin, "metrics": m, "val_set": val,
                            "training_minutes": minutes if runs else None, "device": t.get("device")})
            spent = f"{minutes:g} min" if runs else "? min"
            if runs > 1:
                spent += f" in {runs} runs"
            table.add_row(name, safe_text(str(path)), onnx, safe_text(val or "-"), *(fmt(m.get(k)) for k in figures),
                          f"{spent}, {t.get('device', '?')}")
    if as_json:
        doc = {"weights_folders": [str(d) for d in weights_dirs()], "models": entries}
        out.print_json(json.dumps(doc, ensure_ascii=False, default=str))
    else:
        print_table(table)


def model_names() -> list[str]:
    """The registered models (with torch), else those with a shipped ONNX twin (light install)."""
    from colorcli.inference import torch_available

    if torch_available():
        from colorcli.models import list_models

        return list_models()
    from colorcli.paths import shipped_names

    return [n for n in shipped_names(".onnx") if not n.startswith("test_")]


def validation_set(training: dict) -> str | None:
    """The folder a file's metrics were measured on, from its training command (``--val DIR``,
    with ``--val-limit N``): e.g. "val_diverse" or "val (first 150)"; None if not recorded."""
    try:
        words = shlex.split(str(training.get("command", "")))
    except ValueError:
        return None
    found = {k: words[i + 1] for i, k in enumerate(words[:-1]) if k in ("--val", "--val-limit")}
    if "--val" not in found:
        return None
    name = Path(found["--val"].rstrip("/")).name or found["--val"]
    return f"{name} (first {found['--val-limit']})" if "--val-limit" in found else name


def training_minutes(training: dict) -> tuple[float, int]:
    """Minutes of training behind a weights file, following its ``--init`` chain (each run
    counted to the step it kept) -> (total minutes, runs that recorded their minutes)."""
    total, runs, node = 0.0, 0, training
    while isinstance(node, dict):
        if isinstance(node.get("minutes"), (int, float)):
            total += node["minutes"]
            runs += 1
        node = node.get("init")
    return round(total, 1), runs
