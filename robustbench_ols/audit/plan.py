"""A confirmatory experiment planned from a pilot: how many confirmation seeds each claim needs.

The design is two-stage (pilot, then confirm). The pilot's seeds only plan: from their paired differences
new - baseline, for every claim the audit makes (a metric at a noise rate against a baseline, and pooled over
the rates), the fewest confirmation seeds for which the confirmatory test has power `POWER` at the family's
Bonferroni level (alpha / the number of claims planned in the family: conservative for the Holm correction the
confirmation applies). The confirmation (confirm.py) tests each claim on its first n confirmation seeds only,
never on the pilot's, so whatever the pilot showed, a test's false-positive rate is its level: the confirmation
data are independent of the plan that chose n (tests/audit/test_plan_simulation.py simulates the whole
procedure).

What the plan assumes, kept on the safe side because two pilot seeds say little:

- the spread: for a claim within one noise rate, the pooled within-rate standard deviation of the differences
  over every rate of the same metric and baseline inside the regime (one pilot degree of freedom per rate is
  too few alone); for a pooled claim, the spread of its (rate, seed) pairs;
- the effect: *safeguard power analysis* (Perugini, Gallucci and Costantini 2014, Perspect. Psychol. Sci.
  9:319): the bound of the pilot's two-sided 60% interval nearer to zero (for a difference), or farther
  from zero (for equivalence within the margin), not the pilot's mean, whose selection ("winner's curse")
  makes observed-effect plans under-powered;
- the power: the exact paired t-test and TOST powers of comparison.py, which integrate over the sample spread
  of the confirmation seeds themselves.

A claim is planned for a difference where the safeguard effect is not zero, for equivalence where the
pilot's interval lies inside the margin, whichever needs fewer seeds; one that needs more than `--max-seeds`
(or is outside the regime in the pilot) is "not decidable within N seeds" and left out of the family, so
that it costs the decidable ones no power. A pooled claim's pairs are converted to seeds: each seed gives
one pair per pooled noise rate.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from robustbench_ols.audit.comparison import (
    POWER,
    SAME,
    SEEDS_CAP,
    Settings,
    difference_power,
    equivalence_power,
    fewest_seeds,
    sign_test_seeds,
)

SAFEGUARD_LEVEL = 0.60  # two-sided: the 60% interval's bounds (Perugini et al. 2014)
MAX_SEEDS = 10
PLANNED, NOT_DECIDABLE, OUTSIDE_PILOT = "planned", "not decidable", "outside the regime in the pilot"


def pooled_spread(table: pd.DataFrame) -> pd.DataFrame:
    """For each per-rate row of `table` (paired_table's): the within-rate standard deviation of the
    differences pooled over the rows of the same metric, dataset, model and baseline inside the regime
    (sqrt of the df-weighted mean variance), and its degrees of freedom, as columns `plan_sd`, `plan_df`."""
    inside = table.regime.eq("ok") & (table.n >= 2)
    sd, df = pd.Series(math.nan, index=table.index), pd.Series(0, index=table.index)
    for _, g in table[inside].groupby(["metric", "dataset", "model", "baseline"], dropna=False):
        dof = (g.n - 1).sum()
        var = float(((g.n - 1) * g.std_diff.astype(float) ** 2).sum() / dof)
        sd[g.index], df[g.index] = math.sqrt(var), int(dof)
    return pd.DataFrame({"plan_sd": sd, "plan_df": df})


def safeguard(mean: float, sd: float, n: int, dof: int) -> tuple[float, float]:
    """(toward zero, away from zero): the bounds of the two-sided SAFEGUARD_LEVEL t interval of |mean| from a
    pilot of n pairs with spread `sd` on `dof` degrees of freedom; the first clipped at zero."""
    from scipy import stats
    half = stats.t.isf((1 - SAFEGUARD_LEVEL) / 2, dof) * sd / math.sqrt(n)
    return max(abs(mean) - half, 0.0), abs(mean) + half


def pairs_needed(mean: float, sd: float, n: int, dof: int, margin: float, alpha: float, cap: int = SEEDS_CAP):
    """(pairs, what) a confirmatory paired t-test at `alpha` needs for POWER at the safeguard effect: a
    difference where its near bound is above zero, equivalence where its far bound is inside the margin,
    whichever needs fewer pairs (what: difference / equivalence, "(no spread)" added where the pilot's pairs all
    differ by the same amount: the sign test's pairs); (None, why) where neither
    reaches POWER within `cap` pairs."""
    if not (math.isfinite(mean) and math.isfinite(sd)) or n < 2:
        return None, "no pilot spread"
    if sd <= SAME * max(1.0, abs(mean)):  # every pilot difference the same: the sign test's seeds, if it stays so
        k, what = sign_test_seeds(mean, margin, alpha)
        if not math.isfinite(k):
            return None, "no test: every pilot pair ties and the margin is 0"
        return (k, f"{what} (no spread)") if k <= cap else (None, f"more than {cap:,}")
    near, far = safeguard(mean, sd, n, dof)
    best = (math.inf, "")
    for what, power_at in (("difference", (lambda k: difference_power(near / sd, k, alpha)) if near > 0 else None),
                           ("equivalence", (lambda k: equivalence_power(far / sd, margin / sd, k, alpha))
                            if far < margin else None)):
        if power_at is None or _known_spread_power(what, near / sd, far / sd, margin / sd, cap, alpha) < POWER:
            continue  # not even with the spread known (an upper bound of the t-test's power) at `cap` pairs
        k = fewest_seeds(power_at, POWER, cap)
        if k is not None and k < best[0]:
            best = (k, what)
    if math.isfinite(best[0]):
        return best
    return None, (f"more than {cap:,}" if near > 0 or far < margin else
                  "unknown: the pilot's 60% interval spans both 0 and the margin")


def _known_spread_power(what: str, near: float, far: float, margin: float, n: int, alpha: float) -> float:
    """The power of the z-test (difference) or of the two one-sided z-tests (equivalence) with the spread
    known, effects in standard deviations: above the t-tests' powers (they pay for estimating it), so a
    cheap screen before the exact integrals."""
    from scipy.stats import norm
    if what == "difference":
        z, lam = norm.isf(alpha / 2), near * math.sqrt(n)
        return float(norm.cdf(lam - z) + norm.cdf(-lam - z))
    z, root = norm.isf(alpha), math.sqrt(n)
    return max(0.0, float(norm.cdf(root * (margin - far) - z) - norm.cdf(z - root * (margin + far))))


def plan_rows(table: pd.DataFrame, pooled: pd.DataFrame, s: Settings, max_seeds: int,
              figures: bool = True) -> pd.DataFrame:
    """One row per claim of the pilot's tables (paired_table's per-rate rows, pooled_table's pooled rows,
    `kind` per-rate / pooled): `seeds` the confirmation seeds it needs (NaN if none decides), `plan_for`
    difference / equivalence / no spread, `status` (PLANNED, NOT_DECIDABLE or OUTSIDE_PILOT), `needs` (for a
    claim not decidable: the figure), the assumed `plan_mean` (the pilot's), `plan_sd` and `plan_alpha`
    (alpha / the planned family's size). `figures=False` skips `needs` (the search beyond the cap: slow)."""
    parts = []
    if not table.empty:
        t = table.join(pooled_spread(table)).assign(kind="per-rate", scope="", per_seed=1)
        parts.append(t)
    if not pooled.empty:
        p = pooled.assign(kind="pooled", noise_rate=math.nan, plan_sd=pooled.std_diff, plan_df=pooled.n - 1,
                          per_seed=[max(len(str(r).split()), 1) for r in pooled.rates])
        parts.append(p)
    if not parts:
        return pd.DataFrame()
    rows = pd.concat(parts, ignore_index=True)
    cols = ["kind", "metric", "label", "family", "budget", "dataset", "model", "noise_rate", "scope", "rates",
            "baseline", "n", "mean_diff", "plan_sd", "plan_df", "per_seed", "margin", "regime", "reason"]
    rows = rows[[c for c in cols if c in rows]].rename(columns={"n": "pilot_n", "mean_diff": "plan_mean"})
    rows["family_key"] = rows.kind + "|" + rows.family.astype(str) + "|" + rows.scope.astype(str)
    inside = rows.regime.eq("ok")

    def level(members: pd.Series) -> pd.Series:  # alpha / the family's size (Bonferroni), per row
        size = members.groupby(rows.family_key).transform("sum").clip(lower=1)
        return s.alpha / size if s.correction != "none" else pd.Series(s.alpha, index=rows.index)

    # two passes: the family's size from every claim inside the regime, then from those that passed (whose
    # seeds can only fall: they stay within the cap)
    first = level(inside)
    planned, result = inside, {}
    for alpha in (first, None):
        alpha = level(planned) if alpha is None else alpha
        result = {i: _plan_one(rows.loc[i], alpha[i], max_seeds) for i in rows.index[planned]}
        planned = pd.Series({i: i in result and result[i][0] is not None for i in rows.index})
    rows["plan_alpha"] = level(planned)
    rows["seeds"] = [float(result[i][0]) if planned[i] else math.nan for i in rows.index]
    rows["plan_for"] = [result[i][1] if planned[i] else "" for i in rows.index]
    rows["status"] = np.where(planned, PLANNED, np.where(inside, NOT_DECIDABLE, OUTSIDE_PILOT))
    rows["family_size"] = planned.groupby(rows.family_key).transform("sum").where(planned, 0).astype(int)
    # a claim not decidable within the cap: how many seeds it would need, at the first pass's level
    rows["needs"] = ""
    if figures:
        for i in rows.index[inside & ~planned]:
            rows.at[i, "needs"] = _plan_one(rows.loc[i], first[i], 0)[1]
    return rows


def _plan_one(r, alpha: float, max_seeds: int):
    """(seeds, what) for one claim, or (None, why) where more than `max_seeds` seeds (why: how many) or no
    number of them decides: pairs_needed's pairs as seeds (each seed gives `per_seed` pairs), at least 2."""
    per = int(r.per_seed)
    k, what = pairs_needed(r.plan_mean, r.plan_sd, int(r.pilot_n), int(r.plan_df), r.margin, alpha,
                           max(max_seeds * per, 2) if max_seeds else SEEDS_CAP)
    if k is None:
        return None, what
    seeds = max(math.ceil(k / per), 2)
    return (seeds, what) if seeds <= max_seeds else (None, f"{seeds:,}")


def rate_key(rate) -> float | None:
    """A noise rate as a dictionary key: None for a noise without one (human labels: NaN in the records)."""
    rate = float(rate)
    return None if math.isnan(rate) else rate


def seeds_per_rate(plan: pd.DataFrame) -> dict:
    """The confirmation seeds each noise rate needs (rate_key: seeds): the most any planned claim at that rate
    (or pooled over it) asks for."""
    p = plan[plan.status.eq(PLANNED)] if len(plan) else plan
    out: dict = {}
    for r in p.itertuples():
        rates = [r.noise_rate] if r.kind == "per-rate" else str(r.rates).split()
        for rate in map(rate_key, rates):
            out[rate] = max(out.get(rate, 0), int(r.seeds))
    return dict(sorted(out.items(), key=lambda kv: (kv[0] is None, kv[0] or 0.0)))
