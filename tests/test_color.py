"""colorcli.color against scikit-image: Lab and LUV both ways, shapes, gradients, binning."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from skimage.color import lab2rgb, luv2rgb, rgb2hsv, rgb2lab, rgb2luv

from colorcli import color

# Black, white, the primaries and secondaries, mid gray, and colours at the sRGB linear-segment
# threshold and in the Lab/LUV low-lightness branch, where a wrong constant would show first.
SPECIAL = np.array(
    [
        [0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1],
        [0.5, 0.5, 0.5], [0.04045, 0.04045, 0.04045], [0.02, 0.01, 0.0], [0.0, 0.003, 0.05],
    ],
    dtype=np.float64,
)


def _rgb_image(seed: int = 0, h: int = 16, w: int = 24) -> np.ndarray:
    """Random sRGB ``(h, w, 3)`` in [0, 1] whose first row starts with the SPECIAL colours."""
    rng = np.random.default_rng(seed)
    img = rng.random((h, w, 3))
    img[0, : len(SPECIAL)] = SPECIAL
    return img


def _to_t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)


def _to_np(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


@pytest.mark.parametrize(
    ("ours", "ref"), [(color.rgb_to_lab, rgb2lab), (color.rgb_to_luv, rgb2luv)], ids=["lab", "luv"]
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_matches_scikit_image(ours, ref, dtype):
    img = _rgb_image()
    got = _to_np(ours(_to_t(img).to(dtype)).double())
    np.testing.assert_allclose(got, ref(img), atol=0.01, rtol=0)


def test_reference_values_of_white_black_and_red():
    lab = color.rgb_to_lab(_to_t(SPECIAL[None, :3])).squeeze(1).T.numpy()
    np.testing.assert_allclose(lab[0], [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(lab[1], [100, 0, 0], atol=0.01)
    np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.01)  # sRGB red


@pytest.mark.parametrize(
    ("ours", "ref", "fwd"),
    [(color.lab_to_rgb, lab2rgb, rgb2lab), (color.luv_to_rgb, luv2rgb, rgb2luv)],
    ids=["lab", "luv"],
)
def test_inverse_matches_scikit_image_in_and_out_of_gamut(ours, ref, fwd):
    img = _rgb_image(1)
    inside = fwd(img)
    np.testing.assert_allclose(_to_np(ours(_to_t(inside))), ref(inside), atol=0.01, rtol=0)
    # Arbitrary L/chroma triples, most of them outside sRGB: both clip the same way.
    rng = np.random.default_rng(2)
    span = 110 if ours is color.lab_to_rgb else 100
    wild = np.stack(
        [rng.uniform(1, 100, (12, 12)), rng.uniform(-span, span, (12, 12)),
         rng.uniform(-span, span, (12, 12))], axis=-1,
    )
    with pytest.warns(UserWarning) if ours is color.lab_to_rgb else contextlib.nullcontext():
        expected = ref(wild)  # scikit-image warns when it clips negative Z
    got = _to_np(ours(_to_t(wild)))
    assert got.min() >= 0 and got.max() <= 1
    np.testing.assert_allclose(got, expected, atol=0.01, rtol=0)


@pytest.mark.parametrize(
    ("fwd", "inv"), [(color.rgb_to_lab, color.lab_to_rgb), (color.rgb_to_luv, color.luv_to_rgb)],
    ids=["lab", "luv"],
)
# 1e-6, not 1e-12: the rounded threshold constants (0.008856, 7.787, shared with scikit-image)
# make the piecewise curves meet only to about 3e-8.
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-6), (torch.float32, 2e-4)])
def test_round_trip(fwd, inv, dtype, tol):
    x = _to_t(_rgb_image(3)).to(dtype)
    back = inv(fwd(x))
    assert back.dtype == dtype
    torch.testing.assert_close(back, x, atol=tol, rtol=0)


@pytest.mark.parametrize(
    "fn", [color.rgb_to_lab, color.lab_to_rgb, color.rgb_to_luv, color.luv_to_rgb,
           color.hsv_saturation],
)
def test_single_image_and_batch_agree(fn):
    imgs = torch.stack([_to_t(_rgb_image(s, 8, 12)) for s in range(3)])
    if fn in (color.lab_to_rgb, color.luv_to_rgb):
        imgs = (color.rgb_to_lab if fn is color.lab_to_rgb else color.rgb_to_luv)(imgs)
    batch = fn(imgs)
    assert batch.shape[0] == 3 and batch.shape[-2:] == (8, 12)
    for i in range(3):
        single = fn(imgs[i])
        assert single.dim() == 3
        torch.testing.assert_close(single, batch[i])


@pytest.mark.parametrize("shape", [(8, 10), (1, 8, 10), (2, 4, 8, 10), (2, 3, 8, 10, 1)])
def test_wrong_shapes_are_refused(shape):
    with pytest.raises(ValueError, match="expected"):
        color.rgb_to_lab(torch.rand(shape))


def test_hsv_saturation_matches_scikit_image():
    img = _rgb_image(4)
    got = color.hsv_saturation(_to_t(img))[0].numpy()
    np.testing.assert_allclose(got, rgb2hsv(img)[..., 1], atol=1e-9)


def test_gray_helpers():
    img = _to_t(_rgb_image(5))[None]
    L = color.rgb_to_gray_l(img)
    assert L.shape == (1, 1, 16, 24)
    torch.testing.assert_close(L, color.rgb_to_lab(img)[:, :1])
    gray = color.gray_lab_to_rgb(L)
    # Neutral: R = G = B to 1e-4 (the 6-digit matrix rows sum to the white point only to
    # ~8e-5), far below one 8-bit level; and its own L is the L it came from.
    torch.testing.assert_close(gray[:, 0], gray[:, 1], atol=1e-4, rtol=0)
    torch.testing.assert_close(gray[:, 1], gray[:, 2], atol=1e-4, rtol=0)
    torch.testing.assert_close(color.rgb_to_gray_l(gray), L, atol=1e-3, rtol=0)


# Gradients: away from the kinks (sRGB linear segment below 0.04045, the Lab/LUV cube-root
# threshold, the [0, 1] clip), the converters must be smooth and their autograd exact.
def _smooth_rgb(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.2 + 0.6 * torch.rand(1, 3, 3, 4, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("fn", [color.rgb_to_lab, color.rgb_to_luv], ids=["lab", "luv"])
def test_gradcheck_forward(fn):
    x = _smooth_rgb(0).requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("fwd", "inv"), [(color.rgb_to_lab, color.lab_to_rgb), (color.rgb_to_luv, color.luv_to_rgb)],
    ids=["lab", "luv"],
)
def test_gradcheck_inverse(fwd, inv):
    # In-gamut inputs (made from sRGB in [0.2, 0.8]) so the output clip is not active.
    x = fwd(_smooth_rgb(1)).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(inv, (x,), eps=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# ab bins


def test_gamut_bins_are_stable_and_on_the_grid():
    bins = color.gamut_bins()
    # Q fixes the size of every bins-head model's last layer: if it changes, every shipped
    # mcl weights file stops loading. 261 is what the default 48^3 sampling reaches.
    assert bins.shape == (261, 2)
    np.testing.assert_array_equal(bins, color.gamut_bins())
    assert np.all(np.mod(bins, color.AB_GRID) == 0)
    assert len(np.unique(bins, axis=0)) == len(bins)
    assert np.abs(bins).max() <= color.AB_RANGE
    assert [0.0, 0.0] in bins.tolist()


def test_every_srgb_colour_falls_in_a_gamut_bin():
    bins = {tuple(b) for b in color.gamut_bins().tolist()}
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((1, 3, 200, 200)))
    x[0, :, 0, : len(SPECIAL)] = torch.from_numpy(SPECIAL).T
    ab = color.rgb_to_lab(x)[0, 1:].reshape(2, -1).T.numpy()
    cells = {tuple(c) for c in (np.round(ab / color.AB_GRID) * color.AB_GRID).tolist()}
    assert cells <= bins


def test_hard_assignment_picks_the_nearest_centre():
    centres = torch.from_numpy(color.gamut_bins())
    ab = torch.tensor([[0.0, 0.0], [4.9, -4.9], [12.0, 31.0], [-38.0, 61.0]]).T.reshape(1, 2, 2, 2)
    idx = color.ab_to_bin_index(ab, centres).flatten()
    expected = [[0, 0], [0, 0], [10, 30], [-40, 60]]
    assert centres[idx].tolist() == expected


# ---------------------------------------------------------------------------------------------
# UV bins (luv50)


def test_uv_bin_edges_and_means():
    edges = color.uv_bin_edges()
    assert edges.shape == (color.UV_BINS + 1,)
    assert edges[0] == -color.UV_RANGE and edges[-1] == color.UV_RANGE
    np.testing.assert_allclose(np.diff(edges), 2 * color.UV_RANGE / color.UV_BINS)
    means = color.uv_bin_means()
    np.testing.assert_allclose(means, (edges[:-1] + edges[1:]) / 2)
    assert color.uv_to_bin_index(torch.from_numpy(means)).tolist() == list(range(color.UV_BINS))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uv_edge_values_land_in_the_bin_they_start(dtype):
    edges = torch.from_numpy(color.uv_bin_edges().astype(np.float64)).to(dtype)
    idx = color.uv_to_bin_index(edges).tolist()
    # Edge k starts bin k; the last edge (+span) belongs to the last bin.
    assert idx == [*range(color.UV_BINS), color.UV_BINS - 1]
    just_below = color.uv_to_bin_index(edges[1:-1] - 1e-3).tolist()
    assert just_below == list(range(color.UV_BINS - 1))


def test_uv_values_outside_the_span_go_to_the_end_bins():
    idx = color.uv_to_bin_index(torch.tensor([-1e4, -100.5, 100.5, 180.0]))
    assert idx.tolist() == [0, 0, color.UV_BINS - 1, color.UV_BINS - 1]
    assert color.uv_to_bin_index(torch.zeros(3), bins=10, span=50).tolist() == [5, 5, 5]


def test_resize_ab_and_chroma():
    ab = torch.randn(2, 2, 8, 12, generator=torch.Generator().manual_seed(0)) * 30
    assert color.resize_ab(ab, (8, 12)) is ab
    up = color.resize_ab(ab, (16, 24))
    assert up.shape == (2, 2, 16, 24)
    torch.testing.assert_close(up.mean(dim=(-2, -1)), ab.mean(dim=(-2, -1)), atol=1e-4, rtol=0)
    c = color.chroma(torch.tensor([3.0, 0.0]).view(1, 2, 1, 1))
    assert c.shape == (1, 1, 1, 1) and abs(c.item() - 3.0) < 1e-5


def test_numpy_conversions_match_the_torch_ones():
    """The torch-free conversions of the inference path compute what the torch ops compute
    (incl. branch edges and black)."""
    rng = np.random.default_rng(0)
    rgb = rng.random((40, 50, 3), dtype=np.float32)
    rgb[0, :4] = [[0, 0, 0], [1, 1, 1], [0.04045, 0.04045, 0.04045], [0.0031308 * 12.92] * 3]
    ref_l = color.rgb_to_gray_l(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0, 0].numpy()
    got_l = color.rgb_to_l_np(rgb)
    assert got_l.dtype == np.float32 and np.abs(got_l - ref_l).max() < 1e-4
    L = rng.random((40, 50), dtype=np.float32) * 100
    L[0, :3] = [0, 100, 7.9996]
    chroma = (rng.standard_normal((2, 40, 50)) * 40).astype(np.float32)
    for np_fn, fn in ((color.lab_to_rgb_np, color.lab_to_rgb), (color.luv_to_rgb_np, color.luv_to_rgb)):
        ref = fn(torch.from_numpy(np.concatenate([L[None], chroma]))[None])[0].permute(1, 2, 0).numpy()
        got = np_fn(L, chroma)
        assert got.shape == (40, 50, 3) and got.dtype == np.float32 and np.isfinite(got).all()
        assert np.abs(got - ref).max() < 1e-4


@pytest.mark.parametrize(("np_fn", "ref", "inverse"), [(color.rgb_to_lab_np, rgb2lab, color.lab_to_rgb_np),
                                                       (color.rgb_to_luv_np, rgb2luv, color.luv_to_rgb_np)],
                         ids=["lab", "luv"])
def test_numpy_forward_conversions_match_scikit_image_and_invert(np_fn, ref, inverse):
    """sRGB -> Lab / LUV without torch (steering on the light install): scikit-image's values,
    the torch ops' within float32 rounding, and the numpy inverse brings the colour back."""
    img = _rgb_image().astype(np.float32)
    L, chroma = np_fn(img)
    assert L.shape == img.shape[:2] and chroma.shape == (2, *img.shape[:2]) and chroma.dtype == np.float32
    want = ref(img.astype(np.float64))
    np.testing.assert_allclose(np.concatenate([L[..., None], np.moveaxis(chroma, 0, -1)], axis=-1), want,
                               atol=0.01, rtol=0)
    torch_fn = color.rgb_to_lab if np_fn is color.rgb_to_lab_np else color.rgb_to_luv
    t = torch_fn(_to_t(img))
    assert np.abs(t[0].numpy() - L).max() < 1e-3 and np.abs(t[1:].numpy() - chroma).max() < 1e-3
    np.testing.assert_allclose(inverse(L, chroma), img, atol=1e-4, rtol=0)


