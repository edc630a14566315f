"""Smooth ECE, debiased ECE and AURC (calibration/modern.py) against the packages that define them
(relplot, uncertainty-calibration) and hand-computed cases, with confidences exactly on a bin edge and
exactly 1.0; and their place in a scored run (metrics.json, predictions.npz)."""
import json

import calibration as kumar  # the `uncertainty-calibration` package of Kumar et al. 2019
import numpy as np
import pytest
import relplot

from robustbench_ols.calibration.modern import (
    aurc,
    debiased_ece,
    equal_mass_edges,
    modern_metrics,
    smooth_ece,
    smooth_ece_interval,
    top_label,
)


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
    assert (lo, hi) != smooth_ece_interval(conf, correct, n_resamples=60, seed=1)


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
    assert set(m) == {"smece", "smece_lo", "smece_hi", "ece_debiased", "aurc"}
    assert all(isinstance(v, float) for v in m.values())
    assert 0 <= m["smece_lo"] <= m["smece_hi"] <= 1


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
    assert 0 <= m["smece_lo"] <= m["smece_hi"] <= 1
    # after temperature scaling (a validation split exists): every figure again, accuracy untouched
    assert m["temperature"] > 0
    for k in ("ece", "aece", "ece_debiased", "smece", "smece_lo", "smece_hi", "aurc", "nll"):
        assert isinstance(m[f"{k}_ts"], float)
    conf_ts = npz["confidence_ts"].astype(np.float64)
    assert m["aurc_ts"] == pytest.approx(aurc(conf_ts, correct), abs=1e-6)
    # the report draws relplot's smoothed diagram of these images under the binned one
    from robustbench_ols.report import write_report
    from robustbench_ols.report.figures import prediction_rows, reliability_figure
    rep = tmp_path / "rep"
    write_report(out, rep, formats=("png",))
    assert (rep / "reliability_ls.png").exists()
    import pandas as pd
    from robustbench_ols.results import collect
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
