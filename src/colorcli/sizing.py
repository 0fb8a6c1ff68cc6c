"""How big the network input is: torch-free, shared by the torch and onnxruntime paths."""

from __future__ import annotations

from colorcli.errors import ColorcliError

MULTIPLE = 32
# Long side cap as a multiple of the short-side size, so thin panoramas stay affordable.
MAX_ASPECT = 4
# The largest short side a network sees: 1024 already costs ~40x the default 160 in compute,
# and past it memory grows to tens of GB while the colours only get worse (the models were
# trained at 128-256).
MAX_SIZE = 1024


def view_size(height: int, width: int, size: int, default: int | None) -> int:
    """The short side the network sees for a ``height`` x ``width`` photo asked at ``size``:
    never upscaled past the photo's own short side (rounded up to 32), never below the model's
    ``default`` (a small photo is seen as at the default size, as always)."""
    if default is None or size <= default:
        return size
    own = -(-min(height, width) // MULTIPLE) * MULTIPLE
    return max(default, min(size, own))


def check_size(size: int) -> None:
    """A ``--size`` the networks can take; one-line :class:`ColorcliError` otherwise."""
    if size < MULTIPLE or size % MULTIPLE:
        raise ColorcliError(f"--size must be a positive multiple of {MULTIPLE}, got {size}")
    if size > MAX_SIZE:
        raise ColorcliError(f"--size must be at most {MAX_SIZE}, got {size}")


def network_size(height: int, width: int, size: int, *, default: int | None = None) -> tuple[int, int]:
    """(h, w) the network sees: aspect kept, short side ≈ ``size`` (see :func:`view_size`, given
    the model's ``default``), sides multiples of 32."""
    check_size(size)
    size = view_size(height, width, size, default)
    scale = size / min(height, width)
    scale = min(scale, size * MAX_ASPECT / max(height, width))
    h = max(MULTIPLE, int(round(height * scale / MULTIPLE)) * MULTIPLE)
    w = max(MULTIPLE, int(round(width * scale / MULTIPLE)) * MULTIPLE)
    return h, w