@pytest.mark.parametrize("space", ["lab", "luv"])
def test_in_gamut_is_what_the_conversion_would_not_clip(space):
    rng = np.random.default_rng(2)
    L = rng.uniform(5, 95, (30, 40)).astype(np.float32)
    chroma = rng.uniform(-90, 90, (2, 30, 40)).astype(np.float32)
    inside = color.in_gamut_np(L, chroma, space=space, tol=0.0)
    assert 0.02 < inside.mean() < 0.9  # both cases occur
    to_rgb, to_space = ((color.lab_to_rgb_np, color.rgb_to_lab_np) if space == "lab"
                        else (color.luv_to_rgb_np, color.rgb_to_luv_np))
    L2, c2 = to_space(to_rgb(L, chroma))
    moved = np.maximum(np.abs(L2 - L), np.abs(c2 - chroma).max(axis=0))
    assert moved[inside].max() < 0.05  # inside the cube: the round trip keeps the colour
    assert np.median(moved[~inside]) > 1.0  # outside: the clip moves it
    x = np.concatenate([L[None], chroma])[None]
    np.testing.assert_array_equal(color.in_gamut(x, space=space, tol=0.0)[0, 0], inside)
    np.testing.assert_array_equal(color.in_gamut(torch.from_numpy(x), space=space, tol=0.0)[0, 0], inside)
