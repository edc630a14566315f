"""The statistics of the audit's comparisons: for paired differences d = new - baseline (lower is better),
the mean difference with a t interval and a bootstrap interval, a difference test, an equivalence test
within a practical margin (TOST), the seeds an inconclusive comparison would need, and the correction of
a family's p-values for multiplicity. Every test and interval comes from scipy or statsmodels:

- difference: the paired t-test (`scipy.stats.ttest_1samp` on d, identical to `ttest_rel`) or the
  Wilcoxon signed-rank test (`scipy.stats.wilcoxon`), two-sided;
- t interval: `TtestResult.confidence_interval`; bootstrap: `scipy.stats.bootstrap` (percentile, over the
  pairs, seeded): it cannot reach beyond the observed differences, so with few seeds it is too narrow;
- equivalence: two one-sided tests at +-margin (Schuirmann 1987): `statsmodels`' `DescrStatsW.ttost_mean`
  for the t-test, two one-sided `scipy.stats.wilcoxon` tests of d + m > 0 and d - m < 0 for Wilcoxon;
- seeds needed at the observed mean and spread for power 0.8 (`statsmodels`' `TTestPower`): to show a
  difference of the observed size, or equivalence within the margin (TOST power approximated as
  P(upper one-sided test rejects) + P(lower rejects) - 1), whichever needs fewer; t-test power at
  alpha / (family size), the Bonferroni level that Holm's first step uses (conservative for Holm and
  Benjamini-Hochberg), also for Wilcoxon (whose efficiency relative to the t-test is 0.955 for normal data);
- multiplicity: `statsmodels.stats.multitest.multipletests` (Holm-Bonferroni by default, or
  Benjamini-Hochberg, or none) over a family's difference p-values, and separately over its
  equivalence p-values.

A verdict, after the correction: *better* / *worse* when the difference test rejects, else *equivalent*
when the equivalence test rejects, else *inconclusive* (with the seeds needed).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .errors import SpecError

ALPHA = 0.05
POWER = 0.8
LEVEL = 0.95
BOOT_RESAMPLES = 9999
TESTS = ("t", "wilcoxon")
CORRECTIONS = {"none": None, "holm": "holm", "bh": "fdr_bh"}  # our names -> statsmodels' methods
SEEDS_CAP = 10_000  # "more than this many" is reported as such

# The practical margin of each audited metric, in the metric's own units: a difference inside +-margin is
# too small to matter for a reader choosing a method. Errors, ECE and the wrong-label fit are fractions
# (0.005 = half a percentage point); KL is in nats.
MARGINS = {
    "test_err_last": 0.005,    # 0.5 points of test error
    "fgsm_err": 0.005,         # 0.5 points of robust error, for every attack
    "pgd_err": 0.005,
    "robust_err": 0.005,
    "ece": 0.005,              # 0.5 points of ECE
    "c10h_kl_correct": 0.02,   # 0.02 nats of KL(human || model)
    "wrong_fit": 0.01,         # 1 point of the wrong-label training images fitted
}
POINTS = {"test_err_last", "fgsm_err", "pgd_err", "robust_err", "ece", "wrong_fit"}  # shown x100, "points"


@dataclass(frozen=True)
class Settings:
    """How the audit decides: alpha, the test, the multiple-testing correction and the margins."""
    alpha: float = ALPHA
    test: str = "t"
    correction: str = "holm"
    margins: dict = field(default_factory=lambda: dict(MARGINS))

    @classmethod
    def parse(cls, *, test: str = "t", correction: str = "holm", margins=()) -> "Settings":
        """From the command line's texts: `margins` as METRIC=VALUE items. SpecError naming the valid
        choices on an unknown test, correction or metric, or a margin that is not a number > 0."""
        if test not in TESTS:
            raise SpecError(f"--test {test!r} is not a test; valid: {', '.join(TESTS)}")
        if correction not in CORRECTIONS:
            raise SpecError(f"--correction {correction!r} is not a correction; valid: {', '.join(CORRECTIONS)}")
        out = dict(MARGINS)
        for item in margins or ():
            key, sep, text = str(item).partition("=")
            if not sep or key.strip() not in MARGINS:
                raise SpecError(f"--margin {item!r}: give METRIC=VALUE with METRIC one of {', '.join(MARGINS)}")
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and value > 0):
                raise SpecError(f"--margin {item!r}: the margin must be a number > 0 in the metric's units "
                                f"(e.g. {key.strip()}={MARGINS[key.strip()]:g})")
            out[key.strip()] = value
        return cls(test=test, correction=correction, margins=out)

    def describe(self) -> str:
        test = "paired t-test" if self.test == "t" else "Wilcoxon signed-rank test"
        corr = {"none": "no correction for multiple comparisons", "holm": "Holm-Bonferroni correction",
                "bh": "Benjamini-Hochberg (false discovery rate) correction"}[self.correction]
        return f"two-sided {test}, alpha {self.alpha:g}, {corr}"


def summarize(d, margin: float, s: Settings, *, seed: int = 0) -> dict:
    """Everything one comparison's differences `d` give before the family's correction: n, mean_diff,
    std_diff, the t interval ci_lo/ci_hi, the bootstrap interval boot_lo/boot_hi, the difference test's
    statistic `t` (or W) and p-value `p`, the equivalence p-value `p_equiv`. NaN where undefined (fewer
    than 2 pairs; no spread). `seeds_needed` / `seeds_for` stay empty: they depend on the family's size
    (audit.decide fills them)."""
    from scipy import stats  # here, not at the top: the command line imports this module for its margins
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    out = dict(n=n, margin=margin, mean_diff=float(d.mean()) if n else math.nan,
               std_diff=float(d.std(ddof=1)) if n > 1 else math.nan,
               **dict.fromkeys(("ci_lo", "ci_hi", "boot_lo", "boot_hi", "t", "p", "p_equiv"), math.nan),
               seeds_needed=math.nan, seeds_for="")
    if n < 2 or np.all(d == d[0]):
        return out  # no test: one pair, or no spread (the test would be 0/0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's small-sample notes; the verdict says n
        tt = stats.ttest_1samp(d, 0.0)
        ci = tt.confidence_interval(LEVEL)
        out.update(ci_lo=float(ci.low), ci_hi=float(ci.high))
        boot = stats.bootstrap((d,), np.mean, n_resamples=BOOT_RESAMPLES, confidence_level=LEVEL,
                               method="percentile", rng=np.random.default_rng(seed))
        out.update(boot_lo=float(boot.confidence_interval.low), boot_hi=float(boot.confidence_interval.high))
        if s.test == "t":
            from statsmodels.stats.weightstats import DescrStatsW
            out.update(t=float(tt.statistic), p=float(tt.pvalue),
                       p_equiv=float(DescrStatsW(d).ttost_mean(-margin, margin)[0]))
        else:
            w = stats.wilcoxon(d)
            above = stats.wilcoxon(d + margin, alternative="greater").pvalue
            below = stats.wilcoxon(d - margin, alternative="less").pvalue
            out.update(t=float(w.statistic), p=float(w.pvalue), p_equiv=float(max(above, below)))
    return out


def seeds_needed(mean: float, sd: float, margin: float, alpha: float = ALPHA, power: float = POWER):
    """(n, what): the fewest paired seeds for which a t-test at `alpha` would have `power` at this mean
    difference and spread, to show the difference ("difference") or equivalence within +-margin
    ("equivalence"), whichever needs fewer; (nan, "") where neither can be shown with SEEDS_CAP seeds or
    fewer. Searched over whole numbers of seeds >= 2 with statsmodels' power (its solve_power may answer
    below 2, where a paired test has no degree of freedom)."""
    from statsmodels.stats.power import TTestPower
    if not (sd > 0 and math.isfinite(mean)):
        return math.nan, ""
    tp = TTestPower()

    def smallest(power_at) -> int | None:
        """The smallest n >= 2 with power_at(n) >= power (power grows with n), or None beyond SEEDS_CAP."""
        lo, hi = 2, 2
        while power_at(hi) < power:
            if hi >= SEEDS_CAP:
                return None
            lo, hi = hi + 1, min(hi * 2, SEEDS_CAP)
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if power_at(mid) >= power else (mid + 1, hi)
        return hi

    def one_sample(effect: float, k: int, alternative: str) -> float:
        """statsmodels' power of a one-sample t-test; where its noncentral t gives NaN (large effects at few
        degrees of freedom), scipy's nct directly; NaN from both counts as no power (asks for more seeds)."""
        p = tp.power(effect_size=effect, nobs=k, alpha=alpha, alternative=alternative)
        if not np.isfinite(p):
            from scipy import stats
            a = alpha / 2 if alternative == "two-sided" else alpha
            crit, nc = stats.t.ppf(1 - a, k - 1), effect * math.sqrt(k)
            p = stats.nct.sf(crit, k - 1, nc) + (stats.nct.cdf(-crit, k - 1, nc) if alternative == "two-sided" else 0)
        return float(p) if np.isfinite(p) else 0.0

    best = (math.inf, "")
    if mean != 0:
        n = smallest(lambda k: one_sample(abs(mean) / sd, k, "two-sided"))
        if n is not None:
            best = (n, "difference")
    if abs(mean) < margin:
        def tost_power(k: int) -> float:
            return one_sample((margin - mean) / sd, k, "larger") + one_sample((margin + mean) / sd, k, "larger") - 1
        n = smallest(tost_power)
        if n is not None and n < best[0]:
            best = (n, "equivalence")
    if not math.isfinite(best[0]):
        return math.nan, ""
    return best


