"""The audit's statistics (comparison.py, audit.decide) on constructed tables: a clear difference is
"better", a null difference with many seeds is "equivalent", with two seeds "inconclusive" with the seeds
that would decide, and a family of 20 null comparisons yields a "significant" one uncorrected but none
under Holm. Each figure is checked against scipy or a hand computation; bad options exit 2."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from robustbench_ols.audit.comparison import Settings, adjust, seeds_needed, summarize
from robustbench_ols.audit.tables import paired_table, pooled_table
from robustbench_ols.audit.verdicts import verdicts
from robustbench_ols.cli import main

BASE = dict(dataset="cifar10", model="resnet8", epochs=1, train_subset=0)


def table(diffs_by_rate: dict, metric: str = "test_err_last", level: float = 0.3) -> pd.DataFrame:
    """Run records of `new` and `ls` whose paired differences new - ls at each noise rate are the given
    ones (ls at `level` + a seed effect, so the seeds differ)."""
    rows = []
    for rate, diffs in diffs_by_rate.items():
        for seed, d in enumerate(diffs):
            old = level + 0.01 * seed
            rows += [{**BASE, "noise_rate": rate, "method_label": "ls", "seed": seed, metric: old},
                     {**BASE, "noise_rate": rate, "method_label": "new", "seed": seed, metric: old + d}]
    return pd.DataFrame(rows)


def test_better_by_a_clear_margin():
    d = [-0.031, -0.027, -0.035, -0.029, -0.033]
    (row,) = paired_table(table({0.0: d}), "new", ["ls"]).itertuples()
    assert row.outcome == "better"
    res = stats.ttest_1samp(d, 0.0)
    assert row.p == pytest.approx(res.pvalue) and row.p_adj == pytest.approx(res.pvalue)  # a family of one
    half = stats.t.ppf(0.975, 4) * np.std(d, ddof=1) / math.sqrt(5)  # the t interval by hand
    assert (row.ci_lo, row.ci_hi) == pytest.approx((np.mean(d) - half, np.mean(d) + half))
    assert min(d) <= row.boot_lo < row.mean_diff < row.boot_hi <= max(d)
    assert math.isnan(row.seeds_needed)


def test_equal_up_to_noise_with_many_seeds_is_equivalent():
    d = np.random.default_rng(0).normal(0, 0.002, size=30)
    (row,) = paired_table(table({0.0: d}), "new", ["ls"]).itertuples()
    assert row.outcome == "equivalent" and row.p > 0.05
    # TOST by hand: the larger of the two one-sided p-values at -margin and +margin
    se = np.std(d, ddof=1) / math.sqrt(30)
    by_hand = max(stats.t.sf((d.mean() + 0.005) / se, 29), stats.t.cdf((d.mean() - 0.005) / se, 29))
    assert row.p_equiv == pytest.approx(by_hand)
    (line,) = verdicts(paired_table(table({0.0: d}), "new", ["ls"]), "new")
    assert "equivalent within ±0.50 points in 1" in line


def test_equal_with_two_seeds_is_inconclusive_and_says_how_many_seeds_would_decide():
    d = [0.002, -0.003]
    (row,) = paired_table(table({0.0: d}), "new", ["ls"]).itertuples()
    assert row.outcome == "inconclusive" and row.p_equiv > 0.05
    assert row.seeds_for == "equivalence" and row.seeds_needed > 2
    (line,) = verdicts(paired_table(table({0.0: d}), "new", ["ls"]), "new")
    assert f"{int(row.seeds_needed)} seeds would decide at the observed spread" in line


def _t_power(effect: float, n: int, alpha: float) -> float:
    """Two-sided one-sample t-test power from the noncentral t (scipy), independent of statsmodels."""
    crit = stats.t.ppf(1 - alpha / 2, n - 1)
    nc = effect * math.sqrt(n)
    return stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)


def _tost_power(mean: float, sd: float, margin: float, n: int, alpha: float) -> float:
    crit = stats.t.ppf(1 - alpha, n - 1)
    up = stats.nct.sf(crit, n - 1, (margin - mean) / sd * math.sqrt(n))
    lo = stats.nct.sf(crit, n - 1, (margin + mean) / sd * math.sqrt(n))
    return up + lo - 1


def test_seeds_needed_is_the_smallest_n_with_power_080():
    n, why = seeds_needed(0.01, 0.012, 0.005)  # a difference twice the margin: shown as a difference
    assert why == "difference"
    assert _t_power(0.01 / 0.012, n, 0.05) >= 0.8 > _t_power(0.01 / 0.012, n - 1, 0.05)
    n, why = seeds_needed(0.0005, 0.003, 0.005)  # a tenth of the margin: equivalence is cheaper
    assert why == "equivalence"
    assert _tost_power(0.0005, 0.003, 0.005, n, 0.05) >= 0.8 > _tost_power(0.0005, 0.003, 0.005, n - 1, 0.05)
    # no spread: the sign test's pairs, 2 / 2^n <= alpha (difference) or 1 / 2^n <= alpha (equivalence)
    assert seeds_needed(0.01, 0.0, 0.005) == (6, "difference")  # 2/64 <= 0.05 < 2/32
    assert seeds_needed(0.0, 0.0, 0.005) == (5, "equivalence")  # 1/32 <= 0.05 < 1/16
    assert seeds_needed(0.0, 0.0, 0.005, alpha=0.005) == (8, "equivalence")


def test_no_spread_is_decided_by_the_exact_sign_test_not_by_its_sign():
    """Pairs that all differ by the same amount (a figure quantised in images: every seed one image of 100 apart)
    give the t-test 0/0. The sign test decides instead: two such seeds decide nothing (p = 2/4), nine do
    (2/512), and the family's correction counts them like any other comparison."""
    two = table({0.4: [-0.01, -0.01]}, metric="fgsm_eps2_err", level=0.3)
    row = paired_table(two, "new", ["ls"]).iloc[0]
    assert row.std_diff == 0 and row.p == pytest.approx(0.5) and row.p_equiv == 1.0
    assert row.outcome == "inconclusive (no spread)"
    nine = paired_table(table({0.4: [-0.01] * 9}, metric="fgsm_eps2_err", level=0.3), "new", ["ls"]).iloc[0]
    assert nine.p == pytest.approx(2 / 2 ** 9) and nine.outcome == "better (no spread)"
    tie = paired_table(table({0.4: [0.0] * 9}, metric="fgsm_eps2_err", level=0.3), "new", ["ls"]).iloc[0]
    assert tie.p == 1.0 and tie.p_equiv == pytest.approx(1 / 2 ** 9) and tie.outcome == "equivalent (no spread)"
    tie2 = paired_table(table({0.4: [0.0] * 2}, metric="fgsm_eps2_err", level=0.3), "new", ["ls"]).iloc[0]
    assert tie2.outcome == "inconclusive (no spread)"  # two tied seeds are not "the same"


