"""`rbols audit` on a toy plugin: it runs the grid, and audit.md's paired statistics equal scipy's
computed straight from the run records."""
import json
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from robustbench_ols.audit.tables import paired_table
from robustbench_ols.audit.verdicts import pooled_verdicts, verdicts
from robustbench_ols.cli import main

TOY = '''
import torch.nn.functional as F
from robustbench_ols.methods import Method, soft_cross_entropy

class SharpLS(Method):
    """Label smoothing towards the uniform distribution with its own strength (a toy plugin)."""
    citation = "test only"

    def __init__(self, *, eps: float = 0.3):
        super().__init__()
        self.eps = eps

    def loss(self, logits, batch, epoch):
        k = logits.shape[1]
        target = F.one_hot(batch.y, k).float() * (1 - self.eps) + self.eps / k
        return soft_cross_entropy(logits, target)
'''


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    (tmp / "toyplug.py").write_text(TOY)
    sys.path.insert(0, str(tmp))
    try:
        code = main(["audit", "--method", "toyplug:SharpLS", "--against", "hard,ls", "--preset", "smoke",
                     "--seeds", "0,1,2", "--noise", "symmetric:0,symmetric:0.4", "--attack", "fgsm",
                     "--attack-examples", "30", "--device", "cpu", "--no-progress", "--threads", "1",
                     "--out", str(tmp / "runs"), "--to", str(tmp / "audit")])
    finally:
        sys.path.remove(str(tmp))
        sys.modules.pop("toyplug", None)
    assert code == 0
    return tmp


def records(runs):
    rows = []
    for done in runs.glob("*/DONE"):
        d = done.parent
        s = json.loads((d / "spec.json").read_text())["spec"]
        m = json.loads((d / "metrics.json").read_text())
        rows.append({"method": s["method"], "noise": s["noise"], "seed": s["seed"], **m})
    return pd.DataFrame(rows)


def test_audit_writes_its_files(audited):
    a = audited / "audit"
    text = (a / "audit.md").read_text()
    assert text.startswith("# Audit of `toyplug:SharpLS` against `hard`, `ls`")
    assert "## Verdict" in text and "paired t-test over 3 seeds" in text and "| missing |" in text
    assert "wrong-label fit" in text and "0.0000 | hard" in text
    for f in ("audit.csv", "diff_test_err_last.png", "diff_fgsm_err.png", "diff_ece.png", "diff_wrong_fit.png"):
        assert (a / f).exists(), f
    assert len(list((audited / "runs").glob("*/DONE"))) == 3 * 2 * 3


def test_paired_statistics_equal_scipy(audited):
    df = records(audited / "runs")
    table = pd.read_csv(audited / "audit" / "audit.csv")
    checked = 0
    for metric in ("test_err_last", "fgsm_err", "ece"):
        for noise, rate in (("symmetric:0.0", 0.0), ("symmetric:0.4", 0.4)):
            new = df[(df.method == "toyplug:SharpLS") & (df.noise == noise)].set_index("seed")[metric].sort_index()
            for base in ("hard", "ls"):
                old = df[(df.method == base) & (df.noise == noise)].set_index("seed")[metric].sort_index()
                row = table[(table.metric == metric) & (table.noise_rate == rate) & (table.baseline == base)].iloc[0]
                assert row.n == 3
                assert row.mean_diff == pytest.approx((new - old).mean())
                if np.ptp((new - old).to_numpy()) == 0:
                    continue
                res = stats.ttest_rel(new.to_numpy(), old.to_numpy())
                assert row.t == pytest.approx(res.statistic) and row.p == pytest.approx(res.pvalue)
                assert row.ci_lo == pytest.approx(res.confidence_interval().low)
                # the family: this metric's comparisons inside the regime, adjusted together by Holm
                fam = table[(table.metric == metric) & (table.regime == "ok") & table.p.notna()]
                if row.regime == "ok":
                    holm = multipletests(fam.p.to_numpy(), method="holm")[1]
                    assert row.p_adj == pytest.approx(holm[list(fam.index).index(row.name)])
                    assert row.family_size == len(fam)
                p = row.p_adj if row.regime == "ok" else row.p  # outside the regime: its test alone
                want = ("better" if (new - old).mean() < 0 else "worse") if p < 0.05 else \
                    "equivalent" if (row.p_equiv_adj if row.regime == "ok" else row.p_equiv) < 0.05 else "inconclusive"
                assert row.test_outcome == want
                # test error at 40% noise is a claim about memorising: two smoke epochs never memorise
                assert row.outcome == (want if rate == 0 or metric != "test_err_last" else row.outcome)
                if rate == 0 or metric != "test_err_last":
                    assert row.regime == "ok"
                else:
                    assert row.regime == "outside" and row.outcome.startswith("inconclusive: outside the regime")
                checked += 1
    assert checked >= 6
    md = (audited / "audit" / "audit.md").read_text()
    assert f"{table.p.dropna().iloc[0]:.4f}" in md


