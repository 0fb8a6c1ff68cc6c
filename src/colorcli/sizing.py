"""How big the network input is: torch-free, shared by the torch and onnxruntime paths."""

from __future__ import annotations

from colorcli.errors import ColorcliError

MULTIPLE = 32
# Long side cap as a multiple of the short-side size, so thin panoramas stay affordable.
MAX_ASPECT = 4


def network_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) the network sees: aspect kept, short side ≈ ``size``, sides multiples of 32."""
    if size < MULTIPLE or size % MULTIPLE:
        raise ColorcliError(f"--size must be a positive multiple of {MULTIPLE}, got {size}")
    scale = size / min(height, width)
    scale = min(scale, size * MAX_ASPECT / max(height, width))
    h = max(MULTIPLE, int(round(height * scale / MULTIPLE)) * MULTIPLE)
    w = max(MULTIPLE, int(round(width * scale / MULTIPLE)) * MULTIPLE)
    return h, w
