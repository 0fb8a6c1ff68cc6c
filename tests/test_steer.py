"""Steering the colour (colorcli.steer through the one inference path): point hints spread over
their region and stop at edges, a reference pulls the hue, saturation scales chroma inside the
gamut, L is never touched, and bad hints get one clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from colorcli import color, steer
from colorcli.cli import app
from colorcli.errors import SteeringError
from colorcli.models import create_model
from colorcli.inference import Colorizer, InferenceSettings

H, W = 120, 180
HINT = "#2050d0"  # a strong blue
# The bound for the region across the edge: its mean |chroma change| stays under this (ab units).
ACROSS_EDGE_BOUND = 1.0


def _two_regions(seed: int = 0) -> np.ndarray:
    """L ``(H, W)``: a light left half (L 70) and a dark right half (L 30), a strong edge
    between, with a little grain."""
    L = np.full((H, W), 70.0, dtype=np.float32)
    L[:, W // 2:] = 30.0
    return L + np.random.default_rng(seed).normal(0, 0.5, L.shape).astype(np.float32)


class _ZeroBackend:
    """No chroma at 1/4 of the view, like a bin model's output grid."""

    chroma_space, default_size, temperature, source = "lab", 96, None, "zeros"

    def predict(self, L: np.ndarray) -> np.ndarray:
        b, _, h, w = L.shape
        return np.zeros((b, 2, h // 4, w // 4), np.float32)


def _zero_colorizer() -> Colorizer:
    return Colorizer(_ZeroBackend())


def _lab(rgb: np.ndarray) -> np.ndarray:
    return color.rgb_to_lab(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)).numpy()


def _assert_l_kept(rgb: np.ndarray, L: np.ndarray) -> None:
    """The photo's L comes back: the gamut fit runs at network resolution, so only pixels where
    the full-resolution L jumps inside one network pixel (the two columns at the strong edge,
    1.1 % of this photo) may be clipped, by at most a few L units."""
    d = np.abs(_lab(rgb)[0] - L)
    assert (d > 0.5).mean() < 0.015
    assert d.max() < 3.0


@pytest.fixture(scope="module")
def mcl() -> Colorizer:
    torch.manual_seed(0)
    return Colorizer.from_model(create_model("test_mcl"))


@pytest.fixture(scope="module")
def l2() -> Colorizer:
    torch.manual_seed(0)
    return Colorizer.from_model(create_model("test_l2"))


@pytest.fixture(scope="module")
def red_reference() -> steer.Reference:
    rng = np.random.default_rng(1)
    rgb = np.empty((64, 64, 3), dtype=np.float32)
    rgb[..., 0] = rng.uniform(0.6, 0.9, (64, 64))
    rgb[..., 1] = rng.uniform(0.05, 0.15, (64, 64))
    rgb[..., 2] = rng.uniform(0.05, 0.15, (64, 64))
    return steer.Reference.from_rgb(rgb, name="red")


# --- hints ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["zero", "test_mcl"])
def test_hint_colours_its_region_and_stops_at_the_edge(backend, mcl):
    L = _two_regions()
    col = _zero_colorizer() if backend == "zero" else mcl
    plain = _lab(col.colorize_l(L))
    hinted_rgb = col.colorize_l(L, hints=[f"40,60={HINT}"])
    hinted = _lab(hinted_rgb)
    hint_ab = _lab(np.array([[[0x20, 0x50, 0xD0]]], dtype=np.float32) / 255)[1:, 0, 0]
    direction = hint_ab / np.linalg.norm(hint_ab)
    left, right = slice(0, W // 2), slice(W // 2, W)
    # The hinted region moves toward the hint's colour: along the hint's hue, by a lot.
    moved = (hinted[1:, :, left] - plain[1:, :, left]).mean(axis=(1, 2))
    assert moved @ direction > 15.0
    assert moved @ direction / np.linalg.norm(moved) > 0.9
    # The region across the strong edge keeps its colour.
    change = np.abs(hinted[1:, :, right] - plain[1:, :, right])
    assert change.mean() < ACROSS_EDGE_BOUND
    assert change[:, :, 12:].max() < 2.0  # beyond a 12-pixel band at the edge
    _assert_l_kept(hinted_rgb, L)


def test_hints_accept_fractions_and_pixels_alike():
    L = _two_regions()
    col = _zero_colorizer()
    by_pixel = col.colorize_l(L, hints=["0,0=#c03030"])
    by_fraction = col.colorize_l(L, hints=[steer.parse_hint("0.0,0.0=#c03030")])
    np.testing.assert_array_equal(by_pixel, by_fraction)
    far = steer.parse_hint("1.0,1.0=#c03030")
    assert steer.place_hints([far], W, H)[0].fx == pytest.approx((W - 0.5) / W)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("10,10=#12345", "not #RRGGBB"),
        ("10,10=red", "not #RRGGBB"),
        ("10;10=#ff0000", "expected X,Y=#RRGGBB"),
        ("10,0.5=#ff0000", "both as pixels"),
        ("1.5,0.5=#ff0000", r"outside \[0, 1\]"),
        ("nan,1=#ff0000", "not a finite number"),
    ],
)
def test_malformed_hints_are_one_clear_error(text, says):
    with pytest.raises(SteeringError, match=says) as info:
        steer.parse_hint(text)
    assert text in str(info.value) and "\n" not in str(info.value)


