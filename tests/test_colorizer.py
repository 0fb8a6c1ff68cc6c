"""The one inference path: exact output size, the input's own L kept, network geometry,
recolorizing colour input from its L alone, and the errors a user can meet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2lab

from colorcli import color, sizing
from colorcli.errors import ColorcliError, ImageReadError, UnknownModelError
from colorcli.imageio import read_photo
from colorcli.inference import Colorizer, InferenceSettings, render
from colorcli.inference.backends import resolve_device
from colorcli.inference.render import rgb_to_l
from colorcli.models import create_model
from colorcli.sizing import network_size


@pytest.fixture(scope="module")
def colorizer() -> Colorizer:
    torch.manual_seed(0)
    return Colorizer.from_model(create_model("test_mcl"))


def _textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A uint8 RGB photo-like image with detail along both axes, even when 20 px thin."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack(
        [0.5 + 0.4 * np.sin(x / 7 + y / 11), 0.5 + 0.4 * np.cos(y / 5), 0.5 + 0.4 * np.sin((x - y) / 13)],
        axis=-1,
    )
    base += rng.normal(0, 0.03, base.shape)
    return np.round(np.clip(base, 0, 1) * 255).astype(np.uint8)


def _in_gamut(rgb: np.ndarray) -> np.ndarray:
    """Pixels the pipeline did not have to clip: there its L must be exactly the input's."""
    return ((rgb > 1e-4) & (rgb < 1 - 1e-4)).all(axis=-1)


@pytest.mark.parametrize(("h", "w"), [(333, 517), (8000, 20), (20, 8000)])
def test_output_has_the_exact_size_and_the_input_l(colorizer, tmp_path, h, w):
    path = tmp_path / f"{h}x{w}.png"
    Image.fromarray(_textured(h, w)).convert("L").save(path)
    photo = read_photo(path)
    assert photo.size == (w, h)
    out = colorizer.colorize_rgb(photo.rgb)
    assert out.shape == (h, w, 3) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    L_in = rgb2lab(photo.rgb.astype(np.float64))[..., 0]
    L_out = rgb2lab(out.astype(np.float64))[..., 0]
    keep = _in_gamut(out)
    # Near black and white an untrained model's chroma leaves the sRGB cube and the clip moves
    # L there; everywhere else the photo's own lightness comes back unchanged.
    assert keep.mean() > 0.8
    assert np.abs(L_out - L_in)[keep].max() < 1.0
    mid = (L_in > 15) & (L_in < 85)
    assert np.abs(L_out - L_in)[mid].max() < 1.0
    # The detail is the input's, at full resolution: L correlates pixel by pixel.
    assert np.corrcoef(L_in.ravel(), L_out.ravel())[0, 1] > 0.99


def test_colorize_l_agrees_with_colorize_rgb(colorizer):
    rgb = _textured(45, 70).astype(np.float32) / 255
    L = rgb_to_l(rgb)
    np.testing.assert_allclose(L, rgb2lab(rgb.astype(np.float64))[..., 0], atol=0.01)
    np.testing.assert_array_equal(colorizer.colorize_l(L), colorizer.colorize_rgb(rgb))


def test_colour_input_is_recolorized_from_its_l_alone(colorizer):
    a = torch.from_numpy(_textured(60, 90, seed=3).astype(np.float64) / 255).permute(2, 0, 1)
    lab = color.rgb_to_lab(a)
    # Another colour image with the same L: hue turned 90°, chroma cut; pixels where that
    # would leave the gamut (and so change L) are made neutral instead.
    other = lab.clone()
    other[1], other[2] = -0.3 * lab[2], 0.3 * lab[1]
    moved = (color.rgb_to_lab(color.lab_to_rgb(other))[0] - lab[0]).abs() > 1e-6
    other[1:, moved] = 0
    b = color.lab_to_rgb(other)
    lab_b = color.rgb_to_lab(b)
    assert (lab_b[0] - lab[0]).abs().max() < 1e-6
    assert (lab_b[1:] - lab[1:]).abs().mean() > 20  # really different colours
    gray = color.gray_lab_to_rgb(lab[None, :1])[0]
    outs = [
        colorizer.colorize_rgb(x.permute(1, 2, 0).numpy().astype(np.float32)) for x in (a, b, gray)
    ]
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(outs[2], outs[0], atol=1e-4, rtol=0)


def test_bands_give_the_same_result_as_one_pass(colorizer, monkeypatch):
    L = rgb_to_l(_textured(97, 61).astype(np.float32) / 255)
    whole = colorizer.colorize_l(L)
    monkeypatch.setattr(render, "BAND_PIXELS", 61 * 7)  # 7-row bands, last one short
    assert len(render.bands(97, 61)) == 14
    np.testing.assert_allclose(colorizer.colorize_l(L), whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("h", "w", "size"),
    [(333, 517, 64), (517, 333, 224), (480, 640, 256), (100, 100, 224), (5, 7, 96),
     (8000, 20, 64), (20, 8000, 224), (1000, 250, 128), (1000, 249, 128), (3000, 4000, 320)],
)
def test_network_size_is_a_multiple_of_32_with_the_aspect_kept(h, w, size):
    nh, nw = network_size(h, w, size)
    assert nh % 32 == 0 and nw % 32 == 0 and nh >= 32 and nw >= 32
    # The long side never passes MAX_ASPECT times the size (plus rounding to 32).
    assert max(nh, nw) <= size * sizing.MAX_ASPECT + 16
    aspect, net_aspect = max(h, w) / min(h, w), max(nh, nw) / min(nh, nw)
    if aspect <= sizing.MAX_ASPECT:
        # Short side is the asked size up to rounding, and the shape is the photo's: each side
        # is within half a 32-px step of the exact scaled length.
        assert abs(min(nh, nw) - size) <= 16
        scale = min(nh, nw) / min(h, w)
        assert abs(max(nh, nw) - max(h, w) * scale) <= 16 + 16 * aspect
        assert (nh >= nw) == (h >= w) or nh == nw
    else:
        # Too thin to keep: the long side is capped, the short side kept as large as it allows.
        assert net_aspect <= aspect
        assert max(nh, nw) >= size * sizing.MAX_ASPECT - 16


