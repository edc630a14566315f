"""Co-teaching: hand-built cases for the selection and the forget-rate schedule, the state round-trip,
and a short real run through `execute`."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from robustbench_ols.common.errors import SpecError
from robustbench_ols.methods import build_method
from robustbench_ols.scoring.evaluation import EvalSpec
from robustbench_ols.spec import ExecOptions, RunSpec
from robustbench_ols.train.run import execute

from .helpers import Table, index_batch, make

EX = ExecOptions(device="cpu", progress=False)
EV = EvalSpec(attacks=())  # scoring is tested elsewhere


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



# ---------------------------------------------------------------- a real run

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
