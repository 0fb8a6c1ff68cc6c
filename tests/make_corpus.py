"""Generate the hostile-input corpus for ``tests/test_corpus.py`` (no binaries are checked in).

Every case is one or more files that a scanned archive can hold: truncated and corrupt files,
decompression bombs, odd modes, 16-bit data, multi-frame files, rotated and toned scans,
awkward names, symlink loops, an unreadable file and two inputs that map to one output name,
an iCCP decompression bomb and a 3 GiB sparse file. Each case says what colorizing it must
give: an output (with what it keeps: alpha, 16 bits, orientation) or one failure line matching
a reason. :func:`make_hostile_weights` writes damaged and hostile weights files beside them.

Usage: ``python tests/make_corpus.py OUT_DIR`` writes the corpus and prints the cases.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageCms

from colorcli.imageio import encode_png16

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Case:
    """One corpus input and what ``colorcli colorize`` must do with it."""

    name: str
    file: str  # path relative to the corpus root; may hold undecodable bytes (os.fsdecode)
    error: str | None = None  # regex the one failure line must match; None: an output is due
    size: tuple[int, int] | None = None  # (width, height) of the output, when it differs from the file's
    alpha: bool = False  # the output carries the input's alpha
    bit_depth: int = 8  # bits per channel of the (PNG) output
    note: str | None = None  # regex a stderr note about this file must match
    skip: str | None = None  # why this case cannot be checked here (e.g. root reads chmod 000 files)
    film: int | None = None  # a film (colorcli.video): the frame count of its .mp4 output
    extra: dict = field(default_factory=dict)


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful uint8 ``(h, w, 3)`` photo-like image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([
        0.5 + 0.5 * np.sin(x / max(w, 1) * 6 + rng.random() * 3),
        0.5 + 0.5 * np.cos(y / max(h, 1) * 5 + rng.random() * 3),
        0.5 + 0.5 * np.sin((x + y) / max(h + w, 1) * 7),
    ], axis=-1)
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def gray(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A uint8 ``(h, w)`` grayscale scan-like image."""
    return np.asarray(Image.fromarray(photo(h, w, seed)).convert("L"))


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def png_header_only(w: int, h: int) -> bytes:
    """A valid-looking 8-bit gray PNG claiming ``w`` x ``h`` with a few rows of data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (w + 1) * 4)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def jpeg_with_size(w: int, h: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) claims ``w`` x ``h``."""
    data = bytearray(jpeg_bytes(Image.fromarray(gray(16, 16)), quality=90))
    sof = data.index(b"\xff\xc0")
    # SOF0: marker, length (2), precision (1), height (2), width (2)
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def iccp_bomb_png(*, inflated: int = 2600 << 20) -> bytes:
    """A valid 16-bit RGB PNG whose iCCP profile inflates to ``inflated`` bytes of zeros.

    The deflate stream is one 1 MiB block of zeros, compressed once (~1 KB) and repeated:
    after a full flush each block starts afresh, so the copies decode back to back. The default
    is the hostile run's case: 2.7 MB on disk, 2.6 GB inflated.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    n = max(1, inflated >> 20)
    adler = (((n << 20) % 65521) << 16) | 1  # adler32 of n MiB of zeros
    stream = b"\x78\xda" + block * n + c.flush(zlib.Z_FINISH) + adler.to_bytes(4, "big")
    png = encode_png16(np.full((8, 8, 3), 20000, np.uint16))
    at = png.index(b"IDAT") - 4
    return png[:at] + png_chunk(b"iCCP", b"bomb\0\0" + stream) + png[at:]


def sparse_file(path: Path, head: bytes, size: int) -> None:
    """``head`` then zeros up to ``size`` bytes, as a sparse file: it costs no disk."""
    path.write_bytes(head)
    os.truncate(path, size)


SPARSE_SIZE = 3 << 30  # 3 GiB: over colorcli's 2 GiB file limit


def toned(L8: np.ndarray, tint: tuple[float, float, float]) -> np.ndarray:
    """Gray uint8 ``(h, w)`` -> a toned uint8 RGB scan (each channel scaled by ``tint``)."""
    rgb = L8[..., None].astype(np.float32) * np.asarray(tint, dtype=np.float32)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def make_corpus(root: Path) -> list[Case]:
    """Write every case under ``root/in`` and return the cases (``root`` must not exist yet)."""
    root = Path(root)
    d = root / "in"
    d.mkdir(parents=True)
    cases: list[Case] = []

    def add(case: Case, data: bytes | None = None, img: Image.Image | None = None, **save) -> None:
        path = d / case.file
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            path.write_bytes(data)
        elif img is not None:
            img.save(path, **save)
        cases.append(case)

    g = Image.fromarray(gray(40, 56, 1))
    jpg = jpeg_bytes(g, quality=90)
    png = png_bytes(g)

    # --- files that must fail with one clear line -------------------------------------------
    add(Case("truncated_jpeg", "cut_jpeg.jpg", error="corrupt or truncated"), jpg[: len(jpg) // 2])
    add(Case("truncated_png", "cut_png.png", error="corrupt or truncated|cannot read"), png[: len(png) * 2 // 3])
    add(Case("zero_byte", "zero.jpg", error=r"empty file \(0 bytes\)"), b"")
    add(Case("text_as_jpeg", "letter.jpg", error="not an image"), "Dear archivist,\nplease scan these.\n".encode())
    add(Case("html_as_png", "page404.png", error="not an image"), b"<!doctype html><html><body>404</body></html>")
    broken = bytearray(png)
    start = broken.index(b"IDAT") + 4
    broken[start + 10:start + 40] = b"\x00" * 30  # corrupt the deflate stream, keep the length
    add(Case("corrupt_png_data", "scrambled.png", error="corrupt|cannot read"), bytes(broken))
    add(Case("bomb_png", "bomb_png.png", error="too large"), png_header_only(30000, 30000))
    add(Case("bomb_png_below_pillow_limit", "bomb_144mp.png", error="too large"), png_header_only(12000, 12000))
    add(Case("bomb_jpeg", "bomb_jpeg.jpg", error="too large"), jpeg_with_size(60000, 60000))
    add(Case("one_by_one", "dot.png", error=r"too small \(1x1\)"), img=Image.new("L", (1, 1), 128))
    add(Case("one_by_10000", "line.png", error=r"too small \(1x10000\)"), img=Image.new("L", (1, 10000), 128))
    add(Case("psd_like", "layers.tif", error="not an image|cannot read"), b"8BPS\x00\x01" + b"\x00" * 64)
    add(Case("iccp_bomb", "iccp_bomb.png", error=r"ICC profile decompresses to more than 16 MiB"), iccp_bomb_png())
    sparse_file(d / "sparse_3gib.png", encode_png16(np.zeros((4, 4, 3), np.uint16)), SPARSE_SIZE)
    cases.append(Case("sparse_3gib", "sparse_3gib.png", error=r"file too large \(3\.0 GiB, limit 2 GiB\)"))

    # --- unusual but valid inputs: an output is due ----------------------------------------
    add(Case("gray_jpeg", "plain.jpg"), jpg)
    add(Case("progressive_jpeg", "progressive.jpg"), jpeg_bytes(g, quality=85, progressive=True))
    add(Case("jpeg_trailing_garbage", "trailing.jpg"), jpg + b"\x00GARBAGE" * 16)
    cmyk = Image.fromarray(photo(40, 48, 2)).convert("CMYK")
    add(Case("cmyk_jpeg", "cmyk.jpg"), jpeg_bytes(cmyk, quality=92))
    pal = Image.fromarray(gray(36, 44, 3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    pal_t = png_bytes(pal, transparency=int(np.asarray(pal)[0, 0]))
    add(Case("palette_transparency", "palette.png", alpha=True), pal_t)
    la = Image.fromarray(gray(40, 40, 4)).convert("LA")
    a = np.asarray(la).copy()
    a[..., 1] = np.linspace(0, 255, 40, dtype=np.uint8)[None, :]
    add(Case("la_png", "gray_alpha.png", alpha=True), img=Image.fromarray(a))
    rgba = np.dstack([photo(32, 48, 5), np.tile(np.linspace(255, 0, 48, dtype=np.uint8), (32, 1))])
    add(Case("rgba_png", "rgba.png", alpha=True), img=Image.fromarray(rgba))
    g16 = (gray(40, 52, 6).astype(np.uint16) * 257 + np.arange(52, dtype=np.uint16)[None, :]).astype(np.uint16)
    add(Case("gray16_png", "gray16_png.png", bit_depth=16), img=Image.fromarray(g16))
    add(Case("gray16_tiff", "gray16_tiff.tif", bit_depth=16), img=Image.fromarray(g16))
    pgm16 = b"P5\n52 40\n65535\n" + g16.astype(">u2").tobytes()
    add(Case("gray16_pgm", "gray16_pgm.pgm", bit_depth=16), pgm16)
    sepia16 = np.clip(np.round(g16[..., None].astype(np.float64) * [1.0, 0.86, 0.67]), 0, 65535).astype(np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, sepia16, photometric="rgb")
    add(Case("rgb16_tiff_sepia", "sepia16.tif", bit_depth=16), buf.getvalue())
    frames = [Image.fromarray(gray(30, 40, s)) for s in range(3)]
    add(Case("multi_tiff", "pages.tif", note="3 frames: only the first"),
        img=frames[0], save_all=True, append_images=frames[1:], format="TIFF")
    gif = [Image.fromarray(gray(30, 40, s)).convert("P") for s in range(4)]
    add(Case("multi_gif", "anim.gif", film=4),  # an animated GIF is a film
        img=gif[0], save_all=True, append_images=gif[1:], duration=100, loop=0, format="GIF")
    rot = Image.fromarray(gray(32, 48, 7))
    exif = rot.getexif()
    exif[0x0112] = 6  # stored 48 wide, shown 32 wide: turned 90 degrees clockwise
    exif[0x010F] = "ScanCo"
    add(Case("exif_rotated_jpeg", "rotated_jpeg.jpg", size=(32, 48), extra={"exif_make": "ScanCo"}),
        jpeg_bytes(rot, quality=92, exif=exif))
    tif_rot = Image.fromarray(gray(30, 44, 8))
    add(Case("tiff_orientation_8", "rotated_tiff.tif", size=(30, 44)), img=tif_rot, tiffinfo={274: 8}, format="TIFF")
    add(Case("already_colour", "colour.jpg", extra={"colour_input": True}),
        jpeg_bytes(Image.fromarray(photo(40, 56, 9)), quality=92))
    add(Case("sepia_scan", "sepia.png"), img=Image.fromarray(toned(gray(40, 56, 10), (1.0, 0.84, 0.62))))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    icc_img = Image.fromarray(photo(32, 40, 11))
    icc_exif = icc_img.getexif()
    icc_exif[0x010F] = "Archive scanner"
    add(Case("icc_and_exif_jpeg", "profiled.jpg", extra={"icc": srgb, "exif_make": "Archive scanner"}),
        jpeg_bytes(icc_img, quality=92, icc_profile=srgb, exif=icc_exif))
    # Pure black and white with colour added clips at the gamut edge, which moves L a little.
    add(Case("bilevel_png", "bilevel.png", extra={"l_tol": 3.0}), img=Image.fromarray(gray(40, 40, 12) > 128))
    add(Case("float_tiff", "float.tif"), img=Image.fromarray(gray(30, 30, 13).astype(np.float32) / 255.0))
    add(Case("bmp", "scan_bmp.bmp"), img=g, format="BMP")
    add(Case("webp", "scan_webp.webp"), img=g, format="WEBP", quality=90)
    add(Case("tiny_2x2", "tiny.png"), img=Image.fromarray(gray(2, 2, 14)))
    add(Case("thin_2x900", "strip.png"), img=Image.fromarray(gray(2, 900, 15)))
    rgb16a = np.dstack([sepia16, np.full(g16.shape, 40000, np.uint16)])
    add(Case("rgba16_png", "rgba16.png", alpha=True, bit_depth=16), encode_png16(rgb16a))
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.moveaxis(sepia16, -1, 0), photometric="rgb", planarconfig="separate")
    add(Case("planar_rgb16_tiff", "planar16.tif", bit_depth=16), buf.getvalue())
    add(Case("avif", "scan_avif.avif"), img=Image.fromarray(photo(40, 56, 16)), format="AVIF", quality=90)
    add(Case("jpeg2000", "scan_jp2.jp2"), img=g, format="JPEG2000")

    # --- awkward names and file-system situations -------------------------------------------
    add(Case("non_utf8_name", os.fsdecode(b"caf\xe9 \xff.jpg")), jpg)
    add(Case("spaces_in_name", "my scan  (copy 1).jpg"), jpg)
    add(Case("markup_in_name", "[red]box[/red] [bold].png"), png)
    add(Case("subfolder", "box 2/page.png"), png)
    os.symlink(".", d / "loop")  # a folder symlink to itself: --recursive must not spin
    os.symlink("..", d / "box 2" / "up")  # and one back to the parent
    os.symlink("selfloop.jpg", d / "selfloop.jpg")
    cases.append(Case("symlink_loop_file", "selfloop.jpg", error="symbolic link loop"))
    os.symlink("nowhere.jpg", d / "dangling.jpg")
    cases.append(Case("dangling_symlink", "dangling.jpg", error="broken symbolic link"))
    add(Case("same_output_first", "twin.jpg"), jpg)
    add(Case("same_output_second", "twin.png", error=r"is already the output of .*twin\.jpg"), png)
    locked = d / "locked.jpg"
    locked.write_bytes(jpg)
    locked.chmod(0)
    try:
        with open(locked, "rb"):
            pass
        readable = True
    except PermissionError:
        readable = False
    cases.append(Case("unreadable_file", "locked.jpg", error=None if readable else "permission denied",
                      skip="running as root: chmod 000 does not stop root from reading" if readable else None))
    (d / "notes.txt").write_text("not an image suffix: ignored when a folder is expanded\n")
    (d / ".hidden.jpg").write_bytes(b"hidden files are not inputs")
    return cases


class CodePayload:
    """Unpickling this creates ``marker``: a stand-in for any command a crafted file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def make_evil_checkpoint(path: Path, checkpoint: Path, marker: Path) -> Path:
    """A copy of the real training checkpoint ``checkpoint`` at ``path`` carrying one object
    whose unpickling creates ``marker`` (``train --resume`` must refuse it and never run it)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["history"] = [CodePayload(marker)]
    torch.save(state, path)
    return path


def make_hostile_weights(root: Path, base: Path) -> list[tuple[str, Path, str]]:
    """Damaged and hostile copies of the colorcli weights file ``base`` under ``root``:
    (name, path, regex the one error line must match) each. ``base`` has a tensors digest."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    with safe_open(str(base), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    out = []

    def rewrite(name: str, error: str, *, digest: bool = True, **config) -> Path:
        m = dict(meta)
        if config:
            m["config"] = json.dumps({**json.loads(meta["config"]), **config})
        if not digest:
            m.pop("tensors_sha256", None)
        path = root / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=m)
        out.append((name, path, error))
        return path

    bounds = "config does not match .* out of bounds"
    rewrite("base_width_4096", bounds, base_width=4096)
    rewrite("decoder_width_4096", bounds, decoder_width=4096)
    rewrite("default_size_32768", bounds, default_size=32768)
    rewrite("width_div_zero", bounds, width_div=0)
    data = base.read_bytes()
    start = 8 + int.from_bytes(data[:8], "little")

    def damaged(name: str, src: bytes, error: str, edit) -> None:
        buf = bytearray(src)
        edit(buf)
        path = root / f"{name}.safetensors"
        path.write_bytes(bytes(buf))
        out.append((name, path, error))

    def ff_block(buf: bytearray) -> None:
        mid = (start + len(buf)) // 2
        buf[mid:mid + 65536] = b"\xff" * len(buf[mid:mid + 65536])

    def bit_flips(buf: bytearray) -> None:
        rng = np.random.default_rng(13)
        for pos in rng.integers(start, len(buf), 64):
            buf[pos] ^= 1 << int(rng.integers(0, 8))

    damaged("ff_block", data, "sha256", ff_block)
    damaged("bit_flips", data, "sha256", bit_flips)
    nodigest = rewrite("nodigest_base", "", digest=False)
    out.pop()  # a valid file: only the base of the next case
    damaged("ff_block_no_digest", nodigest.read_bytes(), "NaN or infinite", ff_block)
    nodigest.unlink()
    sparse_file(root / "sparse_3gib.safetensors", data, SPARSE_SIZE)
    out.append(("sparse_3gib", root / "sparse_3gib.safetensors", "file too large for a weights file"))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    cases = make_corpus(Path(argv[0]))
    for c in cases:
        print(f"{c.name:28s} {'error: ' + c.error if c.error else 'output'}")
    print(f"{len(cases)} cases in {argv[0]}/in")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
