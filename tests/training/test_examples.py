"""The example smoothing method in examples/: its prior by hand, its targets, and the uniform case
equal to label smoothing's gamma form."""
import pytest
import torch

from examples.prior_smoothing import CIFAR10_GROUPS, PriorSmoothing, similarity_prior
from robustbench_ols.common.errors import SpecError
from robustbench_ols.data import Batch
from robustbench_ols.methods import FitInfo, build_method


def info(dataset, k=10):
    return FitInfo(k, 8, torch.zeros(8, dtype=torch.long), 2, 1, torch.device("cpu"), dataset, 0)


def test_cifar10_prior_by_hand():
    p = similarity_prior(10, CIFAR10_GROUPS, 0.8)
    assert torch.allclose(p.sum(1), torch.ones(10))
    assert p[0, 0] == 0 and p[0, 1] == pytest.approx(0.8 / 3) and p[0, 8] == pytest.approx(0.8 / 3)
    assert p[0, 3] == pytest.approx(0.2 / 6)  # airplane -> cat
    assert p[3, 5] == pytest.approx(0.8 / 5) and p[3, 9] == pytest.approx(0.2 / 4)  # cat -> dog, cat -> truck


def test_targets_and_loss():
    m, _ = build_method("examples.prior_smoothing:PriorSmoothing", {"eps": 0.2, "within": 1.0})
    m.setup(info("cifar10"))
    t = m.targets
    assert torch.allclose(t.sum(1), torch.ones(10))
    assert t[2, 2] == pytest.approx(0.8) and t[2, 3] == pytest.approx(0.2 / 5) and t[2, 0] == 0
    logits = torch.randn(4, 10)
    y = torch.tensor([0, 2, 5, 9])
    want = -(t[y] * logits.log_softmax(1)).sum(1).mean()
    got = m.loss(logits, Batch(torch.zeros(4, 3, 32, 32), y, torch.arange(4)), 0)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert m.effective_options()["prior"] == "CIFAR-10 vehicles/animals"


def test_without_a_prior_it_is_label_smoothing_in_the_gamma_form():
    torch.manual_seed(0)
    logits = torch.randn(16, 10)
    batch = Batch(torch.zeros(16, 3, 32, 32), torch.randint(0, 10, (16,)), torch.arange(16))
    prior, _ = build_method("examples.prior_smoothing:PriorSmoothing", {"eps": 0.1})
    ls, _ = build_method("ls", {"gamma": 0.9})
    for m in (prior, ls):
        m.setup(info("synthetic"))
    assert prior.loss(logits, batch, 0).item() == pytest.approx(ls.loss(logits, batch, 0).item(), rel=1e-6)


@pytest.mark.parametrize("opts", [{"eps": 1.0}, {"eps": -0.1}, {"within": 1.5}])
def test_bad_options(opts):
    with pytest.raises(SpecError, match="prior-ls"):
        PriorSmoothing(**opts)
