"""``colorcli models``: the registered models, their shipped weights and val metrics."""

from __future__ import annotations

from rich.table import Table

from colorcli.cli.common import out, user_errors


def models() -> None:
    """List models with their shipped weights and validation metrics."""
    from colorcli.paths import find_shipped
    from colorcli.weights import default_weights_path, read_metadata

    table = Table("model", "weights", "onnx", "val PSNR", "val ΔCF", "trained (to the kept step)")
    with user_errors():
        for name in model_names():
            path = default_weights_path(name)
            onnx = "yes" if find_shipped(f"{name}.onnx") else "-"
            if path is None:
                table.add_row(name, "-", onnx, "-", "-", "not trained yet")
                continue
            meta = read_metadata(path)
            m, t = meta.get("metrics", {}), meta.get("training", {})
            fmt = lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
            minutes, runs = training_minutes(t)
            spent = f"{minutes:g} min" if runs else "? min"
            if runs > 1:
                spent += f" in {runs} runs"
            table.add_row(name, str(path), onnx, fmt(m.get("psnr")), fmt(m.get("delta_cf")),
                          f"{spent}, {t.get('device', '?')}")
    out.print(table)


def model_names() -> list[str]:
    """The registered models (with torch), else those with a shipped ONNX twin (light install)."""
    from colorcli.inference import torch_available

    if torch_available():
        from colorcli.models import list_models

        return list_models()
    from colorcli.paths import shipped_names

    return [n for n in shipped_names(".onnx") if not n.startswith("test_")]


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
