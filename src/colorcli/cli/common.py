"""What every command shares: consoles, the one-line error exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console

from colorcli.errors import ColorcliError

out = Console(soft_wrap=True)  # results: stdout
err = Console(stderr=True, soft_wrap=True)  # progress, logs, errors: stderr


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a ColorcliError into one clear line on stderr and exit code 2."""
    try:
        yield
    except ColorcliError as exc:
        err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None
