"""What every command shares: consoles, safe printing of file names, the one-line error exit."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.text import Text

from colorcli.errors import ColorcliError


class ResultStream:
    """stdout for results, surviving a reader that went away (``| head -n1``) or a full device
    (``>/dev/full``): the first failed write or flush is recorded, stdout is pointed at
    /dev/null so later writes (and the interpreter's last flush) cannot fail again, and the
    result lines that did not get out are counted. The work goes on; the command reports the
    loss at its end (:func:`stdout_problem`)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.error: OSError | None = None
        self.reported = False  # the command said it itself
        self.lost = 0  # result lines (newlines) written after stdout failed
        self._pending = 0  # lines written since the last successful flush

    def write(self, text: str) -> int:
        if self.error is None:
            try:
                n = sys.stdout.write(text)
                self._pending += text.count("\n")
                return n
            except OSError as exc:
                self._fail(exc)
        self.lost += text.count("\n")
        return len(text)

    def flush(self) -> None:
        if self.error is None:
            try:
                sys.stdout.flush()
                self._pending = 0
            except OSError as exc:
                self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        self.lost += self._pending
        self._pending = 0
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass  # not a real file (a test runner's buffer): nothing will flush it at exit

    def isatty(self) -> bool:
        try:
            return sys.stdout.isatty()
        except (OSError, ValueError, AttributeError):
            return False

    def fileno(self) -> int:
        return sys.stdout.fileno()

    @property
    def encoding(self) -> str:
        return getattr(sys.stdout, "encoding", None) or "utf-8"


results = ResultStream()
out = Console(file=results, soft_wrap=True)  # results: stdout
err = Console(stderr=True, soft_wrap=True)  # progress, logs, errors: stderr

# Inference switches shared by colorize, compare and eval (see colorcli.inference).
TtaOption = Annotated[bool, typer.Option("--tta/--no-tta", help="Average each photo's colours with those of its mirror image (2 network runs).")]
RefineOption = Annotated[bool, typer.Option("--refine/--no-refine", help="Edge-aware refinement: colour follows the edges of the full-resolution photo (guided filter).")]

# Steering (see colorcli.steer), shared by colorize and compare.
HintOption = Annotated[list[str] | None, typer.Option("--hint", help="X,Y=#RRGGBB: this colour at this point, spreading over its region (repeatable). X,Y in pixels of the photo, or fractions such as 0.4,0.7.")]
HintsFileOption = Annotated[Path | None, typer.Option("--hints", help='JSON file of hints per photo: {"photo.jpg": ["X,Y=#RRGGBB", ...]} (by file name or stem).')]
ReferenceStrengthOption = Annotated[float, typer.Option("--reference-strength", min=0.0, max=10.0, help="How strongly the reference steers (0: not at all; 1: default).")]
DeviceOption = Annotated[Literal["auto", "cpu", "cuda", "mps"], typer.Option("--device", help="Where the networks run; auto: cuda, then mps (Apple Silicon), then cpu.")]
ThreadsOption = Annotated[int, typer.Option("--threads", min=0, help="CPU threads for the network; 0: every core this process may use.")]


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a container's CPU set)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def apply_threads(threads: int) -> int:
    """Set torch's CPU threads to ``threads`` (0: :func:`available_cores`), if torch is installed."""
    n = threads or available_cores()
    try:
        import torch
    except ImportError:  # the onnx backend without torch takes its own threads
        return n
    torch.set_num_threads(n)
    return n


def parse_weights(value: str | None, model: str) -> tuple[str, Path | None]:
    """``--weights NAME=FILE`` (the form every command takes) -> (model name, file). A bare
    FILE (the older form) stays accepted for the ``--model`` given."""
    if value is None:
        return model, None
    name, sep, path = value.partition("=")
    if sep and name and "/" not in name and os.sep not in name:
        return next(iter(parse_named([value], "--weights").items()))
    return model, Path(value)


def check_temperature(temperature: float | None) -> None:
    if temperature is not None and not temperature > 0:
        raise ColorcliError(f"--temperature must be greater than 0, got {temperature:g}")


def warn_unused_temperature(colorizer, name: str, temperature: float | None) -> None:
    """A warning line when ``--temperature`` was given to a model whose decoding has none."""
    # The colorizer's temperature is its backend's decoding temperature: None for regression
    # models, on either backend (torch: the model's decode_info; onnx: the file's metadata).
    if temperature is not None and colorizer.temperature is None:
        print_line("warning", "yellow", f"model {name} regresses its colours directly: --temperature is ignored", level=0)


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


# -1: --quiet (errors and failed files only), 0: normal, 1: --verbose (also settings, skips).
verbosity = 0
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and failed files on stderr (no progress, notes or summary).")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Also print the settings used and each skipped file on stderr.")]


def set_verbosity(quiet: bool, verbose: bool) -> None:
    global verbosity
    if quiet and verbose:
        print_line("error", "bold red", "--quiet and --verbose exclude each other")
        raise typer.Exit(2)
    verbosity = -1 if quiet else (1 if verbose else 0)


def print_line(label: str, style: str, message: str, *, console: Console | None = None, level: int = -1) -> None:
    """``label: message`` on stderr, when the verbosity reaches ``level`` (-1: always, 0: not
    with --quiet, 1: only with --verbose); the message is never read as rich markup ("[x].jpg")."""
    if verbosity >= level:
        (console or err).print(Text.assemble((f"{label}: ", style), safe_text(message)), highlight=False)


def say(message: str, *, level: int = 0) -> None:
    """Plain text on stderr (a summary, a figure) unless the verbosity is below ``level``."""
    if verbosity >= level:
        err.print(safe_text(message), markup=False, highlight=False)


def show_progress() -> bool:
    """Live progress bars: on a terminal, and not with --quiet."""
    return err.is_terminal and verbosity >= 0


def print_table(tbl) -> None:
    """A result table on stdout; in a pipe or a file at its natural width (no wrapping at
    rich's 80 columns), so each row stays one line."""
    from rich.measure import Measurement

    console = out
    if not out.is_terminal:
        width = Measurement.get(out, out.options.update(width=10_000), tbl).maximum
        console = Console(file=results, width=max(width, out.width), soft_wrap=True)  # rich caps print(width=)
    console.print(tbl)


def result_table(*headers: str, title: str | None = None, justify_right_from: int = 1):
    """A rich table for stdout: boxed on a terminal; in a pipe or a file plain columns with
    no box characters (and, as rich does there, no colour codes)."""
    from rich import box
    from rich.table import Table

    plain = not out.is_terminal
    tbl = Table(title=None if plain else title, box=None if plain else box.HEAVY_HEAD,
                show_edge=not plain, pad_edge=not plain, header_style="" if plain else "bold")
    for i, h in enumerate(headers):
        tbl.add_column(h, justify="right" if i >= justify_right_from else "left")
    return tbl


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


def stdout_problem(what: str = "line(s) of results") -> str | None:
    """One line saying why results were lost on stdout, or None if all got out."""
    exc = results.error
    if exc is None:
        return None
    why = "closed by the reader (broken pipe)" if isinstance(exc, BrokenPipeError) else (
        (exc.strerror or str(exc)).lower())
    return f"stdout: {why}; {results.lost} {what} not printed"


def print_result(text: str) -> None:
    """One result line on stdout (a path): never read as markup, never fails."""
    out.print(safe_text(text), markup=False, highlight=False)
