"""Reading and writing photos: Pillow for most formats, tifffile and libpng (imagecodecs) for 16-bit.

Reading accepts every mode a scanned archive throws at us (1, L, LA, P with transparency, RGB,
RGBA, CMYK (through its profile if it has one), CIELab TIFF, I;16, I, F, 16-bit RGB(A) PNG and
TIFF, planar TIFF, AVIF, JPEG 2000); EXIF orientation is applied to the pixels; 16-bit data
keeps its precision as float; multi-frame files give their first frame (said in a note). Every
problem with an input — missing, unreadable, not an image, corrupt, truncated, too large, too
small — is an :class:`ImageReadError` naming the file; no decoder exception or warning escapes.
Nothing read from a file allocates without bound: a file over :data:`MAX_FILE_BYTES` is refused
by its size, pixels over :data:`MAX_PIXELS` by the header, and every decompression of a chunk
we read ourselves has an output limit.

Writing is atomic (temp file beside the target + rename), so an interrupted run never leaves a
partial file. Pillow cannot write 16-bit colour, so 16-bit PNG goes through :func:`encode_png16`
(libpng) and 16-bit TIFF through tifffile; both read back exactly with :func:`read_photo`.
"""

from __future__ import annotations

import errno
import html
import json
import re
import io
import os
import stat
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, PngImagePlugin, TiffImagePlugin, UnidentifiedImageError

from colorcli.errors import ImageReadError, ImageWriteError, OutputExistsError
from colorcli.files import atomic_write_bytes

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif",
     ".pgm", ".ppm", ".pbm", ".pnm", ".avif", ".jp2", ".j2k", ".j2c", ".jpc", ".jpf", ".jpx"}
)
# Formats Pillow may decode for us (JPEG covers MPO). Anything else (EPS via Ghostscript, PSD,
# ICO, ...) is refused: an archive can hold hostile files, and we only promise photo formats.
# AVIF and JPEG 2000 come with Pillow's wheels (libavif, OpenJPEG); a Pillow built without them
# refuses those files as "not an image".
_PIL_FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "DIB", "GIF", "WEBP", "PPM", "AVIF", "JPEG2000")
# Pillow's own bomb limit is a warning at 89 MP and an error at 179 MP; we refuse at our limit
# with one clear line instead (a 120 MP photo needs about 4 GB of float planes downstream).
MAX_PIXELS = 120_000_000
MIN_SIDE = 2
# A file over this is refused by its size before it is opened: an uncompressed 120 MP 16-bit
# RGBA TIFF is 0.96 GB. Pillow's own bomb check (Image.MAX_IMAGE_PIXELS, an error at twice it)
# stays in force and is never switched off here.
MAX_FILE_BYTES = 2 << 30
# 16-bit PNG: the chunks read besides pixel data (iCCP, eXIf, tRNS, acTL) are at most this big,
# and an ICC profile may decompress to at most MAX_ICC_BYTES (real ones are under 1 MB).
MAX_PNG_CHUNK = 16 << 20
MAX_ICC_BYTES = 16 << 20
_PNG16_CHUNKS = frozenset({b"IHDR", b"IDAT", b"iCCP", b"eXIf", b"tRNS", b"acTL", b"IEND"})

# Output suffix -> Pillow format name; 16-bit colour is possible for PNG and TIFF only.
OUTPUT_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF",
                  ".webp": "WEBP", ".bmp": "BMP"}
SIXTEEN_BIT_FORMATS = frozenset({"PNG", "TIFF"})
_ALPHA_FORMATS = frozenset({"PNG", "TIFF", "WEBP"})

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
_ORIENTATION = 0x0112
# Descriptive TIFF tags worth carrying as EXIF from a TIFF input; its structural tags
# (strip offsets, bits per sample, ...) describe the input file and must not be copied.
_TIFF_EXIF_TAGS = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x8298)
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Decoders warn about damaged files (Pillow: "Corrupt EXIF data", "Truncated File Read") with
# multi-line Python warnings that do not say which file; read_photo records them as notes of
# that photo instead. warnings.catch_warnings() swaps process-wide state, so reads hold this
# lock: reader threads take turns decoding, which still overlaps with inference and writing.
_DECODE_LOCK = threading.Lock()


