"""ONNX export and the torch-free onnxruntime backend: checker, metadata, parity, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from colorcli.cli import app
from colorcli.errors import ColorcliError, WeightsError
from colorcli.export import PARITY_TOL, ExportError, export_model
from colorcli.inference import Colorizer, InferenceSettings, OnnxBackend, backends, render
from colorcli.models import create_model, list_models

TEST_MODELS = [n for n in list_models(include_test=True) if n.startswith("test_")]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """name -> (model, ExportReport); each tiny model exported once for the whole module."""
    folder = tmp_path_factory.mktemp("onnx")
    done: dict = {}

    def get(name: str):
        if name not in done:
            torch.manual_seed(0)
            model = create_model(name).eval()
            done[name] = (model, export_model(model, folder / f"{name}.onnx"))
        return done[name]

    return get


def _photo_l(shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """Photo-like L (B, 1, H, W): a smooth pattern plus texture, in [0, 100]."""
    b, h, w = shape
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = 50 + 40 * torch.sin(7 * x + 3 * y)
    return (base + 8 * torch.rand(b, 1, h, w, generator=g)).clamp(0, 100)


def test_every_family_has_a_test_variant_to_export():
    families = {create_model(n).family for n in list_models()}
    assert families <= {create_model(n).family for n in TEST_MODELS}


@pytest.mark.parametrize("name", TEST_MODELS)
def test_export_checker_metadata_parity(name, exports):
    model, report = exports(name)
    proto = onnx.load(str(report.path))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["colorcli_format"] == backends.ONNX_FORMAT
    assert meta["model"] == name
    assert meta["chroma_space"] == model.chroma_space
    assert int(meta["default_size"]) == model.config.default_size
    assert json.loads(meta["normalisation"]) == json.loads(json.dumps(model.normalisation()))
    decode = json.loads(meta["decode"])
    assert decode["kind"] == model.decode_info()["kind"] and decode["applied_in_graph"]
    if "temperature" in model.decode_info():
        assert json.loads(meta["temperature"]) == pytest.approx(model.decode_info()["temperature"])
        assert len(decode.get("centres", decode.get("means"))) > 2  # the bins are documented
    else:
        assert json.loads(meta["temperature"]) is None and "scale" in decode
    assert len(report.parity) == 3 and all(d <= PARITY_TOL for _, d in report.parity)

    # Independently of the export's own check: dynamic batch/H/W at sizes it did not trace.
    sess = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    for i, shape in enumerate([(1, 32, 96), (3, 128, 64), (1, 160, 224)]):
        L = _photo_l(shape, i)
        with torch.inference_mode():
            ref = model.decode(model(L)).numpy()
        got = sess.run(None, {"L": L.numpy()})[0]
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= PARITY_TOL


def test_export_keeps_the_neutral_gate(tmp_path):
    """mcl's neutral-gated decoding runs inside the graph and matches torch."""
    torch.manual_seed(0)
    model = create_model("test_mcl", neutral_radius=10.0, chroma_gain=1.15).eval()
    report = export_model(model, tmp_path / "gated.onnx")
    assert all(d <= PARITY_TOL for _, d in report.parity)
    meta = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    decode = json.loads(meta["decode"])
    assert decode["neutral_radius"] == 10.0 and decode["chroma_gain"] == 1.15
    sess = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    L = _photo_l((2, 64, 96), 7)
    with torch.inference_mode():
        ref = model.decode(model(L)).numpy()
        plain = create_model("test_mcl").eval()
        plain.load_state_dict(model.state_dict())
        ungated = plain.decode(plain(L)).numpy()
    got = sess.run(None, {"L": L.numpy()})[0]
    assert np.abs(got - ref).max() <= PARITY_TOL
    assert np.abs(got - ungated).max() > 2 * PARITY_TOL  # the gate and gain really are in the graph


