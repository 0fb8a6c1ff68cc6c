"""Reading every image mode, orientation, 16-bit codecs, metadata and atomic writes."""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zlib

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageCms, ImageOps

from make_corpus import png_header_only

from colorcli import color
from colorcli.errors import ImageReadError, ImageWriteError
from colorcli.imageio import (
    MAX_ICC_BYTES,
    _orient,
    encode_png16,
    read_photo,
    read_rgb,
    write_image,
)
from colorcli.pipeline import rgb_to_l

SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture()
def gray8(make_photo) -> np.ndarray:
    return np.asarray(Image.fromarray(make_photo(24, 36, 1)).convert("L"))


def _expect_gray(photo, gray: np.ndarray, *, scale: float = 255.0) -> None:
    assert photo.rgb.shape == (*gray.shape, 3) and photo.rgb.dtype == np.float32
    np.testing.assert_allclose(photo.rgb[..., 0], gray / scale, atol=1e-6)
    assert np.array_equal(photo.rgb[..., 0], photo.rgb[..., 2])


# --- every mode -------------------------------------------------------------------------------


def test_l_png(tmp_path, gray8):
    Image.fromarray(gray8).save(tmp_path / "a.png")
    photo = read_photo(tmp_path / "a.png")
    _expect_gray(photo, gray8)
    assert photo.alpha is None and photo.bit_depth == 8 and photo.mode == "L"


def test_la_png_keeps_alpha(tmp_path, gray8):
    alpha = np.tile(np.arange(36, dtype=np.uint8) * 7, (24, 1))
    Image.fromarray(np.dstack([gray8, alpha])).save(tmp_path / "a.png")
    photo = read_photo(tmp_path / "a.png")
    _expect_gray(photo, gray8)
    np.testing.assert_allclose(photo.alpha, alpha / 255.0, atol=1e-6)


