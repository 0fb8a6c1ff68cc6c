"""``colorcli export --int8``: onnxruntime static quantization, calibrated on real photo files."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from colorcli import color
from colorcli.cli import app
from colorcli.inference import Colorizer, InferenceSettings, OnnxBackend
from colorcli.models import create_model
from colorcli.quantize import QuantizeError, calibration_photos, export_int8, float_node_names
from colorcli.weights import save_weights

# int8 against fp32 on photos it was not calibrated on (test_l2 after 30 training steps, whose
# colours vary across the photo: network chroma std 10 ab there); measured 2026-12-04: network
# chroma mean |Δ| 0.075 ab, max 0.36 ab; colorized sRGB max 0.0022 (test_mcl: 0.015, 0.10,
# 0.0003). The real mcl: see the README.
NET_MEAN_TOL, NET_MAX_TOL = 0.5, 2.5  # ab
RGB_MAX_TOL = 2 / 255


@pytest.fixture(scope="module")
def weights_of(tmp_path_factory, make_photo):
    """name -> a weights file whose output depends on the photo (random init gives nearly constant
    colours, which would hide what quantization does): test_l2 trained for 30 steps on generated
    photos; test_mcl with its head scaled up, so its bin distribution is sharp (the softmax path)."""
    folder = tmp_path_factory.mktemp("w")
    done = {}

    def make(name: str):
        if name in done:
            return done[name]
        torch.manual_seed(0)
        model = create_model(name)
        if name == "test_mcl":
            with torch.no_grad():
                model.head.weight.mul_(30)
                model.head.bias.mul_(30)
        else:
            rgb = torch.from_numpy(np.stack([make_photo(64, 64, 100 + i) for i in range(8)]))
            lab = color.rgb_to_lab(rgb.permute(0, 3, 1, 2).float() / 255)
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            model.train()
            for _ in range(30):
                loss = model.loss(model(lab[:, :1]), {"ab": lab[:, 1:]})
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
        done[name] = save_weights(model, folder / f"{name}.safetensors", training={"note": "for tests"}, metrics={})
        return done[name]

    return make


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory, make_photo):
    d = tmp_path_factory.mktemp("calib")
    for i in range(6):
        img = Image.fromarray(make_photo(56 + 8 * i, 90 - 6 * i, i))
        (img.convert("L") if i % 3 == 0 else img).save(d / f"p{i}.{'jpg' if i % 2 else 'png'}")
    (d / "broken.jpg").write_bytes(b"not a jpeg")
    (d / "notes.txt").write_text("not a photo")
    return d


@pytest.fixture(scope="module")
def exported(tmp_path_factory, weights_of, calib_dir):
    """name -> (fp32 path, int8 path, CLI output), the int8 file made through the CLI, once."""
    from colorcli.export import export_onnx

    done = {}

    def get(name: str):
        if name not in done:
            d = tmp_path_factory.mktemp(name)
            weights = weights_of(name)
            fp32 = export_onnx(name, d / "fp32.onnx", weights=weights).path
            res = CliRunner().invoke(app, ["export", "--weights", f"{name}={weights}", "-o", str(d / "q.onnx"),
                                           "--int8", "--calibrate", str(calib_dir), "--calibrate-count", "7"])
            assert res.exit_code == 0, res.output
            assert res.stdout.strip() == str(d / "q.onnx")
            done[name] = (fp32, d / "q.onnx", res.output)
        return done[name]

    return get


def test_int8_file_is_smaller_and_says_int8(exported, calib_dir):
    fp32, q, output = exported("test_mcl")
    assert q.stat().st_size < 0.6 * fp32.stat().st_size
    backend = OnnxBackend(q, device="cpu", threads=1)  # loads unchanged, through read_onnx_info
    meta = backend.info.meta
    assert backend.info.model == "test_mcl" and backend.info.precision.startswith("int8")
    quant = json.loads(meta["quantization"])
    # 7 asked, 7 image files (one broken): 6 read; the text file is not a photo
    assert quant["calibration"]["folder"] == calib_dir.name
    assert quant["calibration"]["photos"] == 6 and quant["calibration"]["unreadable"] == 1
    assert "broken.jpg" in output and "int8, calibrated on 6 photo(s)" in output
    # Same metadata as the fp32 file, but never claiming parity with PyTorch.
    fp32_meta = OnnxBackend(fp32, device="cpu").info.meta
    for key in ("model", "model_config", "chroma_space", "default_size", "temperature", "decode", "weights"):
        assert meta[key] == fp32_meta[key]
    parity = json.loads(meta["parity"])
    assert parity["against"].startswith("the fp32 export") and 0 < parity["mean_abs_diff"] < NET_MEAN_TOL
    # The decoding (softmax, annealed mean) and the head stay float; the rest is QDQ.
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "/Softmax" in quant["float_nodes"] and "/model/head/Conv" in quant["float_nodes"]
    convs = [n.name for n in onnx.load(str(q)).graph.node if n.op_type == "Conv"]
    assert len(convs) > 3 and not set(convs[:-1]) & set(quant["float_nodes"])


@pytest.mark.parametrize("name", ["test_l2", "test_mcl"])
def test_int8_colorizes_close_to_fp32(name, exported, make_photo):
    fp32, q, _ = exported(name)
    settings = InferenceSettings(device="cpu", threads=1)
    full = Colorizer.from_name(name, weights=fp32, backend="auto", settings=settings)
    int8 = Colorizer.from_name(name, weights=q, backend="auto", settings=settings)
    assert isinstance(int8.backend, OnnxBackend)
    net, rgb_diff, spread = [], [], []
    for i in range(4):  # photos it was not calibrated on
        rgb = make_photo(70 + 10 * i, 100 - 8 * i, 40 + i).astype(np.float32) / 255
        view = full.network_input(full.rgb_to_l(rgb))
        a, b = full.predict_chroma(view), int8.predict_chroma(view)
        net.append(np.abs(a - b))
        spread.append(a.std(axis=(2, 3)).mean())
        out = int8.colorize_rgb(rgb)
        assert out.shape == rgb.shape and np.isfinite(out).all()
        rgb_diff.append(np.abs(full.colorize_rgb(rgb) - out).max())
    if name == "test_l2":
        assert np.mean(spread) > 5  # colours that vary across the photo: the comparison means something
    assert np.mean([d.mean() for d in net]) <= NET_MEAN_TOL
    assert max(d.max() for d in net) <= NET_MAX_TOL
    assert max(rgb_diff) <= RGB_MAX_TOL


def test_int8_needs_calibrate_and_respects_overwrite(tmp_path, weights_of, calib_dir):
    runner = CliRunner()
    out = tmp_path / "q.onnx"
    base = ["export", "--weights", f"test_l2={weights_of('test_l2')}", "-o", str(out)]
    res = runner.invoke(app, [*base, "--int8"])
    assert res.exit_code == 2 and "--int8 needs --calibrate FOLDER" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not out.exists()
    res = runner.invoke(app, [*base, "--calibrate", str(calib_dir)])
    assert res.exit_code == 2 and "--calibrate is for --int8" in res.output
    res = runner.invoke(app, [*base, "--int8", "--calibrate", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "nowhere: no such folder" in res.output and not out.exists()

    out.write_bytes(b"someone's file")
    res = runner.invoke(app, [*base, "--int8", "--calibrate", str(calib_dir), "--calibrate-count", "2"])
    assert res.exit_code == 2 and "q.onnx: exists (use --overwrite to replace it)" in res.output
    assert out.read_bytes() == b"someone's file"
    res = runner.invoke(app, [*base, "--int8", "--calibrate", str(calib_dir), "--calibrate-count", "2", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert OnnxBackend(out, device="cpu").info.precision.startswith("int8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]  # no temp file left


def test_calibration_sample_is_spread_and_deterministic(tmp_path):
    for i in range(10):
        (tmp_path / f"{i:02d}.png").write_bytes(b"")
    (tmp_path / "film.mp4").write_bytes(b"")
    picked = calibration_photos(tmp_path, 4)
    assert [p.name for p in picked] == ["00.png", "02.png", "05.png", "07.png"]
    assert picked == calibration_photos(tmp_path, 4)
    assert len(calibration_photos(tmp_path, 64)) == 10
    with pytest.raises(QuantizeError, match="--calibrate-count must be between 1 and"):
        calibration_photos(tmp_path, 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(QuantizeError, match="empty: no photos to calibrate on"):
        calibration_photos(empty, 4)


def test_unreadable_calibration_folder_writes_nothing(tmp_path, weights_of):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"junk")
    with pytest.raises(QuantizeError, match=r"none of the 1 calibration photos could be read \(.*a\.jpg"):
        export_int8("test_l2", tmp_path / "q.onnx", calibrate=d, weights=weights_of("test_l2"))
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize(("name", "args"), [("test_l2", {}), ("test_mcl", {"neutral_radius": 10.0}),
                                           ("test_mcl", {"neutral_radius": 10.0, "cf_head": True})])
def test_float_nodes_are_the_decoding_and_the_head(name, args):
    from colorcli.export import _Decoded, _trace_to_bytes

    model = create_model(name, **args).eval()
    data = _trace_to_bytes(_Decoded(model, temperature=None), (torch.rand(1, 1, 64, 64) * 100,),
                           input_names=["L"], output_names=["chroma"], dynamic_axes={}, opset=17)
    proto = onnx.load_from_string(data)
    names = float_node_names(proto, tail=1, decode=True)
    convs = [n.name for n in proto.graph.node if n.op_type == "Conv"]
    assert names[0] == convs[-1] and convs[-2] not in names
    # every step of the decoding (the neutral gate's second softmax too) stays float
    assert {n.name for n in proto.graph.node if n.op_type in ("Softmax", "Einsum", "Mul", "Gemm")} <= set(names)
    assert float_node_names(proto, tail=0, decode=False) == []


def test_eval_scores_an_int8_file(exported, calib_dir, tmp_path):
    """``eval --weights NAME=FILE.onnx`` scores an ONNX file on onnxruntime: int8 against fp32."""
    fp32, q, _ = exported("test_l2")
    scores = {}
    for label, path in (("fp32", fp32), ("int8", q)):
        res = CliRunner().invoke(app, ["eval", str(calib_dir), "--weights", f"test_l2={path}", "--json", "-q",
                                       "--threads", "1"])
        assert res.exit_code == 1, res.output  # broken.jpg is reported, the rest is scored
        system = json.loads(res.stdout)["systems"]["test_l2"]
        assert system["source"] == str(path) and system["images"] == 6
        scores[label] = system
    assert scores["int8"]["psnr"] == pytest.approx(scores["fp32"]["psnr"], abs=0.2)
    assert scores["int8"]["cf_pred"] == pytest.approx(scores["fp32"]["cf_pred"], abs=0.5)
