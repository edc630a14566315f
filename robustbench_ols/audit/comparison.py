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
- seeds needed at the observed mean and spread for power 0.8: the fewest whole seeds >= 2 (a search
  that checks every n below its answer or brackets it from a failing n) to show a difference of the
  observed size, or equivalence within the margin, whichever needs fewer. Paired t-test power, exact for
  normal differences, both for the difference test and TOST: the probability of rejecting given the
  sample spread, integrated over the spread's (scaled chi) distribution with `scipy.integrate.quad`; not
  statsmodels' `TTestPower` / scipy's `nct`, which give NaN for large effects at few degrees of freedom
  and have no exact TOST power. At alpha / (family size), the Bonferroni level that Holm's first step
  uses (conservative for Holm and Benjamini-Hochberg), also for Wilcoxon (whose efficiency relative to
  the t-test is 0.955 for normal data);
- multiplicity: `statsmodels.stats.multitest.multipletests` (Holm-Bonferroni by default, or
  Benjamini-Hochberg, or none) over a family's difference p-values, and separately over its
  equivalence p-values.

A verdict, after the correction: *better* / *worse* when the difference test rejects, else *equivalent*
when the equivalence test rejects, else *inconclusive* (with the seeds needed).
"""
from __future__ import annotations

import functools
import gc
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from robustbench_ols.audit.metric_names import metric_family
from robustbench_ols.common.errors import SpecError

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
    "aa_err": 0.005,
    "robust_err": 0.005,
    "ece": 0.005,              # 0.5 points of ECE
    "c10h_kl_correct": 0.02,   # 0.02 nats of KL(human || model)
    "wrong_fit": 0.01,         # 1 point of the wrong-label training images fitted
}
# shown x100, "points"; a robustness metric at another budget (`pgd_eps2_err`) as its family
POINTS = {"test_err_last", "fgsm_err", "pgd_err", "aa_err", "robust_err", "ece", "wrong_fit"}


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


# Differences closer than this (relative to their size) are the same: 0.37 - 0.36 and 0.45 - 0.44 differ in the
# last bits of a float, and are one image of 100 each.
SAME = 1e-12


def summarize(d, margin: float, s: Settings, *, seed: int = 0, bootstrap: bool = True) -> dict:
    """Everything one comparison's differences `d` give before the family's correction: n, mean_diff,
    std_diff, the t interval ci_lo/ci_hi, the bootstrap interval boot_lo/boot_hi, the difference test's
    statistic `t` (or W) and p-value `p`, the equivalence p-value `p_equiv`. NaN where undefined (fewer
    than 2 pairs; with no spread the intervals and `t`, while `p` and `p_equiv` are then the sign test's).
    `seeds_needed` / `seeds_for` stay empty: they depend on the family's size
    (audit.decide fills them). `bootstrap=False` leaves boot_lo/boot_hi NaN (simulations: no verdict reads it)."""
    from scipy import stats  # here, not at the top: the command line imports this module for its margins
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    out = dict(n=n, margin=margin, mean_diff=float(d.mean()) if n else math.nan,
               std_diff=float(d.std(ddof=1)) if n > 1 else math.nan,
               **dict.fromkeys(("ci_lo", "ci_hi", "boot_lo", "boot_hi", "t", "p", "p_equiv"), math.nan),
               seeds_needed=math.nan, seeds_for="")
    if n < 2:
        return out  # no test: one pair
    if np.ptp(d) <= SAME * max(1.0, float(np.abs(d).max())):  # no spread: the t-test would be 0/0 (or, with
        # float rounding of differences of quantised figures, 1e-17 / 1e-17: a meaningless huge t)
        out.update(std_diff=0.0, **sign_test(float(d.mean()), n, margin))
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's small-sample notes; the verdict says n
        tt = stats.ttest_1samp(d, 0.0)
        ci = tt.confidence_interval(LEVEL)
        out.update(ci_lo=float(ci.low), ci_hi=float(ci.high))
        if bootstrap:
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


def _over_spread(g, df: int, stop: float = math.inf, near=()) -> float:
    """E[g(S)] for S = sqrt(V / df), V ~ chi-square(df): the sample standard deviation of n = df + 1 normal
    differences over the true one. `g` is bounded (a probability given S) and 0 beyond `stop`; `near` are
    places where g changes fast (breakpoints for the integrator). scipy.integrate.quad (adaptive
    Gauss-Kronrod) against S's density, written here with scipy.special (S is scipy.stats.chi(df,
    scale=df**-0.5), whose pdf is too slow to call inside quad), over S's central 1 - 2e-16."""
    from scipy import integrate, special
    half = df / 2
    const = math.log(2) + half * math.log(half) - special.gammaln(half)

    def integrand(s: float) -> float:
        return g(s) * math.exp(const + special.xlogy(df - 1, s) - half * s * s)

    lo, hi = _spread_range(df)
    hi = min(stop, hi)
    if hi <= lo:
        return 0.0
    # the density's peak is near 1, with a spread of about 1/sqrt(2 df): breakpoints across it, so that a
    # narrow peak (many seeds) is never missed between the integrator's first nodes
    spread = (1.0 + j / math.sqrt(2 * df) for j in range(-6, 7))
    points = sorted({p for p in (*spread, *near) if lo < p < hi})
    val = integrate.quad(integrand, lo, hi, points=points or None, limit=200, epsabs=1e-12, epsrel=1e-10)[0]
    return min(max(val, 0.0), 1.0)


