"""The beta mixture fit (methods/bmm.py) and Arazo's M-DYR-H: hand-computed cases, state, a smoke run."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustbench_ols.common.errors import SpecError
from robustbench_ols.data import Batch
from robustbench_ols.methods import build_method
from robustbench_ols.methods.arazo import bootstrap_mixup_loss, class_balance_reg
from robustbench_ols.methods.bmm import bmm_posterior, fit_beta_mixture, fit_bmm

from .helpers import Linear, make_info, method, random_images, smoke

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- beta mixture


def mixture_samples(seed, n=20000):
    rng = np.random.default_rng(seed)
    high = rng.random(n) < 0.4
    return np.where(high, rng.beta(8, 2, n), rng.beta(2, 8, n)), high


@pytest.mark.parametrize("seed", [0, 1])
def test_em_recovers_a_known_beta_mixture(seed):
    x, _ = mixture_samples(seed)
    # At convergence (10 iterations from the authors' init are not enough on this mixture).
    a, b, w = fit_beta_mixture(x, iters=100)
    np.testing.assert_allclose(a, [2, 8], rtol=0.1)
    np.testing.assert_allclose(b, [8, 2], rtol=0.1)
    np.testing.assert_allclose(w, [0.6, 0.4], atol=0.05)
    # The default 10 iterations already separate the two components.
    a10, b10, w10 = fit_beta_mixture(x)
    assert a10[1] / (a10[1] + b10[1]) > 0.6 > 0.3 > a10[0] / (a10[0] + b10[0])
    np.testing.assert_allclose(w10, [0.6, 0.4], atol=0.1)


def test_fit_bmm_trims_normalises_and_posterior_is_monotone():
    x, high = mixture_samples(0)
    losses = 5.0 * x + 0.3  # the fit is invariant to the scale of the losses
    f, f0 = fit_bmm(losses), fit_bmm(x)
    np.testing.assert_allclose(f.alphas, f0.alphas, rtol=1e-3)
    np.testing.assert_allclose(f.betas, f0.betas, rtol=1e-3)
    assert f.low == pytest.approx(np.percentile(losses, 5)) and f.high == pytest.approx(np.percentile(losses, 95))
    assert f.n_fit == pytest.approx(0.9 * len(x), abs=2)  # the 5-95% range only
    assert f.noisy == int(np.argmax(f.alphas / (f.alphas + f.betas)))
    p = bmm_posterior(f, losses)
    assert p.min() >= 1e-4 and p.max() <= 1 - 1e-4
    assert ((p > 0.5) == high).mean() > 0.9
    grid = np.linspace(losses.min() - 1, losses.max() + 1, 2001)  # beyond the percentile range too
    pg = bmm_posterior(f, grid)
    assert np.all(np.diff(pg) >= -1e-12)
    assert pg[0] == pytest.approx(pg[grid < f.low].max()) and pg[-1] == pg[grid > f.high].min()


def test_fit_bmm_normalisation_convention():
    f = fit_bmm(np.arange(101.0))
    assert (f.low, f.high) == (5.0, 95.0)
    np.testing.assert_allclose(f.normalise([0.0, 5.0, 50.0, 95.0, 100.0]),
                               [1e-3, 1e-3, 45 / (90 + 1e-6), 1 - 1e-3, 1 - 1e-3])
    with pytest.raises(ValueError):
        fit_bmm([1.0, float("nan")])



# ---------------------------------------------------------------- Arazo

# K = 3 by hand: logits of the mixed input, labels y, predictions z on the un-mixed input.
MIXED = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.2], [0.3, -0.4, 1.5], [1.0, 1.0, 0.0]]
Y = [0, 2, 1, 0]
Z = [1, 1, 2, 0]
PERM = [2, 0, 3, 1]
LAM = 0.7


def nll(row, c):
    return -(row[c] - math.log(sum(math.exp(v) for v in row)))


def hand_mixup_ce(targets):
    return sum(LAM * nll(r, targets[i]) + (1 - LAM) * nll(r, targets[PERM[i]])
               for i, r in enumerate(MIXED)) / len(MIXED)


@pytest.mark.parametrize("wval, targets", [(0.0, Y), (1.0, Z)])
def test_arazo_loss_limits_are_mixup_ce(wval, targets):
    got = bootstrap_mixup_loss(torch.tensor(MIXED), torch.tensor(Y), torch.tensor(Z),
                               torch.full((4,), wval), LAM, torch.tensor(PERM))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(hand_mixup_ce(targets), rel=1e-6)


def test_arazo_loss_mixed_weights_and_regulariser_by_hand():
    w = [0.1, 0.9, 0.5, 0.3]
    got = bootstrap_mixup_loss(torch.tensor(MIXED), torch.tensor(Y), torch.tensor(Z), torch.tensor(w),
                               LAM, torch.tensor(PERM))

    def part(i, j):  # sample i's output against sample j's targets and weight
        return (1 - w[j]) * nll(MIXED[i], Y[j]) + w[j] * nll(MIXED[i], Z[j])
    ref = sum(LAM * part(i, i) + (1 - LAM) * part(i, PERM[i]) for i in range(4)) / 4
    assert got.item() == pytest.approx(ref, rel=1e-6)
    probs = [[math.exp(v) / sum(math.exp(u) for u in r) for v in r] for r in MIXED]
    mean = [sum(p[c] for p in probs) / 4 for c in range(3)]
    reg = sum((1 / 3) * math.log((1 / 3) / m) for m in mean)
    assert class_balance_reg(torch.tensor(MIXED)).item() == pytest.approx(reg, rel=1e-5)
    assert class_balance_reg(torch.zeros(5, 3)).item() == pytest.approx(0.0, abs=1e-7)


def test_arazo_training_step_with_fixed_draw():
    n, k = 6, 3
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    m = method("arazo", make_info(y, k, epochs=2), reg=0.5)
    assert m.warmup_epochs == 1
    model = Linear(k)
    x = torch.rand(n, 3, 32, 32)
    b = Batch(x, y, torch.arange(n))
    lam, perm = 0.6, torch.tensor([3, 4, 5, 0, 1, 2])
    m.draw = lambda _n: (lam, perm)
    out_mixed = model(lam * x + (1 - lam) * x[perm])
    # Warm-up: plain mixup CE, logits of the un-mixed batch for the statistics.
    o = m.training_step([model], b, 0)
    ref = lam * F.cross_entropy(out_mixed, y) + (1 - lam) * F.cross_entropy(out_mixed, y[perm])
    assert torch.allclose(o.loss, ref, atol=1e-6) and torch.allclose(o.logits, model(x))
    # Bootstrapping with w = 0: the mixup CE plus the regulariser; with w = 1: the mixup CE against z.
    z = model(x).argmax(1)
    for wval, target in ((0.0, y), (1.0, z)):
        m.w = torch.full((n,), wval)
        o = m.training_step([model], b, 1)
        ref = (lam * F.cross_entropy(out_mixed, target) + (1 - lam) * F.cross_entropy(out_mixed, target[perm])
               + 0.5 * class_balance_reg(out_mixed))
        assert torch.allclose(o.loss, ref, atol=1e-6)
        o.loss.backward()  # differentiable through the mixed forward only
        assert model.fc.weight.grad is not None
        model.zero_grad()


def test_arazo_without_mixup_is_the_bootstrapped_loss_on_the_plain_batch():
    y = torch.tensor([0, 1, 2, 0])
    m = method("arazo", make_info(y, 3, epochs=300), mixup=0, reg=0)
    model = Linear()
    x = torch.rand(4, 3, 32, 32)
    b = Batch(x, y, torch.arange(4))
    logits = model(x)
    assert torch.allclose(m.training_step([model], b, 0).loss, F.cross_entropy(logits, y))
    m.w = torch.tensor([0.0, 1.0, 0.5, 0.2])
    z = logits.argmax(1)
    per = (1 - m.w) * F.cross_entropy(logits, y, reduction="none") + m.w * F.cross_entropy(logits, z, reduction="none")
    assert torch.allclose(m.training_step([model], b, 105).loss, per.mean(), atol=1e-6)


def test_arazo_warmup_boundary_and_options():
    y = torch.zeros(4, dtype=torch.long)
    m = method("arazo", make_info(y, 3, epochs=300))
    assert m.warmup_epochs == 105 and not m.bootstrapping(104) and m.bootstrapping(105)
    assert m.effective_options() == {"mixup": 32.0, "warmup": 105, "reg": 1.0}
    calls = []
    m.update_weights = lambda model: calls.append(model)
    for e in (0, 104):
        m.on_epoch_start(e, ["net"])
    assert calls == []  # no scan during warm-up
    m.on_epoch_start(105, ["net"])
    assert calls == ["net"]
    with pytest.raises(RuntimeError, match="no mixture was fitted"):
        method("arazo", make_info(y, 3, epochs=300), warmup=0).training_step(
            [Linear()], Batch(torch.rand(4, 3, 32, 32), y, torch.arange(4)), 0)
    assert method("arazo", make_info(y, 3, epochs=10), warmup=3).warmup_epochs == 3
    for bad in ({"mixup": "-1"}, {"warmup": "-2"}, {"reg": "-0.1"}):
        with pytest.raises(SpecError):
            build_method("arazo", bad)


def test_arazo_state_round_trip():
    n, k = 40, 3
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, k, (n,), generator=g)
    info = make_info(y, k, epochs=2, images=random_images(n, 1))
    m = method("arazo", info)
    m.draw(8)
    m.update_weights(Linear())
    assert m.w.shape == (n,) and m.w.dtype == torch.float32
    assert float(m.w.min()) >= 1e-4 * (1 - 1e-6) and float(m.w.max()) <= 1 - 1e-4 * (1 - 1e-3)
    state = m.state_dict()
    fresh = method("arazo", make_info(y, k, epochs=2, images=info.train_images))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.w, m.w) and fresh.fit == m.fit
    for _ in range(3):
        (l1, p1), (l2, p2) = m.draw(8), fresh.draw(8)
        assert l1 == l2 and torch.equal(p1, p2)
    m.w += 1  # a copy, not shared
    assert not torch.equal(fresh.w, m.w)


def test_arazo_two_epoch_smoke():
    m, figs = smoke("arazo")
    assert all(math.isfinite(f["train_loss"]) for f in figs)
    assert m.w is not None and m.w.shape == (32,) and torch.isfinite(m.w).all()
