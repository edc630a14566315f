"""Selective prediction (scoring/calibration/selective.py) against TorchUncertainty's definitions written out
independently here in torch (torch_uncertainty/metrics/classification/risk_coverage.py: AURC, AUGRC, CovAt5Risk,
RiskAt80Cov), hand-computed cases with ties, and the logit-normalised score."""
import math

import numpy as np
import pytest
import torch

from robustbench_ols.scoring.calibration.selective import aurc, logit_norm_confidence, selective_metrics


def tu_reference(conf, correct) -> dict:
    """TorchUncertainty's figures: sort by confidence (descending), cumulative error rates; AURC and AUGRC as the
    trapezoid over coverages k/N divided by 1 - 1/N; CovAtxRisk the largest admissible k/N (NaN if none);
    RiskAtxCov the error rate at index ceil(N * 0.8) - 1."""
    scores, errors = torch.as_tensor(conf, dtype=torch.float64), 1.0 - torch.as_tensor(correct, dtype=torch.float64)
    n = len(scores)
    rates = errors[scores.argsort(descending=True)].cumsum(0) / torch.arange(1, n + 1, dtype=torch.float64)
    cov = torch.arange(1, n + 1, dtype=torch.float64) / n
    ok = torch.nonzero(rates <= 0.05).flatten()
    return {"aurc": (torch.trapezoid(rates, cov) / (1 - 1 / n)).item(),
            "augrc": (torch.trapezoid(rates * cov, cov) / (1 - 1 / n)).item(),
            "cov_at_5risk": (ok[-1].item() + 1) / n if len(ok) else float("nan"),
            "risk_at_80cov": rates[math.ceil(n * 0.8) - 1].item(), "rates": rates.numpy()}


@pytest.mark.parametrize("n, seed, skill", [(50, 0, 2.0), (997, 1, 1.0), (10_000, 2, 3.0), (400, 3, 8.0)])
def test_matches_torchuncertainty_without_ties(n, seed, skill):
    rng = np.random.default_rng(seed)
    conf = rng.random(n)  # continuous: no ties
    correct = (rng.random(n) < 1 / (1 + np.exp(-skill * (conf - 0.3)))).astype(float)
    ours, tu = selective_metrics(conf, correct), tu_reference(conf, correct)
    assert ours["risk_at_80cov"] == tu["risk_at_80cov"]
    assert ours["cov_at_5risk"] == (0.0 if math.isnan(tu["cov_at_5risk"]) else tu["cov_at_5risk"])
    # the areas: a mean over the coverages here, trapezoids over (1 - 1/N) there; exactly related by
    # ours = TU * (1 - 1/N) + (first + last) / 2N of the integrated curve
    r, g = tu["rates"], tu["rates"] * np.arange(1, n + 1) / n
    assert ours["aurc"] == pytest.approx(tu["aurc"] * (1 - 1 / n) + (r[0] + r[-1]) / (2 * n), rel=1e-12)
    assert ours["augrc"] == pytest.approx(tu["augrc"] * (1 - 1 / n) + (g[0] + g[-1]) / (2 * n), rel=1e-12)
    assert abs(ours["aurc"] - tu["aurc"]) < 1 / n and abs(ours["augrc"] - tu["augrc"]) < 1 / n


def test_hand_computed_with_ties():
    # sorted: 0.9 right, then 0.8 wrong and 0.8 right tied (accepted together), then 0.5 wrong, 0.4 right
    conf, correct = [0.8, 0.9, 0.4, 0.8, 0.5], [0, 1, 1, 1, 0]
    m = selective_metrics(conf, correct)
    # accepted 1, 3, 3, 4, 5 with errors 0, 1, 1, 2, 2: risks 0, 1/3, 1/3, 1/2, 2/5
    assert m["aurc"] == pytest.approx((0 + 1 / 3 + 1 / 3 + 1 / 2 + 2 / 5) / 5)
    assert m["augrc"] == pytest.approx((0 + 1 / 5 + 1 / 5 + 2 / 5 + 2 / 5) / 5)
    assert m["cov_at_5risk"] == pytest.approx(1 / 5)  # only the most confident image is accepted at 5% risk
    assert m["risk_at_80cov"] == pytest.approx(1 / 2)  # 4 of 5 images: the first set covering 80%
    assert aurc(conf, correct) == m["aurc"]
    assert selective_metrics(conf[::-1], correct[::-1]) == m  # input order never matters


def test_limits():
    assert selective_metrics([0.9, 0.5, 0.1], [1, 1, 1]) == {"aurc": 0.0, "augrc": 0.0, "cov_at_5risk": 1.0,
                                                             "risk_at_80cov": 0.0}
    m = selective_metrics([0.3] * 4, [1, 0, 0, 1])  # constant confidence: one group, the error rate everywhere
    assert (m["aurc"], m["augrc"], m["cov_at_5risk"], m["risk_at_80cov"]) == (0.5, 0.5, 0.0, 0.5)
    m = selective_metrics([0.9, 0.1], [0, 1])  # the most confident is wrong: nothing reaches 5% risk
    assert m["cov_at_5risk"] == 0.0 and m["risk_at_80cov"] == 0.5


def test_logit_norm_confidence():
    z = np.array([[2.0, 0.0, -2.0], [1.0, 1.0, 1.0], [3.0, 1.0, 2.0]])
    # centred rows: (2, 0, -2), (0, 0, 0), (1, -1, 0): max over the 2-norm
    assert logit_norm_confidence(z) == pytest.approx([2 / math.sqrt(8), 0.0, 1 / math.sqrt(2)])
    rng = np.random.default_rng(0)
    z = rng.normal(size=(100, 10)) * 3
    assert logit_norm_confidence(z / 2.7 + 5.0) == pytest.approx(logit_norm_confidence(z))  # temperature, shift
    assert logit_norm_confidence(torch.as_tensor(z)) == pytest.approx(logit_norm_confidence(z))
