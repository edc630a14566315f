"""PENCIL: hand-built cases for the stages and the label update, the state round-trip, and a short real
run through `execute`."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_ols.common.errors import SpecError
from robustbench_ols.data import Batch
from robustbench_ols.methods import StepOutput, build_method
from robustbench_ols.methods.pencil import pencil_stages
from robustbench_ols.scoring.evaluation import EvalSpec
from robustbench_ols.spec import ExecOptions, RunSpec
from robustbench_ols.train.run import execute

from .helpers import make

EX = ExecOptions(device="cpu", progress=False)
EV = EvalSpec(attacks=())  # scoring is tested elsewhere


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



# ---------------------------------------------------------------- a real run

def run_spec(method, options, epochs):
    return RunSpec(dataset="synthetic", model="resnet8", method=method, method_options=options,
                   noise="symmetric:0.4", epochs=epochs, batch_size=100, train_subset=300)


def test_pencil_runs_all_three_stages(tmp_path):
    r = execute(run_spec("pencil", (), 3), EX, tmp_path, EV)  # 3 epochs: one per stage
    assert math.isfinite(r.metrics["train_loss_last"]) and math.isfinite(r.metrics["test_loss_last"])
    y = torch.load(r.run_dir / "model.pt")["method"]["y_tilde"]
    noisy = torch.as_tensor(np.load(r.run_dir / "noise.npz")["noisy_labels"])
    assert y.shape == (300, 10) and torch.isfinite(y).all()
    moved = (y - 10 * F.one_hot(noisy, 10).float()).abs().sum(1)
    assert (moved > 0).all()  # stage 2 (epoch 1) updated every sample's label logits once
