"""The Zhang et al. machinery behind ``mcl``: soft encoding, class rebalancing, annealed mean,
and the rebalanced cross-entropy, checked on hand-made values against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from colorcli import color
from colorcli.models import create_model
from colorcli.models.mcl import gain_loss, rebalanced_cross_entropy

CENTRES = torch.from_numpy(color.gamut_bins())
Q = CENTRES.shape[0]
SIGMA = 5.0


def _index(a: float, b: float) -> int:
    """Index of the bin centred on (a, b); fails the test if that bin is not in gamut."""
    hits = ((CENTRES[:, 0] == a) & (CENTRES[:, 1] == b)).nonzero().flatten()
    assert len(hits) == 1, f"({a}, {b}) is not a gamut bin centre"
    return int(hits[0])


def _pixels(*ab: tuple[float, float]) -> torch.Tensor:
    """Hand-made ab pixels -> ``(1, 2, 1, N)``."""
    return torch.tensor(ab, dtype=torch.float32).T.reshape(1, 2, 1, len(ab))


# ---------------------------------------------------------------------------------------------
# soft encoding


def test_pixel_on_a_centre_puts_most_weight_there():
    enc = color.soft_encode(_pixels((10.0, 20.0)), CENTRES, neighbours=5, sigma=SIGMA)
    assert enc.shape == (1, Q, 1, 1)
    w = enc[0, :, 0, 0]
    centre = _index(10, 20)
    ring = [_index(0, 20), _index(20, 20), _index(10, 10), _index(10, 30)]
    assert int(w.argmax()) == centre
    assert set(w.nonzero().flatten().tolist()) == {centre, *ring}
    # Four neighbours at distance 10: each weighs exp(-10² / (2σ²)) = e^-2 of the centre.
    e2 = math.exp(-(10.0**2) / (2 * SIGMA**2))
    assert w[centre].item() == pytest.approx(1 / (1 + 4 * e2), abs=1e-6)
    for i in ring:
        assert (w[i] / w[centre]).item() == pytest.approx(e2, rel=1e-5)


def test_off_centre_pixel_closed_form():
    # (13, 24): squared distances 25, 45, 65, 85, 185 to its five nearest centres.
    enc = color.soft_encode(_pixels((13.0, 24.0)), CENTRES, neighbours=5, sigma=SIGMA)[0, :, 0, 0]
    near = {(10, 20): 25, (10, 30): 45, (20, 20): 65, (20, 30): 85, (0, 20): 185}
    g = {k: math.exp(-d2 / (2 * SIGMA**2)) for k, d2 in near.items()}
    total = sum(g.values())
    for (a, b), gk in g.items():
        assert enc[_index(a, b)].item() == pytest.approx(gk / total, rel=1e-5)
    assert (enc > 0).sum().item() == 5
    assert int(enc.argmax()) == _index(10, 20)


def test_soft_encoding_sums_to_one_and_keeps_the_layout():
    g = torch.Generator().manual_seed(0)
    ab = (torch.rand(2, 2, 3, 4, generator=g) - 0.5) * 120
    enc = color.soft_encode(ab, CENTRES)
    assert enc.shape == (2, Q, 3, 4)
    torch.testing.assert_close(enc.sum(dim=1), torch.ones(2, 3, 4))
    assert ((enc > 0).sum(dim=1) == 5).all()
    # Pixel (b=1, y=2, x=3) is encoded on its own: no mixing of the spatial layout.
    alone = color.soft_encode(ab[1:, :, 2:, 3:], CENTRES)
    torch.testing.assert_close(enc[1, :, 2, 3], alone[0, :, 0, 0])
    # The heaviest bin is the nearest one (the hard assignment).
    torch.testing.assert_close(enc.argmax(dim=1), color.ab_to_bin_index(ab, CENTRES))


def test_neighbours_setting_is_respected():
    enc = color.soft_encode(_pixels((0.0, 0.0)), CENTRES, neighbours=1)
    assert enc[0, _index(0, 0), 0, 0].item() == 1.0
    assert (enc > 0).sum().item() == 1


# ---------------------------------------------------------------------------------------------
# prior and rebalancing weights


def test_smooth_prior_closed_form_on_a_line():
    centres = np.array([[0, 0], [10, 0], [20, 0]], dtype=np.float32)
    sp = color.smooth_prior(np.array([6, 0, 0]), centres, sigma=SIGMA)
    k = np.exp(-np.array([0.0, 100.0, 400.0]) / (2 * SIGMA**2))
    np.testing.assert_allclose(sp, k / k.sum(), rtol=1e-9)
    # A tiny sigma leaves the empirical distribution as it was.
    np.testing.assert_allclose(
        color.smooth_prior(np.array([3, 1, 0]), centres, sigma=0.1), [0.75, 0.25, 0.0], atol=1e-12
    )


def _hand_prior() -> np.ndarray:
    counts = np.zeros(Q)
    counts[_index(0, 0)] = 5000  # gray dominates real photos
    counts[_index(10, 20)] = 800
    counts[_index(-30, 40)] = 60
    counts[_index(60, 50)] = 5
    return color.smooth_prior(counts, CENTRES.numpy(), sigma=SIGMA)


def test_prior_is_a_distribution_peaked_where_the_counts_are():
    p = _hand_prior()
    assert p.shape == (Q,) and p.sum() == pytest.approx(1.0) and (p >= 0).all()
    assert int(p.argmax()) == _index(0, 0)


# (lam = 0 is pure 1/p: infinite for the bins no photo reaches, which is why lam > 0.)
@pytest.mark.parametrize("lam", [0.1, 0.5, 0.9])
def test_rebalance_weights_expectation_is_one_and_rare_bins_weigh_more(lam):
    p = _hand_prior()
    w = color.rebalance_weights(p, lam=lam).astype(np.float64)
    assert w.shape == (Q,) and (w > 0).all()
    assert (p * w).sum() == pytest.approx(1.0, rel=1e-6)
    # Sorted from common to rare, the weights never decrease; the extremes differ.
    order = np.argsort(-p, kind="stable")
    assert np.all(np.diff(w[order]) >= -1e-6 * w.max())
    assert w[_index(60, 50)] > w[_index(10, 20)] > w[_index(0, 0)]


def test_lam_one_gives_uniform_weights():
    w = color.rebalance_weights(_hand_prior(), lam=1.0)
    np.testing.assert_allclose(w, np.ones(Q), rtol=1e-6)


def test_lam_half_closed_form():
    p = np.array([0.7, 0.2, 0.1])
    raw = 1.0 / (0.5 * p + 0.5 / 3)
    expected = raw / (p * raw).sum()
    np.testing.assert_allclose(color.rebalance_weights(p, lam=0.5), expected, rtol=1e-6)


def test_model_set_prior_fills_its_buffers():
    model = create_model("test_mcl")
    counts = np.zeros(Q, dtype=np.int64)
    counts[_index(0, 0)] = 100
    counts[_index(30, -20)] = 3
    model.set_prior(counts)
    p = color.smooth_prior(counts, CENTRES.numpy(), sigma=model.config.sigma)
    torch.testing.assert_close(model.prior, torch.from_numpy(p).float())
    torch.testing.assert_close(
        model.class_weights, torch.from_numpy(color.rebalance_weights(p, lam=model.config.lam))
    )


# ---------------------------------------------------------------------------------------------
# annealed mean


def _logits(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, Q, 3, 5, generator=g, dtype=torch.float64) * 3


@pytest.mark.parametrize("temperature", [0.0, 1e-4, 1e-2])
def test_annealed_mean_at_low_temperature_is_the_mode(temperature):
    logits = _logits()
    top = logits.argmax(dim=1, keepdim=True)
    # Lift each pixel's winner 1 above the rest: at T = 0.01 every other bin then gets at most
    # Q * exp(-1 / 0.01) of the weight, nothing at all in float64.
    logits.scatter_add_(1, top, torch.ones_like(top, dtype=logits.dtype))
    mode = CENTRES.double()[top[:, 0]].permute(0, 3, 1, 2)
    ab = color.annealed_mean(logits, CENTRES, temperature=temperature)
    assert ab.shape == (2, 2, 3, 5)
    torch.testing.assert_close(ab, mode, atol=1e-9, rtol=0)


def test_annealed_mean_at_one_is_the_softmax_mean():
    logits = _logits(1)
    q = torch.softmax(logits, dim=1)
    expected = torch.einsum("bqhw,qc->bchw", q, CENTRES.double())
    got = color.annealed_mean(logits, CENTRES, temperature=1.0)
    # The softmax runs in float32 on purpose (fp16 logits under autocast): 1e-3 ab is plenty.
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=0)


def test_annealed_mean_sharpens_as_t_falls():
    logits = _logits(2)
    mode = color.annealed_mean(logits, CENTRES, temperature=0.0)
    gaps = [
        (color.annealed_mean(logits, CENTRES, temperature=t) - mode).abs().mean().item()
        for t in (1.0, 0.38, 0.1)
    ]
    assert gaps[0] > gaps[1] > gaps[2]


def test_model_decode_uses_its_temperature():
    model = create_model("test_mcl")
    logits = _logits(3).float()
    torch.testing.assert_close(
        model.decode(logits), color.annealed_mean(logits, CENTRES, temperature=0.38)
    )
    torch.testing.assert_close(
        model.decode(logits, temperature=1.0), color.annealed_mean(logits, CENTRES, temperature=1.0)
    )


# ---------------------------------------------------------------------------------------------
# neutral-gated decoding


def _two_bin_logits(p_gray: float, ab: tuple[float, float]) -> torch.Tensor:
    """One pixel whose softmax puts ``p_gray`` on the gray bin and the rest on bin ``ab``."""
    logits = torch.full((1, Q, 1, 1), -60.0, dtype=torch.float64)
    logits[0, _index(0.0, 0.0)] = math.log(p_gray)
    logits[0, _index(*ab)] = math.log(1 - p_gray)
    return logits


def test_gate_off_is_the_annealed_mean():
    logits = _logits(4)
    for t in (0.0, 0.38, 1.0):
        torch.testing.assert_close(
            color.neutral_gated_mean(logits, CENTRES, temperature=t, neutral_radius=0.0),
            color.annealed_mean(logits, CENTRES, temperature=t),
        )


def test_gate_fades_colour_by_the_neutral_mass():
    # At T = 1: half the mass on gray, half on (40, 20): the mean is (20, 10), gated by 1 - 0.5.
    logits = _two_bin_logits(0.5, (40.0, 20.0))
    ab = color.neutral_gated_mean(logits, CENTRES, temperature=1.0, neutral_radius=10.0)
    torch.testing.assert_close(ab[0, :, 0, 0], torch.tensor([10.0, 5.0], dtype=torch.float64))
    # The gain scales the result; the bins within the radius count (10, 0) as neutral too.
    ab = color.neutral_gated_mean(logits, CENTRES, temperature=1.0, neutral_radius=10.0, gain=2.0)
    torch.testing.assert_close(ab[0, :, 0, 0], torch.tensor([20.0, 10.0], dtype=torch.float64))
    near = _two_bin_logits(0.5, (10.0, 0.0))
    got = color.neutral_gated_mean(near, CENTRES, temperature=1.0, neutral_radius=10.0)
    torch.testing.assert_close(got, torch.zeros_like(got))
    # Outside the radius a pale colour is left alone: (20, 0) is not neutral at radius 10.
    pale = _two_bin_logits(1e-9, (20.0, 0.0))
    got = color.neutral_gated_mean(pale, CENTRES, temperature=1.0, neutral_radius=10.0)
    torch.testing.assert_close(got[0, :, 0, 0], torch.tensor([20.0, 0.0], dtype=torch.float64))


def test_gate_keeps_a_confident_colour_and_grays_a_likely_gray():
    sure = _two_bin_logits(0.02, (50.0, -30.0))
    ab = color.neutral_gated_mean(sure, CENTRES, temperature=0.38, neutral_radius=10.0)
    plain = color.annealed_mean(sure, CENTRES, temperature=0.38)
    assert torch.linalg.vector_norm(ab) > 0.99 * torch.linalg.vector_norm(plain)
    # 60 % gray: the annealed mean (T = 0.38 sharpens toward gray) still leaves some colour,
    # which the gate takes most of away.
    unsure = _two_bin_logits(0.6, (50.0, -30.0))
    plain = torch.linalg.vector_norm(color.annealed_mean(unsure, CENTRES, temperature=0.38))
    gated = torch.linalg.vector_norm(
        color.neutral_gated_mean(unsure, CENTRES, temperature=0.38, neutral_radius=10.0)
    )
    assert plain > 10 and gated < 0.5 * plain
    # At T -> 0 the gate follows the mode: gray when gray wins.
    got = color.neutral_gated_mean(unsure, CENTRES, temperature=0.0, neutral_radius=10.0, gain=1.3)
    torch.testing.assert_close(got, torch.zeros_like(got))


def test_model_decode_applies_its_gate_and_the_loss_does_not():
    gated = create_model("test_mcl", neutral_radius=10.0, chroma_gain=1.2)
    plain = create_model("test_mcl")
    plain.load_state_dict(gated.state_dict())
    logits = _logits(5).float()
    torch.testing.assert_close(
        gated.decode(logits),
        color.neutral_gated_mean(logits, CENTRES, temperature=0.38, neutral_radius=10.0, gain=1.2),
    )
    assert gated.decode_info()["neutral_radius"] == 10.0 and gated.decode_info()["chroma_gain"] == 1.2
    batch = {"ab": torch.randn(2, 2, 12, 20) * 30}
    reg = [create_model("test_mcl", reg_weight=5.0, **kw) for kw in ({}, {"neutral_radius": 10.0})]
    reg[1].load_state_dict(reg[0].state_dict())
    torch.testing.assert_close(reg[0].loss(logits, batch), reg[1].loss(logits, batch))


# ---------------------------------------------------------------------------------------------
# loss


def test_cross_entropy_is_lower_for_the_right_answer():
    ab = _pixels((10.0, 20.0), (-30.0, 40.0), (0.0, 0.0))
    weights = torch.ones(Q)
    right = torch.full((1, Q, 1, 3), -5.0)
    wrong = right.clone()
    for x, (a, b) in enumerate([(10, 20), (-30, 40), (0, 0)]):
        right[0, _index(a, b), 0, x] = 5.0
    for x, (a, b) in enumerate([(-30, 40), (60, 50), (10, 20)]):
        wrong[0, _index(a, b), 0, x] = 5.0
    loss_right = rebalanced_cross_entropy(right, ab, CENTRES, weights)
    loss_wrong = rebalanced_cross_entropy(wrong, ab, CENTRES, weights)
    assert 0 < loss_right < loss_wrong
    # The best possible logits are log of the soft target: the loss is then its entropy.
    target = color.soft_encode(ab, CENTRES)
    best = rebalanced_cross_entropy(torch.log(target.clamp(min=1e-30)), ab, CENTRES, weights)
    entropy = -(target * torch.log(target.clamp(min=1e-30))).sum(dim=1).mean()
    assert best.item() == pytest.approx(entropy.item(), rel=1e-5)
    assert best < loss_right


def test_cross_entropy_weights_each_pixel_by_its_nearest_bin():
    ab = _pixels((0.0, 0.0), (60.0, 50.0))
    logits = torch.zeros(1, Q, 1, 2)  # uniform prediction: same per-pixel loss log(Q)
    w = torch.ones(Q)
    base = rebalanced_cross_entropy(logits, ab, CENTRES, w)
    assert base.item() == pytest.approx(math.log(Q), rel=1e-5)
    w[_index(60, 50)] = 3.0
    heavier = rebalanced_cross_entropy(logits, ab, CENTRES, w)
    assert heavier.item() == pytest.approx(math.log(Q) * (1 + 3) / 2, rel=1e-5)


def test_model_loss_pools_targets_to_the_output_grid():
    torch.manual_seed(0)
    model = create_model("test_mcl")
    # A flat colour: pooling to stride 4 keeps it, so the loss equals the hand-built one.
    ab = torch.tensor([10.0, 20.0]).view(1, 2, 1, 1).expand(1, 2, 32, 32)
    logits = torch.randn(1, Q, 8, 8)
    got = model.loss(logits, {"L": torch.full((1, 1, 32, 32), 50.0), "ab": ab})
    want = rebalanced_cross_entropy(logits, ab[:, :, :8, :8], CENTRES, model.class_weights)
    torch.testing.assert_close(got, want)


def test_reg_weight_adds_the_decoded_ab_l2_term():
    torch.manual_seed(0)
    plain = create_model("test_mcl")
    reg = create_model("test_mcl", reg_weight=10.0)
    reg.load_state_dict(plain.state_dict())
    L = torch.rand(2, 1, 64, 64) * 100
    ab = torch.randn(2, 2, 64, 64) * 30
    batch = {"L": L, "ab": ab}
    with torch.no_grad():  # the loss values only
        raw = plain(L)
    pooled = torch.nn.functional.adaptive_avg_pool2d(ab, raw.shape[-2:])
    expect = plain.loss(raw, batch) + 10.0 * torch.mean((plain.decode(raw) / 110 - pooled / 110) ** 2)
    assert float(reg.loss(raw, batch)) == pytest.approx(float(expect), rel=1e-5)
    assert float(reg.loss(raw, batch)) > float(plain.loss(raw, batch))


@pytest.mark.parametrize(("reg_weight", "cf_weight"), [(0.0, 0.0), (7.0, 0.0), (0.0, 4.0), (7.0, 4.0)])
def test_loss_and_its_gradient_match_autograd_through_the_dense_steps(reg_weight, cf_weight):
    # The reference: the loss as the paper writes it, a dense soft target and the annealed
    # mean, differentiated by autograd in float64. The fused loss must agree in value and in
    # gradient, with pixels of unequal class weights and a batch of more than one image.
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(2, Q, 3, 5, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    ab = (torch.rand(2, 2, 3, 5, generator=g, dtype=torch.float64) - 0.5) * 150
    weights = torch.rand(Q, generator=g, dtype=torch.float64) * 3 + 0.1
    target = color.soft_encode(ab, CENTRES.double())
    ce = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1)
    want = (weights[target.argmax(dim=1)] * ce).mean()
    decoded = color.annealed_mean(logits, CENTRES.double(), temperature=0.38)
    if reg_weight:
        want = want + reg_weight * torch.mean((decoded / 110 - ab / 110) ** 2)
    if cf_weight:
        def cf(x):  # per photo: sqrt(var a + var b) + 0.3 mean chroma, on ab / 110
            x = x.flatten(2) / 110
            return torch.sqrt(x.var(dim=2, unbiased=False).sum(dim=1)) + 0.3 * x.norm(dim=1).mean(dim=1)
        want = want + cf_weight * ((cf(decoded) - cf(ab)) ** 2).mean()
    (want_grad,) = torch.autograd.grad(want, logits)
    got = rebalanced_cross_entropy(logits, ab, CENTRES, weights, reg_weight=reg_weight, cf_weight=cf_weight,
                                   temperature=0.38)
    (got_grad,) = torch.autograd.grad(got, logits)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert got_grad.dtype == logits.dtype
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-7)


def test_colourfulness_term_pulls_each_photo_toward_its_own_colour():
    # Two photos: one gray, one colourful; logits that decode both to a middling colour. The
    # term's gradient must make the gray photo duller and the colourful one more colourful.
    torch.manual_seed(0)
    ab = torch.zeros(2, 2, 4, 4)
    ab[1, 0] = 60.0
    ab[1, 1, :, :2] = -40.0
    logits = torch.zeros(2, Q, 4, 4)
    logits[:, _index(20, 0)] = 2.0  # unsure: the annealed mean can move
    logits.requires_grad_(True)
    loss = rebalanced_cross_entropy(logits, ab, CENTRES, torch.ones(Q), cf_weight=10.0) - \
        rebalanced_cross_entropy(logits, ab, CENTRES, torch.ones(Q))
    (grad,) = torch.autograd.grad(loss, logits)
    for i in range(2):  # a small step along each photo's own gradient
        step = logits.detach().clone()
        step[i] -= 0.1 * grad[i] / grad[i].abs().max()
        before, after = (color.annealed_mean(x, CENTRES, temperature=0.38)[i].norm(dim=0).mean().item()
                         for x in (logits.detach(), step))
        if i == 0:
            assert after < before - 0.05  # the gray photo loses colour
        else:
            assert after > before + 0.05  # the colourful one gains it


def test_sparse_encoding_finds_the_same_bins_as_a_full_search():
    # Pixels in gamut, at its edge and far outside it (the lattice window does not reach
    # the nearest bins there, so those rows take the full search).
    g = torch.Generator().manual_seed(1)
    ab = torch.cat([(torch.rand(4000, 2, generator=g) - 0.5) * 260, torch.tensor([[400.0, -400.0], [0.0, 300.0]])])
    ab = ab.double()
    idx, wts = color.soft_encode_sparse(ab, CENTRES, neighbours=5, sigma=SIGMA)
    dist, full_idx = torch.cdist(ab, CENTRES.double()).topk(5, dim=1, largest=False)
    torch.testing.assert_close(idx[:, 0], full_idx[:, 0])
    # As sets of (bin, weight): ties between equally near bins may come in either order.
    dense = torch.zeros(len(ab), Q, dtype=torch.float64).scatter_(1, idx, wts)
    full = torch.zeros(len(ab), Q, dtype=torch.float64).scatter_(1, full_idx, torch.softmax(-dist**2 / (2 * SIGMA**2), 1))
    torch.testing.assert_close(dense, full, atol=1e-9, rtol=0)


# ---------------------------------------------------------------------------------------------
# per-photo gain (cf_head)


def test_cf_head_starts_at_gain_one_and_scales_each_photo_by_its_own_gain():
    torch.manual_seed(0)
    plain = create_model("test_mcl", neutral_radius=10.0, chroma_gain=1.2).eval()
    headed = create_model("test_mcl", neutral_radius=10.0, chroma_gain=1.2, cf_head=True).eval()
    missing = headed.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["cf_head.bias", "cf_head.weight"]
    L = torch.rand(2, 1, 64, 96) * 100
    raw = headed(L)
    assert raw.shape[1] == Q + 1 and torch.equal(raw[:, :Q], plain(L))
    torch.testing.assert_close(headed.decode(raw), plain.decode(raw[:, :Q]))  # zero start: gain 1
    with torch.no_grad():
        bound = math.log(3.0)
        headed.cf_head.bias.fill_(bound * math.atanh(math.log(1.5) / bound))  # soft bound: tanh
        raw = headed(L)
        torch.testing.assert_close(headed.decode(raw), 1.5 * plain.decode(raw[:, :Q]))
        headed.cf_head.bias.fill_(50.0)  # never more than three times the decoded chroma
        torch.testing.assert_close(headed.decode(headed(L)), 3.0 * plain.decode(raw[:, :Q]))
    assert headed.decode_info()["log_gain_channel"] and not plain.decode_info()["log_gain_channel"]
    with pytest.raises(ValueError, match="bins head"):
        create_model("test_l2", cf_head=True)


def test_gain_loss_trains_only_the_gain_toward_each_photos_colourfulness():
    # Photos 1.6 times as colourful as the model decodes them (the same upsampling as the
    # loss): the gain learns 1.6, and no gradient reaches the network through the gain's loss.
    torch.manual_seed(0)
    model = create_model("test_mcl", cf_head=True)
    L = torch.rand(4, 1, 32, 32) * 100
    with torch.no_grad():
        dec = model.decode(model(L))
    up = torch.nn.functional.interpolate(dec * 1.6, size=(32, 32), mode="bilinear", align_corners=False)
    batch = {"L": L, "ab": up}
    opt = torch.optim.Adam(model.calibration_parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        model._gain_loss(model(L), batch).backward()
        opt.step()
    gain = torch.exp(model.split_raw(model(L))[1]).flatten()
    torch.testing.assert_close(gain, torch.full_like(gain, 1.6), rtol=0.05, atol=0)
    raw = model(L)
    model.zero_grad()
    model._gain_loss(raw, batch).backward()
    assert all(p.grad is None or not p.grad.any() for n, p in model.named_parameters() if not n.startswith("cf_head"))


def test_gain_loss_matches_colourfulness_on_average_not_in_least_squares():
    # Three photos the head cannot tell apart (one shared gain), decoded at different
    # colourfulness: the optimum makes the means agree, sum(t) / sum(d), not least squares'
    # sum(d t) / sum(d^2).
    d, t = torch.tensor([0.1, 0.2, 0.4]), torch.tensor([0.3, 0.3, 0.3])
    h = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([h], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = gain_loss(torch.exp(h) * d, t)
        loss.backward()
        return loss

    opt.step(closure)
    assert math.exp(h.item()) == pytest.approx(0.9 / 0.7, rel=1e-4)
    assert 0.9 / 0.7 > float((d * t).sum() / d.square().sum())  # least squares would fall short
    # zero where each photo gets its own colourfulness
    assert float(gain_loss(t.clone(), t)) == pytest.approx(0.0, abs=1e-6)
