"""The beta mixture fit, Arazo's M-DYR-H and Meta-Weight-Net: hand-computed cases, state, smoke runs."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_ols.data import Batch, TrainLoader
from robustbench_ols.errors import SpecError
from robustbench_ols.methods import FitInfo, build_method
from robustbench_ols.methods.arazo import bootstrap_mixup_loss, class_balance_reg
from robustbench_ols.methods.bmm import bmm_posterior, fit_beta_mixture, fit_bmm
from robustbench_ols.models import create_model
from robustbench_ols.training import train_epoch

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_info(labels, k, *, epochs=2, images=None, meta=None, lr=0.1, seed=0, steps=1):
    y = torch.as_tensor(labels, dtype=torch.long)
    mx, my = meta if meta is not None else (None, None)
    return FitInfo(k, len(y), y, epochs=epochs, steps_per_epoch=steps, device=CPU, dataset="synthetic",
                   seed=seed, train_images=images, lr_at=lambda e: lr, meta_images=mx, meta_labels=my)


def method(name, info, **opts):
    m, _ = build_method(name, {k: str(v) for k, v in opts.items()})
    m.setup(info)
    return m


def random_images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


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


class Linear(nn.Module):
    """A batch-norm-free model so a step can be recomputed by hand."""

    def __init__(self, k=3, seed=0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.fc = nn.Linear(12, k)

    def forward(self, x):
        return self.fc(x.reshape(len(x), -1)[:, :12])


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


def same(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def smoke(name, *, n=32, k=10, batch=16, meta=None, **opts):
    """Two epochs with the real trainer, then the same run stopped after epoch 0 and resumed from a
    saved (torch.save / torch.load) checkpoint into fresh objects: both must agree exactly."""
    import io
    g = torch.Generator().manual_seed(3)
    images, y = random_images(n, 2), torch.randint(0, k, (n,), generator=g)
    loader = TrainLoader(images, y, batch, seed=0)
    noisy = torch.zeros(n, dtype=torch.bool)

    def fresh():
        m = method(name, make_info(y, k, epochs=2, images=images, meta=meta, steps=len(loader)), **opts)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = create_model("resnet8", k)
        return m, model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def epoch(objs, e):
        m, model, opt = objs
        return train_epoch([model], m, opt, loader, e, is_noisy=noisy, clean=y)

    full = fresh()
    figures = [epoch(full, e) for e in range(2)]
    first = fresh()
    epoch(first, 0)
    buf = io.BytesIO()
    torch.save({"model": first[1].state_dict(), "opt": first[2].state_dict(), "method": first[0].state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=False)
    resumed = fresh()
    resumed[1].load_state_dict(ck["model"])
    resumed[2].load_state_dict(ck["opt"])
    resumed[0].load_state_dict(ck["method"])
    assert same(resumed[0].state_dict(), ck["method"])
    assert epoch(resumed, 1) == figures[1]
    assert same(resumed[1].state_dict(), full[1].state_dict())
    assert same(resumed[0].state_dict(), full[0].state_dict())
    return full[0], figures


def test_arazo_two_epoch_smoke():
    m, figs = smoke("arazo")
    assert all(math.isfinite(f["train_loss"]) for f in figs)
    assert m.w is not None and m.w.shape == (32,) and torch.isfinite(m.w).all()


# ---------------------------------------------------------------- MW-Net


def mw_setup(model_name="resnet8", k=4, n=8, m_meta=12, **opts):
    g = torch.Generator().manual_seed(5)
    meta = (random_images(m_meta, 7), torch.arange(m_meta) % k)
    y = torch.randint(0, k, (n,), generator=g)
    m = method("mwnet", make_info(y, k, meta=meta, lr=0.05), **opts)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = create_model(model_name, k) if model_name else Linear(k)
    x = random_images(n, 8).float() / 255
    return m, model, Batch(x, y, torch.arange(n))


def test_mwnet_options_and_meta_size():
    m, _ = build_method("mwnet")
    assert m.clean_meta_size() == 1000
    assert build_method("mwnet", {"meta": "500"})[0].clean_meta_size() == 500
    assert m.effective_options()["meta_wd"] == 1e-4
    assert build_method("mwnet", {"meta_optim": "sgd"})[0].effective_options()["meta_wd"] == 5e-4
    for bad in ({"meta": "0"}, {"meta_optim": "rmsprop"}, {"norm": "max"}, {"meta_lr": "0"}):
        with pytest.raises(SpecError):
            build_method("mwnet", bad)
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(RuntimeError, match="meta set"):
        method("mwnet", make_info(y, 2))


def test_mwnet_mlp_maps_losses_into_unit_interval_and_is_not_the_model():
    m, model, _ = mw_setup()
    v = m.weights(torch.linspace(0, 30, 61))
    assert v.shape == (61,) and bool(((v > 0) & (v < 1)).all())
    assert [p.shape for p in m.vnet.parameters()] == [(100, 1), (100,), (1, 100), (1,)]
    mine = {id(p) for p in m.vnet.parameters()}
    assert mine.isdisjoint(id(p) for p in model.parameters())
    # Seeded from the run seed: the same seed gives the same MLP.
    m2, _, _ = mw_setup()
    assert all(torch.equal(a, b) for a, b in zip(m.vnet.parameters(), m2.vnet.parameters()))


def test_mwnet_step_updates_mlp_and_batch_norm_stats_once():
    m, model, b = mw_setup()
    before = [p.detach().clone() for p in m.vnet.parameters()]
    params_before = [p.detach().clone() for p in model.parameters()]
    twin = copy.deepcopy(model)
    twin(b.x)  # one plain train-mode forward: the running statistics a normal step leaves
    out = m.training_step([model], b, 0)
    for (k, buf), (_, ref) in zip(model.named_buffers(), twin.named_buffers()):
        assert torch.equal(buf, ref), k
    assert any(torch.equal(buf, torch.ones(())) for k, buf in model.named_buffers() if "num_batches" in k)
    assert all(torch.equal(a, p) for a, p in zip(params_before, model.parameters()))  # trainer steps
    assert all(p.grad is None for p in model.parameters())  # the meta step leaves no model gradients
    grads = [p.grad for p in m.vnet.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0  # the look-ahead reaches the MLP
    assert any(not torch.equal(a, p) for a, p in zip(before, m.vnet.parameters()))
    assert out.loss.dim() == 0 and out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert torch.allclose(out.logits, twin(b.x), atol=1e-5)


@pytest.mark.parametrize("norm", ["mean", "sum"])
def test_mwnet_meta_gradient_and_loss_by_hand(norm):
    """A linear model, recomputed explicitly: look-ahead, meta gradient, then the real loss."""
    m, model, b = mw_setup(model_name=None, norm=norm)
    lr = 0.05
    gen_state = m.gen.get_state()
    vnet = copy.deepcopy(m.vnet)
    W, c = model.fc.weight, model.fc.bias

    def f(x, W_, c_):
        return x.reshape(len(x), -1)[:, :12] @ W_.T + c_

    def weighted(cost, v):
        return (cost * v).mean() if norm == "mean" else (cost * v / v.sum()).sum()

    cost = F.cross_entropy(f(b.x, W, c), b.y, reduction="none")
    lf = weighted(cost, vnet(cost.detach()[:, None]).squeeze(1))
    gW, gc = torch.autograd.grad(lf, (W, c), create_graph=True)
    g = torch.Generator().set_state(gen_state)
    idx = torch.randperm(len(m.info.meta_images), generator=g)[:len(b.y)]
    xm, ym = m.info.meta_images[idx].float() / 255, m.info.meta_labels[idx]
    meta = F.cross_entropy(f(xm, W - lr * gW, c - lr * gc), ym)
    ref_grads = torch.autograd.grad(meta, list(vnet.parameters()))

    out = m.training_step([model], b, 0)
    for p, r in zip(m.vnet.parameters(), ref_grads):
        assert torch.allclose(p.grad, r, atol=1e-6, rtol=1e-4)
    cost = F.cross_entropy(model(b.x), b.y, reduction="none")
    v = m.vnet(cost.detach()[:, None]).squeeze(1)  # the updated MLP
    assert torch.allclose(out.loss, weighted(cost, v.detach()), atol=1e-6)


def test_mwnet_state_round_trip():
    m, model, b = mw_setup(model_name=None)
    m.training_step([model], b, 0)
    state = m.state_dict()
    fresh, _, _ = mw_setup(model_name=None)
    fresh.load_state_dict(state)
    twin = copy.deepcopy(model)
    m.training_step([model], b, 0)
    fresh.training_step([twin], b, 0)
    assert all(torch.equal(a, c) for a, c in zip(m.vnet.parameters(), fresh.vnet.parameters()))
    assert torch.equal(m.gen.get_state(), fresh.gen.get_state())


def test_mwnet_two_epoch_smoke():
    meta = (random_images(20, 9), torch.arange(20) % 10)
    m, figs = smoke("mwnet", meta=meta)
    assert all(math.isfinite(f["train_loss"]) for f in figs)