def test_palette_png_with_transparency(tmp_path, gray8):
    pal = Image.fromarray(gray8).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    key = int(np.asarray(pal)[0, 0])
    pal.save(tmp_path / "p.png", transparency=key)
    photo = read_photo(tmp_path / "p.png")
    assert photo.alpha is not None
    assert np.array_equal(photo.alpha == 0, np.asarray(pal) == key)
    expected = np.asarray(pal.convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_allclose(photo.rgb, expected, atol=1e-6)


def test_palette_png_without_transparency(tmp_path, make_photo):
    pal = Image.fromarray(make_photo(20, 30)).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.save(tmp_path / "p.png")
    photo = read_photo(tmp_path / "p.png")
    assert photo.alpha is None
    np.testing.assert_allclose(photo.rgb, np.asarray(pal.convert("RGB")) / 255.0, atol=1e-6)


def test_rgb_and_rgba(tmp_path, make_photo):
    rgb = make_photo(20, 30, 2)
    alpha = np.full((20, 30), 77, np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "ca.png")
    p, pa = read_photo(tmp_path / "c.png"), read_photo(tmp_path / "ca.png")
    np.testing.assert_allclose(p.rgb, rgb / 255.0, atol=1e-6)
    np.testing.assert_allclose(pa.rgb, rgb / 255.0, atol=1e-6)
    assert p.alpha is None
    np.testing.assert_allclose(pa.alpha, 77 / 255.0, atol=1e-6)


def test_cmyk_jpeg(tmp_path, make_photo):
    rgb = Image.fromarray(make_photo(32, 32, 3))
    rgb.convert("CMYK").save(tmp_path / "k.jpg", quality=95)
    photo = read_photo(tmp_path / "k.jpg")
    assert photo.mode == "CMYK" and photo.rgb.shape == (32, 32, 3)
    assert np.abs(photo.rgb - np.asarray(rgb) / 255.0).mean() < 0.05


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_gray16_keeps_precision(tmp_path, gray8, suffix):
    g16 = gray8.astype(np.uint16) * 257 + 3  # low bits an 8-bit read would lose
    Image.fromarray(g16).save(tmp_path / f"g{suffix}")
    photo = read_photo(tmp_path / f"g{suffix}")
    assert photo.bit_depth == 16
    _expect_gray(photo, g16, scale=65535.0)


def test_bilevel_and_float_and_int32(tmp_path, gray8):
    Image.fromarray(gray8 > 100).save(tmp_path / "b.png")
    Image.fromarray(gray8.astype(np.float32) / 255.0).save(tmp_path / "f.tif")
    Image.fromarray(gray8.astype(np.int32) * 200).save(tmp_path / "i.tif")
    _expect_gray(read_photo(tmp_path / "b.png"), (gray8 > 100) * 255.0)
    _expect_gray(read_photo(tmp_path / "f.tif"), gray8.astype(np.float32))
    i32 = read_photo(tmp_path / "i.tif")
    assert i32.bit_depth == 16
    _expect_gray(i32, gray8.astype(np.float32) * 200, scale=65535.0)


def test_cielab_tiff_gives_its_L(tmp_path, gray8):
    # As scanning software writes it: L scaled to 0..255, a = +20 and b = -15 as signed bytes.
    ab = np.array([20, -15], dtype=np.int8).view(np.uint8)
    lab = np.dstack([gray8, np.full_like(gray8, ab[0]), np.full_like(gray8, ab[1])])
    tifffile.imwrite(tmp_path / "lab.tif", lab, photometric="cielab")
    photo = read_photo(tmp_path / "lab.tif")
    L = gray8.astype(np.float32) * 100 / 255
    inner = (L > 15) & (L < 85)  # away from where a/b leave the sRGB gamut
    np.testing.assert_allclose(rgb_to_l(photo.rgb)[inner], L[inner], atol=0.05)
    mean_ab = color.rgb_to_lab(torch.from_numpy(np.ascontiguousarray(photo.rgb)).permute(2, 0, 1))[1:, inner].mean(1)
    np.testing.assert_allclose(mean_ab.numpy(), [20, -15], atol=0.5)


def test_rgb16_tiff_read_with_full_depth(tmp_path, make_photo):
    data = make_photo(20, 24, 4).astype(np.uint16) * 257 + 1
    tifffile.imwrite(tmp_path / "c.tif", data, photometric="rgb")
    photo = read_photo(tmp_path / "c.tif")
    assert photo.bit_depth == 16 and photo.alpha is None
    assert np.array_equal(np.round(photo.rgb * 65535).astype(np.uint16), data)


def test_gray_photo_is_a_view_not_three_planes(tmp_path, gray8):
    Image.fromarray(gray8).save(tmp_path / "a.png")
    photo = read_photo(tmp_path / "a.png")
    assert photo.rgb.strides[-1] == 0  # the memory of one plane for a gray scan


def test_multi_frame_gives_first_frame_and_says_so(tmp_path, gray8):
    frames = [Image.fromarray(np.roll(gray8, i * 5, axis=1)) for i in range(3)]
    frames[0].save(tmp_path / "m.tif", save_all=True, append_images=frames[1:])
    photo = read_photo(tmp_path / "m.tif")
    _expect_gray(photo, gray8)
    assert photo.frames == 3 and photo.notes == ["3 frames: only the first is colorized"]


def test_read_rgb_is_8bit_rgb(tmp_path, gray8):
    Image.fromarray(gray8).save(tmp_path / "a.png")
    img = read_rgb(tmp_path / "a.png")
    assert img.mode == "RGB" and img.size == (36, 24)
    assert np.array_equal(np.asarray(img)[..., 1], gray8)


# --- orientation --------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_and_reset(tmp_path, make_photo, orientation):
    img = Image.fromarray(make_photo(20, 30, 5))
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(tmp_path / "o.png", exif=exif)
    photo = read_photo(tmp_path / "o.png")
    with Image.open(tmp_path / "o.png") as ref:
        expected = np.asarray(ImageOps.exif_transpose(ref)) / 255.0
    np.testing.assert_allclose(photo.rgb, expected, atol=1e-6)
    out = Image.Exif()
    out.load(photo.exif)
    assert out[0x0112] == 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_numpy_orientation_matches_pillow(orientation):
    a = np.arange(5 * 7, dtype=np.uint8).reshape(5, 7)
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif)
    with Image.open(buf) as ref:
        assert np.array_equal(_orient(a, orientation), np.asarray(ImageOps.exif_transpose(ref)))