def test_a_hint_outside_the_photo_names_itself():
    col = _zero_colorizer()
    with pytest.raises(SteeringError, match=r"'180,5=#ff0000' is outside the photo \(180x120"):
        col.colorize_l(_two_regions(), hints=["180,5=#ff0000"])
    with pytest.raises(SteeringError, match="at most"):
        steer.as_hints(["1,1=#ffffff"] * (steer.MAX_HINTS + 1))


def test_hints_file_by_name_or_stem(tmp_path):
    path = tmp_path / "hints.json"
    path.write_text(json.dumps({"a.jpg": ["1,2=#ff0000"], "b": [{"x": 0.5, "y": 0.5, "color": "#00ff00"}]}))
    table = steer.load_hints(path)
    assert steer.hints_for(table, tmp_path / "a.jpg")[0].rgb == (1.0, 0.0, 0.0)
    assert steer.hints_for(table, tmp_path / "b.png")[0].fractional
    assert steer.hints_for(table, tmp_path / "c.png") == []
    path.write_text('{"a.jpg": ["1,2=#ff00"]}')
    with pytest.raises(SteeringError, match="hints.json: 'a.jpg': hint"):
        steer.load_hints(path)
    path.write_text("[1, 2]")
    with pytest.raises(SteeringError, match="expected a JSON object"):
        steer.load_hints(path)


# --- reference --------------------------------------------------------------------------------


def _mean_hue_distance_to_red(lab: np.ndarray) -> float:
    a, b = lab[1].mean(), lab[2].mean()
    return float(abs(np.angle(complex(a, b) * np.exp(-1j * np.deg2rad(40)))))  # red: hue ~40 degrees


@pytest.mark.parametrize("which", ["mcl", "l2", "zero"])
def test_a_red_reference_pulls_the_hue_toward_red(which, mcl, l2, red_reference):
    col = {"mcl": mcl, "l2": l2}.get(which) or _zero_colorizer()
    if which == "mcl":
        assert col._prior_applies(red_reference)  # the bin path, not the fallback
    L = _two_regions()
    plain_rgb, ref_rgb = col.colorize_l(L), col.colorize_l(L, reference=red_reference)
    plain, steered = _lab(plain_rgb), _lab(ref_rgb)
    assert steered[1].mean() > plain[1].mean() + 5  # more red (a*)
    assert _mean_hue_distance_to_red(steered) < _mean_hue_distance_to_red(plain) or _mean_hue_distance_to_red(steered) < 0.3
    _assert_l_kept(ref_rgb, L)
    weaker = _lab(col.with_steering(reference_strength=0.3).colorize_l(L, reference=red_reference))
    # A weaker reference moves less (or, where full strength reaches the gamut boundary, as much).
    assert plain[1].mean() + 1 < weaker[1].mean() < steered[1].mean() + 1
    np.testing.assert_array_equal(col.with_steering(reference_strength=0).colorize_l(L, reference=red_reference),
                                  plain_rgb)


def test_a_reference_steers_a_model_with_a_per_photo_gain(red_reference):
    # mcl's cf_head puts its gain after the bin logits: the prior goes on the logits only, and
    # at the head's zero start the result is the plain model's.
    torch.manual_seed(0)
    plain = create_model("test_mcl")
    headed = create_model("test_mcl", cf_head=True)
    headed.load_state_dict(plain.state_dict(), strict=False)
    L = _two_regions()
    want = Colorizer.from_model(plain).colorize_l(L, reference=red_reference)
    np.testing.assert_array_equal(Colorizer.from_model(headed).colorize_l(L, reference=red_reference), want)