@pytest.mark.parametrize("hidden", [0, 8])
def test_export_keeps_the_per_photo_gain(tmp_path, hidden):
    """mcl's cf_head (linear, or with a hidden layer): the pooled features, the gain and its
    soft bound run inside the graph."""
    torch.manual_seed(0)
    model = create_model("test_mcl", neutral_radius=10.0, cf_head=True, cf_hidden=hidden).eval()
    with torch.no_grad():
        for p in model.cf_head.parameters():
            p.normal_(0, 2.0)
    report = export_model(model, tmp_path / "gain.onnx")
    assert all(d <= PARITY_TOL for _, d in report.parity)
    assert json.loads({p.key: p.value for p in onnx.load(str(report.path)).metadata_props}["decode"])["log_gain_channel"]
    sess = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    L = _photo_l((2, 64, 96), 7)
    with torch.inference_mode():
        ref = model.decode(model(L)).numpy()
        plain = create_model("test_mcl", neutral_radius=10.0).eval()
        plain.load_state_dict(model.state_dict(), strict=False)
        ungained = plain.decode(plain(L)).numpy()
    got = sess.run(None, {"L": L.numpy()})[0]
    assert np.abs(got - ref).max() <= PARITY_TOL
    assert np.abs(got - ungained).max() > 2 * PARITY_TOL


