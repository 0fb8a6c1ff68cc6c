"""The pixel steps (colorcli.inference.render): edge-aware refinement (guided filter on L),
band-wise upsampling, Chroma vs Coefficients; and mirror averaging, on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from colorcli.cli import app
from colorcli.inference import Chroma, Coefficients, Colorizer, InferenceSettings
from colorcli.inference import render as refine
from colorcli.inference.render import recombine, upsample_band
from colorcli.models import create_model


def _step_scene(edge: int, h: int = 64, w: int = 64, stride: int = 4):
    """L with a vertical edge at column ``edge`` (dark left, light right) and the network's
    coarse chroma: a = +40 on the left half, -40 on the right, at 1/stride resolution."""
    L = np.where(np.arange(w)[None, :] < edge, 30.0, 70.0).repeat(h, 0).astype(np.float32)
    cw = w // stride
    a = np.where(np.arange(cw) < cw // 2, 40.0, -40.0).astype(np.float32)
    chroma = np.stack([np.tile(a, (h // stride, 1)), np.zeros((h // stride, cw), np.float32)])
    return L, chroma


@pytest.mark.parametrize("edge", [32, 34])  # on the coarse cells' border, and 2 px off it
def test_refined_colour_edge_sits_on_the_edge_in_l(edge):
    L, chroma = _step_scene(edge)
    h, w = L.shape
    plain = upsample_band(chroma, h, w, 0, h)[0]
    coef = refine.guided_coefficients(L, Chroma(chroma))
    assert isinstance(coef, Coefficients)
    assert coef.values.shape == (4, h, w) and coef.values.dtype == np.float32
    refined = refine.apply_coefficients(coef.values, L)[0]
    # Bilinear upsampling ramps the colour over a coarse cell (steps of at most 20 ab); the
    # guided filter makes one sharp step, exactly where L has its edge.
    jumps_plain = np.abs(np.diff(plain, axis=1))
    jumps = np.abs(np.diff(refined, axis=1))
    assert (jumps.argmax(axis=1) == edge - 1).all()
    assert jumps.max(axis=1).min() > 1.5 * jumps_plain.max()
    assert (refined[:, edge:] < 0).all()  # no red bleeds onto the light side


def test_flat_chroma_and_flat_l_pass_through():
    rng = np.random.default_rng(0)
    L = rng.uniform(0, 100, (40, 56)).astype(np.float32)
    chroma = np.full((2, 10, 14), 0.0, np.float32)
    chroma[0], chroma[1] = 12.5, -7.0
    out = refine.apply_coefficients(refine.guided_coefficients(L, Chroma(chroma)).values, L)
    np.testing.assert_allclose(out[0], 12.5, atol=1e-3)
    np.testing.assert_allclose(out[1], -7.0, atol=1e-3)
    # Flat L (no edges to follow): the result is a smoothed copy of the chroma, mean preserved.
    flat = np.full((40, 56), 50.0, np.float32)
    varied = rng.normal(0, 20, (2, 10, 14)).astype(np.float32)
    out = refine.apply_coefficients(refine.guided_coefficients(flat, Chroma(varied)).values, flat)
    up = upsample_band(varied, 40, 56, 0, 40)
    assert out.std() < up.std()
    np.testing.assert_allclose(out.mean(axis=(1, 2)), up.mean(axis=(1, 2)), atol=1.5)


def test_radius_scales_with_the_network_view():
    assert refine.radius_for(160, 224) == 8
    assert refine.radius_for(320, 320) == 16
    assert refine.radius_for(8, 8) == 1


def test_recombine_applies_coefficients_at_full_size():
    """Coefficients from the network view are applied to the full-resolution L: at 4x the
    size, the colour edge sits on the full-size L edge."""
    L_small, chroma = _step_scene(34)
    coef = refine.guided_coefficients(L_small, Chroma(chroma))
    L_big = np.where(np.arange(256)[None, :] < 137, 30.0, 70.0).repeat(256, 0).astype(np.float32)
    rgb = recombine(L_big, coef)
    assert rgb.shape == (256, 256, 3)
    red_minus_green = rgb[..., 0] - rgb[..., 1]
    assert (np.abs(np.diff(red_minus_green, axis=1)).argmax(axis=1) == 136).all()
    with pytest.raises(ValueError, match="coefficients"):
        Coefficients(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="chroma"):
        Chroma(np.zeros((4, 8, 8), np.float32))
    # Chroma and coefficients are types, never told apart by a channel count.
    with pytest.raises(TypeError, match="Chroma or Coefficients"):
        recombine(L_big, np.zeros((1, 2, 8, 8), np.float32))


def test_box_filter_matches_scipy():
    from scipy.ndimage import uniform_filter

    rng = np.random.default_rng(0)
    for shape, r in (((40, 56), 3), ((9, 7), 2), ((32, 32), 8), ((5, 40), 6)):
        x = rng.standard_normal(shape)
        np.testing.assert_allclose(refine._box(x, r), uniform_filter(x, size=2 * r + 1, mode="reflect"),
                                   atol=1e-10)


class _RampBackend:
    """Chroma that depends on the column: a = column index, b = row index."""

    chroma_space, default_size, temperature, source = "lab", 32, None, "ramp"

    def predict(self, L: np.ndarray) -> np.ndarray:
        b, _, h, w = L.shape
        cols = np.broadcast_to(np.arange(w, dtype=np.float32), (b, 1, h, w))
        rows = np.broadcast_to(np.arange(h, dtype=np.float32)[:, None], (b, 1, h, w))
        return np.concatenate([cols, rows], axis=1)


def test_tta_averages_with_the_mirror_image():
    L = np.random.default_rng(0).random((3, 1, 32, 64), dtype=np.float32) * 100
    plain = Colorizer(_RampBackend(), InferenceSettings(tta=False)).predict_chroma(L)
    mirrored = Colorizer(_RampBackend(), InferenceSettings(tta=True)).predict_chroma(L)
    assert np.array_equal(plain, _RampBackend().predict(L))
    # column j and its mirror 63 - j average to 31.5 everywhere; rows are unchanged.
    np.testing.assert_allclose(mirrored[:, 0], np.full((3, 32, 64), 31.5))
    np.testing.assert_allclose(mirrored[:, 1], plain[:, 1])


def test_tta_with_a_model_is_mirror_symmetric():
    torch.manual_seed(0)
    model = create_model("test_mcl")
    col = Colorizer.from_model(model, InferenceSettings(tta=True, refine=False))
    L = np.random.default_rng(0).random((2, 1, 64, 96), dtype=np.float32) * 100
    a = col.predict_chroma(L)
    b = col.predict_chroma(np.ascontiguousarray(L[..., ::-1]))[..., ::-1]
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    plain = Colorizer.from_model(model, InferenceSettings(tta=False)).predict_chroma(L)
    assert not np.allclose(a, plain, atol=1e-4)


def test_non_finite_network_output_is_a_user_error():
    from colorcli.errors import InferenceError

    class _Nan(_RampBackend):
        def predict(self, L):
            out = super().predict(L).copy()
            out[0, 0, 0, 0] = np.nan
            return out

    with pytest.raises(InferenceError, match="non-finite"):
        Colorizer(_Nan()).colorize_l(np.full((40, 50), 50, np.float32))


def test_cli_switches_change_the_output(tmp_path, tiny_weights):
    rng = np.random.default_rng(1)
    from PIL import Image

    src = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 255, (70, 90), dtype=np.uint8)).save(src)
    outs = {}
    for flags in ([], ["--no-tta", "--no-refine"]):
        d = tmp_path / ("on" if not flags else "off")
        res = CliRunner().invoke(app, ["colorize", str(src), "-o", str(d), "-m", "test_mcl",
                                       "--weights", str(tiny_weights), "--device", "cpu", *flags])
        assert res.exit_code == 0, res.output
        outs[d.name] = np.asarray(Image.open(d / "in_color_test_mcl.png"))  # a non-default model is named
    col = Colorizer.from_name("test_mcl", weights=tiny_weights,
                              settings=InferenceSettings(device="cpu", tta=False, refine=False))
    gray = np.asarray(Image.open(src), dtype=np.float32) / 255
    from colorcli.imageio import to_uint8

    expect = to_uint8(col.colorize_rgb(np.repeat(gray[..., None], 3, axis=2)))
    assert np.abs(outs["off"].astype(int) - expect).max() <= 1
    assert not np.array_equal(outs["on"], outs["off"])
