"""The one error family the library raises for problems a user can fix.

The CLI catches only ``ColorcliError`` and prints its message on one line; anything else is a
programming error and keeps its traceback.
"""

from __future__ import annotations


class ColorcliError(Exception):
    """Base class of every user-facing error."""


class ImageReadError(ColorcliError):
    """An input file is missing, unreadable, not an image, corrupt or too large."""


class ImageWriteError(ColorcliError):
    """An output could not be written."""


class OutputExistsError(ImageWriteError):
    """An output exists and may not be replaced (no ``--overwrite``), perhaps because another
    process finished it meanwhile."""


class UnknownModelError(ColorcliError):
    """A model name is not registered."""


class WeightsError(ColorcliError):
    """A weights or checkpoint file is missing, corrupt or does not match its model."""


class TrainingError(ColorcliError):
    """Training cannot go on (no data, NaN loss, bad resume checkpoint)."""


class InferenceError(ColorcliError):
    """Colorizing cannot be done as asked (no backend, non-finite network output)."""


class SteeringError(ColorcliError):
    """A colour hint, hints file or reference photo cannot be used (malformed, outside the photo)."""
