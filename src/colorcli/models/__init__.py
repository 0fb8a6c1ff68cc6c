"""Colorization models. Importing this package registers every family."""

from colorcli.models import mcl as _mcl  # noqa: F401 - registers mcl, l2
from colorcli.models import densenet as _densenet  # noqa: F401 - registers densenet
from colorcli.models import fusion as _fusion  # noqa: F401 - registers fusion
from colorcli.models import luv50 as _luv50  # noqa: F401 - registers luv50
from colorcli.models import unet as _unet  # noqa: F401 - registers unet, unet_paper
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
