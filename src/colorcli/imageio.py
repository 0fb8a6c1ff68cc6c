"""Reading and writing photos with Pillow.

Any Pillow mode is accepted (L, LA, P, RGB, RGBA, CMYK, I;16, I, F); EXIF orientation is applied;
16-bit data keeps its precision as float. Outputs are written atomically (temp file + rename) so
an interrupted run never leaves a partial file.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from colorcli.errors import ImageReadError, ImageWriteError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".jfif", ".pgm", ".ppm", ".pbm"}
)
# Pillow's own bomb limit is a warning at 89 MP; we refuse clearly instead of risking memory.
MAX_PIXELS = 120_000_000
MIN_SIDE = 2

_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


@dataclass
class Photo:
    """A decoded photo: sRGB float32 ``(H, W, 3)`` in [0, 1] plus what output should keep."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None  # float32 (H, W) in [0, 1]
    bit_depth: int = 8
    mode: str = "RGB"
    format: str | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    frames: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.rgb.shape[1], self.rgb.shape[0]


def _open(path: Path) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image")
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: empty file (0 bytes)")
        img = Image.open(path)
    except ImageReadError:
        raise
    except PermissionError:
        raise ImageReadError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image (unrecognised format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: image too large ({exc})") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc})") from None
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise ImageReadError(
            f"{path}: image too large ({w}x{h} = {w * h / 1e6:.0f} MP, limit {MAX_PIXELS / 1e6:.0f} MP)"
        )
    if min(w, h) < MIN_SIDE:
        raise ImageReadError(f"{path}: image too small ({w}x{h}); both sides must be ≥ {MIN_SIDE} px")
    try:
        img.load()
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(f"{path}: corrupt or truncated image ({exc})") from None
    return img


def read_photo(path: Path) -> Photo:
    """Decode ``path`` into a :class:`Photo` (EXIF orientation applied, first frame only)."""
    img = _open(path)
    frames = getattr(img, "n_frames", 1)
    fmt = img.format
    icc = img.info.get("icc_profile")
    try:
        exif = img.getexif()
        img = ImageOps.exif_transpose(img)
        if exif and 0x0112 in exif:
            exif[0x0112] = 1  # orientation is now applied to the pixels
        exif_bytes = exif.tobytes() if exif else None
    except Exception as exc:  # noqa: BLE001 - broken EXIF must not cost the photo
        exif_bytes = None
        note = f"EXIF ignored ({exc})"
    else:
        note = None
    photo = _to_photo(img, path)
    photo.format, photo.icc_profile, photo.exif, photo.frames = fmt, icc, exif_bytes, frames
    if note:
        photo.notes.append(note)
    if frames > 1:
        photo.notes.append(f"{frames} frames: only the first is colorized")
    return photo


def _to_photo(img: Image.Image, path: Path) -> Photo:
    mode = img.mode
    alpha = None
    bit_depth = 8
    if mode in _SIXTEEN_BIT:
        a = np.asarray(img, dtype=np.float32)
        if mode == "I" and a.max(initial=0) <= 255:
            a = a / 255.0  # 8-bit data stored in a 32-bit container
        else:
            a = a / 65535.0
            bit_depth = 16
        rgb = np.repeat(np.clip(a, 0, 1)[..., None], 3, axis=2)
    elif mode == "F":
        a = np.asarray(img, dtype=np.float32)
        a = a / 255.0 if a.max(initial=0) > 1.0 else a
        rgb = np.repeat(np.clip(a, 0, 1)[..., None], 3, axis=2)
    else:
        if mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        elif mode in ("PA", "La"):
            img = img.convert("RGBA")
        if img.mode in ("RGBA", "LA", "RGBa"):
            alpha = np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
        try:
            rgb8 = np.asarray(img.convert("RGB"), dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise ImageReadError(f"{path}: cannot convert mode {mode} to RGB ({exc})") from None
        rgb = rgb8 / 255.0
    return Photo(rgb=np.ascontiguousarray(rgb, dtype=np.float32), alpha=alpha, bit_depth=bit_depth, mode=mode)


def read_rgb(path: Path) -> Image.Image:
    """``path`` as an 8-bit RGB Pillow image (EXIF orientation applied)."""
    photo = read_photo(path)
    return Image.fromarray(np.round(photo.rgb * 255).astype(np.uint8), "RGB")


def to_pil(rgb: np.ndarray, alpha: np.ndarray | None = None) -> Image.Image:
    """float ``(H, W, 3)`` in [0, 1] (+ optional alpha) -> 8-bit RGB(A) Pillow image."""
    rgb8 = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    img = Image.fromarray(rgb8, "RGB")
    if alpha is not None:
        img.putalpha(Image.fromarray(np.round(np.clip(alpha, 0, 1) * 255).astype(np.uint8), "L"))
    return img


_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF",
            ".webp": "WEBP", ".bmp": "BMP"}


def write_image(
    path: Path,
    rgb: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    quality: int = 95,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``rgb`` to ``path`` atomically; the format follows the suffix.

    Raises :class:`ImageWriteError` if ``path`` exists and ``overwrite`` is false, or on failure.
    """
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageWriteError(f"{path}: unsupported output format {path.suffix!r}")
    if path.exists() and not overwrite:
        raise ImageWriteError(f"{path}: exists (use --overwrite to replace it)")
    img = to_pil(rgb, alpha if fmt in ("PNG", "TIFF", "WEBP") else None)
    kwargs: dict = {}
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    if icc_profile:
        kwargs["icc_profile"] = icc_profile
    if exif and fmt in ("JPEG", "PNG", "TIFF", "WEBP"):
        kwargs["exif"] = exif
    buf = io.BytesIO()
    try:
        img.save(buf, fmt, **kwargs)
    except (OSError, ValueError) as exc:
        raise ImageWriteError(f"{path}: cannot encode {fmt} ({exc})") from None
    atomic_write_bytes(path, buf.getvalue())
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise ImageWriteError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise ImageWriteError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise
