"""Smooth ECE, debiased ECE and AURC (calibration/modern.py) against the packages that define them
(relplot, uncertainty-calibration) and hand-computed cases, with confidences exactly on a bin edge and
exactly 1.0; and their place in a scored run (metrics.json, predictions.npz)."""
import json

import calibration as kumar  # the `uncertainty-calibration` package of Kumar et al. 2019
import numpy as np
import pytest
import relplot
from scipy import stats
from scipy.special import ndtr, ndtri

from robustbench_ols.scoring.calibration.modern import (
    debiased_ece,
    equal_mass_edges,
    modern_metrics,
    smooth_ece,
    smooth_ece_bootstrap,
    smooth_ece_interval,
    top_label,
)
from robustbench_ols.scoring.calibration.selective import aurc, logit_norm_confidence, selective_metrics


def _probs(n: int, seed: int, scale: float = 3.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 10)) * scale
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = rng.integers(0, 10, n)
    return p, y


def _kumar(p, y):
    """The package's estimator, with its equal-mass binning forced (it switches to one bin per distinct
    value when the confidences are 'discrete')."""
    return kumar.lower_bound_scaling_ce(p, y, p=2, debias=True, num_bins=15, binning_scheme=kumar.get_equal_bins,
                                        mode="top-label")


@pytest.mark.parametrize("n,seed", [(40, 0), (1000, 1), (10000, 2)])
def test_debiased_ece_equals_kumar_et_al(n, seed):
    p, y = _probs(n, seed)
    p[:7] = np.eye(10)[y[:7]]  # confidence exactly 1.0, correct
    p[7:10] = np.eye(10)[(y[7:10] + 1) % 10]  # confidence exactly 1.0, wrong
    assert debiased_ece(*top_label(p, y)) == pytest.approx(_kumar(p, y), abs=1e-12)
    if n == 10000:  # continuous confidences: the package's own entry point takes the same path
        assert debiased_ece(*top_label(p, y)) == pytest.approx(
            kumar.get_calibration_error(p, y, p=2, debias=True, mode="top-label"), abs=1e-12)


def test_debiased_ece_with_ties_on_a_bin_edge():
    # 30 images, 15 bins of 2: the tied 0.5s straddle the cut between two groups, so the edge is 0.5 itself
    # and both go below it (bins (lower, upper]); the package bins the same way
    conf = np.array([0.3] * 9 + [0.5] * 2 + [0.7] * 9 + [0.9] * 9 + [1.0])
    correct = np.array([0, 1, 0] * 3 + [1, 0] + [1, 1, 0] * 3 + [1] * 9 + [1], dtype=float)
    edges = equal_mass_edges(conf, 15)
    assert 0.5 in edges and edges[-1] == 1.0 and len(edges) == len(set(edges))
    p = np.zeros((30, 10))
    p[:, 0] = conf
    p[:, 1:] = ((1 - conf) / 9)[:, None]
    y = np.where(correct == 1, 0, 1)
    assert debiased_ece(conf, correct) == pytest.approx(_kumar(p, y), abs=1e-12)


def test_debiased_ece_hand_computed():
    # 2 bins (n_bins=2) of 4: bin 1 conf .6 (4x), acc 2/4: (.6-.5)^2 - .25/3; bin 2 conf 1.0, acc 4/4: 0 - 0
    conf = np.array([0.6] * 4 + [1.0] * 4)
    correct = np.array([1, 0, 1, 0, 1, 1, 1, 1], dtype=float)
    sq = 0.5 * ((0.1 ** 2) - 0.25 / 3) + 0.5 * 0.0
    assert debiased_ece(conf, correct, n_bins=2) == pytest.approx(np.sqrt(max(sq, 0)), abs=1e-15) == 0.0
    conf = np.array([0.9] * 4 + [1.0] * 4)
    correct = np.array([0, 0, 1, 0, 1, 1, 1, 1], dtype=float)
    sq = 0.5 * ((0.9 - 0.25) ** 2 - 0.25 * 0.75 / 3)
    assert debiased_ece(conf, correct, n_bins=2) == pytest.approx(np.sqrt(sq), abs=1e-15)


def test_smooth_ece_is_relplots_and_reads_hand_computed_cases():
    p, y = _probs(2000, 3)
    conf, correct = top_label(p, y)
    assert smooth_ece(conf, correct) == relplot.smECE(conf, correct)
    # every confidence 0.7 and 70% right: the smoothed residual is 0 everywhere
    assert smooth_ece(np.full(10, 0.7), np.array([1] * 7 + [0] * 3, dtype=float)) == pytest.approx(0, abs=1e-12)
    # every confidence exactly 1.0 and every prediction wrong: the residual is 1 everywhere (relplot's
    # reflected kernel on a 200-point mesh loses ~1e-5 at the boundary)
    assert smooth_ece(np.ones(50), np.zeros(50)) == pytest.approx(1.0, abs=1e-4)


