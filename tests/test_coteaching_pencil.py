"""Co-teaching and PENCIL: hand-built cases for the selection, the schedules and the label update,
state round-trips, and a short real run of each through `execute`."""
import json
import math

import numpy as np

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_ols.data import Batch
from robustbench_ols.errors import SpecError
from robustbench_ols.methods import FitInfo, StepOutput, build_method
from robustbench_ols.methods.pencil import pencil_stages
from robustbench_ols.run import execute
from robustbench_ols.evaluation import EvalSpec
from robustbench_ols.spec import ExecOptions, RunSpec

EX = ExecOptions(device="cpu", progress=False)
EV = EvalSpec(attacks=())  # scoring is tested elsewhere


def make(name, labels, k, *, epochs=20, noise_rate=0.4, **opts):
    m, _ = build_method(name, {key: str(v) for key, v in opts.items()})
    y = torch.as_tensor(labels, dtype=torch.long)
    m.setup(FitInfo(k, len(y), y, epochs=epochs, steps_per_epoch=1, device=torch.device("cpu"),
                    dataset="synthetic", seed=0, noise_rate=noise_rate))
    return m


class Table(nn.Module):
    """A 'network' whose logits for sample i are row i of a parameter table (x carries the index),
    so the gradient on row i says whether sample i contributed to this network's loss."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.as_tensor(table, dtype=torch.float32))

    def forward(self, x):
        return self.table[x[:, 0, 0, 0].long()]


def index_batch(labels):
    n = len(labels)
    x = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 3, 32, 32)
    return Batch(x, torch.as_tensor(labels), torch.arange(n))


# ---------------------------------------------------------------- co-teaching

K, B = 3, 10
LABELS = [i % K for i in range(B)]


def two_tables():
    """Network 1's CE grows with i (its small-loss set: 0..5 of 10 at tau = 0.4); network 2's CE
    falls with i (its small-loss set: 4..9)."""
    t1, t2 = torch.zeros(B, K), torch.zeros(B, K)
    for i, y in enumerate(LABELS):
        t1[i, y] = 5.0 - 0.5 * i
        t2[i, y] = 0.5 * i
    return Table(t1), Table(t2)


def test_coteaching_forget_rate_ramp():
    m = make("coteaching", LABELS, K, tau=0.4, tk=10)
    rates = {e: m.forget_rate(e) for e in (0, 5, 10, 20)}
    assert rates == pytest.approx({0: 0.0, 5: 0.2, 10: 0.4, 20: 0.4})
    assert [m.num_kept(B, e) for e in (0, 5, 10, 20)] == [10, 8, 6, 6]
    assert m.num_kept(128, 10) == round(0.6 * 128) == 77  # 76.8 rounds to 77
    assert m.num_kept(7, 10) == 4  # 4.2
    assert make("coteaching", LABELS, K, tau=0.4, tk=0).forget_rate(0) == 0.4  # no ramp


def test_coteaching_keeps_the_small_loss_samples_and_cross_feeds_them():
    m = make("coteaching", LABELS, K, tau=0.4, tk=10)
    net1, net2 = two_tables()
    batch = index_batch(LABELS)
    out = m.training_step([net1, net2], batch, epoch=10)  # tau(10) = 0.4: 6 of 10 kept
    out.loss.backward()
    used1 = (net1.table.grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    used2 = (net2.table.grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    assert used1 == [4, 5, 6, 7, 8, 9]  # network 1 learns from network 2's small-loss samples
    assert used2 == [0, 1, 2, 3, 4, 5]  # and network 2 from network 1's
    y = torch.tensor(LABELS)
    with torch.no_grad():
        ref = (F.cross_entropy(net1.table[4:], y[4:]) + F.cross_entropy(net2.table[:6], y[:6]))
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-6)  # plain means over the kept samples
    assert torch.equal(out.logits, net1.table)  # the statistics use network 1
    # network 1's selection dropped 6..9
    assert m.dropped.tolist() == [0] * 6 + [1] * 4
    m.on_epoch_start(11, None)
    assert m.dropped.sum() == 0


def test_coteaching_epoch_zero_keeps_everything():
    m = make("coteaching", LABELS, K, tau=0.4, tk=10)
    net1, net2 = two_tables()
    out = m.training_step([net1, net2], index_batch(LABELS), epoch=0)
    out.loss.backward()
    assert (net1.table.grad.abs().sum(1) > 0).all() and (net2.table.grad.abs().sum(1) > 0).all()
    assert m.dropped.sum() == 0


def test_coteaching_tau_default_and_errors():
    assert make("coteaching", LABELS, K, noise_rate=0.4).tau == 0.4  # the spec's noise rate
    assert make("coteaching", LABELS, K, noise_rate=0.4, tau=0.25).tau == 0.25
    assert make("coteaching", LABELS, K, noise_rate=None, tau=0.2).tau == 0.2
    with pytest.raises(SpecError, match=r"coteaching:tau="):  # human noise: rate unknown
        make("coteaching", LABELS, K, noise_rate=None)
    with pytest.raises(SpecError, match=r"coteaching: option tau .*\[0, 1\)"):
        build_method("coteaching", {"tau": "1.5"})
    with pytest.raises(SpecError, match=r"coteaching: option tk"):
        build_method("coteaching", {"tk": "-1"})


def test_coteaching_state_round_trip():
    m = make("coteaching", LABELS, K, tau=0.4)
    net1, net2 = two_tables()
    m.training_step([net1, net2], index_batch(LABELS), epoch=15)
    state = m.state_dict()
    m2 = make("coteaching", LABELS, K, tau=0.4)
    m2.load_state_dict(state)
    assert torch.equal(m2.dropped, m.dropped) and m2.dropped.sum() == 4
    m.dropped.zero_()
    assert m2.dropped.sum() == 4  # a copy, not a view


# ---------------------------------------------------------------- PENCIL

# 300 epochs: stage 1 = round(65.6) = 66, stage 3 = round(112.5) = 113 (halves up), so stage 2 = [66, 187).
@pytest.mark.parametrize("epochs, stages", [(320, (70, 200)), (300, (66, 187)), (10, (2, 6)),
                                            (3, (1, 2)), (2, (0, 1)), (1, (0, 1))])
def test_pencil_stage_boundaries(epochs, stages):
    assert pencil_stages(epochs) == stages
    m = make("pencil", [0, 1], 2, epochs=epochs)
    s1, s2 = stages
    assert [m.stage(e) for e in range(epochs)] == [1] * s1 + [2] * (s2 - s1) + [3] * (epochs - s2)


def test_pencil_stage_options():
    m = make("pencil", [0, 1], 2, epochs=10, stage1=1, stage2=9)
    assert (m.s1, m.s2) == (1, 9) and m.effective_options()["stage2"] == 9
    with pytest.raises(SpecError, match="stage1 <= stage2 <= epochs"):
        make("pencil", [0, 1], 2, epochs=10, stage2=11)
    with pytest.raises(SpecError, match="pencil: option lam"):
        build_method("pencil", {"lam": "-1"})


def pencil_fixture(**opts):
    labels = [0, 1, 2, 0]
    m = make("pencil", labels, 3, epochs=320, **opts)
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.2, 0.1], [3.0, 0.0, 0.0], [-1.0, 2.0, 0.5]])
    return m, z, Batch(torch.zeros(4, 3, 32, 32), torch.tensor(labels), torch.arange(4))


def test_pencil_init_and_stage1_is_cross_entropy():
    m, z, b = pencil_fixture()
    assert torch.equal(m.y_tilde, 10 * F.one_hot(b.y, 3).float())
    assert torch.allclose(m.loss(z, b, 0), F.cross_entropy(z, b.y))
    assert m._leaf is None


def test_pencil_stage2_loss_hand_computed():
    m, z, b = pencil_fixture(mean_over_classes="false")
    m.y_tilde = torch.randn(4, 3)
    yd, f = F.softmax(m.y_tilde, 1), F.softmax(z, 1)
    lc = (f * (f.log() - yd.log())).sum(1).mean()
    lo = -yd[torch.arange(4), b.y].log().mean()
    le = -(f * f.log()).sum(1).mean()
    assert torch.allclose(m.loss(z, b, 100), lc + 0.1 * lo + 0.4 * le, atol=1e-6)  # paper's defaults
    assert torch.allclose(m.loss(z, b, 250), lc, atol=1e-6)  # stage 3
    # the authors' code averages Lc and Le over the B x K entries; Lo is scaled with them so the
    # labels' fixed point does not move
    code, _, _ = pencil_fixture(mean_over_classes="true")
    code.y_tilde = m.y_tilde
    assert torch.allclose(code.loss(z, b, 100), (lc + 0.1 * lo + 0.4 * le) / 3, atol=1e-6)


@pytest.mark.parametrize("k, mean_over_classes, steps", [(10, "false", 20), (100, "false", 20),
                                                          (10, "true", 200), (100, "true", 2000)])
def test_pencil_label_follows_a_confident_network(k, mean_over_classes, steps):
    """With the default alpha = 0.1 the labels' fixed point is (f + alpha*onehot)/(1 + alpha): a
    sample the network confidently assigns to another class gets that class, for every K."""
    m = make("pencil", [0], k, epochs=320, mean_over_classes=mean_over_classes)
    z = torch.full((1, k), -5.0)
    z[0, 1] = 5.0  # the network says class 1 with p > 0.99; the noisy label says 0
    b = Batch(torch.zeros(1, 3, 32, 32), torch.tensor([0]), torch.tensor([0]))
    for _ in range(steps):
        loss = m.loss(z, b, 100)  # stage 2
        loss.backward()
        m.after_backward(b, StepOutput(loss, z))
    assert m.y_tilde[0].argmax() == 1


def kl(f, yd):
    return (f * (f.log() - yd.log())).sum(1)


def test_pencil_label_update_is_gradient_step_toward_prediction():
    m, z, b = pencil_fixture(alpha=0, beta=0, lam=1, mean_over_classes="false")
    f = F.softmax(z, 1)
    before = m.y_tilde.clone()
    kl_before = kl(f, m.label_distribution())
    m.loss(z, b, 100).backward()
    m.after_backward(b, None)
    # dL/dy~ = (y^d - f) / B for alpha = 0
    assert torch.allclose(m.y_tilde, before - (F.softmax(before, 1) - f) / 4, atol=1e-6)
    assert (kl(f, m.label_distribution()) < kl_before).all()


def test_pencil_compatibility_pulls_toward_the_noisy_label():
    m, z, b = pencil_fixture(alpha=100, beta=0, lam=1, mean_over_classes="false")
    m.y_tilde = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 3.0, 1.0]])
    p_before = m.label_distribution()[torch.arange(4), b.y]
    m.loss(z, b, 100).backward()
    m.after_backward(b, None)
    assert (m.label_distribution()[torch.arange(4), b.y] > p_before).all()


def test_pencil_labels_are_not_network_parameters_and_only_after_backward_moves_them():
    m, _, b = pencil_fixture()
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3))
    b = Batch(torch.rand(4, 3, 32, 32), b.y, b.index)
    opt = torch.optim.SGD(list(net.parameters()), lr=0.1, momentum=0.9, weight_decay=5e-4)
    ptrs = {p.data_ptr() for p in net.parameters()}
    assert m.y_tilde.data_ptr() not in ptrs and not m.y_tilde.requires_grad
    before = m.y_tilde.clone()
    for _ in range(2):  # the trainer's order of calls, in stage 2
        out = m.training_step([net], b, 100)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        assert torch.equal(m.y_tilde, before)  # the network optimiser did not touch the labels
        m.after_backward(b, out)
        assert not torch.equal(m.y_tilde, before)
        before = m.y_tilde.clone()
    for epoch in (0, 250):  # stages 1 and 3: frozen labels
        out = m.training_step([net], b, epoch)
        out.loss.backward()
        m.after_backward(b, out)
        assert torch.equal(m.y_tilde, before)


def test_pencil_state_round_trip():
    m, z, b = pencil_fixture()
    m.loss(z, b, 100).backward()
    m.after_backward(b, None)
    m2, _, _ = pencil_fixture()
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2.y_tilde, m.y_tilde)
    assert torch.allclose(m2.loss(z, b, 100), m.loss(z, b, 100))
    m.y_tilde.zero_()
    assert m2.y_tilde.abs().sum() > 0  # a copy


# ---------------------------------------------------------------- real runs

def run_spec(method, options, epochs):
    return RunSpec(dataset="synthetic", model="resnet8", method=method, method_options=options,
                   noise="symmetric:0.4", epochs=epochs, batch_size=100, train_subset=300)


def test_coteaching_trains_two_networks(tmp_path):
    r = execute(run_spec("coteaching", (("tk", 1),), 2), EX, tmp_path, EV)
    assert math.isfinite(r.metrics["train_loss_last"]) and math.isfinite(r.metrics["test_loss_last"])
    final = torch.load(r.run_dir / "model.pt")
    assert len(final["models"]) == 2
    a, b = final["models"]
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    # epoch 1 (0-based) with tk = 1 forgets tau = 0.4 (the spec's noise rate): 40 of each batch of 100
    assert final["method"]["dropped"].sum().item() == 3 * 40
    spec = json.loads((r.run_dir / "spec.json").read_text())
    assert spec["method"]["effective_options"]["tau"] == 0.4


def test_pencil_runs_all_three_stages(tmp_path):
    r = execute(run_spec("pencil", (), 3), EX, tmp_path, EV)  # 3 epochs: one per stage
    assert math.isfinite(r.metrics["train_loss_last"]) and math.isfinite(r.metrics["test_loss_last"])
    y = torch.load(r.run_dir / "model.pt")["method"]["y_tilde"]
    noisy = torch.as_tensor(np.load(r.run_dir / "noise.npz")["noisy_labels"])
    assert y.shape == (300, 10) and torch.isfinite(y).all()
    moved = (y - 10 * F.one_hot(noisy, 10).float()).abs().sum(1)
    assert (moved > 0).all()  # stage 2 (epoch 1) updated every sample's label logits once