@pytest.mark.parametrize("size", [0, 16, 100, 250, -32])
def test_size_not_a_multiple_of_32_is_a_user_error(size):
    with pytest.raises(ColorcliError, match="multiple of 32"):
        network_size(100, 100, size)
    with pytest.raises(ColorcliError, match=f"got {size}"):
        Colorizer.from_model(create_model("test_l2"), InferenceSettings(size=size))


def test_one_pixel_image_is_rejected(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("L", (1, 1), 128).save(path)
    with pytest.raises(ImageReadError, match="too small") as exc:
        read_photo(path)
    assert str(exc.value).startswith(str(path))


def test_unknown_model_and_missing_weights(tmp_path, monkeypatch):
    with pytest.raises(UnknownModelError, match="valid models"):
        Colorizer.from_name("nope", weights=tmp_path / "x.safetensors")
    monkeypatch.setenv("COLORCLI_WEIGHTS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ColorcliError, match="has no weights: .* is in none of"):
        Colorizer.from_name("test_mcl")


def test_network_view_is_capped_at_the_photo_but_never_below_the_default():
    """Issue 13: --size above the model's default never upscales the view past the photo's own
    short side (rounded up to 32), and a small photo is still seen at the default size."""
    from colorcli.inference.backends import ZeroChroma

    big = Colorizer(ZeroChroma(default_size=160), InferenceSettings(size=1024))
    assert big.network_input(np.zeros((527, 700), np.float32)).shape[2] == 544
    assert big.network_input(np.zeros((100, 120), np.float32)).shape[2] == 160
    small = Colorizer(ZeroChroma(default_size=160), InferenceSettings(size=128))
    assert small.network_input(np.zeros((527, 700), np.float32)).shape[2] == 128  # smaller: as asked
    with pytest.raises(ColorcliError, match="at most 1024"):
        InferenceSettings(size=2048)


def test_bad_device_is_a_user_error():
    with pytest.raises(ColorcliError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(ColorcliError, match="unknown device"):
        InferenceSettings(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ColorcliError, match="no CUDA"):
            resolve_device("cuda")
    assert InferenceSettings(device="mps").device == "mps"  # offered; checked where torch runs it
    with pytest.raises(ColorcliError, match="MPS provider"):
        from colorcli.inference.backends import providers_for

        providers_for("mps")


def test_settings_are_one_frozen_validated_value():
    import dataclasses

    s = InferenceSettings()
    assert (s.size, s.temperature, s.tta, s.refine, s.device, s.threads) == (None, None, True, True, "auto", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.size = 64  # type: ignore[misc]
    assert s.replace(size=96).size == 96 and s.size is None
    for bad in ({"size": 100}, {"temperature": 0.0}, {"temperature": float("nan")}, {"threads": 0},
                {"device": "tpu"}):
        with pytest.raises(ColorcliError):
            InferenceSettings(**bad)


def test_backends_share_one_interface(tiny_weights, tmp_path):
    from colorcli.export import export_onnx
    from colorcli.inference import Backend, OnnxBackend, TorchBackend, ZeroChroma, make_backend

    onnx_file = export_onnx("test_mcl", tmp_path / "t.onnx", weights=tiny_weights).path
    cpu = InferenceSettings(device="cpu")
    torch_b = make_backend("test_mcl", weights=tiny_weights, settings=cpu)
    onnx_b = make_backend("test_mcl", weights=onnx_file, settings=cpu)  # auto: the file's kind
    assert isinstance(torch_b, TorchBackend) and isinstance(onnx_b, OnnxBackend)
    L = np.random.default_rng(0).random((2, 1, 64, 96), dtype=np.float32) * 100
    outs = []
    for b in (torch_b, onnx_b, ZeroChroma()):
        assert isinstance(b, Backend)
        out = b.predict(L)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape[:2] == (2, 2)
        outs.append(out)
    assert outs[0].shape == outs[1].shape and np.abs(outs[0] - outs[1]).max() < 0.5
    assert not outs[2].any()
    assert torch_b.temperature == onnx_b.temperature == pytest.approx(0.38)
    with pytest.raises(ColorcliError, match="unknown backend"):
        make_backend("test_mcl", backend="tensorrt")
    # Whatever the backend, one Colorizer runs the rest of the path: same photo, within 1/255.
    L_photo = rgb_to_l(_textured(70, 90).astype(np.float32) / 255)
    a = Colorizer(torch_b, cpu).colorize_l(L_photo)
    b = Colorizer(onnx_b, cpu).colorize_l(L_photo)
    assert np.abs(a - b).max() <= 1 / 255
