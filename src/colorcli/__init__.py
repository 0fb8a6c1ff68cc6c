"""colorcli: colorize black-and-white photographs with neural networks."""

from colorcli.errors import ColorcliError

__version__ = "0.1.0"

__all__ = ["ColorcliError", "__version__"]
