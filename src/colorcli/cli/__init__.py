"""The ``colorcli`` command: a thin Typer layer over the library."""

from __future__ import annotations

import typer

from colorcli.cli import colorize as _colorize
from colorcli.cli import compare as _compare
from colorcli.cli import eval as _eval
from colorcli.cli import export as _export
from colorcli.cli import models as _models
from colorcli.cli import train as _train

app = typer.Typer(
    name="colorcli",
    help="Colorize black-and-white photographs with neural networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("colorize")(_colorize.colorize)
app.command("compare")(_compare.compare)
app.command("eval")(_eval.eval_command)
app.command("export")(_export.export)
app.command("models")(_models.models)
app.command("train")(_train.train)
app.command("prepare")(_train.prepare)

__all__ = ["app"]