def test_twenty_null_comparisons_one_significant_uncorrected_none_under_holm():
    rng = np.random.default_rng(0)
    null = {rate / 100: rng.normal(0, 0.01, size=5) for rate in range(20)}
    df = table(null, metric="ece", level=0.05)
    raw = paired_table(df, "new", ["ls"], settings=Settings(correction="none"))
    holm = paired_table(df, "new", ["ls"])
    assert len(raw) == len(holm) == 20 and (holm.family_size == 20).all()
    significant = raw.outcome.isin(["better", "worse"])
    assert significant.sum() >= 1 and (raw.p[significant] < 0.05).all()
    assert not holm.outcome.isin(["better", "worse"]).any()
    assert (holm.p_adj >= holm.p).all()
    line = verdicts(holm, "new")[0]
    assert "Holm-Bonferroni correction over the 20 comparisons" in line
    assert "better in 0" in line and "worse in 0" in line
    assert "no correction" in verdicts(raw, "new", settings=Settings(correction="none"))[0]


def test_corrections_by_hand():
    p = [0.01, 0.04, 0.03, math.nan]
    # Holm: sorted 0.01 x 3, 0.03 x 2, 0.04 x 1, made monotone; NaN (untested) stays NaN
    np.testing.assert_allclose(adjust(p, "holm"), [0.03, 0.06, 0.06, math.nan])
    # Benjamini-Hochberg: 0.04 x 3/3, 0.03 x 3/2, 0.01 x 3/1, made monotone from the top
    np.testing.assert_allclose(adjust(p, "bh"), [0.03, 0.04, 0.04, math.nan])
    np.testing.assert_allclose(adjust(p, "none"), p)


def test_wilcoxon_option():
    d = [-0.031, -0.027, -0.035, -0.029, -0.033, -0.025, -0.030]
    s = Settings(test="wilcoxon")
    got = summarize(d, 0.005, s)
    assert got["p"] == pytest.approx(stats.wilcoxon(d).pvalue) == pytest.approx(2 / 2 ** 7)
    assert got["p_equiv"] == pytest.approx(max(stats.wilcoxon(np.add(d, 0.005), alternative="greater").pvalue,
                                               stats.wilcoxon(np.subtract(d, 0.005), alternative="less").pvalue))
    (row,) = paired_table(table({0.0: d}), "new", ["ls"], settings=s).itertuples()
    assert row.outcome == "better"
    assert "Wilcoxon signed-rank test over 7 seeds" in verdicts(paired_table(table({0.0: d}), "new", ["ls"],
                                                                              settings=s), "new", settings=s)[0]


def test_pooled_family_is_per_metric_and_scope():
    d = {0.0: [-0.03, -0.02], 0.2: [-0.025, -0.035], 0.4: [-0.02, -0.03]}
    pooled = pooled_table(table(d, metric="ece"), "new", ["ls"])
    assert set(pooled.scope) == {"all", "noisy"} and (pooled.family_size == 1).all()
    assert pooled.set_index("scope").loc["all", "n"] == 6 and (pooled.outcome == "better").all()


def test_margins_override_and_bad_options_exit_2(tmp_path, capsys):
    assert Settings.parse(margins=["ece=0.01"]).margins["ece"] == 0.01
    for bad, words in ((["--margin", "accuracy=0.01"], "test_err_last"), (["--margin", "ece=-0.01"], "> 0"),
                       (["--margin", "ece"], "METRIC=VALUE"), (["--correction", "bonferroni"], "holm, bh"),
                       (["--test", "z"], "t, wilcoxon")):
        out = tmp_path / "never"
        code = main(["audit", "--method", "ols", "--against", "ls", "--preset", "smoke", "--out", str(out), *bad])
        err = capsys.readouterr().err
        assert code == 2 and words in err, (bad, err)
        assert not out.exists()  # nothing written, nothing trained


def _run_dir(tmp_path, name, correct, conf, fooled_pgd, fooled_fgsm, clean_wrong):
    d = tmp_path / name / "evals"
    d.mkdir(parents=True)
    (d / "e1.json").write_text('{"eval": {"n_bins": 15}}')
    np.savez(d / "e1.predictions.npz", confidence=np.float32(conf), correct=np.asarray(correct, bool))
    np.savez(d / "e1.robust.npz", test_index=np.arange(0, 2 * len(fooled_pgd), 2), clean_wrong=clean_wrong,
             pgd20=fooled_pgd, fgsm=fooled_fgsm)
    return {"run_dir": str(tmp_path / name), "eval_id": "e1"}