def test_reference_prior_is_normalised_and_floored(red_reference):
    centres = color.gamut_bins()
    p = np.exp(red_reference.log_prior(centres))
    assert p.sum() == pytest.approx(1.0, abs=1e-4) and p.min() > 0
    top = centres[np.argsort(p)[-5:]]
    assert (top[:, 0] > 30).all()  # the most likely bins are red (large a*)


# --- saturation -------------------------------------------------------------------------------


@pytest.mark.parametrize("refine", [True, False])
def test_saturation_zero_gray_one_default_more_vivid_in_gamut(refine):
    torch.manual_seed(0)
    base = Colorizer.from_model(create_model("test_mcl"), InferenceSettings(refine=refine))
    L = _two_regions()
    L[:30] = np.linspace(20, 80, W, dtype=np.float32)  # a ramp too
    default = base.colorize_l(L)
    np.testing.assert_array_equal(base.with_steering(saturation=1.0).colorize_l(L), default)
    gray = base.with_steering(saturation=0).colorize_l(L)
    assert np.abs(_lab(gray)[1:]).max() < 0.05
    vivid_rgb = base.with_steering(saturation=3.0).colorize_l(L)
    chroma = lambda x: np.hypot(*_lab(x)[1:]).mean()  # noqa: E731
    assert chroma(vivid_rgb) > 1.5 * chroma(default)
    for rgb in (gray, vivid_rgb):
        _assert_l_kept(rgb, L)


def test_gamut_factor_keeps_colours_inside():
    L = np.full((1, 3), 60.0, dtype=np.float32)
    ab = np.array([[10.0, 60.0, 0.0], [0.0, 40.0, 0.0]], dtype=np.float32)[:, None, :]  # 3 pixels
    k = steer.gamut_factor(L, ab, 1.0, 4.0, space="lab")[0]
    lab = torch.from_numpy(np.concatenate([L[None], ab * k], axis=0))[None]
    assert color.in_gamut(lab).all()
    assert k[2] == 4.0  # gray stays gray: any factor fits
    assert 1.0 < k[1] < 4.0  # a vivid colour is held at the boundary
    assert not color.in_gamut(torch.from_numpy(np.concatenate([L[None], ab * 4], axis=0))[None])[0, 0, 0, 1]
    with pytest.raises(SteeringError):
        steer.check_saturation(-1)


# --- CLI --------------------------------------------------------------------------------------


def _one_photo(tmp_path, name="p.png"):
    L = _two_regions()
    rgb = color.gray_lab_to_rgb(torch.from_numpy(L)[None, None])[0].permute(1, 2, 0).numpy()
    path = tmp_path / name
    Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(path)
    return path


def test_cli_hints_reference_saturation(tmp_path, tiny_weights, red_reference):
    src = _one_photo(tmp_path)
    ref = tmp_path / "refs"
    ref.mkdir()
    Image.fromarray(np.round(red_reference.rgb * 255).astype(np.uint8)).save(ref / "p.png")
    runner = CliRunner()
    base = ["colorize", str(src), "--weights", str(tiny_weights), "-m", "test_mcl", "--device", "cpu",
            "--suffix", "_color"]  # a non-default model names its outputs otherwise
    res = runner.invoke(app, [*base, "-o", str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base, "-o", str(tmp_path / "steered"), "--hint", f"0.2,0.5={HINT}",
                              "--reference", str(ref), "--saturation", "1.5"])
    assert res.exit_code == 0, res.output
    plain = np.asarray(Image.open(tmp_path / "plain" / "p_color.png"), dtype=np.float32) / 255
    steered = np.asarray(Image.open(tmp_path / "steered" / "p_color.png"), dtype=np.float32) / 255
    assert not np.array_equal(plain, steered)
    assert np.median(np.abs(_lab(steered)[0] - _lab(plain)[0])) < 0.5  # 8-bit rounding; L kept

    res = runner.invoke(app, [*base, "-o", str(tmp_path / "bad"), "--hint", "10,10=#ff00zz"])
    assert res.exit_code == 2 and "'10,10=#ff00zz'" in res.output and "not #RRGGBB" in res.output
    res = runner.invoke(app, [*base, "-o", str(tmp_path / "out"), "--hint", "999,10=#ff0000"])
    assert res.exit_code == 1 and "p.png: hint '999,10=#ff0000' is outside the photo" in res.output
    other = tmp_path / "refs2"
    other.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(other / "q.png")
    res = runner.invoke(app, [*base, "-o", str(tmp_path / "out"), "--reference", str(other)])
    assert res.exit_code == 1 and "no reference named p.*" in res.output