@dataclass
class Photo:
    """A decoded photo and what its output should keep.

    ``rgb`` is sRGB float32 ``(H, W, 3)`` in [0, 1], already in display orientation; for gray
    inputs it is a read-only broadcast view of one plane (no 3x memory). ``alpha`` is float32
    ``(H, W)`` in [0, 1] or None. ``bit_depth`` is 16 when the input held more than 8 bits.
    ``exif`` has its orientation reset to 1 (the pixels are already turned), ``"Exif\\0\\0"``
    prefixed as Pillow writes it. ``notes`` are one-line remarks for the user.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
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


# ---------------------------------------------------------------------------------------------
# reading


def read_photo(path: Path, *, max_pixels: int = MAX_PIXELS) -> Photo:
    """Decode ``path`` into a :class:`Photo` (orientation applied, first frame only).

    Raises :class:`ImageReadError` naming the file for every input problem.
    """
    path = Path(path)
    size = _check_file(path)
    with _DECODE_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Our own limit (MAX_PIXELS) is checked with a clear message; Pillow's is noise here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        photo = _read(path, size, max_pixels)
    said = dict.fromkeys(" ".join(str(w.message).split()) for w in caught)  # unique, in order
    photo.notes.extend(f"decoder warning: {text}" for text in said if text)
    return photo


def _read(path: Path, size: int, max_pixels: int) -> Photo:
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, Pillow reads lazily from it
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot open ({_reason(exc)})") from None
    with fh:
        try:
            head = fh.read(32)
            fh.seek(0)
        except OSError as exc:
            raise ImageReadError(f"{path}: cannot read ({_reason(exc)})") from None
        if _is_png16_colour(head):
            try:
                return _read_png16(path, fh, size, max_pixels)
            except OSError as exc:
                raise ImageReadError(f"{path}: cannot read ({_reason(exc)})") from None
        return _read_with_pillow(path, fh, max_pixels)


def read_rgb(path: Path) -> Image.Image:
    """``path`` as an 8-bit RGB Pillow image (EXIF orientation applied)."""
    photo = read_photo(path)
    return Image.fromarray(np.round(photo.rgb * 255).astype(np.uint8), "RGB")


def _check_file(path: Path) -> int:
    """The size of ``path`` in bytes, once it is known to be a regular, non-empty file within
    :data:`MAX_FILE_BYTES` (checked by ``stat``, before a byte is read)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise ImageReadError(f"{path}: broken symbolic link") from None
        raise ImageReadError(f"{path}: no such file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageReadError(f"{path}: symbolic link loop") from None
        raise ImageReadError(f"{path}: cannot read ({_reason(exc)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageReadError(f"{path}: is a folder, not an image")
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or device would block or never end; photos are regular files.
        raise ImageReadError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    if st.st_size > MAX_FILE_BYTES:
        raise ImageReadError(
            f"{path}: file too large ({st.st_size / 2**30:.1f} GiB, limit {MAX_FILE_BYTES >> 30} GiB)"
        )
    return st.st_size


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _check_size(path: Path, w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ImageReadError(
            f"{path}: image too large ({w}x{h} = {w * h / 1e6:.0f} MP, limit {max_pixels / 1e6:.0f} MP)"
        )
    if min(w, h) < MIN_SIDE:
        raise ImageReadError(f"{path}: image too small ({w}x{h}); both sides must be at least {MIN_SIDE} px")


def _read_with_pillow(path: Path, fh: io.BufferedReader, max_pixels: int) -> Photo:
    # Pillow raises a zoo of exception types on hostile files (OSError, SyntaxError, struct.error,
    # IndexError, ...): every one of them is the input's fault, so each decoder call maps all of
    # them to ImageReadError. Our own code below validates explicitly instead.
    try:
        img = Image.open(fh, formats=_PIL_FORMATS)
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image (or a format colorcli does not read)") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: image too large ({_reason(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - see above
        if isinstance(exc, OSError) and exc.errno is not None:  # the disk, not the data
            raise ImageReadError(f"{path}: cannot read ({_reason(exc)})") from None
        raise ImageReadError(f"{path}: corrupt or truncated image ({_reason(exc)})") from None
    w, h = img.size
    _check_size(path, w, h, max_pixels)
    fmt = img.format
    notes: list[str] = []
    try:
        frames = int(getattr(img, "n_frames", 1))
        if frames > 1:
            img.seek(0)
    except Exception as exc:  # noqa: BLE001
        raise ImageReadError(f"{path}: corrupt or truncated image ({_reason(exc)})") from None
    if frames > 1:
        notes.append(f"{frames} frames: only the first is colorized")
    if fmt == "TIFF" and img.mode in ("RGB", "RGBA") and _tiff_bits(img) > 8:
        return _read_tiff16(path, fh, img, frames, notes)
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001
        raise ImageReadError(f"{path}: corrupt or truncated image ({_reason(exc)})") from None
    icc = _icc_of(img)
    exif_obj, orientation = _exif_of(img, notes)
    try:
        img = ImageOps.exif_transpose(img) if orientation != 1 else img
    except Exception as exc:  # noqa: BLE001
        notes.append(f"EXIF orientation ignored ({_reason(exc)})")
    photo = _pil_to_photo(path, img, icc)
    photo.format, photo.frames = fmt, frames
    photo.exif = _exif_bytes(exif_obj, notes)
    photo.notes[:0] = notes
    return photo


def _pil_to_photo(path: Path, img: Image.Image, icc: bytes | None) -> Photo:
    mode = img.mode
    alpha = None
    bit_depth = 8
    notes: list[str] = []
    try:
        if mode in _SIXTEEN_BIT_MODES or mode == "I":
            a = np.asarray(img).astype(np.float32)
            if mode == "I" and a.max(initial=0) <= 255:
                a = a / 255.0  # 8-bit data stored in a 32-bit container
            else:
                a = a / 65535.0
                bit_depth = 16
            gray = np.clip(a, 0, 1)
        elif mode == "F":
            a = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
            gray = np.clip(a / 255.0 if a.max(initial=0) > 1.0 else a, 0, 1)
        elif mode == "LAB":  # CIELab TIFF: Pillow's own LAB -> RGB is a plain channel copy
            gray = None
            rgb = _lab_image_to_rgb(img)
        else:
            gray = None
            if _has_transparency(img) and mode not in ("LA", "La", "PA", "RGBA", "RGBa"):
                img = img.convert("LA" if mode in ("1", "L") else "RGBA")
            elif mode in ("La", "RGBa", "PA"):
                img = img.convert("RGBA")  # un-premultiply; PA: palette + alpha
            if img.mode in ("LA", "RGBA"):
                alpha = np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
            if img.mode in ("1", "L", "LA"):
                # code / 255 in float32, straight from the 8-bit plane: one pass, one array
                # (a 12 MP photo: 8 ms instead of 47 through a float64 temporary)
                gray = np.divide(np.asarray(img if img.mode == "L" else img.convert("L")), np.float32(255),
                                 dtype=np.float32)
            else:
                if img.mode == "CMYK":
                    img = _cmyk_to_rgb(img, icc, notes)
                rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot convert mode {mode} to RGB ({_reason(exc)})") from None
    if gray is not None:
        gray = np.ascontiguousarray(gray, dtype=np.float32)
        rgb = np.broadcast_to(gray[..., None], (*gray.shape, 3))
    else:
        rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    kept_icc = _usable_icc(icc, notes)
    return Photo(rgb=rgb, alpha=alpha, bit_depth=bit_depth, mode=mode, icc_profile=kept_icc, notes=notes)


def _lab_image_to_rgb(img: Image.Image) -> np.ndarray:
    """Pillow "LAB" from a CIELab TIFF -> sRGB float32 ``(H, W, 3)``.

    The TIFF stores L scaled to 0..255 and a/b as signed bytes; Pillow hands the bytes over
    unchanged, so a/b are reinterpreted as int8 here.
    """
    from colorcli import color

    raw = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    ab = raw[..., 1:].view(np.int8).astype(np.float32)
    L = raw[..., 0].astype(np.float32) * np.float32(100 / 255)
    return color.lab_to_rgb_np(L, np.ascontiguousarray(np.moveaxis(ab, -1, 0)))


def _has_transparency(img: Image.Image) -> bool:
    try:
        return bool(img.has_transparency_data)
    except AttributeError:  # Pillow < 10.1
        return img.info.get("transparency") is not None


def _cmyk_to_rgb(img: Image.Image, icc: bytes | None, notes: list[str]) -> Image.Image:
    """CMYK through its embedded profile when it has one; Pillow's naive formula otherwise."""
    if icc and _icc_space(icc) == b"CMYK":
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception as exc:  # noqa: BLE001 - a broken profile must not cost the photo
            notes.append(f"CMYK profile unusable, converted without it ({_reason(exc)})")
    return img.convert("RGB")


def _icc_of(img: Image.Image) -> bytes | None:
    icc = img.info.get("icc_profile")
    return icc if isinstance(icc, bytes) and icc else None


def _icc_space(icc: bytes) -> bytes | None:
    # ICC header: bytes 16..20 hold the data colour space signature ('RGB ', 'GRAY', 'CMYK').
    return icc[16:20].strip() if len(icc) >= 128 else None


def _usable_icc(icc: bytes | None, notes: list[str]) -> bytes | None:
    """The input's profile if it can describe an RGB output; gray/CMYK profiles cannot."""
    if not icc:
        return None
    space = _icc_space(icc)
    if space == b"RGB":
        return icc
    name = space.decode("ascii", "replace") if space else "unreadable"
    notes.append(f"{name} ICC profile not carried to the colour output")
    return None


def _exif_of(img: Image.Image, notes: list[str]) -> tuple[Image.Exif | None, int]:
    """(EXIF worth carrying, orientation 1..8); a broken block is noted, never fatal."""
    try:
        exif = img.getexif()
        orientation = exif.get(_ORIENTATION, 1)
        if img.format == "TIFF":
            exif = _tiff_exif(exif)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"EXIF ignored ({_reason(exc)})")
        return None, 1
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1
    return (exif if len(exif) else None), orientation


def _tiff_exif(ifd0: Image.Exif) -> Image.Exif:
    """A clean EXIF block from a TIFF's first IFD: descriptive tags and the EXIF/GPS IFDs only."""
    exif = Image.Exif()
    for tag in _TIFF_EXIF_TAGS:
        if tag in ifd0:
            exif[tag] = ifd0[tag]
    for tag in (_EXIF_IFD, _GPS_IFD):
        if tag in ifd0:
            sub = ifd0.get_ifd(tag)
            if sub:
                exif[tag] = dict(sub)
    return exif


def _exif_bytes(exif: Image.Exif | None, notes: list[str]) -> bytes | None:
    if exif is None:
        return None
    try:
        if _ORIENTATION in exif:
            exif[_ORIENTATION] = 1  # the pixels are turned now
        return exif.tobytes()
    except Exception as exc:  # noqa: BLE001 - e.g. tags Pillow can read but not write back
        notes.append(f"EXIF not carried over ({_reason(exc)})")
        return None


def _tiff_bits(img: Image.Image) -> int:
    bits = getattr(img, "tag_v2", {}).get(258, 8)
    bits = bits if isinstance(bits, tuple) else (bits,)
    return max((b for b in bits if isinstance(b, int)), default=8)


def _read_tiff16(path: Path, fh: io.BufferedReader, img: Image.Image, frames: int, notes: list[str]) -> Photo:
    """16-bit colour TIFF: Pillow would cut it to 8 bits, so tifffile decodes the pixels."""
    import tifffile

    icc = _icc_of(img)
    exif_obj, orientation = _exif_of(img, notes)
    try:
        fh.seek(0)
        with tifffile.TiffFile(fh) as tif:
            page = tif.pages[0]
            extra = len(page.extrasamples or ())
            planar = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
            data = page.asarray()
    except Exception as exc:  # noqa: BLE001 - tifffile's errors on hostile files, as for Pillow
        raise ImageReadError(f"{path}: corrupt or truncated image ({_reason(exc)})") from None
    if planar and data.ndim == 3 and data.shape[0] in (3, 4):
        data = np.moveaxis(data, 0, -1)  # (samples, H, W), one plane per channel -> (H, W, samples)
    if data.ndim != 3 or data.shape[2] not in (3, 4) or data.dtype.kind not in "ui":
        raise ImageReadError(f"{path}: unsupported TIFF layout {data.shape} {data.dtype}")
    scale = float(np.iinfo(data.dtype).max)
    arr = _orient(data, orientation)
    rgb = np.ascontiguousarray(arr[..., :3], dtype=np.float32) / scale
    alpha = arr[..., 3].astype(np.float32) / scale if data.shape[2] == 4 and extra else None
    photo = Photo(rgb=rgb, alpha=alpha, bit_depth=16, mode=img.mode + ";16", format="TIFF", frames=frames)
    photo.icc_profile = _usable_icc(icc, notes)
    photo.exif = _exif_bytes(exif_obj, notes)
    photo.notes = notes
    return photo


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF ``orientation`` (1..8) to ``(H, W, ...)``; the same as Pillow's exif_transpose."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(a, -1)
    if orientation == 7:
        return a.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(a, 1)
    return a


# ---------------------------------------------------------------------------------------------
# 16-bit colour PNG: Pillow reads it at 8 bits and cannot write it, so libpng does both.


def _is_png16_colour(head: bytes) -> bool:
    # Signature, then the IHDR chunk: length, b"IHDR", width, height, bit depth, colour type.
    return (len(head) >= 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR"
            and head[24] == 16 and head[25] in (2, 6))


def _png_chunk_head(path: Path, fh: io.BufferedReader, remaining: int) -> tuple[bytes, int]:
    """(type, length) of the next chunk; its payload and CRC must fit in ``remaining`` bytes."""
    head = fh.read(8)
    if len(head) < 8:
        raise ImageReadError(f"{path}: corrupt or truncated image (PNG ends before IEND)")
    length, ctype = struct.unpack(">I4s", head)
    if length > 0x7FFFFFFF or 8 + length + 4 > remaining:
        raise ImageReadError(f"{path}: corrupt or truncated image (PNG chunk {ctype!r} cut short)")
    return ctype, length


def _read_png16(path: Path, fh: io.BufferedReader, file_size: int, max_pixels: int) -> Photo:
    """Decode a 16-bit RGB/RGBA PNG at full depth with libpng (imagecodecs).

    Chunks are read one at a time, each with a size limit: the ones we use (IHDR, IDAT, iCCP,
    eXIf, tRNS, acTL, IEND) are checked against their CRC, the rest are skipped unread. The
    pixel data may not exceed what the header's size can hold; the ICC profile is decompressed
    to at most :data:`MAX_ICC_BYTES`. libpng then decodes a clean stream of IHDR + IDAT + IEND,
    so it never sees a hostile ancillary chunk.
    """
    import imagecodecs

    header: tuple[int, ...] | None = None
    idat: list[bytes] = []
    idat_len = idat_cap = 0
    icc = exif_raw = trns = None
    frames = 1
    fh.seek(8)
    pos = 8
    while True:
        ctype, length = _png_chunk_head(path, fh, file_size - pos)
        pos += 12 + length
        if ctype not in _PNG16_CHUNKS:
            fh.seek(length + 4, os.SEEK_CUR)  # text, gamma, private chunks: not ours to read
            continue
        if ctype == b"IDAT":
            idat_len += length
            if header is None or idat_len > idat_cap:
                raise ImageReadError(f"{path}: corrupt image (more PNG pixel data than its size can hold)")
        elif length > MAX_PNG_CHUNK:
            raise ImageReadError(
                f"{path}: corrupt image (PNG chunk {ctype.decode('latin-1')} is {length} bytes, "
                f"limit {MAX_PNG_CHUNK >> 20} MiB)"
            )
        payload = fh.read(length)
        crc = fh.read(4)
        if len(payload) != length or len(crc) != 4:
            raise ImageReadError(f"{path}: corrupt or truncated image (PNG chunk {ctype!r} cut short)")
        if zlib.crc32(ctype + payload) != struct.unpack(">I", crc)[0]:
            raise ImageReadError(f"{path}: corrupt image (bad CRC in PNG chunk {ctype!r})")
        if ctype == b"IHDR":
            if len(payload) != 13 or header is not None:
                raise ImageReadError(f"{path}: corrupt image (bad PNG header)")
            header = struct.unpack(">IIBBBBB", payload)
            w, h, depth, colour, compression, filt, interlace = header
            if compression or filt or interlace > 1 or depth != 16 or colour not in (2, 6):
                raise ImageReadError(f"{path}: corrupt image (unsupported PNG header values)")
            _check_size(path, w, h, max_pixels)
            raw = h * (1 + w * 2 * (3 if colour == 2 else 4))
            # Deflate adds at most ~5 bytes per 16 KiB stored block; interlacing a filter byte
            # per row of each of its 7 passes.
            idat_cap = raw + raw // 1000 + 8 * h + 65536
        elif ctype == b"IDAT":
            idat.append(payload)
        elif ctype == b"iCCP":
            icc = _png_icc(path, payload)
        elif ctype == b"eXIf":
            exif_raw = payload
        elif ctype == b"tRNS":
            trns = payload
        elif ctype == b"acTL" and len(payload) >= 4:
            frames = max(1, struct.unpack(">I", payload[:4])[0])
        elif ctype == b"IEND":
            break
    assert header is not None  # _is_png16_colour saw IHDR first
    if not idat:
        raise ImageReadError(f"{path}: corrupt or truncated image (PNG has no pixel data)")
    w, h, _, colour, *_ = header
    channels = 3 if colour == 2 else 4
    stream = b"".join([_PNG_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", *header)),
                       *(_chunk(b"IDAT", part) for part in idat), _chunk(b"IEND", b"")])
    del idat
    try:
        values = imagecodecs.png_decode(stream)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - libpng's errors on damaged data, as for Pillow
        raise ImageReadError(f"{path}: corrupt image data ({_reason(exc)})") from None
    del stream
    if values.shape != (h, w, channels) or values.dtype != np.uint16:
        raise ImageReadError(
            f"{path}: corrupt image (decoded {values.shape} {values.dtype}, expected {(h, w, channels)})"
        )
    notes: list[str] = []
    if frames > 1:
        notes.append(f"{frames} frames: only the first is colorized")
    exif_obj, orientation = None, 1
    if exif_raw:
        try:
            exif_obj = Image.Exif()
            exif_obj.load(b"Exif\x00\x00" + exif_raw)
            orientation = exif_obj.get(_ORIENTATION, 1)
            orientation = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
        except Exception as exc:  # noqa: BLE001
            notes.append(f"EXIF ignored ({_reason(exc)})")
            exif_obj = None
    values = _orient(values, orientation)
    rgb = np.ascontiguousarray(values[..., :3], dtype=np.float32) / 65535.0
    alpha = None
    if channels == 4:
        alpha = values[..., 3].astype(np.float32) / 65535.0
    elif trns is not None and len(trns) == 6:
        key = np.frombuffer(trns, dtype=">u2")
        alpha = (~np.all(values[..., :3] == key, axis=-1)).astype(np.float32)
    photo = Photo(rgb=rgb, alpha=alpha, bit_depth=16, mode="RGBA;16" if channels == 4 else "RGB;16",
                  format="PNG", frames=frames)
    photo.icc_profile = _usable_icc(icc, notes)
    photo.exif = _exif_bytes(exif_obj, notes)
    photo.notes = notes
    return photo


def _png_icc(path: Path, payload: bytes) -> bytes | None:
    """The profile of an iCCP chunk (name, 0, method, zlib data), decompressed with a bound."""
    name_end = payload.find(b"\0")
    if name_end <= 0 or name_end + 2 > len(payload):
        return None
    dec = zlib.decompressobj()
    try:
        # max_length: a bomb stops here, at the limit, whatever it would expand to.
        icc = dec.decompress(payload[name_end + 2:], MAX_ICC_BYTES + 1)
    except zlib.error:
        return None  # a broken profile must not cost the photo
    if len(icc) > MAX_ICC_BYTES:
        raise ImageReadError(
            f"{path}: ICC profile decompresses to more than {MAX_ICC_BYTES >> 20} MiB "
            "(refused: a decompression bomb?)"
        )
    return icc


def encode_png16(
    rgb16: np.ndarray, *, icc_profile: bytes | None = None, exif: bytes | None = None,
    provenance: dict | None = None,
) -> bytes:
    """uint16 ``(H, W, 3)`` or ``(H, W, 4)`` (RGBA) -> a 16-bit PNG file's bytes (libpng).

    The profile goes into iCCP and the EXIF (with or without Pillow's ``Exif\\0\\0`` prefix)
    into eXIf, both right after IHDR, where the PNG spec wants iCCP.
    """
    import imagecodecs

    if rgb16.dtype != np.uint16 or rgb16.ndim != 3 or rgb16.shape[2] not in (3, 4):
        raise ValueError(f"need uint16 (H, W, 3|4), got {rgb16.dtype} {rgb16.shape}")
    png = bytes(imagecodecs.png_encode(np.ascontiguousarray(rgb16), level=6))
    extra = []
    if icc_profile:
        extra.append(_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc_profile)))
    if exif:
        extra.append(_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    if provenance:  # iTXt: keyword, no compression, no language, no translated keyword, UTF-8
        extra.append(_chunk(b"iTXt", PROVENANCE_KEY.encode() + b"\0\0\0\0\0" + _provenance_json(provenance).encode()))
    ihdr_end = len(_PNG_SIGNATURE) + 8 + 13 + 4
    return png[:ihdr_end] + b"".join(extra) + png[ihdr_end:]


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


# ---------------------------------------------------------------------------------------------
# writing


def to_pil(rgb: np.ndarray, alpha: np.ndarray | None = None) -> Image.Image:
    """float ``(H, W, 3)`` in [0, 1] (+ optional alpha ``(H, W)``) -> 8-bit RGB(A) Pillow image."""
    img = Image.fromarray(to_uint8(rgb), "RGB")
    if alpha is not None:
        img.putalpha(Image.fromarray(to_uint8(alpha), "L"))
    return img


def to_uint8(a: np.ndarray) -> np.ndarray:
    """``round(clip(a, 0, 1) * 255)`` as uint8, in bands of about 256 K values through one
    reused float32 buffer: the same result as the one-line expression without its three
    full-size float temporaries (a 12 MP photo: ~0.1 s instead of ~0.8 s); a buffer that stays
    in the cache, allocated once, costs half as much again as a fresh one per band."""
    out = np.empty(a.shape, dtype=np.uint8)
    if a.size == 0:
        return out
    rows = max(1, (1 << 18) // max(1, a[0].size))
    buf = np.empty((min(rows, a.shape[0]), *a.shape[1:]), dtype=np.float32)
    for r in range(0, a.shape[0], rows):
        src = a[r : r + rows]
        t = buf[: len(src)]
        np.multiply(src, np.float32(255), out=t, casting="unsafe")
        np.clip(t, 0, 255, out=t)
        np.rint(t, out=t)
        out[r : r + rows] = t
    return out


def output_format(path: Path) -> str:
    """The format written for ``path``'s suffix; :class:`ImageWriteError` if we cannot write it."""
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ImageWriteError(f"{path}: unsupported output format {Path(path).suffix!r}")
    return fmt


def encode_image(
    fmt: str,
    rgb: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    bit_depth: int = 8,
    quality: int = 95,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    provenance: dict | None = None,
) -> tuple[bytes, list[str]]:
    """Encode float ``rgb`` ``(H, W, 3)`` in [0, 1] as ``fmt``; returns (file bytes, notes).

    ``bit_depth`` 16 is honoured for PNG and TIFF; other formats are 8-bit (noted). Alpha is
    dropped for JPEG (noted). ``provenance`` (what made the file: tool, model, weights,
    settings) goes into a PNG iTXt chunk, or XMP for JPEG, WebP and TIFF; see
    :func:`read_provenance`. Raises ``ValueError``/``OSError`` from the encoders.
    """
    notes: list[str] = []
    if alpha is not None and fmt not in _ALPHA_FORMATS:
        notes.append(f"transparency dropped ({fmt} has none)")
        alpha = None
    if bit_depth == 16 and fmt not in SIXTEEN_BIT_FORMATS:
        notes.append(f"written at 8 bits ({fmt} has no 16-bit mode)")
        bit_depth = 8
    if bit_depth == 16:
        planes = [rgb] if alpha is None else [rgb, alpha[..., None]]
        data16 = np.round(np.clip(np.concatenate(planes, axis=2), 0, 1) * 65535).astype(np.uint16)
        if fmt == "PNG":
            return encode_png16(data16, icc_profile=icc_profile, exif=exif, provenance=provenance), notes
        import tifffile

        buf = io.BytesIO()
        xmp = provenance_xmp(provenance) if provenance else None
        tifffile.imwrite(
            buf, data16, photometric="rgb", compression="zlib", software="colorcli",
            extrasamples=["unassalpha"] if alpha is not None else None, iccprofile=icc_profile,
            extratags=[(_XMP_TAG, "B", len(xmp), xmp, True)] if xmp else None,
        )
        if exif:
            notes.append("EXIF not carried into a 16-bit TIFF")
        return buf.getvalue(), notes
    img = to_pil(rgb, alpha)
    kwargs: dict = {}
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    if fmt == "TIFF":
        kwargs["compression"] = "tiff_adobe_deflate"
    if icc_profile and fmt != "BMP":
        kwargs["icc_profile"] = icc_profile
    if exif and fmt in ("JPEG", "PNG", "TIFF", "WEBP"):
        kwargs["exif"] = exif
    if provenance:
        if fmt == "PNG":
            info = PngImagePlugin.PngInfo()
            info.add_itxt(PROVENANCE_KEY, _provenance_json(provenance))
            kwargs["pnginfo"] = info
        elif fmt in ("JPEG", "WEBP"):
            kwargs["xmp"] = provenance_xmp(provenance)
        elif fmt == "TIFF":
            ifd = TiffImagePlugin.ImageFileDirectory_v2()
            ifd[_XMP_TAG] = provenance_xmp(provenance)
            ifd.tagtype[_XMP_TAG] = 1  # BYTE
            kwargs["tiffinfo"] = ifd
        else:
            notes.append(f"provenance not recorded ({fmt} has no metadata)")
    buf = io.BytesIO()
    try:
        img.save(buf, fmt, **kwargs)
    except (OSError, ValueError):
        if "exif" not in kwargs:
            raise
        # e.g. "EXIF data is too long" for JPEG's 64 KB APP1 limit: the photo matters more.
        del kwargs["exif"]
        notes.append("EXIF too large for the output, not carried over")
        buf = io.BytesIO()
        img.save(buf, fmt, **kwargs)
    return buf.getvalue(), notes


def write_image(
    path: Path,
    rgb: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    bit_depth: int = 8,
    quality: int = 95,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    overwrite: bool = False,
    provenance: dict | None = None,
) -> list[str]:
    """Write float ``rgb`` ``(H, W, 3)`` in [0, 1] to ``path`` atomically; returns notes.

    The format follows the suffix (see :data:`OUTPUT_FORMATS`). Raises :class:`ImageWriteError`
    if ``path`` exists and ``overwrite`` is false, or on any failure.
    """
    path = Path(path)
    fmt = output_format(path)
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)")
    try:
        data, notes = encode_image(fmt, rgb, alpha=alpha, bit_depth=bit_depth, quality=quality,
                                   icc_profile=icc_profile, exif=exif, provenance=provenance)
    except (OSError, ValueError) as exc:
        raise ImageWriteError(f"{path}: cannot encode {fmt} ({_reason(exc)})") from None
    atomic_write_bytes(path, data, overwrite=overwrite)
    return notes


# ---------------------------------------------------------------------------------------------
# provenance: every output says that it was colorized, by what and how

PROVENANCE_KEY = "colorcli"  # PNG iTXt keyword, and the XMP namespace prefix
_XMP_NS = "https://github.com/colorcli/colorcli/ns/provenance/1.0/"
_XMP_TAG = 700  # TIFF's XMP tag
_XMP_VALUE = re.compile(r'colorcli:provenance="([^"]{0,65536})"')


def _provenance_json(provenance: dict) -> str:
    return json.dumps(provenance, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def provenance_xmp(provenance: dict) -> bytes:
    """An XMP packet recording ``provenance`` (as JSON in ``colorcli:provenance``), with the
    tool as ``xmp:CreatorTool`` so any XMP reader (exiftool, digiKam) shows it."""
    tool = html.escape(str(provenance.get("software", "colorcli")), quote=True)
    value = html.escape(_provenance_json(provenance), quote=True)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:colorcli="{_XMP_NS}" '
        f'xmp:CreatorTool="{tool}" colorcli:provenance="{value}"/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode("utf-8")


def read_provenance(path: Path) -> dict | None:
    """What :func:`encode_image` recorded in ``path`` (None: not a colorcli output, or unreadable).
    Only the file's header is parsed, never its pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path, formats=_PIL_FORMATS) as img:
                text = getattr(img, "text", None) if img.format == "PNG" else None
                raw = text.get(PROVENANCE_KEY) if text else None
                if raw is None:
                    xmp = img.info.get("xmp")
                    if xmp is None and img.format == "TIFF":
                        xmp = getattr(img, "tag_v2", {}).get(_XMP_TAG)
                    if isinstance(xmp, str):
                        xmp = xmp.encode("utf-8", "replace")
                    m = _XMP_VALUE.search(xmp.decode("utf-8", "replace")) if isinstance(xmp, bytes) else None
                    raw = html.unescape(m.group(1)) if m else None
    except Exception:  # noqa: BLE001 - whatever the file is, it has no provenance we can read
        return None
    try:
        value = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
