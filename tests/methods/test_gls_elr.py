"""Generalized label smoothing and ELR against hand-computed cases (K = 3, plain Python math), `gls` at a
non-negative rate against `ls` bit for bit (the loss and a whole smoke run), and their bad options."""
import csv
import json
import math

import pytest
import torch

from robustbench_ols.common.errors import SpecError
from robustbench_ols.methods import build_method
from robustbench_ols.scoring.evaluation import EvalSpec
from robustbench_ols.spec import ExecOptions, RunSpec
from robustbench_ols.train.run import execute
from tests.methods.test_losses import LABELS, LOGITS, P, batch, loss_of, mean, setup


def gls_by_hand(rate):
    """The authors' loss_gls: (1 - r) * (-log p_y) + r * mean_k(-log p_k), batch mean."""
    return mean([(1 - rate) * -math.log(p[y]) + rate * mean([-math.log(v) for v in p]) for p, y in zip(P, LABELS)])


@pytest.mark.parametrize("rate", [-8.0, -0.2, 0.0, 0.2, 0.8])
def test_gls_hand_value(rate):
    assert loss_of(setup("gls", 3, rate=rate)) == pytest.approx(gls_by_hand(rate), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.35])
def test_gls_at_a_non_negative_rate_is_ls_bit_for_bit(rate):
    z = torch.randn(64, 10, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(2))
    gls, ls = setup("gls", 10, rate=rate), setup("ls", 10, eps=rate)
    assert torch.equal(gls.loss(z, batch(y.tolist()), 0), ls.loss(z, batch(y.tolist()), 0))


def test_gls_warmup_is_cross_entropy_before_it():
    m, hard = setup("gls", 3, rate=-1.0, warmup=2), setup("hard", 3)
    z = torch.tensor(LOGITS)
    assert torch.equal(m.loss(z, batch(LABELS), 1), hard.loss(z, batch(LABELS), 1))
    assert m.loss(z, batch(LABELS), 2).item() == pytest.approx(gls_by_hand(-1.0), abs=1e-6)


def test_negative_smoothing_pushes_the_label_harder_than_ce():
    """NLS's gradient on the labelled logit is larger than CE's (the target gives the others r/K < 0)."""
    z = torch.tensor(LOGITS, requires_grad=True)
    setup("gls", 3, rate=-0.5).loss(z, batch(LABELS), 0).backward()
    g_nls = z.grad.clone()
    z.grad = None
    setup("hard", 3).loss(z, batch(LABELS), 0).backward()
    rows = torch.arange(4)
    assert (g_nls[rows, LABELS] < z.grad[rows, LABELS]).all()


def test_gls_smoke_run_equals_ls(tmp_path):
    """`gls:rate=0.1` and `ls:eps=0.1` train to the same epochs.csv and final metrics (only the names differ)."""
    ex, ev = ExecOptions(device="cpu", progress=False), EvalSpec(attacks=())
    out = {}
    for name, opts in (("gls", {"rate": 0.1}), ("ls", {"eps": 0.1})):
        s = RunSpec(dataset="synthetic", model="resnet8", method=name, method_options=opts, noise="symmetric:0.4",
                    epochs=2, batch_size=64, train_subset=320)
        d = execute(s, ex, tmp_path / name, ev).run_dir
        with open(d / "epochs.csv") as f:
            rows = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]
        metrics = json.loads((d / "metrics.json").read_text())
        out[name] = rows, {k: v for k, v in metrics.items() if "second" not in k and "time" not in k
                           and k not in ("run_id", "method", "label")}
    assert out["gls"] == out["ls"]


# ------------------------------------------------------------------------------------------ ELR

def elr_by_hand(beta, lam, steps):
    """Two steps on the same batch: the target is updated first, then the loss uses it."""
    clamp = [[min(max(v, 1e-4), 1 - 1e-4) for v in p] for p in P]
    t = [[0.0] * 3 for _ in P]
    losses = []
    for _ in range(steps):
        t = [[beta * ti[k] + (1 - beta) * c[k] / sum(c) for k in range(3)] for ti, c in zip(t, clamp)]
        ce = mean([-math.log(p[y]) for p, y in zip(P, LABELS)])
        reg = mean([math.log(1 - sum(ti[k] * c[k] for k in range(3))) for ti, c in zip(t, clamp)])
        losses.append(ce + lam * reg)
    return losses


def test_elr_hand_value_over_two_steps():
    m = setup("elr", 3, labels=LABELS, beta=0.7, lam=3.0)
    z = torch.tensor(LOGITS)
    got = [m.loss(z, batch(LABELS), 0).item() for _ in range(2)]
    assert got == pytest.approx(elr_by_hand(0.7, 3.0, 2), rel=1e-6)


def test_elr_updates_only_the_batch_rows_and_its_defaults_are_the_authors():
    m = setup("elr", 3, labels=[0, 1, 2, 0, 1, 2])
    assert (m.beta, m.lam) == (0.7, 3.0)
    m.loss(torch.tensor(LOGITS), batch(LABELS, index=[5, 0, 3, 1]), 0)
    assert (m.target[[2, 4]] == 0).all() and torch.allclose(m.target[[5, 0, 3, 1]].sum(1), torch.full((4,), 0.3))
    assert (setup("elr", 100, dataset="cifar100").beta, setup("elr", 100, dataset="cifar100").lam) == (0.9, 7.0)


def test_elr_gradient_pulls_towards_the_target():
    """With the regulariser alone (the CE part subtracted), the gradient raises the logit of the target's class."""
    m = setup("elr", 3, labels=[0], beta=0.0, lam=1.0)
    z = torch.tensor([[0.0, 2.0, 0.0]], requires_grad=True)
    m.loss(z.detach(), batch([0]), 0)  # t = p: class 1 dominates
    (m.loss(z, batch([0]), 0) - torch.nn.functional.cross_entropy(z, torch.tensor([0]))).backward()
    assert z.grad[0, 1] < 0 < z.grad[0, 0]


@pytest.mark.parametrize("name, opts, match", [
    ("gls", {"rate": "1"}, "gls: rate must be a finite number < 1"),
    ("gls", {"rate": "1.5"}, "gls: rate must be"), ("gls", {"rate": "nan"}, "gls: rate must be"),
    ("gls", {"warmup": "-1"}, "gls: warmup must be"),
    ("elr", {"beta": "1"}, r"elr: beta .* must be in \[0, 1\)"), ("elr", {"beta": "-0.1"}, "elr: beta"),
    ("elr", {"lam": "-1"}, "elr: lam .* must be a finite number >= 0"), ("elr", {"lam": "inf"}, "elr: lam"),
])
def test_bad_options_name_the_method(name, opts, match):
    with pytest.raises(SpecError, match=match):
        build_method(name, opts)


@pytest.mark.parametrize("method, fragment", [("gls:rate=1", "gls: rate must be a finite number < 1"),
                                              ("elr:beta=1.5", "elr: beta"), ("elr:lam=-2", "elr: lam")])
def test_bad_options_exit_2_and_write_nothing(tmp_path, capsys, method, fragment):
    from robustbench_ols.cli import main
    out = tmp_path / "out"
    assert main(["run", "--dataset", "synthetic", "--method", method, "--epochs", "1", "--device", "cpu",
                 "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())