def test_one_seed_gets_a_bootstrap_over_the_test_images_labelled_as_such(tmp_path):
    from robustbench_ols.audit.image_bootstrap import image_bootstrap
    from robustbench_ols.scoring.calibration import ece
    rng = np.random.default_rng(0)
    n = 400
    old_ok = rng.random(n) < 0.6
    new_ok = old_ok | (rng.random(n) < 0.3)  # new is right wherever old is, and on more images
    conf = rng.uniform(0.3, 1.0, n)
    conf[:5] = 1.0  # confidence exactly 1.0
    pgd_new, pgd_old = rng.random(50) < 0.5, rng.random(50) < 0.9
    fgsm = rng.random(50) < 0.4
    cw = np.zeros(50, bool)
    cw[:3] = True
    new = _run_dir(tmp_path, "new", new_ok, conf, pgd_new, fgsm, cw)
    old = _run_dir(tmp_path, "old", old_ok, conf, pgd_old, fgsm, cw)
    diff, lo, hi = image_bootstrap(new, old, "test_err_last")
    assert diff == pytest.approx((1 - new_ok.mean()) - (1 - old_ok.mean())) and lo <= diff <= hi < 0
    # ECE from the confidences alone equals ECE of the probabilities they came from
    probs = np.column_stack([np.float32(conf), *[(1 - np.float32(conf)) / 9] * 9])  # class 0 on top
    d_ece = image_bootstrap(new, old, "ece")[0]
    by_probs = ece(probs, np.where(new_ok, 0, 1)) - ece(probs, np.where(old_ok, 0, 1))
    assert d_ece == pytest.approx(by_probs, abs=1e-6)
    # the worst case over the attacks at 8/255: an image counts when any attack (or the clean pass) fooled it
    worst = lambda p: np.mean(cw | p | fgsm)  # noqa: E731
    assert image_bootstrap(new, old, "robust_err")[0] == pytest.approx(worst(pgd_new) - worst(pgd_old))
    assert image_bootstrap(new, old, "pgd_err")[0] == pytest.approx(np.mean(cw | pgd_new) - np.mean(cw | pgd_old))
    assert image_bootstrap(new, new, "pgd_err") == (0.0, 0.0, 0.0)
    assert image_bootstrap(new, old, "c10h_kl_correct") is None  # no per-image record of it
    # in the audit: still "untested" (one seed), with the interval and a line that says what it is
    base = dict(dataset="cifar10", model="resnet8", epochs=1, train_subset=0, noise_rate=0.0, seed=0)
    df = pd.DataFrame([{**base, **new, "method_label": "new", "test_err_last": 1 - new_ok.mean()},
                       {**base, **old, "method_label": "ls", "test_err_last": 1 - old_ok.mean()}])
    t = paired_table(df, "new", ["ls"])
    assert t.outcome.tolist() == ["untested"] and t.img_hi.iloc[0] < 0
    (line,) = verdicts(t, "new")
    assert "no test is possible" in line and "nothing of the seed-to-seed variation" in line
    assert "lies below 0 in 1, above 0 in 0 and spans 0 in 0 of 1" in line


def test_seeds_needed_where_the_noncentral_t_fails():
    """A large effect at few degrees of freedom: statsmodels' power is NaN at 2 and 4 seeds (scipy's nct);
    2 seeds must not count as enough (their power at alpha/10 is tiny), 4 are (0.95 by scipy's nct)."""
    mean, sd = -0.007, 0.001131
    n, why = seeds_needed(mean, sd, 0.005, alpha=0.005)
    assert why == "difference" and n == 4
    assert _t_power(abs(mean) / sd, 3, 0.005) < 0.8


def test_seeds_text_prints_the_median_as_computed():
    from robustbench_ols.audit.verdicts import _seeds_text
    published = [5, 60, 107, 3, 31, 10, 82, 4, 22, 32]  # test error's seeds in the cpu-regime audit
    assert _seeds_text(pd.DataFrame({"seeds_needed": published})).startswith("3-107 (median 26.5) seeds would")
    assert "4-40 (median 9) seeds would" in _seeds_text(pd.DataFrame({"seeds_needed": [4.0, 9.0, 9.0, 40.0]}))
    text = _seeds_text(pd.DataFrame({"seeds_needed": [9995.0, 10_000.0, math.nan]}))
    assert text.startswith("9995-10000 (median 9997.5) seeds") and text.endswith("1 would need more than 10,000")
