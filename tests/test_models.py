"""Every registered model: forward, decode, backward, save -> load, training steps, pipeline.

Full-size families are exercised through their tiny ``test_*`` variants (same code, few
channels); the full-size defaults are built once and run at 64x64 to prove they work too.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from colorcli import color
from colorcli.data import prepare
from colorcli.errors import ColorcliError, WeightsError
from colorcli.models import count_parameters, create_model, list_models
from colorcli.pipeline import Colorizer
from colorcli.train import TrainConfig, train
from colorcli.weights import load_weights, save_weights

REGISTERED = {
    "densenet", "fusion", "l2", "luv50", "mcl", "unet", "unet_paper",
    "test_densenet", "test_fusion", "test_l2", "test_luv50", "test_mcl", "test_unet",
}
TINY = sorted(n for n in REGISTERED if n.startswith("test_"))
# Full-size defaults run once at 64x64; the paper-width U-Net only has its size checked.
FULL = sorted(n for n in REGISTERED if not n.startswith("test_") and n != "unet_paper")
SIZES = [(64, 96), (96, 32)]


def _chroma_bound(model) -> float:
    """The largest |chroma| a model can decode to, from its own declared output range."""
    if model.chroma_space == "luv":
        return model.config.span
    return getattr(model.config, "ab_scale", color.AB_NORM) + 1e-3


def _photo_batch(make_photo, h: int, w: int, n: int = 2) -> dict[str, torch.Tensor]:
    rgb = torch.stack(
        [torch.from_numpy(make_photo(h, w, seed=i)).permute(2, 0, 1).float() / 255 for i in range(n)]
    )
    lab = color.rgb_to_lab(rgb)
    return {"L": lab[:, :1], "ab": lab[:, 1:], "rgb": rgb}


def test_registry_population():
    assert set(list_models(include_test=True)) == REGISTERED
    assert set(list_models()) == {n for n in REGISTERED if not n.startswith("test_")}


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_forward_and_decode(name, hw):
    torch.manual_seed(0)
    model = create_model(name).eval()
    h, w = hw
    L = torch.rand(2, 1, h, w) * 100
    with torch.no_grad():
        raw = model(L)
    stride = model.decode_info()["stride"]
    assert raw.shape[0] == 2 and raw.shape[-2:] == (h // stride, w // stride)
    assert torch.isfinite(raw).all()
    temps = [None, 0.0, 0.38] if model.decode_info()["kind"] != "regression" else [None]
    for t in temps:
        chroma = model.decode(raw, temperature=t)
        assert chroma.shape == (2, 2, h // stride, w // stride)
        assert torch.isfinite(chroma).all()
        assert chroma.abs().max() <= _chroma_bound(model)


def test_full_size_defaults_build_and_run():
    L = torch.linspace(0, 100, 64 * 64).view(1, 1, 64, 64)
    for name in FULL:
        torch.manual_seed(0)
        model = create_model(name, pretrained=False).eval()
        assert model.config.default_size % 32 == 0
        with torch.no_grad():
            chroma = model.decode(model(L))
        stride = model.decode_info()["stride"]
        assert chroma.shape == (1, 2, 64 // stride, 64 // stride), name
        assert torch.isfinite(chroma).all(), name
        assert chroma.abs().max() <= _chroma_bound(model), name


def test_unet_paper_has_the_papers_size():
    model = create_model("unet_paper")
    assert model.config.base_width == 64 and model.config.depth == 5
    assert 30.5e6 < count_parameters(model) < 31.5e6  # Ronneberger et al.: ~31M
    assert 1.5e6 < count_parameters(create_model("unet")) < 2.5e6  # CPU-trainable default


@pytest.mark.parametrize("name", TINY)
def test_backward_gives_finite_grads(name, make_photo):
    torch.manual_seed(0)
    model = create_model(name).train()
    batch = _photo_batch(make_photo, 64, 96)
    loss = model.loss(model(batch["L"]), batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in params if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for _, p in params)
    assert any(p.grad.abs().sum() > 0 for _, p in params)


@pytest.mark.parametrize("name", TINY)
def test_save_load_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name).eval()
    # Perturb BN statistics so the running buffers are part of what must survive the trip.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.8, 1.2)
    path = save_weights(model, tmp_path / f"{name}.safetensors")
    loaded = load_weights(path, expect_arch=name)
    assert loaded.arch == name and loaded.config == model.config
    # Weights are stored in fp16: compare with the model rounded the same way.
    ref = copy.deepcopy(model)
    ref.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                         for k, v in model.state_dict().items()})
    L = torch.rand(1, 1, 64, 96) * 100
    with torch.no_grad():
        torch.testing.assert_close(loaded(L), ref(L), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(loaded.decode(loaded(L)), model.decode(model(L)), atol=0.5, rtol=0)


@pytest.mark.parametrize("name", sorted(REGISTERED))
def test_config_round_trips_through_json(name):
    model = create_model(name, pretrained=False)
    cfg = json.loads(json.dumps(model.config_dict()))
    rebuilt = create_model(name, **cfg)
    assert rebuilt.config == model.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


@pytest.mark.parametrize("name", TINY)
def test_pipeline_colorizes_odd_sized_image(name):
    torch.manual_seed(0)
    L = np.linspace(0, 100, 45 * 71, dtype=np.float32).reshape(45, 71)
    rgb = Colorizer(create_model(name)).colorize_l(L)
    assert rgb.shape == (45, 71, 3)
    assert np.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 1


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory, make_photo):
    src = tmp_path_factory.mktemp("photos")
    for i in range(12):
        Image.fromarray(make_photo(64, 64, seed=i)).save(src / f"p{i:02d}.png")
    res = prepare([src], tmp_path_factory.mktemp("cache") / "train.npz", size=32)
    assert res.kept == 12
    return res.path


@pytest.mark.parametrize("name", TINY)
def test_two_training_steps(name, tiny_cache, tmp_path):
    out = tmp_path / f"{name}.safetensors"
    cfg = TrainConfig(model=name, data=[str(tiny_cache)], out=str(out), max_steps=2,
                      batch_size=4, size=32, device="cpu", cache_dir=str(tmp_path / "cache"))
    result = train(cfg)
    assert result.steps == 2 and not result.interrupted
    loaded = load_weights(result.weights, expect_arch=name)
    with torch.no_grad():
        assert torch.isfinite(loaded(torch.full((1, 1, 32, 32), 50.0))).all()


@pytest.mark.parametrize("name", ["test_unet", "test_fusion", "test_densenet"])
def test_from_scratch_models_refuse_pretrained(name):
    with pytest.raises(WeightsError, match="pretrained"):
        create_model(name, pretrained=True)


def test_unet_loss_choice(make_photo):
    batch = _photo_batch(make_photo, 32, 32)
    raw = torch.zeros(2, 2, 32, 32)
    target = batch["ab"] / 128
    l1 = create_model("test_unet", loss="l1").loss(raw, batch)
    l2 = create_model("test_unet", loss="l2").loss(raw, batch)
    torch.testing.assert_close(l1, target.abs().mean())
    torch.testing.assert_close(l2, (target**2).mean())
    with pytest.raises(ColorcliError, match="loss"):
        create_model("test_unet", loss="huber")


def test_fusion_global_branch_sees_fixed_size():
    model = create_model("test_fusion").eval()
    seen = []
    model.global_convs.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    with torch.no_grad():
        for hw in [(32, 64), (128, 96)]:
            model(torch.rand(1, 1, *hw) * 100)
    side = model.config.global_size // 8
    assert seen == [(side, side), (side, side)]


def test_luv50_loss_prefers_true_bins(make_photo):
    torch.manual_seed(0)
    model = create_model("test_luv50")
    batch = _photo_batch(make_photo, 32, 48)
    h, w = 8, 12
    tu, tv = model.targets(batch["rgb"], (h, w))
    n = model.config.bins

    def logits(iu: torch.Tensor, iv: torch.Tensor) -> torch.Tensor:
        onehot = lambda i: torch.nn.functional.one_hot(i, n).permute(0, 3, 1, 2).float()  # noqa: E731
        return 8.0 * torch.cat([onehot(iu), onehot(iv)], dim=1)

    right = model.loss(logits(tu, tv), batch)
    flat = model.loss(torch.zeros(2, 2 * n, h, w), batch)
    wrong = model.loss(logits((tu + n // 2) % n, (tv + n // 2) % n), batch)
    assert right < flat < wrong
    torch.testing.assert_close(flat, torch.tensor(2 * np.log(n), dtype=torch.float32))
    # The mode decodes to the true bins' means, within half a bin of the real U/V.
    uv = model.decode(logits(tu, tv), temperature=0.0)
    real = torch.nn.functional.adaptive_avg_pool2d(color.rgb_to_luv(batch["rgb"])[:, 1:], (h, w))
    half_bin = model.config.span / n
    inside = real.abs() < model.config.span
    assert ((uv - real).abs()[inside] <= half_bin + 1e-3).all()
    # Uniform logits decode to the middle of the range (the bins are symmetric about 0).
    assert model.decode(torch.zeros(1, 2 * n, 2, 2)).abs().max() < 1e-4


@pytest.mark.parametrize("name", TINY)
def test_weights_metadata_states_the_normalisation_the_model_computes(name, tmp_path):
    from colorcli.models.base import normalise_l
    from colorcli.weights import read_metadata

    model = create_model(name, pretrained=False).eval()
    path = save_weights(model, tmp_path / "m.safetensors")
    norm = read_metadata(path)["normalisation"]
    assert norm == json.loads(json.dumps(model.normalisation()))
    # The input the metadata states is the one every forward uses: L = 0, 50, 100 -> -1, 0, 1.
    assert norm["input"].startswith("(L / 100 - 0.5) / 0.5")
    assert normalise_l(torch.tensor([0.0, 50.0, 100.0])).tolist() == [-1.0, 0.0, 1.0]
    assert norm["chroma_space"] == model.chroma_space
    info = model.decode_info()
    if info["kind"] == "regression":
        # The stated ab normalisation is the network's real one: a raw output of 1 decodes to
        # ab_norm (unet: 128, not 110), and a raw output equal to the stated target has zero loss.
        raw1 = torch.ones(1, 2, 4, 4)
        offset = info.get("offset", 0.0)
        assert float(model.decode(raw1)[0, 0, 0, 0]) == pytest.approx(info["scale"] + offset)
        ab = torch.full((1, 2, 4, 4), 30.0)
        target = ab / norm["ab_norm"]
        if info.get("activation") == "sigmoid":
            target = (target + 1) / 2
        batch = {"L": torch.full((1, 1, 4, 4), 50.0), "ab": ab, "rgb": torch.zeros(1, 3, 4, 4)}
        assert float(model.loss(target, batch)) == pytest.approx(0.0, abs=1e-12)
    if name == "test_unet":
        assert norm["ab_norm"] == 128.0


@pytest.mark.parametrize("name", TINY)
def test_training_interface(name):
    """What the trainer asks of a model: the encoder to freeze and train gently (only when it
    starts pretrained), and the data-dependent loss set-up."""
    model = create_model(name, pretrained=False)
    assert model.pretrained_encoder() is None
    encoder = model.image_encoder()
    if encoder is not None:
        assert any(p is q for p in encoder.parameters() for q in model.parameters())
        flagged = create_model(name, pretrained=False)
        import dataclasses

        flagged.config = dataclasses.replace(flagged.config, pretrained=True)
        assert flagged.pretrained_encoder() is flagged.image_encoder()
    counts = np.arange(len(color.gamut_bins()), dtype=np.int64) + 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.prepare_targets(counts)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    if name == "test_mcl":
        assert changed == {"prior", "class_weights"}
    else:  # nothing else depends on the data
        assert changed == set()
