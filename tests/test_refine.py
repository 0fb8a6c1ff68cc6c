"""Edge-aware refinement (guided filter on L) and mirror averaging, on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from colorcli import refine
from colorcli.cli import app
from colorcli.models import create_model
from colorcli.onnx_runtime import upsample_band
from colorcli.pipeline import Colorizer, recombine


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
    coef = refine.guided_coefficients(L, chroma)
    assert coef.shape == (refine.COEFFICIENTS, h, w) and coef.dtype == np.float32
    refined = refine.apply_coefficients(coef, L[None])[0]
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
    out = refine.apply_coefficients(refine.guided_coefficients(L, chroma), L[None])
    np.testing.assert_allclose(out[0], 12.5, atol=1e-3)
    np.testing.assert_allclose(out[1], -7.0, atol=1e-3)
    # Flat L (no edges to follow): the result is a smoothed copy of the chroma, mean preserved.
    flat = np.full((40, 56), 50.0, np.float32)
    varied = rng.normal(0, 20, (2, 10, 14)).astype(np.float32)
    out = refine.apply_coefficients(refine.guided_coefficients(flat, varied), flat[None])
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
    coef = torch.from_numpy(refine.guided_coefficients(L_small, chroma))[None]
    L_big = np.where(np.arange(256)[None, :] < 137, 30.0, 70.0).repeat(256, 0).astype(np.float32)
    rgb = recombine(L_big, coef)
    assert rgb.shape == (256, 256, 3)
    red_minus_green = rgb[..., 0] - rgb[..., 1]
    assert (np.abs(np.diff(red_minus_green, axis=1)).argmax(axis=1) == 136).all()
    with pytest.raises(ValueError, match="coefficients"):
        recombine(L_big, torch.zeros(1, 3, 8, 8))


def _ramp_backend(L: torch.Tensor) -> torch.Tensor:
    """Chroma that depends on the column: a = column index, b = row index."""
    b, _, h, w = L.shape
    cols = torch.arange(w, dtype=torch.float32).expand(b, 1, h, w)
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(b, 1, h, w)
    return torch.cat([cols, rows], dim=1)


def test_tta_averages_with_the_mirror_image():
    L = torch.rand(3, 1, 32, 64) * 100
    plain = Colorizer(backend=_ramp_backend, size=32, tta=False).predict_chroma(L)
    mirrored = Colorizer(backend=_ramp_backend, size=32, tta=True).predict_chroma(L)
    assert torch.equal(plain, _ramp_backend(L))
    # column j and its mirror 63 - j average to 31.5 everywhere; rows are unchanged.
    torch.testing.assert_close(mirrored[:, 0], torch.full((3, 32, 64), 31.5))
    torch.testing.assert_close(mirrored[:, 1], plain[:, 1])


def test_tta_with_a_model_is_mirror_symmetric():
    torch.manual_seed(0)
    col = Colorizer(create_model("test_mcl"), tta=True, refine=False)
    L = torch.rand(2, 1, 64, 96) * 100
    a = col.predict_chroma(L)
    b = col.predict_chroma(L.flip(-1)).flip(-1)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(a, Colorizer(col.model, tta=False).predict_chroma(L), atol=1e-4)


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
    col = Colorizer.from_name("test_mcl", weights=tiny_weights, device="cpu", tta=False, refine=False)
    gray = np.asarray(Image.open(src), dtype=np.float32) / 255
    from colorcli.imageio import to_uint8

    expect = to_uint8(col.colorize_rgb(np.repeat(gray[..., None], 3, axis=2)))
    assert np.abs(outs["off"].astype(int) - expect).max() <= 1
    assert not np.array_equal(outs["on"], outs["off"])