def test_pooled_statistics_equal_scipy(audited):
    """Pooled over noise rates: every (rate, seed) pair, the mean difference, the count of pairs where
    the new method is lower and a one-sample t-test of the differences, recomputed from the records."""
    df = records(audited / "runs")
    pooled = pd.read_csv(audited / "audit" / "audit_pooled.csv")
    for metric in ("test_err_last", "fgsm_err", "ece"):
        for base in ("hard", "ls"):
            diffs = {}
            for noise in ("symmetric:0.0", "symmetric:0.4"):
                new = df[(df.method == "toyplug:SharpLS") & (df.noise == noise)].set_index("seed")[metric]
                old = df[(df.method == base) & (df.noise == noise)].set_index("seed")[metric]
                diffs[noise] = (new - old.loc[new.index]).to_numpy()
            if metric == "test_err_last":  # about memorising: two smoke epochs never do, so 0.4 is left out
                diffs["symmetric:0.4"] = np.array([])
            for scope, d in (("all", np.concatenate(list(diffs.values()))), ("noisy", diffs["symmetric:0.4"])):
                row = pooled[(pooled.metric == metric) & (pooled.baseline == base) & (pooled.scope == scope)].iloc[0]
                if not len(d):
                    assert row.n == 0 and row.outcome.startswith("inconclusive: outside the regime (hard labels fit")
                    continue
                if metric == "test_err_last":
                    assert row.n == 3 and row.rates == "0" and str(row.outside_rates) == "0.4"
                    continue
                assert row.n == len(d) == (6 if scope == "all" else 3)
                assert row.mean_diff == pytest.approx(d.mean()) and row.lower == (d < 0).sum()
                assert row.min_diff == pytest.approx(d.min()) and row.max_diff == pytest.approx(d.max())
                if np.ptp(d) > 0:
                    res = stats.ttest_1samp(d, 0.0)
                    assert row.t == pytest.approx(res.statistic) and row.p == pytest.approx(res.pvalue)
    # The wrong-label fit exists only with noise, and the smoke grid's hard labels never memorise it:
    # both scopes are outside the regime, with no pair pooled.
    wf = pooled[(pooled.metric == "wrong_fit") & (pooled.baseline == "hard")].set_index("scope")
    assert wf.loc["all", "n"] == wf.loc["noisy", "n"] == 0
    assert wf.loc["all", "outcome"].startswith("inconclusive: outside the regime (hard labels fit")
    assert "## Pooled over noise rates" in (audited / "audit" / "audit.md").read_text()


