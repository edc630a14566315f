"""Meta-Weight-Net: hand-computed cases, state, a smoke run."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from robustbench_ols.common.errors import SpecError
from robustbench_ols.data import Batch
from robustbench_ols.methods import build_method
from robustbench_ols.models import create_model

from .helpers import Linear, make_info, method, random_images, smoke

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