def adjust(p, correction: str) -> np.ndarray:
    """The family's p-values adjusted for multiplicity (NaN entries are not tested and stay NaN)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(len(p), math.nan)
    tested = ~np.isnan(p)
    if tested.any():
        method = CORRECTIONS[correction]
        if method is None:
            out[tested] = p[tested]
        else:
            from statsmodels.stats.multitest import multipletests
            out[tested] = multipletests(p[tested], method=method)[1]
    return out


def outcome(row, alpha: float) -> str:
    """better / worse / equivalent / inconclusive from the adjusted p-values (`p_adj`, `p_equiv_adj`);
    for a comparison with no spread (every difference the same) the sign decides, with ' (no spread)'."""
    if row["n"] < 2:
        return "untested" if row["n"] == 1 else "missing"
    if math.isnan(row["p"]) and row.get("std_diff", math.nan) == 0:
        m = row["mean_diff"]
        return ("equivalent" if m == 0 else "better" if m < 0 else "worse") + " (no spread)"
    if row["p_adj"] < alpha:
        return "better" if row["mean_diff"] < 0 else "worse"
    if row["p_equiv_adj"] < alpha:
        return "equivalent"
    return "inconclusive"


def fmt(metric: str, v: float, *, signed: bool = False, unit: bool = True) -> str:
    """`v` in the metric's units for a sentence: points for fractions (0.012 -> '1.20 points'), else as
    is; `unit=False` leaves the word out."""
    if v is None or not math.isfinite(v):
        return "—"
    sign = "+" if signed else ""
    if metric in POINTS:
        return f"{v * 100:{sign}.2f}" + (" points" if unit else "")
    return f"{v:{sign}.3f}"
