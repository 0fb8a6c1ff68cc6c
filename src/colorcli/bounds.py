"""Bounds on model config values read from files: torch-free, checked before anything is built.

A weights file, a training checkpoint and an ONNX export each carry a model config. A hostile or
damaged one (``base_width: 4096``, ``default_size: 32768``) would make us allocate gigabytes
before any tensor is checked, so every value is checked against :data:`CONFIG_BOUNDS` first:
type, range, and for sizes a multiple of 32. A key the table does not know is refused. The
bounds are generous for every registered model (the paper-width ``unet_paper`` and ``fusion``
included) and keep a model's parameters well under 1 GB.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from colorcli.errors import ColorcliError

MULTIPLE = 32  # network sides are multiples of this (sizing.MULTIPLE)


class ConfigError(ColorcliError):
    """A model config value from a file is of the wrong type, out of bounds, or unknown."""


@dataclass(frozen=True)
class Bound:
    """Allowed values of one config field: its type, an inclusive range, a step or choices."""

    kind: type  # int, float, bool or str
    lo: float | None = None
    hi: float | None = None
    multiple: int | None = None
    choices: tuple[str, ...] | None = None
    pattern: str | None = None  # for str fields, a full-match regex
    lo_open: bool = False  # lo itself excluded (e.g. a temperature of 0)


# Field name -> bound, for every family's config (fields with one name mean the same thing).
CONFIG_BOUNDS: dict[str, Bound] = {
    # every family
    "default_size": Bound(int, MULTIPLE, 512, multiple=MULTIPLE),
    "pretrained": Bound(bool),
    "cf_head": Bound(bool),
    "cf_hidden": Bound(int, 0, 512),
    # mcl / l2
    "head": Bound(str, choices=("bins", "l2")),
    "decoder_width": Bound(int, 1, 512),
    "width_div": Bound(int, 1, 16),
    "temperature": Bound(float, 0, 10, lo_open=True),
    "lam": Bound(float, 0, 1),
    "sigma": Bound(float, 0, 50, lo_open=True),
    "neighbours": Bound(int, 1, 32),
    "reg_weight": Bound(float, 0, 100),
    "cf_weight": Bound(float, 0, 100),
    "neutral_radius": Bound(float, 0, 60),
    "chroma_gain": Bound(float, 0, 4, lo_open=True),
    # unet (the paper: base 64, depth 5)
    "base_width": Bound(int, 1, 64),
    "depth": Bound(int, 2, 5),
    "dropout": Bound(float, 0, 0.99),
    "loss": Bound(str, choices=("l1", "l2")),
    "ab_scale": Bound(float, 0, 1000, lo_open=True),
    # fusion (the paper: width 64; the FC input grows with global_size squared)
    "width": Bound(int, 1, 64),
    "global_dim": Bound(int, 1, 512),
    "global_size": Bound(int, MULTIPLE, 256, multiple=MULTIPLE),
    # luv50
    "head_width": Bound(int, 1, 512),
    "bins": Bound(int, 2, 256),
    "span": Bound(float, 0, 500, lo_open=True),
    # densenet (DenseNet-169 is 6,12,32: up to 3 blocks of at most 32 layers)
    "block_config": Bound(str, pattern=r"([1-9]|[12][0-9]|3[0-2])(,([1-9]|[12][0-9]|3[0-2])){0,2}"),
    "growth_rate": Bound(int, 1, 64),
    "bn_size": Bound(int, 1, 8),
    "init_features": Bound(int, 1, 256),
}


def _bound_text(b: Bound) -> str:
    if b.choices:
        return "one of " + ", ".join(b.choices)
    if b.pattern:
        return "like 6,12 (up to 3 blocks of 1..32 layers)"
    if b.kind is bool:
        return "true or false"
    text = f"{b.kind.__name__} in {'(' if b.lo_open else '['}{b.lo:g}, {b.hi:g}]"
    return text + (f", a multiple of {b.multiple}" if b.multiple else "")


def check_value(key: str, value: Any) -> None:
    """Raise :class:`ConfigError` unless ``value`` is allowed for config field ``key``."""
    bound = CONFIG_BOUNDS.get(key)
    if bound is None:
        raise ConfigError(f"unknown config key {key!r}")
    ok = False
    if bound.kind is bool:
        ok = isinstance(value, bool)
    elif bound.kind is str:
        ok = isinstance(value, str) and len(value) <= 64 and (
            (bound.choices is None or value in bound.choices)
            and (bound.pattern is None or re.fullmatch(bound.pattern, value) is not None)
        )
    else:
        # JSON keeps 3 and 3.0 apart: an int field takes an int only, a float field either.
        kinds = (int,) if bound.kind is int else (int, float)
        number = isinstance(value, kinds) and not isinstance(value, bool)
        if number and math.isfinite(value):
            above = value > bound.lo if bound.lo_open else value >= bound.lo
            ok = above and value <= bound.hi and (not bound.multiple or value % bound.multiple == 0)
    if not ok:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ConfigError(f"config {key} = {shown} is out of bounds (allowed: {_bound_text(bound)})")


def check_config(arch: str, config: Any) -> None:
    """Check every value of model ``arch``'s ``config`` (a mapping, possibly partial) against
    :data:`CONFIG_BOUNDS`; :class:`ConfigError` (one line) for the first bad or unknown one."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"config of model {arch!r} is not a mapping ({type(config).__name__})")
    for key, value in config.items():
        check_value(str(key), value)


def check_default_size(value: Any) -> int:
    """An ONNX export's (or any file's) ``default_size``, checked; returns it as int."""
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            pass
    check_value("default_size", value)
    return int(value)