@functools.lru_cache(maxsize=4096)
def _t_critical(tail: float, df: int) -> float:
    """scipy.stats.t.isf, remembered: a seed search asks for the same few levels and degrees of freedom often."""
    from scipy import stats
    return float(stats.t.isf(tail, df))


@functools.lru_cache(maxsize=4096)
def _spread_range(df: int) -> tuple[float, float]:
    """The central 1 - 2e-16 of S (see _over_spread), remembered per df."""
    from scipy import stats
    return float(stats.chi.ppf(1e-16, df, scale=df ** -0.5)), float(stats.chi.isf(1e-16, df, scale=df ** -0.5))


def difference_power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Exact power of the two-sided paired (one-sample) t-test at level `alpha` with n pairs when the mean
    difference is `effect` standard deviations: the t statistic is (Z + effect sqrt(n)) / S, Z standard
    normal, S as in _over_spread, so power = E_S[Phi(effect sqrt(n) - c S) + Phi(-effect sqrt(n) - c S)],
    c = the t(n-1) critical value. This is the noncentral t's tail, integrated so that it stays finite
    where scipy's nct gives NaN (large effects at few degrees of freedom); it grows with n."""
    from scipy import special
    lam, c = abs(effect) * math.sqrt(n), _t_critical(alpha / 2, n - 1)
    return _over_spread(lambda s: special.ndtr(lam - c * s) + special.ndtr(-lam - c * s), n - 1, near=(lam / c,))


def equivalence_power(mean: float, margin: float, n: int, alpha: float = ALPHA) -> float:
    """Exact power of the equivalence test within +-margin (TOST: both one-sided paired t-tests at level
    `alpha` reject) with n pairs, `mean` and `margin` in standard deviations of the differences: both reject
    when c S - sqrt(n)(margin + mean) < Z < sqrt(n)(margin - mean) - c S, c = the one-sided t(n-1) critical
    value, so power = E_S[max(0, Phi(sqrt(n)(margin - mean) - c S) - Phi(c S - sqrt(n)(margin + mean)))].
    Not monotone in n where it is tiny: with a margin small against the spread, 2 seeds pass more often
    (by a small sample spread) than 3 or more, e.g. 0.024 and 0.019 at margin 0.5 sd, mean 0, alpha 0.05;
    from there it falls to a minimum and then grows to 1 (it falls only below 0.04 on tests/report's grid)."""
    from scipy import special
    up, down, c = math.sqrt(n) * (margin - mean), math.sqrt(n) * (margin + mean), _t_critical(alpha, n - 1)
    return _over_spread(lambda s: max(0.0, special.ndtr(up - c * s) - special.ndtr(c * s - down)), n - 1,
                        stop=(up + down) / (2 * c), near=(min(up, down) / c,))


def fewest_seeds(power_at, power: float = POWER, cap: int = SEEDS_CAP):
    """The smallest whole n >= 2 with power_at(n) >= power; None when `cap` seeds fall short. Steps of
    one seed up to 8, then doubling, then bisection between the last n that fell short and the first that
    did not, which is exact when the n reaching `power` are all n from some point on: so for the difference
    test (its power grows with n) and for TOST at targets above its dip (see equivalence_power). A power
    that is not a number is an error (ValueError), never taken as "not enough"."""
    def reaches(k: int) -> bool:
        p = power_at(k)
        if not math.isfinite(p):
            raise ValueError(f"power at {k} seeds is {p}")
        return p >= power

    if cap < SEEDS_CAP and not reaches(cap):
        return None  # (one evaluation: the n reaching `power` are all n from some point on, as above)
    short, n = 1, 2  # one seed: no test
    while not reaches(n):
        if n >= cap:
            return None
        short, n = n, min(n + 1 if n < 8 else 2 * n, cap)
    while n - short > 1:
        mid = (short + n) // 2
        short, n = (short, mid) if reaches(mid) else (mid, n)
    return n


