"""The ``colorcli`` command: a thin Typer layer over the library."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from colorcli import __version__

from colorcli.cli import colorize as _colorize
from colorcli.cli import compare as _compare
from colorcli.cli import eval as _eval
from colorcli.cli import export as _export
from colorcli.cli import models as _models
from colorcli.cli import train as _train

app = typer.Typer(
    name="colorcli",
    help="Colorize black-and-white photographs with neural networks.\n\n"
         "Weights are looked for in $COLORCLI_WEIGHTS, then the installation's weights/ folder, then ./weights.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        print(f"colorcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Options of colorcli itself."""
    from colorcli.cli import common

    common.results.reset()
    common.verbosity = 0


app.command("colorize")(_colorize.colorize)
app.command("compare")(_compare.compare)
app.command("eval")(_eval.eval_command)
app.command("export")(_export.export)
app.command("models")(_models.models)
app.command("train")(_train.train)
app.command("prepare")(_train.prepare)



def main() -> None:
    """The ``colorcli`` command: :data:`app`, plus one line on stderr (and exit code 1) when
    results could not be printed (stdout closed by its reader, or a full device)."""
    from colorcli.cli.common import print_line, results, stdout_problem

    code: int | str | None = 0
    try:
        app(prog_name="colorcli")
    except SystemExit as exc:
        code = exc.code
    problem = stdout_problem()
    if problem and not results.reported:
        print_line("error", "bold red", problem)
        code = code or 1
    sys.exit(code)


__all__ = ["app", "main"]