def test_compare_shows_several_settings(tmp_path, tiny_weights):
    src = _one_photo(tmp_path)
    sheet = tmp_path / "sheet.png"
    res = CliRunner().invoke(app, ["compare", str(src), "-o", str(sheet), "--weights", f"test_mcl={tiny_weights}",
                                   "--device", "cpu", "--saturation", "0.6", "--saturation", "1.2",
                                   "--hint", f"10,10={HINT}", "--cell", "64"])
    assert res.exit_code == 0, res.output
    # input + 2 saturations x (without, with hints) = 5 columns of 64 px, 8 px apart
    assert Image.open(sheet).size[0] == 8 + 5 * (64 + 8)


# --- the light install: steering on onnxruntime with torch unimportable -----------------------

_LIGHT_SCRIPT = """
import json, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import numpy as np
from colorcli import steer
from colorcli.cli import app
from colorcli.inference import Colorizer, InferenceSettings, OnnxBackend

work = sys.argv[1]
data = np.load(work + "/inputs.npz")
L, ref = data["L"], steer.Reference.from_rgb(data["ref"], name="red")
out = {}
for name in ("test_mcl", "test_l2"):
    col = Colorizer(OnnxBackend(f"{work}/{name}.onnx", device="cpu", threads=1), InferenceSettings(device="cpu"))
    out[name + "/plain"] = col.colorize_l(L)
    out[name + "/hint"] = col.colorize_l(L, hints=["40,60=#2050d0"])
    out[name + "/reference"] = col.colorize_l(L, reference=ref)
    out[name + "/reference_weak"] = col.with_steering(reference_strength=0.3).colorize_l(L, reference=ref)
    out[name + "/reference_off"] = col.with_steering(reference_strength=0).colorize_l(L, reference=ref)
    for s in (0.0, 1.0, 3.0):
        out[f"{name}/saturation_{s:g}"] = col.with_steering(saturation=s).colorize_l(L)
np.savez(work + "/outputs.npz", **out)
# The CLI: --hint, --hints FILE.json, a --reference folder and --saturation, on the onnx backend.
try:
    app(["colorize", work + "/photos", "-o", work + "/cli", "--model", "test_mcl", "--backend", "onnx",
         "--onnx", work + "/test_mcl.onnx", "--device", "cpu", "--suffix", "_color", "--hint", "0.2,0.5=#2050d0",
         "--hints", work + "/hints.json", "--reference", work + "/refs", "--saturation", "1.5"], prog_name="colorcli")
except SystemExit as exc:
    print("exit", exc.code)
print("torch loaded:", "torch" in {k.split(".")[0] for k, v in sys.modules.items() if v is not None})
"""


@pytest.fixture(scope="module")
def light_run(tmp_path_factory, red_reference):
    """Steering on the onnx backend in a process where `import torch` fails: the tiny mcl and
    l2 (the same weights as the ``mcl`` and ``l2`` fixtures) exported to ONNX, run through
    the library call and the CLI. Returns (work folder, outputs, the process)."""
    import os
    import subprocess
    import sys

    from colorcli.export import export_model

    work = tmp_path_factory.mktemp("light")
    for name in ("test_mcl", "test_l2"):
        torch.manual_seed(0)
        export_model(create_model(name).eval(), work / f"{name}.onnx", parity_shapes=((1, 64, 64),))
    np.savez(work / "inputs.npz", L=_two_regions(), ref=red_reference.rgb)
    (work / "photos").mkdir()
    (work / "refs").mkdir()
    for stem in ("p", "q"):
        _one_photo(work / "photos", f"{stem}.png")
        Image.fromarray(np.round(red_reference.rgb * 255).astype(np.uint8)).save(work / "refs" / f"{stem}.png")
    (work / "hints.json").write_text(json.dumps({"q.png": ["0.8,0.5=#30a040"]}))  # green
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _LIGHT_SCRIPT, str(work)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return work, dict(np.load(work / "outputs.npz")), proc