def test_verdicts_never_claim_more_than_the_test():
    base = dict(dataset="cifar10", model="resnet8", noise_rate=0.0, epochs=1, train_subset=0)
    one_seed = pd.DataFrame([{**base, "method_label": m, "seed": 0, "test_err_last": e}
                             for m, e in (("new", 0.1), ("ls", 0.5))])
    t = paired_table(one_seed, "new", ["ls"])
    assert t.outcome.tolist() == ["untested"]
    (line,) = verdicts(t, "new")
    assert "no test is possible" in line and "better" not in line
    # Three seeds, a large but noisy difference: inconclusive, with the seeds that would decide.
    noisy = pd.DataFrame([{**base, "method_label": m, "seed": s, "test_err_last": e}
                          for s, (a, b) in enumerate([(0.1, 0.5), (0.6, 0.2), (0.3, 0.35)])
                          for m, e in (("new", a), ("ls", b))])
    t = paired_table(noisy, "new", ["ls"])
    assert t.outcome.tolist() == ["inconclusive"] and t.p.iloc[0] > 0.05
    line = verdicts(t, "new")[0]
    assert "of 1 comparison, new is better in 0, equivalent within ±0.50 points in 0, worse in 0, and 1 is " \
           "inconclusive" in line and "correction over one comparison of this metric" in line
    # A consistent difference over five seeds: better, with its interval and the test named.
    clear = pd.DataFrame([{**base, "method_label": m, "seed": s, "test_err_last": e}
                          for s in range(5) for m, e in (("new", 0.30 + 0.01 * s), ("ls", 0.40 + 0.012 * s))])
    t = paired_table(clear, "new", ["ls"])
    assert t.outcome.tolist() == ["better"] and t.p.iloc[0] < 0.001
    line = verdicts(t, "new")[0]
    assert "new is better in 1" in line and "noise 0 vs ls -10.40 points, 95% CI" in line
    assert "paired t-test over 5 seeds" in line


def test_pooled_verdicts_name_each_baseline():
    nan = float("nan")
    row = dict(metric="ece", label="ECE", dataset="cifar10", model="resnet8", margin=0.005, outside_rates="",
               rates="0 0.2 0.4 0.6 0.8",
               boot_lo=nan, boot_hi=nan, seeds_needed=nan, p_equiv_adj=nan, family_size=2, p_equiv=nan)
    pooled = pd.DataFrame([
        dict(row, scope="all", baseline="ls", n=10, lower=9, mean_diff=-0.02, ci_lo=-0.03, ci_hi=-0.01, p=0.004,
             p_adj=0.008, outcome="better"),
        dict(row, scope="all", baseline="ols", n=10, lower=4, mean_diff=0.001, ci_lo=-0.01, ci_hi=0.012, p=0.6,
             p_adj=0.6, seeds_needed=40.0, outcome="inconclusive"),
        dict(row, scope="noisy", baseline="ls", n=8, lower=0, mean_diff=0.03, ci_lo=0.02, ci_hi=0.04, p=0.001,
             p_adj=0.001, family_size=1, outcome="worse")])
    (line,) = pooled_verdicts(pooled, "new")
    assert line == ("**ECE**, pooled over all noise rates, new: better than ls (-2.00 points, 95% CI -3.00 to -1.00; "
                    "lower in 9 of 10 pairs; p = 0.004, adjusted 0.008); inconclusive against ols (+0.10 points, "
                    "95% CI -1.00 to +1.20; lower in 4 of 10 pairs; p = 0.6, adjusted 0.6; 8 seeds would decide at "
                    "the observed spread (each seed gives 5 pairs, one per rate)) [two-sided paired t-test over 10 "
                    "(rate, seed) pairs, Holm-Bonferroni "
                    "correction over the 2 pooled comparisons of this metric and scope (baselines), alpha 0.05].")
    (line,) = pooled_verdicts(pooled, "new", scope="noisy")
    assert "noise rates > 0, new: worse than ls (+3.00 points" in line


