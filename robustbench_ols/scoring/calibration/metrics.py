"""Calibration metrics: pure functions of (probabilities, labels) returning Python floats.

Conventions shared by every function here:

- `probs`: (N, K) predicted probabilities, rows summing to 1 (softmax outputs, not logits), as a
  torch tensor on any device or anything `torch.as_tensor` accepts (numpy arrays, lists).
- `labels`: (N,) integer class indices in [0, K).
- Top label: the prediction is argmax_k p_k (on an exact tie, the index `torch.max` returns) and its
  confidence max_k p_k.
- Bins: `n_bins` equal-width bins (lower, upper] with edges i / n_bins, as in Guo et al. (2017),
  "On Calibration of Modern Neural Networks", ICML. A value of exactly 0 goes in the first bin
  [0, 1/n_bins] and exactly 1.0 in the last bin (1 - 1/n_bins, 1]. Unlike this, torchmetrics'
  `CalibrationError` bins [lower, upper) and puts 1.0 in an extra (n_bins + 1)-th bin (its issue
  3510), so the two agree only when no confidence lies exactly on an edge.
- Edges are compared in the dtype of `probs` (float32 0.4 is the float32 edge 2/5, so it falls in
  (0.2, 0.4]); sums and means are accumulated in float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

NORMS = ("l1", "l2", "max")


# ----------------------------------------------------------------------------- input handling
def _as_probs_labels(probs, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensors (N, K) floating and (N,) int64 on the same device, checked once, or ValueError."""
    p = torch.as_tensor(probs)
    if not p.is_floating_point():
        p = p.to(torch.float64)
    elif p.dtype in (torch.float16, torch.bfloat16):
        p = p.float()  # bucketize and exact sums want at least float32
    y = torch.as_tensor(labels, device=p.device)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"probs must have shape (N, K) with N, K > 0, got {tuple(p.shape)}")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise ValueError(f"labels must have shape (N,) = ({p.shape[0]},), got {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    y = y.long()
    lo, hi = torch.aminmax(p)
    sums = p.sum(1, dtype=torch.float64)
    smin, smax = torch.aminmax(sums)
    ylo, yhi = torch.aminmax(y)
    # One transfer for all checks: each .item() on a GPU tensor would synchronise separately.
    lo, hi, smin, smax, ylo, yhi = torch.stack(
        [lo.double(), hi.double(), smin, smax, ylo.double(), yhi.double()]).tolist()
    # 1e-3: float16 softmax rows are within ~1e-3 of 1; logits are usually far off.
    if not (lo >= 0 and hi <= 1 + 1e-6 and abs(smin - 1) <= 1e-3 and abs(smax - 1) <= 1e-3):
        raise ValueError(f"probs must be probabilities (entries in [0, 1], rows summing to 1); got "
                         f"entries in [{lo:.4g}, {hi:.4g}] and row sums in [{smin:.4g}, {smax:.4g}]. "
                         "Pass softmax(logits), not logits.")
    if not (ylo >= 0 and yhi < p.shape[1]):
        raise ValueError(f"labels must lie in [0, K) = [0, {p.shape[1]}), got [{int(ylo)}, {int(yhi)}]")
    return p, y


def _check_bins(n_bins) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def _bin_index(values: torch.Tensor, n_bins: int, *, out_int32: bool = False) -> torch.Tensor:
    """Bin of each value for bins (i/n, (i+1)/n]; 0 goes to bin 0, 1.0 (and above) to bin n - 1."""
    # The n - 1 interior edges, correctly rounded in float64 and then in the values' dtype.
    inner = (torch.arange(1, n_bins, dtype=torch.float64, device=values.device) / n_bins).to(values.dtype)
    # right=False: index i with inner[i-1] < v <= inner[i], i.e. bins closed on the right.
    return torch.bucketize(values, inner, right=False, out_int32=out_int32)


def _top_label(p: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-label confidence (N,) in the dtype of p, and correctness (N,) as float64 0/1."""
    conf, pred = p.max(1)
    return conf, (pred == y).double()


def _top_label_bins(conf, correct, n_bins):
    """Per equal-width bin: count, sum of confidences, number correct (float64 tensors (n_bins,))."""
    idx = _bin_index(conf, n_bins)
    count = torch.bincount(idx, minlength=n_bins).double()
    conf_sum = torch.bincount(idx, weights=conf.double(), minlength=n_bins)
    acc_sum = torch.bincount(idx, weights=correct, minlength=n_bins)
    return count, conf_sum, acc_sum


def _binned_error(count, conf_sum, acc_sum, norm: str) -> float:
    """Weighted calibration error from per-bin sums; empty bins contribute nothing."""
    filled = count > 0
    gap = (acc_sum[filled] - conf_sum[filled]) / count[filled]  # accuracy - confidence per bin
    weight = count[filled] / count.sum()
    if norm == "l1":
        return float((weight * gap.abs()).sum())
    if norm == "l2":
        return math.sqrt(float((weight * gap.square()).sum()))
    if norm == "max":
        return float(gap.abs().max())
    raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")


# ----------------------------------------------------------------------------- metrics
def ece(probs, labels, *, n_bins: int = 15, norm: str = "l1") -> float:
    """Expected calibration error of the top-label confidence (Guo et al., ICML 2017, eq. 3).

    ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)| over `n_bins` equal-width bins (lower, upper] of
    the confidence max_k p_k (0 in the first bin, 1.0 in the last; see the module docstring).
    `norm`: "l1" (the definition above, the field's default), "l2" (square root of the bin-size
    weighted mean squared gap, without debiasing) or "max" (the largest gap over non-empty bins, the
    MCE). `probs` (N, K) rows summing to 1, `labels` (N,) in [0, K). Returns a float in [0, 1].
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    p, y = _as_probs_labels(probs, labels)
    return _binned_error(*_top_label_bins(*_top_label(p, y), _check_bins(n_bins)), norm)


def mce(probs, labels, *, n_bins: int = 15) -> float:
    """Maximum calibration error (Guo et al. 2017; Naeini et al. 2015): max over non-empty
    equal-width bins (lower, upper] of |acc - conf| of the top-label confidence. Same as
    `ece(..., norm="max")`. Returns a float in [0, 1]."""
    return ece(probs, labels, n_bins=n_bins, norm="max")


def adaptive_ece(probs, labels, *, n_bins: int = 15) -> float:
    """Adaptive (equal-mass) ECE of the top-label confidence (Nixon et al., "Measuring Calibration
    in Deep Learning", CVPRW 2019; Mukhoti et al., NeurIPS 2020).

    The samples, sorted by confidence (stable sort, so ties keep input order and may straddle a bin
    boundary), are cut into `n_bins` consecutive groups whose sizes differ by at most one (the first
    N mod n_bins groups are one larger, as `numpy.array_split`); with N < n_bins each sample is its
    own group. Returns sum_b |B_b|/N * |acc(B_b) - conf(B_b)|, a float in [0, 1].
    """
    p, y = _as_probs_labels(probs, labels)
    return _adaptive_ece(*_top_label(p, y), _check_bins(n_bins))


def _adaptive_ece(conf, correct, n_bins: int) -> float:
    order = torch.sort(conf, stable=True).indices
    n = conf.shape[0]
    n_bins = min(n_bins, n)  # fewer samples than bins: one sample per group
    q, r = divmod(n, n_bins)
    # Group of sorted position j: the first r groups hold q + 1 samples, the others q.
    j = torch.arange(n, device=conf.device)
    group = torch.where(j < r * (q + 1), j // (q + 1), r + (j - r * (q + 1)) // max(q, 1))
    count = torch.bincount(group, minlength=n_bins).double()
    conf_sum = torch.bincount(group, weights=conf[order].double(), minlength=n_bins)
    acc_sum = torch.bincount(group, weights=correct[order], minlength=n_bins)
    return _binned_error(count, conf_sum, acc_sum, "l1")


def classwise_ece(probs, labels, *, n_bins: int = 15) -> float:
    """Classwise ECE (Kull et al., NeurIPS 2019; "static calibration error" of Nixon et al. 2019).

    For each class k, every sample's p_k is put in equal-width bins (lower, upper] (0 in the first
    bin, 1.0 in the last); per bin the gap is |mean p_k - fraction of samples with label k|, weighted
    by bin size / N; the per-class errors are averaged over the K classes. Returns a float in [0, 1].
    """
    p, y = _as_probs_labels(probs, labels)
    return _classwise_ece(p, y, _check_bins(n_bins))


def _classwise_ece(p, y, n_bins: int) -> float:
    n, k = p.shape
    idx = _bin_index(p, n_bins, out_int32=True)  # (N, K) bin of each p_k; int32 halves the traffic
    # Sample i counts as a hit for class y_i only, in the bin that holds its p_{y_i}.
    hit_bin = idx.gather(1, y[:, None]).squeeze(1).long()
    hits = torch.bincount(y * n_bins + hit_bin, minlength=k * n_bins).double()
    idx += torch.arange(0, k * n_bins, n_bins, dtype=idx.dtype, device=p.device)  # class-major ids
    p_sum = torch.bincount(idx.view(-1), weights=p.reshape(-1).double(), minlength=k * n_bins)
    # |p_sum - hits| = count * |mean p_k - frequency of label k| per (class, bin); 0 where empty.
    return float((p_sum - hits).abs().sum() / (n * k))


def nll(probs, labels, *, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood -log p_y, with p_y clamped to at least `eps` (so a zero
    probability on the true class costs -log(eps) ~ 27.6 rather than infinity). Natural log."""
    p, y = _as_probs_labels(probs, labels)
    return _nll(p, y, eps)


def _nll(p, y, eps: float) -> float:
    py = p.gather(1, y[:, None]).squeeze(1).double()
    return float(-py.clamp_min(eps).log().mean())


def brier(probs, labels) -> float:
    """Multi-class Brier score (Brier 1950), in its sum form: the mean over samples of
    sum_k (p_k - onehot(y)_k)^2, in [0, 2] (0: confident and right; 2: confident and wrong).
    Some libraries divide by K or score only the top label; this does neither."""
    p, y = _as_probs_labels(probs, labels)
    return _brier(p, y)


def _brier(p, y) -> float:
    # sum_k (p_k - 1[k = y])^2 = sum_k p_k^2 - 2 p_y + 1, without building the one-hot matrix.
    sq = p.square().sum(1, dtype=torch.float64)
    py = p.gather(1, y[:, None]).squeeze(1).double()
    return float((sq - 2 * py + 1).mean())


# ----------------------------------------------------------------------------- reliability diagram
@dataclass(frozen=True)
class ReliabilityTable:
    """Per equal-width bin (lower, upper] of the top-label confidence: what a reliability diagram
    (Guo et al. 2017, fig. 1) plots. Arrays of shape (n_bins,); `confidence` and `accuracy` are the
    bin means, NaN where `count` is 0. `ece` from the same inputs equals
    sum(count / N * |accuracy - confidence|) over non-empty bins."""
    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def gap(self) -> np.ndarray:
        """accuracy - confidence per bin (negative: over-confident); NaN where empty."""
        return self.accuracy - self.confidence

    def rows(self) -> list[dict]:
        """One dict per bin (keys lower, upper, count, confidence, accuracy), e.g. for a CSV file."""
        return [{"lower": float(lo), "upper": float(hi), "count": int(c), "confidence": float(cf),
                 "accuracy": float(a)}
                for lo, hi, c, cf, a in zip(self.lower, self.upper, self.count, self.confidence,
                                            self.accuracy)]


def reliability_table(probs, labels, *, n_bins: int = 15) -> ReliabilityTable:
    """The bins behind a reliability diagram: edges i/n_bins, count, mean top-label confidence and
    accuracy per bin (NaN where empty), with the binning of `ece`."""
    n_bins = _check_bins(n_bins)
    p, y = _as_probs_labels(probs, labels)
    count, conf_sum, acc_sum = (t.cpu().numpy() for t in _top_label_bins(*_top_label(p, y), n_bins))
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence, accuracy = conf_sum / count, acc_sum / count  # 0/0 -> NaN for empty bins
    edges = np.arange(n_bins + 1) / n_bins
    return ReliabilityTable(lower=edges[:-1], upper=edges[1:], count=count.astype(np.int64),
                            confidence=confidence, accuracy=accuracy)


def calibration_metrics(probs, labels, *, n_bins: int = 15) -> dict[str, float]:
    """All the metrics above at once, under the keys a run records: `ece`, `mce`, `aece`,
    `cw_ece`, `nll`, `brier` (Python floats)."""
    n_bins = _check_bins(n_bins)
    p, y = _as_probs_labels(probs, labels)  # converted and checked once for all six
    top = _top_label(p, y)  # shared by ece, mce and aece
    bins = _top_label_bins(*top, n_bins)
    return {"ece": _binned_error(*bins, "l1"), "mce": _binned_error(*bins, "max"),
            "aece": _adaptive_ece(*top, n_bins), "cw_ece": _classwise_ece(p, y, n_bins),
            "nll": _nll(p, y, 1e-12), "brier": _brier(p, y)}
