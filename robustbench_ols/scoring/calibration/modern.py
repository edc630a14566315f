"""Calibration as the field now reports it, beside the binned ECE of Guo et al. (metrics.py):

- smooth ECE (Błasiok & Nakkiran, "Smooth ECE: Principled Reliability Diagrams via Kernel Smoothing",
  ICLR 2024): computed by their package `relplot` (its `smECE`, bandwidth chosen automatically), with a
  seeded 95% bootstrap interval over the test images that always contains the estimate, and the
  bootstrap's estimate of its bias (`smooth_ece_bootstrap`): the basic interval of `scipy.stats.bootstrap`
  (relplot's own choice of method), widened to reach the estimate where it misses it. smECE is biased
  upwards (a resample duplicates images; even a perfectly calibrated model scores above 0), and the basic
  interval, reflected about the estimate, sits below the estimate by about that bias: when the bias
  exceeds about two bootstrap standard errors it would end below the estimate (`smooth_ece_bootstrap`
  says why this and not the percentile, BC or BCa interval);
- debiased ECE (Kumar, Liang & Ma, "Verified Uncertainty Calibration", NeurIPS 2019): the top-label L2
  calibration error over 15 equal-mass bins with each bin's squared gap debiased by the label variance,
  the estimator of their `uncertainty-calibration` package (`get_calibration_error(probs, labels, p=2,
  debias=True, mode="top-label")`), vectorised here and checked against it in the tests;
(AURC and the other selective-prediction figures: selective.py.)

Every function takes the top-label confidence `conf` (N,) and correctness `correct` (N,) 0/1 as numpy
arrays (`top_label` makes them from probabilities) and returns a Python float.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from robustbench_ols.scoring.calibration.selective import selective_metrics

SMECE_RESAMPLES = 200  # relplot's own interval uses 100; 200 costs ~2 s on 10,000 images, 2 CPU cores


def top_label(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """(confidence max_k p_k, correctness 0/1 as float64) of (N, K) probabilities and (N,) labels."""
    p = np.asarray(probs, dtype=np.float64)
    return p.max(1), (p.argmax(1) == np.asarray(labels)).astype(np.float64)


def smooth_ece(conf, correct) -> float:
    """smECE of relplot (Błasiok & Nakkiran 2024): kernel-smoothed |E[y - f | f]| with the bandwidth
    sigma at which smECE = sigma, found by relplot's own search. In [0, 1]."""
    import relplot  # imports matplotlib and scikit-learn: loaded only when scoring
    return float(relplot.smECE(np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=np.float64)))


def smooth_ece_bootstrap(conf, correct, *, seed: int = 0, n_resamples: int = SMECE_RESAMPLES,
                         level: float = 0.95) -> tuple[float, float, float, float]:
    """(estimate, low, high, bias) of `smooth_ece` over the images: a paired bootstrap (an image keeps its
    confidence and correctness) by `scipy.stats.bootstrap`, seeded by `seed` so that a re-scoring gives
    the same figures. bias = the mean of the resamples' smECE minus the estimate.

    The interval is the basic bootstrap interval [2 e - q(1 - a/2), 2 e - q(a/2)] of the estimate e and
    the resamples' quantiles q, a = 1 - level (Davison & Hinkley, "Bootstrap Methods and their
    Application", 1997, eq. 5.6; scipy's method="basic"), clipped to [0, 1] and then widened to reach e:
    it contains e by construction. The basic interval misses e exactly when the share of resamples below
    e is outside [a/2, 1 - a/2]: more than 97.5% of them above e (an upward bias beyond about two bootstrap
    standard errors, the case of a model near smECE's noise floor) ends it below e, and its upper end is
    then e (its lower end is e in the mirror case). An interval that ends exactly at the estimate was
    widened. Widening only adds coverage. Not the percentile, BC (Efron 1981) or BCa (Efron 1987)
    interval: each misses e under the same condition (the share of resamples below e outside
    [a/2, 1 - a/2]), so none makes the widening unnecessary; in simulated CIFAR-10-like test sets of
    10,000 images from models with a population smECE of 0.005 to 0.010 the percentile and BC intervals
    covered it in 0% to 64% of test sets against 72% to 86% for the basic one (at 0.013 to 0.033 all
    covered it in 79% to 96%; BCa, tried on 2,000 images, matched BC), and BCa's jackknife costs one
    smECE per image (over 2 minutes on 10,000 images, against ~1.4 s for the 200 resamples). Near a
    population smECE of 0 no bootstrap interval covers it (the estimator's bias exceeds the bootstrap's
    estimate of it): there the interval is the estimate's sampling spread. (est, nan, nan, nan) for
    fewer than 2 images."""
    f, y = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    est = smooth_ece(f, y)
    if len(f) < 2:
        return est, float("nan"), float("nan"), float("nan")
    res = stats.bootstrap((f, y), smooth_ece, paired=True, vectorized=False, n_resamples=n_resamples,
                          confidence_level=level, method="basic", rng=np.random.default_rng(seed))
    lo, hi = max(float(res.confidence_interval.low), 0.0), min(float(res.confidence_interval.high), 1.0)
    return est, min(lo, est), max(hi, est), float(np.mean(res.bootstrap_distribution)) - est


