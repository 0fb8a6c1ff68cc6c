"""Inference settings: one frozen value that travels from a command to the colorizer."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from colorcli.errors import ColorcliError
from colorcli.sizing import check_size

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class InferenceSettings:
    """How to colorize; every field has the default ``colorize`` uses.

    - ``size``: short side the network sees, a multiple of 32 (None: the model's default).
    - ``temperature``: annealed-mean temperature of bin models (None: the model's; regression
      models have none). The onnx backend has it baked in at export time.
    - ``tta``: average the chroma of the photo and of its mirror image (2 network runs).
    - ``refine``: edge-aware refinement (guided filter on the full-resolution L).
    - ``device``: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda`` or ``mps``.
    - ``threads``: CPU threads for the network and the full-resolution steps (None: all cores).
    - ``saturation``: chroma scale after the network, kept inside the sRGB gamut (1: as is).
    - ``reference_strength``: how strongly a reference photo steers the colours (see
      :mod:`colorcli.steer`).
    """

    size: int | None = None
    temperature: float | None = None
    tta: bool = True
    refine: bool = True
    device: str = "auto"
    threads: int | None = None
    saturation: float = 1.0
    reference_strength: float = 1.0

    def __post_init__(self) -> None:
        if self.size is not None:
            check_size(self.size)  # one error for a bad --size, before any loading
        if self.temperature is not None and not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ColorcliError(f"--temperature must be a positive number, got {self.temperature}")
        if self.device not in DEVICES:
            raise ColorcliError(f"unknown device {self.device!r}; use auto, cpu, cuda or mps")
        if self.threads is not None and self.threads < 1:
            raise ColorcliError(f"--threads must be at least 1, got {self.threads}")
        if self.saturation != 1.0 or self.reference_strength != 1.0:
            from colorcli import steer

            steer.check_saturation(self.saturation)
            steer.check_strength(self.reference_strength)

    def replace(self, **changes) -> InferenceSettings:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)
