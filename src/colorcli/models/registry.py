"""Model registry: ``register_model`` fills one dict; ``create_model`` builds by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from colorcli.errors import UnknownModelError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model entry function under its own name; a duplicate name is an error."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models(*, include_test: bool = False) -> list[str]:
    """Registered model names, sorted; tiny ``test_*`` variants only when asked."""
    return sorted(n for n in _MODELS if include_test or not n.startswith("test_"))


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; keyword arguments override its config fields."""
    try:
        fn = _MODELS[name]
    except KeyError:
        valid = ", ".join(list_models())
        raise UnknownModelError(f"unknown model {name!r}; valid models: {valid}") from None
    return fn(**kwargs)
