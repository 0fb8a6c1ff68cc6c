"""What every command shares: consoles, safe printing of file names, the one-line error exit."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from colorcli.errors import ColorcliError

out = Console(soft_wrap=True)  # results: stdout
err = Console(stderr=True, soft_wrap=True)  # progress, logs, errors: stderr

# Inference switches shared by colorize, compare and eval (see colorcli.inference).
TtaOption = Annotated[bool, typer.Option("--tta/--no-tta", help="Average each photo's colours with those of its mirror image (2 network runs).")]
RefineOption = Annotated[bool, typer.Option("--refine/--no-refine", help="Edge-aware refinement: colour follows the edges of the full-resolution photo (guided filter).")]

# Steering (see colorcli.steer), shared by colorize and compare.
HintOption = Annotated[list[str] | None, typer.Option("--hint", help="X,Y=#RRGGBB: this colour at this point, spreading over its region (repeatable). X,Y in pixels of the photo, or fractions such as 0.4,0.7.")]
HintsFileOption = Annotated[Path | None, typer.Option("--hints", help='JSON file of hints per photo: {"photo.jpg": ["X,Y=#RRGGBB", ...]} (by file name or stem).')]
ReferenceStrengthOption = Annotated[float, typer.Option("--reference-strength", min=0.0, max=10.0, help="How strongly the reference steers (0: not at all; 1: default).")]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_text(text: str) -> str:
    """``text`` printable on one line: undecodable bytes of file names as ``\\xNN``, control
    characters (a newline in a file name) escaped, so one problem is always one line and printing
    never fails on a name that is not UTF-8."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # lone surrogates that did not come from a file name
        raw = text.encode("utf-8", "backslashreplace")
    text = raw.decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def print_line(label: str, style: str, message: str, *, console: Console | None = None) -> None:
    """``label: message`` on stderr; the message is never read as rich markup ("[x].jpg")."""
    (console or err).print(Text.assemble((f"{label}: ", style), safe_text(message)), highlight=False)


def parse_named(values: Iterable[str], option: str) -> dict[str, Path]:
    """``["name=PATH", ...]`` -> ``{name: Path}``; a malformed or repeated name is an error."""
    out: dict[str, Path] = {}
    for v in values:
        name, sep, path = v.partition("=")
        name = name.strip()
        if not sep or not name or not path:
            raise ColorcliError(f"{option} {v!r}: expected NAME=PATH")
        if name in out:
            raise ColorcliError(f"{option} {name!r} is given twice")
        out[name] = Path(path)
    return out


def require_torch(command: str) -> None:
    """One line and exit code 2 when ``command`` needs PyTorch and it is not installed."""
    from colorcli.inference import torch_available

    if not torch_available():
        print_line("error", "bold red", f'`colorcli {command}` needs PyTorch: pip install "colorcli[train]"')
        raise typer.Exit(2)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a ColorcliError into one clear line on stderr and exit code 2."""
    try:
        yield
    except ColorcliError as exc:
        print_line("error", "bold red", str(exc))
        raise typer.Exit(2) from None
