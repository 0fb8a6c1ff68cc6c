"""The inference path: settings, backends (the network call), render (pixel steps), and the
one :class:`Colorizer` that every front end uses."""

from colorcli.inference.backends import Backend, OnnxBackend, TorchBackend, ZeroChroma
from colorcli.inference.colorizer import Colorizer, make_backend, torch_available
from colorcli.inference.render import Chroma, Coefficients
from colorcli.inference.settings import InferenceSettings

__all__ = [
    "Backend", "Chroma", "Coefficients", "Colorizer", "InferenceSettings", "OnnxBackend", "TorchBackend",
    "ZeroChroma", "make_backend", "torch_available",
]
