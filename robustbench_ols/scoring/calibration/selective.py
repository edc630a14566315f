"""Selective prediction: accept the test images in order of decreasing confidence, abstain on the rest.

With the images sorted by confidence, the risk at coverage c = k/N is the error rate among the k accepted ones,
the generalized risk the accepted errors over all N. Images of equal confidence are accepted together (a
threshold cannot split them), so the input order never matters; on images without ties every figure equals
TorchUncertainty's definition (torch_uncertainty/metrics/classification/risk_coverage.py, checked in the tests):

- `aurc`: the mean of the risk over the coverages 1/N, ..., 1 (Geifman, Uziel & El-Yaniv, ICLR 2019).
  TorchUncertainty integrates the same points by trapezoids and divides by 1 - 1/N: the two differ by
  (r_1 + r_N) / 2N - AURC/N at most, below 1e-4 on a 10,000-image test set.
- `augrc`: the mean of the generalized risk over the same coverages (Traub et al., "Overcoming Common Flaws in the
  Evaluation of Selective Classification Systems", arXiv 2407.01032), the same rule as `aurc`.
- `cov_at_5risk`: the largest coverage whose risk is at most 5% (0 where none is: TorchUncertainty gives NaN).
- `risk_at_80cov`: the risk of the smallest accepted set that covers at least 80% of the images.

The confidence is the maximum softmax probability (MSP), or, for the `_ln` keys, the logit-normalised score
that Xia et al. (ICLR 2025, arXiv 2403.14715) use to recover the selective prediction that label smoothing
degrades: the maximum of the centred logits over their p-norm (MaxLogit-pNorm, Cattelan & Silva, arXiv
2305.15508), p = 2 here (they tune p on held-out data; `LOGIT_NORM_P` records ours).
"""
from __future__ import annotations

import numpy as np

RISK = 0.05  # cov_at_5risk
COVERAGE = 0.8  # risk_at_80cov
LOGIT_NORM_P = 2.0


def logit_norm_confidence(logits, p: float = LOGIT_NORM_P) -> np.ndarray:
    """max_k z~_k / ||z~||_p with z~ = z - mean_k z_k, per row of (N, K) logits (float64). Invariant to a
    temperature and to adding a constant to every logit; 0 for a row of equal logits."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.mean(1, keepdims=True)
    norm = np.linalg.norm(z, ord=p, axis=1)
    return np.divide(z.max(1), norm, out=np.zeros(len(z)), where=norm > 0)


def _curve(conf, correct) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(accepted count at each tied group's threshold, errors accepted there, group sizes), best group first."""
    f, y = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    order = np.argsort(-f, kind="stable")
    f, wrong = f[order], 1.0 - y[order]
    last = np.append(np.flatnonzero(np.diff(f) != 0), len(f) - 1)  # the last position of each tied group
    return last + 1, np.cumsum(wrong)[last], np.diff(np.append(-1, last))


def selective_metrics(conf, correct) -> dict[str, float]:
    """`aurc`, `augrc`, `cov_at_5risk`, `risk_at_80cov` of top-label confidences (N,) and correctness 0/1 (N,)."""
    accepted, errs, size = _curve(conf, correct)
    n = float(accepted[-1])
    risk = errs / accepted
    ok = np.flatnonzero(risk <= RISK + 1e-12)
    return {"aurc": float(np.sum(risk * size) / n), "augrc": float(np.sum(errs / n * size) / n),
            "cov_at_5risk": float(accepted[ok[-1]] / n) if len(ok) else 0.0,
            "risk_at_80cov": float(risk[np.searchsorted(accepted, np.ceil(COVERAGE * n - 1e-9))])}


def aurc(conf, correct) -> float:
    """Area under the risk-coverage curve (`selective_metrics`): 0 for a model that is never wrong, the error
    rate for one of constant confidence. In [0, 1]."""
    return selective_metrics(conf, correct)["aurc"]
