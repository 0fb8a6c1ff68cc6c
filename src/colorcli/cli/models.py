"""``colorcli models``: the registered models, their shipped weights and val metrics."""

from __future__ import annotations

from rich.table import Table

from colorcli.cli.common import out, user_errors


def models() -> None:
    """List models with their shipped weights and validation metrics."""
    from colorcli.models import list_models
    from colorcli.weights import default_weights_path, read_metadata

    table = Table("model", "weights", "val PSNR", "val ΔCF", "trained (to the kept step)")
    with user_errors():
        for name in list_models():
            path = default_weights_path(name)
            if path is None:
                table.add_row(name, "-", "-", "-", "not trained yet")
                continue
            meta = read_metadata(path)
            m, t = meta.get("metrics", {}), meta.get("training", {})
            fmt = lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
            minutes, runs = training_minutes(t)
            spent = f"{minutes:g} min" if runs else "? min"
            if runs > 1:
                spent += f" in {runs} runs"
            table.add_row(name, str(path), fmt(m.get("psnr")), fmt(m.get("delta_cf")),
                          f"{spent}, {t.get('device', '?')}")
    out.print(table)


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