def sign_test(value: float, n: int, margin: float) -> dict:
    """p and p_equiv when every one of the n pairs differs by the same `value` (no spread), from the exact sign
    test (scipy's binomtest), valid for any distribution of the differences, discrete ones included: n of n
    pairs on one side of 0 has p = 2 / 2^n under a median difference of 0 (1 for a tie); n of n pairs inside
    +-margin has p = 1 / 2^n under a median at or beyond either bound (two one-sided tests; 1 outside it). Two
    seeds that happen to agree on a quantised figure (1 image of 100) decide nothing: p = 0.5."""
    from scipy import stats
    one_side = stats.binomtest(n, n, 0.5, alternative="greater").pvalue
    return {"p": stats.binomtest(n, n, 0.5).pvalue if value != 0 else 1.0,
            "p_equiv": one_side if abs(value) < margin else 1.0}


def sign_test_seeds(value: float, margin: float, alpha: float = ALPHA):
    """(n, what): the fewest pairs for which `sign_test` decides at `alpha` if the spread stays zero: a
    difference (2 / 2^n <= alpha, value != 0) or equivalence (1 / 2^n <= alpha, |value| < margin)."""
    if value != 0:
        return max(2, math.ceil(math.log2(2 / alpha))), "difference"
    if abs(value) < margin:
        return max(2, math.ceil(math.log2(1 / alpha))), "equivalence"
    return math.nan, ""


def seeds_needed(mean: float, sd: float, margin: float, alpha: float = ALPHA, power: float = POWER):
    """(n, what): the fewest paired seeds (a whole number >= 2) for which a paired t-test at `alpha` has at
    least `power` at this mean difference and spread: the two-sided difference test ("difference", where
    mean != 0) or TOST within +-margin ("equivalence", where |mean| < margin), whichever needs fewer (the
    difference on a tie); exact powers from difference_power and equivalence_power; with no spread, the sign
    test's (`sign_test_seeds`). (nan, "") where neither reaches `power` with SEEDS_CAP seeds or fewer."""
    if sd == 0 and math.isfinite(mean):
        return sign_test_seeds(mean, margin, alpha)
    if not (sd > 0 and math.isfinite(mean) and math.isfinite(sd)):
        return math.nan, ""
    best = (math.inf, "")
    if mean != 0:
        n = fewest_seeds(lambda k: difference_power(mean / sd, k, alpha), power)
        if n is not None:
            best = (n, "difference")
    if abs(mean) < margin:
        n = fewest_seeds(lambda k: equivalence_power(mean / sd, margin / sd, k, alpha), power)
        if n is not None and n < best[0]:
            best = (n, "equivalence")
    return best if math.isfinite(best[0]) else (math.nan, "")


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
            gc.freeze()  # its Holm branch calls gc.collect() (0.1 s each with an audit's frames alive): frozen
            try:         # objects are not scanned, so that collect only sees what the call made
                out[tested] = multipletests(p[tested], method=method)[1]
            finally:
                gc.unfreeze()
    return out


def outcome(row, alpha: float) -> str:
    """better / worse / equivalent / inconclusive from the adjusted p-values (`p_adj`, `p_equiv_adj`), with
    ' (no spread)' where every difference is the same (then the p-values are the sign test's)."""
    if row["n"] < 2:
        return "untested" if row["n"] == 1 else "missing"
    spread = " (no spread)" if row.get("std_diff", math.nan) == 0 else ""
    if row["p_adj"] < alpha:
        return ("better" if row["mean_diff"] < 0 else "worse") + spread
    if row["p_equiv_adj"] < alpha:
        return "equivalent" + spread
    return "inconclusive" + spread


def fmt(metric: str, v: float, *, signed: bool = False, unit: bool = True) -> str:
    """`v` in the metric's units for a sentence: points for fractions (0.012 -> '1.20 points'), else as
    is; `unit=False` leaves the word out."""
    if v is None or not math.isfinite(v):
        return "—"
    sign = "+" if signed else ""
    if metric_family(metric) in POINTS:
        return f"{v * 100:{sign}.2f}" + (" points" if unit else "")
    return f"{v:{sign}.3f}"