def test_smooth_ece_interval_is_seeded_and_holds_the_estimate():
    p, y = _probs(3000, 4)
    conf, correct = top_label(p, y)
    lo, hi = smooth_ece_interval(conf, correct, n_resamples=60)
    assert (lo, hi) == smooth_ece_interval(conf, correct, n_resamples=60)  # same seed, same interval
    assert 0 <= lo < hi and hi - lo < 0.05
    assert lo <= smooth_ece(conf, correct) <= hi
    assert (lo, hi) != smooth_ece_interval(conf, correct, n_resamples=60, seed=1)


def _calibrated(n: int, seed: int, power: float = 1.0):
    """Top-label confidence and correctness of a CIFAR-10-like model (~94% right, confidences crowded
    near 1): each image right with probability conf ** power (1: calibrated; above 1: overconfident)."""
    rng = np.random.default_rng(seed)
    conf = np.clip(1 - rng.beta(0.6, 9, n), 0.1, 1.0)
    return conf, (rng.random(n) < conf ** power).astype(np.float64)


def _basic(conf, correct):
    """The interval the package recorded before: scipy's basic bootstrap, 200 resamples, seed 0."""
    return stats.bootstrap((conf, correct), relplot.smECE, paired=True, vectorized=False, n_resamples=200,
                           method="basic", rng=np.random.default_rng(0))


def test_smece_interval_reaches_an_estimate_the_basic_interval_misses():
    # the issue's OLS run (smECE 0.01241, basic interval [0.00568, 0.01214], resamples' mean 0.0157) in
    # small: a calibrated model on 3,000 images, smECE 0.0102 at its noise floor
    conf, correct = _calibrated(3000, 4)
    est = relplot.smECE(conf, correct)
    old = _basic(conf, correct)
    boot = old.bootstrap_distribution
    assert old.confidence_interval.high < est  # today's interval excludes its own estimate
    share_below = np.mean(boot < est)
    assert share_below < 0.025 and boot.mean() > est  # because 97.5% of the resamples lie above it
    # the percentile and Efron's BC intervals miss it too (the same condition): no remedy by method
    assert np.quantile(boot, 0.025) > est
    z0 = ndtri((np.sum(boot < est) + np.sum(boot <= est)) / (2 * len(boot)))  # scipy's BCa z0, a = 0
    assert np.quantile(boot, ndtr(2 * z0 + 1.959964)) < est
    # the recorded interval: the basic one, its upper end raised to the estimate; the bias stated
    e, lo, hi, bias = smooth_ece_bootstrap(conf, correct)
    assert e == est and lo == max(old.confidence_interval.low, 0.0) and hi == est
    assert bias == pytest.approx(boot.mean() - est, rel=1e-12) and bias > 0.002
    assert smooth_ece_interval(conf, correct) == (lo, hi)


def test_smece_interval_is_the_basic_one_where_that_holds_the_estimate():
    # an overconfident model (right with probability conf ** 1.6): smECE ~0.03, far above the noise floor,
    # the resamples centred on the estimate; the interval is scipy's basic one untouched
    conf, correct = _calibrated(3000, 0, power=1.6)
    old = _basic(conf, correct)
    e, lo, hi, bias = smooth_ece_bootstrap(conf, correct)
    assert 0.02 < e < 0.05 and 0.025 < np.mean(old.bootstrap_distribution < e) < 0.975
    assert (lo, hi) == (old.confidence_interval.low, old.confidence_interval.high) and lo < e < hi
    assert abs(bias) < (hi - lo) / 4
    assert all(np.isnan(smooth_ece_bootstrap([0.9], [1.0])[1:]))  # one image: no interval


def test_aurc_hand_computed_and_ties():
    # sorted .9 (right), .8 (wrong), .7 (right): risks 0, 1/2, 1/3
    assert aurc([0.9, 0.8, 0.7], [1, 0, 1]) == pytest.approx((0 + 1 / 2 + 1 / 3) / 3)
    # the same images in another order give the same area
    assert aurc([0.7, 0.9, 0.8], [1, 1, 0]) == pytest.approx((0 + 1 / 2 + 1 / 3) / 3)
    # 1.0 tied twice (one right, one wrong), then .5 right: the tied pair is accepted together (risk 1/2
    # for both coverages 1/3 and 2/3), then 1/3; in either input order
    for conf, correct in (([1.0, 1.0, 0.5], [1, 0, 1]), ([1.0, 1.0, 0.5], [0, 1, 1])):
        assert aurc(conf, correct) == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3)
    assert aurc([0.3] * 4, [1, 0, 0, 1]) == pytest.approx(0.5)  # constant confidence: the error rate
    assert aurc([0.9, 0.2], [1, 1]) == 0.0