def test_a_robustness_win_with_masking_suspected_is_unconfirmed():
    """The audited method's lower robust error (the per-image worst case) is not "better" when the
    gradient-masking checks flagged its runs: the verdict names the failed checks; unflagged, it is a win."""
    from robustbench_ols.audit.tables import MASKED, pooled_table
    base = dict(dataset="cifar10", model="resnet8", epochs=1, train_subset=0)
    rows = [{**base, "noise_rate": r, "method_label": m, "seed": s, "fgsm_err": e, "pgd20_err": e,
             "worst_err": e + 0.01, "masking_suspected": m == "new", "masking_checks": "square,zero_grad" * (m == "new")}
            for r in (0.0, 0.4) for s in range(5) for m, e in (("new", 0.50 + 0.01 * s), ("ls", 0.70 + 0.012 * s))]
    flagged = pd.DataFrame(rows)
    t = paired_table(flagged, "new", ["ls"])
    robust = t[t.metric == "robust_err"]
    assert robust.test_outcome.tolist() == ["better", "better"]
    assert all(o == f"{MASKED} (square, zero_grad failed in 5 of 5 runs)" for o in robust.outcome)
    line = next(v for v in verdicts(t, "new") if v.startswith("**robust error"))
    assert "new is better in 0" in line and "2 would be better, but" in line and MASKED in line
    pooled = pooled_table(flagged, "new", ["ls"])
    assert pooled[pooled.metric == "robust_err"].outcome.str.startswith(MASKED).all()
    assert MASKED in next(v for v in pooled_verdicts(pooled, "new") if v.startswith("**robust error"))
    clean = paired_table(flagged.assign(masking_suspected=False, masking_checks=""), "new", ["ls"])
    assert clean[clean.metric == "robust_err"].outcome.tolist() == ["better", "better"]


def test_robustness_is_tested_at_every_budget_with_the_floor_per_budget_and_one_family():
    """Records with FGSM, PGD-20 and AutoAttack at 8/255, 2/255 and 1/255: each attack and the per-image worst
    case is compared at each budget (none chosen after looking); at 8/255, where every model errs on every
    image, the floor guard answers; the budgets of one attack are one multiplicity family, named in the line;
    a transfer check that failed makes a win unconfirmed."""
    from robustbench_ols.audit.tables import MASKED, pooled_table
    base = dict(dataset="cifar10", model="resnet8", epochs=1, train_subset=0)
    rows = []
    for r in (0.0, 0.4):
        for s in range(6):
            for m, e in (("new", 0.90 + 0.004 * s), ("ls", 0.95 + 0.005 * s)):
                fig = {}
                for sfx, err in (("", 1.0), ("_eps2", min(e + 0.04, 1.0)), ("_eps1", e)):
                    fig.update({f"fgsm{sfx}_err": err - 0.01 if err < 1 else err, f"pgd20{sfx}_err": err,
                                f"aa{sfx}_err": err, f"worst{sfx}_err": err})
                rows.append({**base, "noise_rate": r, "method_label": m, "seed": s, **fig})
    df = pd.DataFrame(rows)
    t = paired_table(df, "new", ["ls"])
    for family in ("fgsm_err", "pgd_err", "aa_err", "robust_err"):
        sub = t[t.family == family]
        assert sorted(sub.budget.unique()) == [1.0, 2.0, 8.0]
        assert sub.outcome[sub.budget == 8].str.startswith("inconclusive: outside the regime").all()  # the floor
        inside = sub[sub.budget < 8]
        assert (inside.family_size == len(inside)).all() and len(inside) == 4  # 2 budgets x 2 rates, one family
        assert inside.outcome.eq("better").all()
    line = next(v for v in verdicts(t, "new") if v.startswith("**PGD error (1/255)"))
    assert "over the 4 comparisons of PGD error at its 3 budgets (8/255, 2/255, 1/255) x noise rates x baselines" \
        in line
    assert list(dict.fromkeys(t.metric))[:3] == ["fgsm_err", "fgsm_eps2_err", "fgsm_eps1_err"]  # largest budget first
    # a failed transfer check (merged into masking_checks) makes the win at 1/255 unconfirmed
    flagged = df.assign(masking_suspected=df.method_label.eq("new"), masking_checks=["transfer" * (m == "new")
                                                                                      for m in df.method_label])
    ft = paired_table(flagged, "new", ["ls"])
    assert ft[(ft.metric == "robust_eps1_err")].outcome.str.startswith(f"{MASKED} (transfer failed in 6 of 6").all()
    pooled = pooled_table(df, "new", ["ls"])
    assert set(pooled[pooled.family == "pgd_err"].metric) == {"pgd_err", "pgd_eps2_err", "pgd_eps1_err"}