def test_fp16_export(tmp_path, tiny_weights):
    from colorcli.weights import load_weights

    model = load_weights(tiny_weights)  # float16 values, as every colorcli weights file holds
    full = export_model(model, tmp_path / "a.onnx")
    half = export_model(model, tmp_path / "b.onnx", fp16=True)
    assert half.bytes < 0.75 * full.bytes
    assert "fp16" in half.metadata["precision"]
    # Storing float16 values as float16 loses nothing: as close to PyTorch as the fp32 file.
    assert max(d for _, d in half.parity) < 1e-3
    sess = ort.InferenceSession(str(half.path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == sess.get_outputs()[0].type == "tensor(float)"


class _TraceDiffers(torch.nn.Module):
    """A model whose traced graph differs from its eager forward: the parity check must catch it."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.arch, self.config, self.chroma_space = inner.arch, inner.config, inner.chroma_space

    def forward(self, L):
        raw = self.inner(L)
        return raw + 3.0 if torch.jit.is_tracing() else raw

    def decode(self, raw, *, temperature=None):
        return self.inner.decode(raw, temperature=temperature)

    def decode_info(self):
        return self.inner.decode_info()

    def config_dict(self):
        return self.inner.config_dict()


def test_export_fails_loudly_when_onnx_differs(tmp_path):
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match=r"differs from PyTorch by .* limit 0.5; .* not written"):
        export_model(_TraceDiffers(create_model("test_l2")), out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_model_refuses_an_existing_file(tmp_path):
    out = tmp_path / "taken.onnx"
    out.write_bytes(b"someone's file")
    with pytest.raises(ExportError, match=r"taken\.onnx: exists \(use --overwrite to replace it\)"):
        export_model(create_model("test_l2"), out)
    assert out.read_bytes() == b"someone's file"


def test_onnx_default_size_from_metadata_is_bounded(tmp_path):
    from colorcli.inference.backends import ONNX_FORMAT, ONNX_FORMAT_VERSION, read_onnx_info

    meta = {"colorcli_format": ONNX_FORMAT, "colorcli_format_version": str(ONNX_FORMAT_VERSION),
            "chroma_space": "lab", "default_size": "160", "model": "mcl"}
    assert read_onnx_info(meta, tmp_path / "m.onnx").default_size == 160
    for bad in ("32768", "100", "-32", "1000000000"):
        with pytest.raises(WeightsError, match=rf"m\.onnx: config default_size = .* is out of bounds"):
            read_onnx_info({**meta, "default_size": bad}, tmp_path / "m.onnx")


def test_export_refuses_other_suffix(tmp_path):
    with pytest.raises(ExportError, match=r"must end in \.onnx"):
        export_model(create_model("test_l2"), tmp_path / "w.safetensors")


def test_cli_export(tiny_weights, tmp_path):
    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(app, ["export", "--model", "test_mcl", "--weights", str(tiny_weights), "-o", str(out),
                                   "--opset", "17", "--temperature", "0.5"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out)
    assert res.stderr.count("parity ") == 3
    meta = OnnxBackend(out, device="cpu").info.meta
    assert json.loads(meta["weights"])["sha256"]
    assert json.loads(meta["temperature"]) == 0.5

    # An existing file is never replaced without --overwrite (refused before any tracing) ...
    before = out.read_bytes()
    args = ["export", "--model", "test_mcl", "--weights", str(tiny_weights), "-o", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and res.stderr.strip() == f"error: {out}: exists (use --overwrite to replace it)"
    assert out.read_bytes() == before and res.stdout == ""
    # ... and with it, replaced atomically: the new export, no temp file beside it.
    res = CliRunner().invoke(app, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert json.loads(OnnxBackend(out, device="cpu").info.meta["temperature"]) == 0.38
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]

    res = CliRunner().invoke(app, ["export", "--model", "nope", "-o", str(tmp_path / "x.onnx")])
    assert res.exit_code == 2 and "unknown model 'nope'" in res.stderr
    res = CliRunner().invoke(app, ["export", "--model", "test_l2", "--weights", str(tiny_weights),
                                   "-o", str(tmp_path / "x.onnx")])
    assert res.exit_code == 2 and "holds weights for model 'test_mcl'" in res.stderr
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("name", ["test_mcl", "test_luv50", "test_unet"])
def test_onnx_colorizer_matches_torch_pipeline(name, exports, make_photo):
    """Same photo, torch backend vs onnxruntime backend: within 1/255 (here far closer)."""
    model, report = exports(name)
    oc = Colorizer(OnnxBackend(report.path, device="cpu"))
    tc = Colorizer.from_model(model)
    for shape, seed in [((48, 64), 1), ((37, 53), 2), ((90, 41), 3)]:
        rgb = make_photo(*shape, seed).astype(np.float32) / 255
        gray = np.broadcast_to(rgb.mean(axis=2, keepdims=True), rgb.shape)  # the reader's gray view
        for img in (rgb, gray):
            a, b = oc.colorize_rgb(img), tc.colorize_rgb(img)
            assert a.shape == b.shape == (*shape, 3)
            assert np.abs(a - b).max() <= 1 / 255


@pytest.mark.parametrize("src,dst", [((17, 23), (68, 92)), ((17, 23), (300, 411)), ((64, 96), (37, 53)),
                                     ((5, 5), (5, 5))])
def test_upsample_band_matches_interpolate(src, dst):
    rng = np.random.default_rng(0)
    c = rng.standard_normal((2, *src)).astype(np.float32)
    h, w = dst
    up = np.concatenate([render.upsample_band(c, h, w, r0, r1) for r0, r1 in [(0, h // 3), (h // 3, h)]], axis=1)
    ref = F.interpolate(torch.from_numpy(c)[None], size=dst, mode="bilinear", align_corners=False)[0].numpy()
    assert np.abs(up - ref).max() < 1e-4


def test_gray_codes_give_identical_l():
    """The 8/16-bit gray lookup gives the per-pixel conversion's values, and refuses the rest."""
    rng = np.random.default_rng(0)
    for top, dtype in ((255, np.uint8), (65535, np.uint16)):
        plane = rng.integers(0, top + 1, (30, 41)).astype(dtype).astype(np.float32) / top
        rgb = np.broadcast_to(plane[..., None], (30, 41, 3))
        codes, levels = render.gray_codes(rgb)
        assert codes.dtype == dtype and np.array_equal(levels[codes], plane)
        full = np.ascontiguousarray(rgb)  # not a broadcast view: the per-pixel path
        assert render.gray_codes(full) is None
        # Equal up to one float32 ulp: the per-pixel path itself rounds its vectorised and
        # leftover elements differently, and the lookup takes the vectorised result.
        fast, slow = render.rgb_to_l(rgb), render.rgb_to_l(full)
        np.testing.assert_allclose(fast, slow, rtol=2.5e-7, atol=0)
        assert (fast != slow).mean() < 0.01
    odd = np.broadcast_to(np.full((4, 4, 1), 0.3337, np.float32), (4, 4, 3))
    assert render.gray_codes(odd) is None
    nan = np.broadcast_to(np.full((4, 4, 1), np.nan, np.float32), (4, 4, 3))
    assert render.gray_codes(nan) is None


def test_onnx_colorizer_errors(exports, tmp_path):
    _, report = exports("test_mcl")
    with pytest.raises(WeightsError, match="ONNX file not found"):
        OnnxBackend(tmp_path / "none.onnx")
    # A valid ONNX file that colorcli did not export: no metadata.
    node = onnx.helper.make_node("Identity", ["L"], ["chroma"])
    vi = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "other", [vi("L", onnx.TensorProto.FLOAT, [1])],
                                   [vi("chroma", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), tmp_path / "other.onnx")
    with pytest.raises(WeightsError, match="not an ONNX file exported by `colorcli export`"):
        OnnxBackend(tmp_path / "other.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(WeightsError, match="cannot load the ONNX model"):
        OnnxBackend(tmp_path / "junk.onnx")
    with pytest.raises(ColorcliError, match="exported with temperature 0.38"):
        OnnxBackend(report.path, temperature=0.1)
    with pytest.raises(WeightsError, match="holds model 'test_mcl', not 'mcl'"):
        OnnxBackend.from_name("mcl", report.path)
    OnnxBackend(report.path, temperature=0.38)  # the baked value is fine


def test_onnx_file_found_in_weights_folder(exports, tmp_path, monkeypatch):
    _, report = exports("test_mcl")
    monkeypatch.setenv("COLORCLI_WEIGHTS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ColorcliError, match=r"no ONNX file .*`colorcli export --model test_mcl"):
        Colorizer.from_name("test_mcl", backend="onnx")
    (tmp_path / "test_mcl.onnx").write_bytes(report.path.read_bytes())
    found = Colorizer.from_name("test_mcl", backend="onnx", settings=InferenceSettings(device="cpu", size=96))
    assert found.backend.path == tmp_path / "test_mcl.onnx" and found.size == 96


def test_colorize_cli_without_torch(exports, tiny_weights, photo_dir, tmp_path):
    """`colorize --backend onnx` runs where `import torch` fails, and matches the torch backend."""
    onnx_file = tmp_path / "test_mcl.onnx"
    res = CliRunner().invoke(app, ["export", "--model", "test_mcl", "--weights", str(tiny_weights),
                                   "-o", str(onnx_file)])
    assert res.exit_code == 0, res.output
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from colorcli.cli import app
        try:
            app(["colorize", {str(photo_dir)!r}, "-o", {str(tmp_path / "onnx")!r}, "--model", "test_mcl",
                 "--backend", "onnx", "--onnx", {str(onnx_file)!r}, "--device", "cpu"], prog_name="colorcli")
        finally:
            assert "torch" not in {{k.split(".")[0] for k, v in sys.modules.items() if v is not None}}
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "done 3, skipped 0, failed 0"

    res = CliRunner().invoke(app, ["colorize", str(photo_dir), "-o", str(tmp_path / "torch"), "--model", "test_mcl",
                                   "--weights", str(tiny_weights), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["colorize", str(photo_dir), "--model", "test_mcl", "--backend", "onnx",
                                   "--weights", str(tiny_weights)])
    assert res.exit_code == 2 and "--onnx with --backend onnx" in res.stderr
    for name in ("a_color_test_mcl.png", "b_color_test_mcl.png", "c_color_test_mcl.png"):  # non-default model: named
        a = np.asarray(Image.open(tmp_path / "onnx" / name), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "torch" / name), dtype=np.int16)
        assert a.shape == b.shape
        diff = np.abs(a - b)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, name


def test_commands_without_torch(tmp_path):
    """Without torch: `models` lists the shipped models, `eval`/`train`/`export` say in one line
    how to get torch, and nothing imports torch on the way."""
    script = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None
        from colorcli.cli import app
        for args in (["models"], ["eval", "."], ["train", "-m", "mcl", "-o", "w.safetensors"],
                     ["export", "--shipped", "mcl"]):
            try:
                app(args, prog_name="colorcli")
            except SystemExit as exc:
                print("exit", args[0], exc.code)
        assert "torch" not in {k.split(".")[0] for k, v in sys.modules.items() if v is not None}
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "exit models 0" in proc.stdout and "mcl" in proc.stdout
    for cmd in ("eval", "train", "export"):
        assert f"exit {cmd} 2" in proc.stdout
        assert f'`colorcli {cmd}` needs PyTorch: pip install "colorcli[train]"' in proc.stderr
