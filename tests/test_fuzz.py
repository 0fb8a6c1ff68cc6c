"""Hypothesis throws random bytes, damaged files and random small images at the reader.

The promise: ``read_photo`` either returns a well-formed Photo or raises ImageReadError —
never any other exception, whatever the file holds.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from colorcli.errors import ImageReadError
from colorcli.imageio import encode_png16, read_photo

SUFFIXES = [".jpg", ".png", ".tif", ".gif", ".bmp", ".webp", ".pgm"]
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check(path: Path) -> None:
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        try:
            photo = read_photo(path)
        except ImageReadError as exc:
            assert str(exc).startswith(str(path) + ":")  # one line that names the file
            assert "\n" not in str(exc)
            photo = None
    # Decoder warnings become notes of the photo: none reach the terminal unattributed.
    assert not leaked, [str(w.message) for w in leaked]
    if photo is None:
        return
    h, w, c = photo.rgb.shape
    assert c == 3 and h >= 2 and w >= 2 and photo.rgb.dtype == np.float32
    assert np.isfinite(photo.rgb).all() and photo.rgb.min() >= 0 and photo.rgb.max() <= 1
    if photo.alpha is not None:
        assert photo.alpha.shape == (h, w)
        assert photo.alpha.min() >= 0 and photo.alpha.max() <= 1
    assert photo.bit_depth in (8, 16)


def _seed_files() -> dict[str, bytes]:
    """Small valid files of each format; mutations of these reach deep into each decoder."""
    rng = np.random.default_rng(0)
    g = Image.fromarray(rng.integers(0, 256, (9, 11), dtype=np.uint8))
    rgb = Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8))
    out = {}
    for name, img, fmt, kw in [
        ("jpg", g, "JPEG", {"quality": 80}),
        ("progressive.jpg", rgb, "JPEG", {"progressive": True}),
        ("png", rgb, "PNG", {}),
        ("pal.png", rgb.convert("P"), "PNG", {"transparency": 0}),
        ("la.png", g.convert("LA"), "PNG", {}),
        ("16.png", Image.fromarray(rng.integers(0, 65536, (9, 11), dtype=np.uint16)), "PNG", {}),
        ("tif", rgb, "TIFF", {"compression": "tiff_deflate"}),
        ("gif", g.convert("P"), "GIF", {}),
        ("bmp", rgb, "BMP", {}),
        ("webp", rgb, "WEBP", {"quality": 70}),
        ("pgm", g, "PPM", {}),
    ]:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        out[name] = buf.getvalue()
    out["rgb16.png"] = encode_png16(rng.integers(0, 65536, (9, 11, 4), dtype=np.uint16))
    buf = io.BytesIO()
    tifffile.imwrite(buf, rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16), photometric="rgb")
    out["rgb16.tif"] = buf.getvalue()
    return out


SEEDS = _seed_files()


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes(tmp_path, data, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data)
    _check(path)


@st.composite
def damaged(draw):
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos:pos + len(chunk)] = chunk
    return name, bytes(data)


@FUZZ
@given(case=damaged())
def test_damaged_files(tmp_path, case):
    name, data = case
    path = tmp_path / f"d.{name}"
    path.write_bytes(data)
    _check(path)


MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
WRITABLE = {  # which of our modes each format can store
    "PNG": {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"},
    "JPEG": {"L", "RGB", "CMYK"},
    "TIFF": {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"},
    "GIF": {"L", "P"},
    "BMP": {"1", "L", "P", "RGB", "RGBA"},
    "WEBP": {"RGB", "RGBA"},
}


@st.composite
def small_images(draw):
    fmt = draw(st.sampled_from(sorted(WRITABLE)))
    mode = draw(st.sampled_from(sorted(WRITABLE[fmt])))
    w, h = draw(st.integers(2, 24)), draw(st.integers(2, 24))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(
        "RGBA" if mode in ("RGBA", "LA") else "RGB")
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    elif mode == "I":
        img = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.int32))
    elif mode == "F":
        img = Image.fromarray(rng.random((h, w), dtype=np.float32))
    else:
        img = img.convert(mode)
    return fmt, mode, img


@FUZZ
@given(case=small_images())
def test_random_small_images_read_back_whole(tmp_path, case):
    fmt, mode, img = case
    path = tmp_path / f"i.{fmt.lower()}"
    img.save(path, fmt)
    photo = read_photo(path)
    _check(path)
    assert photo.size == img.size
    if fmt in ("PNG", "TIFF") and mode in ("L", "RGB"):  # lossless: exact pixels
        np.testing.assert_allclose(photo.rgb, np.asarray(img.convert("RGB")) / 255.0, atol=1e-6)
    if fmt in ("PNG", "TIFF") and mode in ("LA", "RGBA"):
        assert photo.alpha is not None


@FUZZ
@given(
    shape=st.tuples(st.integers(2, 20), st.integers(2, 20), st.sampled_from([3, 4])),
    seed=st.integers(0, 2**16),
)
def test_png16_encoder_round_trips(tmp_path, shape, seed):
    data = np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)
    path = tmp_path / "r.png"
    path.write_bytes(encode_png16(data))
    photo = read_photo(path)
    assert np.array_equal(np.round(photo.rgb * 65535).astype(np.uint16), data[..., :3])
    if shape[2] == 4:
        assert np.array_equal(np.round(photo.alpha * 65535).astype(np.uint16), data[..., 3])
