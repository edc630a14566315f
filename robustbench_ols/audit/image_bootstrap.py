"""What one seed can say: for a comparison with a single paired seed (no test over seeds is possible), a
paired bootstrap over the test images of the difference new - baseline, from each image's recorded outcome
(`evals/<eval_id>.predictions.npz`: top-label confidence and correctness; `.robust.npz`: fooled or not by
each attack). It measures how much the figure would move on another test set of the same size, and
nothing of how much it moves from one training seed to the next, which is usually larger: the audit
labels it so and never decides better or worse from it.

Metrics it allows: test error (as the clean error of the scored model), ECE (15 bins, or the record's),
FGSM and PGD error and the per-image worst case at 8/255. Not KL on CIFAR-10H nor the wrong-label fit
(no per-image record). Interval: `scipy.stats.bootstrap`, paired, percentile, seeded.
"""
from __future__ import annotations

import numpy as np

from robustbench_ols.attacks import DEFAULT_EPS, AttackSpec
from robustbench_ols.store.evals import eval_record_path, read_setting
from robustbench_ols.store.reading import read_arrays

RESAMPLES = 2000
ALLOWED = ("test_err_last", "ece", "fgsm_err", "pgd_err", "robust_err")


def _images(run, metric: str):
    """(test-set indices, arrays, statistic) of one run for `metric`, or None when the run has no
    per-image record of it."""
    if not isinstance(run.get("run_dir"), str) or not isinstance(run.get("eval_id"), str):
        return None  # a table not read from run directories
    run_dir, eid = run["run_dir"], run["eval_id"]
    if metric in ("test_err_last", "ece"):
        z = read_arrays(eval_record_path(run_dir, eid, "predictions.npz"))
        if z is None:
            return None
        conf, correct = z["confidence"], z["correct"].astype(np.float64)  # bins in the stored dtype
        index = np.arange(len(conf))
        if metric == "test_err_last":
            return index, (1.0 - correct,), _mean
        n_bins = read_setting(run_dir, eid).get("n_bins", 15)
        return index, (conf, correct), lambda c, k, axis=-1: binned_ece_rows(c, k, n_bins)
    arrays = read_arrays(eval_record_path(run_dir, eid, "robust.npz"))
    if arrays is None:
        return None
    at_default = {k: a for k in arrays if (a := AttackSpec.from_key(f"{k}_err")) is not None
                  and a.eps == DEFAULT_EPS and a.kind != "worst"}
    if metric == "fgsm_err":
        keys = [k for k, a in at_default.items() if a.kind == "fgsm"]
    elif metric == "pgd_err":
        keys = ["pgd20"] if "pgd20" in at_default else [k for k, a in at_default.items() if a.kind == "pgd"]
    else:
        keys = list(at_default)
    if len(keys) != 1 and metric != "robust_err" or not keys:
        return None
    wrong = np.logical_or.reduce([arrays["clean_wrong"], *[arrays[k] for k in keys]]).astype(np.float64)
    return arrays["test_index"], (wrong,), _mean


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def binned_ece_rows(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> np.ndarray:
    """The binned ECE of each row of (B, N) confidences and correctness (or of one (N,) pair), with the
    bins of `calibration.ece` (equal width, (lower, upper], edges in the confidences' dtype): vectorised over
    the bootstrap's resamples. sum_b n_b/N |acc_b - conf_b| = sum_b |correct sum_b - confidence sum_b| / N."""
    conf, correct = np.atleast_2d(conf), np.atleast_2d(correct)
    rows, n = conf.shape
    inner = (np.arange(1, n_bins, dtype=np.float64) / n_bins).astype(conf.dtype)
    ids = np.searchsorted(inner, conf, side="left") + n_bins * np.arange(rows)[:, None]
    size = rows * n_bins
    gap = (np.bincount(ids.ravel(), correct.ravel(), size) - np.bincount(ids.ravel(), conf.ravel().astype(np.float64),
                                                                         size)).reshape(rows, n_bins)
    out = np.abs(gap).sum(1) / n
    return out if out.shape[0] > 1 else out[0]


def image_bootstrap(new_run, old_run, metric: str, *, seed: int = 0, n_resamples: int = RESAMPLES):
    """(difference, low, high): `metric` of `new_run` minus that of `old_run` (rows of `results.collect`)
    on the same test images, and its 95% paired bootstrap interval over the images; None when either run
    lacks the per-image record, or their images differ."""
    from scipy import stats
    if metric not in ALLOWED:
        return None
    a, b = _images(new_run, metric), _images(old_run, metric)
    if a is None or b is None or len(a[0]) < 2 or not np.array_equal(a[0], b[0]):
        return None  # no record, or not the same test images
    (_, xa, fa), (_, xb, fb) = a, b
    k = len(xa)

    def diff(*arrays, axis=-1):
        return fa(*arrays[:k], axis=axis) - fb(*arrays[k:], axis=axis)
    res = stats.bootstrap((*xa, *xb), diff, paired=True, vectorized=True, n_resamples=n_resamples, batch=200,
                          method="percentile", rng=np.random.default_rng(seed))
    return float(diff(*xa, *xb)), float(res.confidence_interval.low), float(res.confidence_interval.high)