def test_steering_runs_without_torch(light_run):
    work, out, proc = light_run
    assert "exit 0\ntorch loaded: False" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "done 2, skipped 0, failed 0"
    L = _two_regions()
    hint_ab = _lab(np.array([[[0x20, 0x50, 0xD0]]], dtype=np.float32) / 255)[1:, 0, 0]
    direction = hint_ab / np.linalg.norm(hint_ab)
    left, right = slice(0, W // 2), slice(W // 2, W)
    for name in ("test_mcl", "test_l2"):
        plain_rgb = out[f"{name}/plain"]
        plain = _lab(plain_rgb)
        # A hint moves its region toward its colour and stops at the edge (the bounds of the
        # torch test above for test_mcl; test_l2's plain output is strongly red: its region comes
        # 10 ab closer to the hint's colour, the most the gamut at L 70 lets blue reach).
        hinted = _lab(out[f"{name}/hint"])
        moved = (hinted[1:, :, left] - plain[1:, :, left]).mean(axis=(1, 2))
        if name == "test_mcl":
            assert moved @ direction > 15.0 and moved @ direction / np.linalg.norm(moved) > 0.9
        else:
            gap = lambda lab: np.linalg.norm(lab[1:, :, left].mean(axis=(1, 2)) - hint_ab)  # noqa: E731
            assert gap(hinted) < gap(plain) - 10
        assert np.abs(hinted[1:, :, right] - plain[1:, :, right]).mean() < ACROSS_EDGE_BOUND
        # A red reference raises mean a*; a weaker one less; strength 0 changes nothing.
        steered = _lab(out[f"{name}/reference"])
        assert steered[1].mean() > plain[1].mean() + 5
        assert plain[1].mean() + 1 < _lab(out[f"{name}/reference_weak"])[1].mean() < steered[1].mean() + 1
        np.testing.assert_array_equal(out[f"{name}/reference_off"], plain_rgb)
        # Saturation 0 is gray, 1 the default, 3 more vivid (1.5x as above for test_mcl; test_l2
        # starts at chroma 35 and reaches the gamut boundary at about 1.5x: at least 1.3x).
        assert np.abs(_lab(out[f"{name}/saturation_0"])[1:]).max() < 0.05
        np.testing.assert_array_equal(out[f"{name}/saturation_1"], plain_rgb)
        vivid = np.hypot(*_lab(out[f"{name}/saturation_3"])[1:]).mean()
        assert vivid > (1.5 if name == "test_mcl" else 1.3) * np.hypot(*plain[1:]).mean()
        for key in ("hint", "reference", "saturation_0", "saturation_3"):
            _assert_l_kept(out[f"{name}/{key}"], L)
    # The CLI run: both photos steered, L kept; q.png's hints-file entry (green, right half) on top.
    cli = {}
    for stem in ("p", "q"):
        cli[stem] = _lab(np.asarray(Image.open(work / "cli" / f"{stem}_color.png"), dtype=np.float32) / 255)
        assert np.median(np.abs(cli[stem][0] - L)) < 0.5 and np.hypot(*cli[stem][1:]).mean() > 5
    assert cli["q"][1, :, right].mean() < cli["p"][1, :, right].mean() - 10  # less red: a* down


@pytest.mark.parametrize("name", ["test_mcl", "test_l2"])
def test_steering_on_onnx_matches_torch(name, light_run, mcl, l2, red_reference):
    """The same steering on both backends is within 1/255: one numpy implementation of every
    steering step. (The mcl reference differs by design: torch re-weights the bins, onnx, whose
    graph decodes inside, transfers the reference's statistics.)"""
    _, out, _ = light_run
    col = {"test_mcl": mcl, "test_l2": l2}[name]
    L = _two_regions()
    want = {"plain": col.colorize_l(L), "hint": col.colorize_l(L, hints=["40,60=#2050d0"]),
            "saturation_0": col.with_steering(saturation=0).colorize_l(L),
            "saturation_3": col.with_steering(saturation=3).colorize_l(L)}
    if name == "test_l2":
        want["reference"] = col.colorize_l(L, reference=red_reference)
        want["reference_weak"] = col.with_steering(reference_strength=0.3).colorize_l(L, reference=red_reference)
    for key, rgb in want.items():
        diff = np.abs(out[f"{name}/{key}"] - rgb)
        assert diff.max() <= 1 / 255, (key, diff.max() * 255)