def test_modern_metrics_keys():
    p, y = _probs(500, 5)
    m = modern_metrics(p, y)
    assert set(m) == {"smece", "smece_lo", "smece_hi", "smece_boot_bias", "ece_debiased", "aurc", "augrc",
                      "cov_at_5risk", "risk_at_80cov"}
    assert all(isinstance(v, float) for v in m.values())
    assert 0 <= m["smece_lo"] <= m["smece"] <= m["smece_hi"] <= 1
    conf, correct = top_label(p, y)
    boot = _basic(conf, correct).bootstrap_distribution  # the same resamples (seed 0)
    assert m["smece_boot_bias"] == pytest.approx(boot.mean() - smooth_ece(conf, correct), rel=1e-12)


@pytest.mark.usefixtures("one_torch_thread")
def test_a_scored_run_records_them_and_each_images_prediction(tmp_path):
    from robustbench_ols.cli import main
    out = tmp_path / "r"
    assert main(["run", "--dataset", "synthetic", "--model", "resnet8", "--method", "ls", "--epochs", "1",
                 "--train-subset", "300", "--val-split", "100", "--attack", "none", "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 0
    (run,) = [d for d in out.iterdir() if (d / "DONE").exists()]
    m = json.loads((run / "metrics.json").read_text())
    npz = np.load(run / "evals" / f"{m['eval_id']}.predictions.npz")
    conf, correct = npz["confidence"].astype(np.float64), npz["correct"].astype(np.float64)
    assert 1 - correct.mean() == pytest.approx(m["clean_err"])
    assert m["ece_debiased"] == pytest.approx(debiased_ece(conf, correct), abs=1e-6)
    assert m["aurc"] == pytest.approx(aurc(conf, correct), abs=1e-6)
    assert 0 <= m["smece_lo"] <= m["smece"] <= m["smece_hi"] <= 1 and isinstance(m["smece_boot_bias"], float)
    # after temperature scaling (a validation split exists): every figure again, accuracy untouched
    assert m["temperature"] > 0
    for k in ("ece", "aece", "ece_debiased", "smece", "smece_lo", "smece_hi", "aurc", "augrc", "cov_at_5risk",
              "risk_at_80cov", "nll"):
        assert isinstance(m[f"{k}_ts"], float)
    conf_ts = npz["confidence_ts"].astype(np.float64)
    assert m["aurc_ts"] == pytest.approx(aurc(conf_ts, correct), abs=1e-6)
    # selective prediction by MSP, and by the logit-normalised score from the model's own logits
    sel = selective_metrics(conf, correct)
    for k in ("augrc", "cov_at_5risk", "risk_at_80cov"):
        assert m[k] == pytest.approx(sel[k], abs=1e-6)
    import torch

    from robustbench_ols import store
    from robustbench_ols.data import load_dataset
    from robustbench_ols.models.inference import predict_logits
    model = store.load_run_model(run, 10, torch.device("cpu"))
    data = load_dataset("synthetic", None, download=False, seed=0)
    z = torch.cat(list(predict_logits(model, data.test_x, batch_size=256)))
    ln = selective_metrics(logit_norm_confidence(z), (z.argmax(1).numpy() == data.test_y).astype(float))
    assert {k: m[f"{k}_ln"] for k in ln} == pytest.approx(ln, abs=1e-6)
    # the report draws relplot's smoothed diagram of these images under the binned one
    from robustbench_ols.report import write_report
    from robustbench_ols.report.figures import prediction_rows, reliability_figure
    rep = tmp_path / "rep"
    write_report(out, rep, formats=("png",))
    assert (rep / "reliability_ls.png").exists()
    import pandas as pd

    from robustbench_ols.store.results import collect
    d = collect(out)
    (key, (f, y)), = prediction_rows(d.assign(noise_col="0%"), None).items()
    assert key == ("ls", "0%") and len(f) == len(conf) and (y == correct).all()
    pooled = pd.DataFrame([dict(noise_col="0%", lower=0.0, upper=1.0, count=len(f), confidence=f.mean(),
                                accuracy=y.mean())])
    fig = reliability_figure(pooled, smooth={"0%": (f, y)})
    binned, smoothed = fig.axes
    diagram = relplot.prepare_rel_diagram(f.astype(float), y.astype(float), report_CE_std=False,
                                          plot_confidence_band=False)
    # relplot draws its curve as dots on a 1,000-point mesh; ours is bagged (a bootstrap band), so close
    dots = [c.get_offsets() for c in smoothed.collections if len(c.get_offsets()) == 1000]
    x, drawn = np.asarray(dots[0][:, 0]), np.asarray(dots[0][:, 1])
    where = np.interp(x, diagram["mesh"], diagram["density"]) > 0.2 * diagram["density"].max()  # where the images are
    assert where.sum() > 10
    assert np.allclose(drawn[where], np.interp(x, diagram["mesh"], diagram["mu"])[where], atol=0.05)
    assert any(f"smECE: {diagram['ce']:.3f}" == t.get_text() for t in smoothed.texts)