def smooth_ece_interval(conf, correct, *, seed: int = 0, n_resamples: int = SMECE_RESAMPLES,
                        level: float = 0.95) -> tuple[float, float]:
    """(low, high) of `smooth_ece_bootstrap`: the basic bootstrap interval widened to reach the estimate."""
    return smooth_ece_bootstrap(conf, correct, seed=seed, n_resamples=n_resamples, level=level)[1:3]


def equal_mass_edges(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """The upper bin edges of `uncertainty-calibration`'s `get_equal_bins`: the sorted confidences cut
    into `n_bins` groups as `numpy.array_split`, an edge halfway between the last value of a group and
    the first of the next, 1.0 last, duplicates merged (tied values stay in one bin)."""
    s = np.sort(conf)
    n_bins = min(n_bins, len(s))
    starts = np.cumsum([len(g) for g in np.array_split(np.arange(len(s)), n_bins)])[:-1]
    return np.unique(np.append((s[starts - 1] + s[starts]) / 2, 1.0))


def debiased_ece(conf, correct, *, n_bins: int = 15) -> float:
    """Kumar et al.'s debiased top-label L2 calibration error: equal-mass bins (`equal_mass_edges`, bins
    (lower, upper]), per bin (mean conf - mean correct)^2 - acc (1 - acc) / (n_b - 1) (a bin of one image
    adds 0), weighted by n_b / N, summed, clipped at 0 and square-rooted. In [0, 1]; near 0 for a
    calibrated model where the plug-in estimate stays positive."""
    f, y = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    b = np.searchsorted(equal_mass_edges(f, n_bins), f, side="left")
    n = np.bincount(b).astype(np.float64)
    filled = n > 0
    n, f_mean, acc = n[filled], np.bincount(b, f)[filled] / n[filled], np.bincount(b, y)[filled] / n[filled]
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(n > 1, acc * (1 - acc) / (n - 1), 0.0)
    sq = np.where(n > 1, (f_mean - acc) ** 2 - var, 0.0)
    return float(np.sqrt(max(float(np.sum(n / n.sum() * sq)), 0.0)))


def modern_metrics(probs, labels, *, n_bins: int = 15, seed: int = 0) -> dict[str, float]:
    """`smece` with its bootstrap interval `smece_lo`/`smece_hi` and the bootstrap's bias estimate
    `smece_boot_bias` (`smooth_ece_bootstrap`), `ece_debiased`, and the selective-prediction figures by the
    maximum softmax probability (`selective_metrics`: `aurc`, `augrc`, `cov_at_5risk`, `risk_at_80cov`) of
    (N, K) probabilities (numpy or torch) and (N,) labels, as Python floats."""
    conf, correct = top_label(np.asarray(probs), np.asarray(labels))
    est, lo, hi, bias = smooth_ece_bootstrap(conf, correct, seed=seed)
    return {"smece": est, "smece_lo": lo, "smece_hi": hi, "smece_boot_bias": bias,
            "ece_debiased": debiased_ece(conf, correct, n_bins=n_bins), **selective_metrics(conf, correct)}
