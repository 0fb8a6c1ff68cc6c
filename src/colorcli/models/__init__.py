"""Colorization models. Importing this package registers every family."""

from colorcli.models import mcl as _mcl  # noqa: F401 - registers mcl, l2
from colorcli.models.base import ColorModel, ModelConfig, count_parameters
from colorcli.models.registry import create_model, list_models, register_model

__all__ = [
    "ColorModel",
    "ModelConfig",
    "count_parameters",
    "create_model",
    "list_models",
    "register_model",
]