def test_png16_orientation(tmp_path):
    data = (np.arange(4 * 6 * 3, dtype=np.uint16) * 999).reshape(4, 6, 3)
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "o.png").write_bytes(encode_png16(data, exif=exif.tobytes()))
    photo = read_photo(tmp_path / "o.png")
    assert photo.size == (4, 6)
    assert np.array_equal(np.round(photo.rgb * 65535).astype(np.uint16), np.rot90(data, -1))


# --- the 16-bit PNG codec ---------------------------------------------------------------------


def _filter_reference(raw: np.ndarray, types: list[int], bpp: int) -> bytes:
    """PNG filtering straight from the spec, byte by byte: the decoder must undo it."""
    out = []
    prev = [0] * raw.shape[1]
    for y, t in enumerate(types):
        row = [int(v) for v in raw[y]]
        enc = []
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            paeth = a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c) else (b if abs(p - b) <= abs(p - c) else c)
            pred = [0, a, b, (a + b) // 2, paeth][t]
            enc.append((x - pred) % 256)
        out.append(bytes([t]) + bytes(enc))
        prev = row
    return b"".join(out)


def _png16_file(raw_rows: bytes, w: int, h: int, colour: int, *chunks: bytes, interlace: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, interlace)
    return b"".join([b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", ihdr), *chunks,
                     _png_chunk(b"IDAT", zlib.compress(raw_rows)), _png_chunk(b"IEND", b"")])


def _png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


@pytest.mark.parametrize("channels", [3, 4])
def test_reader_undoes_every_filter_type(tmp_path, channels):
    """Rows filtered straight from the spec, all five filter types: read back exactly."""
    rng = np.random.default_rng(channels)
    h, w, bpp = 11, 9, 2 * channels
    raw = rng.integers(0, 256, (h, w * bpp), dtype=np.uint8)
    types = [int(t) for t in rng.integers(0, 5, h)]
    types[:5] = [0, 1, 2, 3, 4]
    path = tmp_path / "f.png"
    path.write_bytes(_png16_file(_filter_reference(raw, types, bpp), w, h, 2 if channels == 3 else 6))
    photo = read_photo(path)
    want = raw.reshape(h, w, bpp).view(">u2").reshape(h, w, channels)
    assert photo.bit_depth == 16
    assert np.array_equal(np.round(photo.rgb * 65535).astype(np.uint16), want[..., :3])


def test_interlaced_png16_read_at_16_bits(tmp_path):
    data = np.random.default_rng(3).integers(0, 65536, (13, 10, 3), dtype=np.uint16)
    path = tmp_path / "adam7.png"
    # Adam7 passes (x0, y0, dx, dy), each row filter 0: was read by Pillow at 8 bits before.
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    rows = b""
    for x0, y0, dx, dy in passes:
        sub = data[y0::dy, x0::dx]
        if sub.size:
            for r in sub:
                rows += b"\0" + r.astype(">u2").tobytes()
    path.write_bytes(_png16_file(rows, 10, 13, 2, interlace=1))
    photo = read_photo(path)
    assert photo.bit_depth == 16
    assert np.array_equal(np.round(photo.rgb * 65535).astype(np.uint16), data)


@pytest.mark.parametrize("channels", [3, 4])
def test_png16_round_trip_and_pillow_agrees(tmp_path, channels):
    rng = np.random.default_rng(7)
    data = rng.integers(0, 65536, (13, 17, channels), dtype=np.uint16)
    exif = Image.Exif()
    exif[0x010F] = "Scanner"
    (tmp_path / "x.png").write_bytes(encode_png16(data, icc_profile=SRGB_ICC, exif=exif.tobytes()))
    photo = read_photo(tmp_path / "x.png")
    assert photo.bit_depth == 16 and photo.icc_profile == SRGB_ICC
    assert np.array_equal(np.round(photo.rgb * 65535).astype(np.uint16), data[..., :3])
    if channels == 4:
        assert np.array_equal(np.round(photo.alpha * 65535).astype(np.uint16), data[..., 3])
    with Image.open(tmp_path / "x.png") as img:  # an independent decoder: a valid PNG
        img.load()
        assert img.info["icc_profile"] == SRGB_ICC and img.getexif()[0x010F] == "Scanner"
        assert np.array_equal(np.asarray(img), (data >> 8).astype(np.uint8))


def test_png16_transparency_key(tmp_path):
    data = np.full((4, 5, 3), 1000, np.uint16)
    data[0, 0] = (1, 2, 3)
    png = bytearray(encode_png16(data))
    trns = struct.pack(">HHH", 1, 2, 3)
    chunk = struct.pack(">I", 6) + b"tRNS" + trns + struct.pack(">I", zlib.crc32(b"tRNS" + trns))
    at = png.index(b"IDAT") - 4
    (tmp_path / "t.png").write_bytes(bytes(png[:at]) + chunk + bytes(png[at:]))
    alpha = read_photo(tmp_path / "t.png").alpha
    assert alpha[0, 0] == 0 and alpha.sum() == 19


@pytest.mark.parametrize("damage", ["crc", "truncate", "filter", "short_data"])
def test_png16_damage_is_a_read_error(tmp_path, damage):
    data = np.arange(6 * 7 * 3, dtype=np.uint16).reshape(6, 7, 3) * 300
    png = bytearray(encode_png16(data))
    idat = png.index(b"IDAT")
    if damage == "crc":
        png[idat + 6] ^= 0xFF
    elif damage == "truncate":
        png = png[: idat + 20]
    else:
        h, w = 6, 7
        rows = bytearray(zlib.decompress(bytes(png[idat + 4: png.index(b"IEND") - 8])))
        if damage == "filter":
            rows[0] = 9
        else:
            rows = rows[: len(rows) - w]
        payload = zlib.compress(bytes(rows))
        chunk = struct.pack(">I", len(payload)) + b"IDAT" + payload + struct.pack(">I", zlib.crc32(b"IDAT" + payload))
        png = png[: idat - 4] + chunk + png[png.index(b"IEND") - 4:]
        assert h * w  # shape used above
    (tmp_path / "d.png").write_bytes(bytes(png))
    with pytest.raises(ImageReadError, match=r"d\.png: corrupt"):
        read_photo(tmp_path / "d.png")


# --- what a bad input gives -------------------------------------------------------------------


def test_missing_folder_fifo_empty(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_photo(tmp_path / "nope.jpg")
    with pytest.raises(ImageReadError, match="is a folder"):
        read_photo(tmp_path)
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(ImageReadError, match="not a regular file"):  # and it does not hang
        read_photo(tmp_path / "pipe.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.png: empty file"):
        read_photo(tmp_path / "empty.png")


def test_size_limits(tmp_path):
    Image.new("L", (1, 1)).save(tmp_path / "one.png")
    with pytest.raises(ImageReadError, match=r"one\.png: image too small \(1x1\)"):
        read_photo(tmp_path / "one.png")
    Image.new("L", (50, 40)).save(tmp_path / "big.png")
    with pytest.raises(ImageReadError, match=r"too large \(50x40"):
        read_photo(tmp_path / "big.png", max_pixels=1000)


def test_bomb_header_refused_without_pillow_warning(tmp_path):
    # 12000 x 12000: past our limit, under Pillow's error limit, over its warning limit.
    (tmp_path / "bomb.png").write_bytes(png_header_only(12000, 12000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageReadError, match="too large"):
            read_photo(tmp_path / "bomb.png")


def test_unsupported_formats_are_not_decoded(tmp_path, gray8):
    Image.fromarray(gray8).save(tmp_path / "a.ico", format="ICO")
    with pytest.raises(ImageReadError, match="not an image"):
        read_photo(tmp_path / "a.ico")


def test_unreadable_file(tmp_path, gray8):
    path = tmp_path / "locked.png"
    Image.fromarray(gray8).save(path)
    path.chmod(0)
    try:
        try:
            path.open("rb").close()
            pytest.skip("running as root: chmod 000 does not stop reading")
        except PermissionError:
            pass
        with pytest.raises(ImageReadError, match=r"locked\.png: cannot open \(permission denied\)"):
            read_photo(path)
    finally:
        path.chmod(0o644)


# --- writing ----------------------------------------------------------------------------------


def _rgb(h=12, w=16) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.random((h, w, 3), dtype=np.float32)


def test_write_is_atomic_and_respects_umask(tmp_path):
    target = tmp_path / "sub" / "o.png"
    notes = write_image(target, _rgb())
    assert notes == []
    assert sorted(p.name for p in target.parent.iterdir()) == ["o.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    with pytest.raises(ImageWriteError, match="exists"):
        write_image(target, _rgb())
    write_image(target, _rgb() * 0, overwrite=True)
    assert np.asarray(Image.open(target)).max() == 0


def test_write_failure_leaves_nothing(tmp_path, monkeypatch):
    import colorcli.imageio as imageio

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imageio.os, "fsync", broken_fsync)
    with pytest.raises(ImageWriteError, match=r"o\.png: cannot write \(no space left on device\)"):
        write_image(tmp_path / "o.png", _rgb())
    assert list(tmp_path.iterdir()) == []


def test_write_keeps_exif_icc_alpha(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "Cam"
    alpha = np.linspace(0, 1, 16, dtype=np.float32)[None].repeat(12, 0)
    for name in ("o.png", "o.tif", "o.jpg", "o.webp"):
        notes = write_image(tmp_path / name, _rgb(), alpha=alpha, icc_profile=SRGB_ICC, exif=exif.tobytes())
        with Image.open(tmp_path / name) as img:
            assert img.info.get("icc_profile") == SRGB_ICC, name
            assert img.getexif().get(0x010F) == "Cam", name
            if name == "o.jpg":
                assert img.mode == "RGB" and notes == ["transparency dropped (JPEG has none)"]
            else:
                assert img.mode == "RGBA", name
                assert np.abs(np.asarray(img.getchannel("A")) / 255.0 - alpha).max() <= 1 / 255


def test_jpeg_quality_option(tmp_path):
    rgb = _rgb(64, 64)
    write_image(tmp_path / "hi.jpg", rgb, quality=95)
    write_image(tmp_path / "lo.jpg", rgb, quality=20)
    assert (tmp_path / "lo.jpg").stat().st_size < (tmp_path / "hi.jpg").stat().st_size


def test_oversized_exif_dropped_for_jpeg_with_note(tmp_path):
    exif = Image.Exif()
    exif[0x010E] = "x" * 70000  # ImageDescription past JPEG's 64 KB APP1 limit
    notes = write_image(tmp_path / "o.jpg", _rgb(), exif=exif.tobytes())
    assert notes == ["EXIF too large for the output, not carried over"]
    Image.open(tmp_path / "o.jpg").load()


@pytest.mark.parametrize("name", ["o.png", "o.tif"])
def test_sixteen_bit_outputs_round_trip(tmp_path, name):
    rgb = _rgb()
    alpha = np.linspace(0, 1, 16, dtype=np.float32)[None].repeat(12, 0)
    write_image(tmp_path / name, rgb, alpha=alpha, bit_depth=16, icc_profile=SRGB_ICC)
    photo = read_photo(tmp_path / name)
    assert photo.bit_depth == 16 and photo.icc_profile == SRGB_ICC
    assert np.array_equal(np.round(photo.rgb * 65535), np.round(rgb * 65535))
    assert np.array_equal(np.round(photo.alpha * 65535), np.round(alpha * 65535))
    if name == "o.tif":
        data = tifffile.imread(tmp_path / name)
        assert data.dtype == np.uint16 and data.shape == (12, 16, 4)


def test_sixteen_bit_jpeg_is_eight_bit_with_note(tmp_path):
    notes = write_image(tmp_path / "o.jpg", _rgb(), bit_depth=16)
    assert notes == ["written at 8 bits (JPEG has no 16-bit mode)"]


def test_gray_or_cmyk_profile_not_put_on_colour_output(tmp_path, gray8):
    gray_icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    Image.fromarray(gray8).save(tmp_path / "g.jpg", icc_profile=gray_icc)
    photo = read_photo(tmp_path / "g.jpg")
    assert photo.icc_profile is None
    assert photo.notes == ["Lab ICC profile not carried to the colour output"]


# --- hostile 16-bit PNGs, huge files, planar TIFF, AVIF, JPEG 2000 (issue 13, items 2 and 12) ---


def test_iccp_bomb_is_refused_with_one_line(tmp_path):
    """2.6 MB of iCCP that inflates to 2.6 GB: stopped at the 16 MiB bound, not decompressed."""
    import make_corpus

    path = tmp_path / "bomb.png"
    path.write_bytes(make_corpus.iccp_bomb_png(inflated=1 << 28))
    with pytest.raises(ImageReadError, match=r"bomb\.png: ICC profile decompresses to more than 16 MiB"):
        read_photo(path)


def test_a_profile_under_the_bound_is_kept(tmp_path):
    assert MAX_ICC_BYTES >= 1 << 20
    data = np.full((4, 4, 3), 300, np.uint16)
    (tmp_path / "p.png").write_bytes(encode_png16(data, icc_profile=SRGB_ICC))
    assert read_photo(tmp_path / "p.png").icc_profile == SRGB_ICC


def test_sparse_huge_file_refused_by_its_size(tmp_path):
    """3 GiB with a 16-bit PNG header: refused by stat, never read (sparse: no disk used)."""
    head = encode_png16(np.zeros((4, 4, 3), np.uint16))
    for name in ("huge.png", "huge.jpg"):
        path = tmp_path / name
        path.write_bytes(head)
        os.truncate(path, 3 << 30)
        try:
            with pytest.raises(ImageReadError, match=rf"{name}: file too large \(3\.0 GiB, limit 2 GiB\)"):
                read_photo(path)
        finally:
            path.unlink()


def test_png16_chunk_limits(tmp_path):
    data = np.full((4, 5, 3), 1000, np.uint16)
    png = encode_png16(data)
    at = png.index(b"IDAT") - 4
    # An eXIf chunk declaring 64 MiB: refused before reading it.
    big = struct.pack(">I", 64 << 20) + b"eXIf"
    path = tmp_path / "big.png"
    path.write_bytes(png[:at] + big + b"\0" * 64 + png[at:])
    with pytest.raises(ImageReadError, match="big.png: corrupt or truncated image"):
        read_photo(path)
    with open(path, "r+b") as fh:  # now the bytes are there (sparse), still over the limit
        fh.truncate(at + (64 << 20) + 12 + len(png))
    with pytest.raises(ImageReadError, match=r"big.png: corrupt image \(PNG chunk eXIf is 67108864 bytes, limit 16 MiB\)"):
        read_photo(path)
    # More compressed pixel data than a 5x4 image can hold.
    idat = _png_chunk(b"IDAT", os.urandom(70000))
    path = tmp_path / "much.png"
    path.write_bytes(png[:at] + idat + png[at:])
    with pytest.raises(ImageReadError, match="much.png: corrupt image \\(more PNG pixel data"):
        read_photo(path)
    # Unknown ancillary chunks are skipped, text included.
    path = tmp_path / "text.png"
    path.write_bytes(png[:at] + _png_chunk(b"tEXt", b"Comment\0hello") + png[at:])
    assert read_photo(path).bit_depth == 16


def test_planar_rgb16_tiff_read_at_16_bits(tmp_path, make_photo):
    data = (make_photo(36, 52, 4).astype(np.uint16) * 257 + 3).astype(np.uint16)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(data, -1, 0), photometric="rgb", planarconfig="separate")
    photo = read_photo(tmp_path / "planar.tif")
    assert photo.bit_depth == 16 and photo.size == (52, 36)
    assert np.array_equal(np.round(photo.rgb * 65535).astype(np.uint16), data)


@pytest.mark.parametrize("fmt,suffix,tol", [("AVIF", ".avif", 0.08), ("JPEG2000", ".jp2", 1e-6)])
def test_avif_and_jpeg2000_read(tmp_path, make_photo, fmt, suffix, tol):
    from PIL import features

    if not features.check({"AVIF": "avif", "JPEG2000": "jpg_2000"}[fmt]):
        pytest.skip(f"this Pillow has no {fmt} codec")
    rgb = make_photo(40, 56, 5)
    kw = {"quality": 90} if fmt == "AVIF" else {"irreversible": False}
    Image.fromarray(rgb).save(tmp_path / f"p{suffix}", fmt, **kw)
    photo = read_photo(tmp_path / f"p{suffix}")
    assert photo.format == fmt and photo.size == (56, 40)
    assert np.abs(photo.rgb - rgb / 255.0).mean() < tol


def test_pillow_bomb_limit_stays_in_force():
    """colorcli never switches Pillow's own limit off: it is its default after importing all."""
    import colorcli.cli  # noqa: F401 - everything the CLI imports
    import colorcli.imageio as imageio

    assert Image.MAX_IMAGE_PIXELS == 89478485
    assert imageio.MAX_PIXELS <= 2 * Image.MAX_IMAGE_PIXELS  # ours is the lower one
