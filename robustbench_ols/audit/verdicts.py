"""The verdict sentences of an audit (audit.md, the claims of the results pages), from the tables of tables.py:
per metric, how many comparisons came out better / equivalent / worse / inconclusive after the family's correction, with
their intervals, the seeds an inconclusive one would need, and what stayed outside the regime or was flagged
for gradient masking; each line names its test, its family and its correction, and claims no more than the
tests support."""
from __future__ import annotations

import math

import pandas as pd

from robustbench_ols.audit.comparison import POWER, SEEDS_CAP, Settings, fmt
from robustbench_ols.audit.confirm import NOT_DECIDABLE_WITHIN, WAITING
from robustbench_ols.audit.metric_names import metric_budget, metric_family
from robustbench_ols.audit.regime import OUTSIDE
from robustbench_ols.audit.tables import MASKED, METRICS, SCOPES

OUTCOMES = ("better", "equivalent", "worse", "inconclusive", "masking suspected", "outside the regime", "untested",
            "missing", "not decidable", "waiting for seeds")


def category(outcomes: pd.Series) -> pd.Series:
    """Each outcome's category of OUTCOMES (the reasons and '(no spread)' dropped)."""
    o = outcomes.astype(str).str.replace(" (no spread)", "", regex=False)
    o = o.where(~o.str.startswith(OUTSIDE), "outside the regime")
    o = o.where(~o.str.startswith(NOT_DECIDABLE_WITHIN), "not decidable")
    o = o.where(~o.str.startswith(WAITING), "waiting for seeds")
    return o.where(~o.str.startswith(MASKED), "masking suspected")


def _count(n: int, noun: str) -> str:
    """'1 comparison', '3 comparisons'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def tally(table: pd.DataFrame) -> pd.DataFrame:
    """How many comparisons of each metric and baseline came out in each category of OUTCOMES."""
    if table.empty:
        return pd.DataFrame()
    t = table.assign(outcome=category(table.outcome))
    out = t.pivot_table(index=["label", "baseline"], columns="outcome", values="n", aggfunc="count", fill_value=0)
    for c in OUTCOMES:
        if c not in out:
            out[c] = 0
    return out[list(OUTCOMES)].reset_index()


def _effect(r, metric: str) -> str:
    """'-1.23 points, 95% CI -2.00 to -0.46' for one comparison row."""
    ci = (f", 95% CI {fmt(metric, r.ci_lo, signed=True, unit=False)} to {fmt(metric, r.ci_hi, signed=True, unit=False)}"
          if math.isfinite(r.ci_lo) else "")
    return f"{fmt(metric, r.mean_diff, signed=True)}{ci}"


def _seeds_text(rows: pd.DataFrame, unit: str = "seeds") -> str:
    """'4-40 (median 9) seeds would decide at the observed spread' for inconclusive rows (median as is: 26.5)."""
    n = rows.seeds_needed.dropna()
    never = len(rows) - len(n)
    beyond = f"; {never} would need more than {SEEDS_CAP:,}" if never else ""
    if n.empty:
        return f"no number of {unit} up to {SEEDS_CAP:,} would decide at the observed spread"
    span = f"{int(n.min())}" if n.min() == n.max() else f"{int(n.min())}-{int(n.max())} (median {n.median():g})"
    return f"{span} {unit} would decide at the observed spread (power {POWER:g}, at alpha / family size){beyond}"


def _family_text(rows: pd.DataFrame, s: Settings, what: str, unit: str = "seeds") -> str:
    """'paired t-test over 2 seeds, Holm-Bonferroni correction over the 10 comparisons of ..., alpha 0.05'; in a
    confirmatory audit, which seeds decided and which planned."""
    seeds = "/".join(map(str, sorted(set(rows.n.astype(int))))) + f" {unit}"
    if "seeds_used" in rows:
        seeds += (f" of the confirmation seeds {' / '.join(sorted(set(rows.seeds_used.astype(str))))} (planned on "
                  f"seeds {rows.planned_on.iloc[0]}, which decide nothing)")
    size = int(rows.family_size.max())
    family = f"the {size} {what}" if size != 1 else "one " + what.replace("comparisons", "comparison", 1)
    corr = "no correction" if s.correction == "none" else f"{s.describe().split(', ')[-1]} over {family}"
    return f"{s.describe().split(',')[0]} over {seeds}, {corr}, alpha {s.alpha:g}"


def verdicts(table: pd.DataFrame, method: str, *, settings: Settings = Settings()) -> list[str]:
    """One plain-language line per metric that claims no more than the tests support: how many
    comparisons are better / equivalent / worse / inconclusive after the family's correction, the
    better and worse ones with their intervals, the seeds an inconclusive one would need (not in a
    confirmatory audit: there the seeds were fixed beforehand), and what stayed outside the regime, was
    flagged for gradient masking, is not decidable within the plan's cap or waits for its seeds."""
    lines = []
    confirmed = "seeds_used" in table
    for metric, label in _metrics_in(table):
        t = table[table.metric == metric]
        cat = category(t.outcome)
        masked = t[cat == "masking suspected"]
        tested = t[cat.isin(["better", "equivalent", "worse", "inconclusive"]) | (cat == "masking suspected")]
        rest = _rest(t, cat)
        if tested.empty:
            if rest:
                lines.append(f"**{label}**: {rest}")
            else:
                n = int(t.n.max()) if len(t) else 0
                lines.append(f"**{label}**: {'one seed' if n == 1 else 'no paired seeds'} per cell, so no test is "
                             f"possible; the differences in the table are single runs and may be noise."
                             + _images_summary(t))
            continue
        c = category(tested.outcome)
        margin = fmt(metric, settings.margins[metric_family(metric)])
        counts = {k: int((c == k).sum()) for k in ("better", "equivalent", "worse", "inconclusive")}
        head = (f"of {_count(len(tested), 'comparison')}, {method} is better in {counts['better']}, equivalent "
                f"within ±{margin} in {counts['equivalent']}, worse in {counts['worse']}, and "
                f"{counts['inconclusive']} {'is' if counts['inconclusive'] == 1 else 'are'} inconclusive")
        parts = []
        for word in ("better", "worse"):
            rows = tested[c == word]
            if len(rows):
                parts.append(f"{word}: " + "; ".join(f"noise {r.noise_rate:g} vs {r.baseline} {_effect(r, metric)}"
                                                     for r in rows.itertuples()))
        inc = tested[c == "inconclusive"]
        if len(inc):
            parts.append("inconclusive on the seeds the plan fixed (adding seeds to them now would void the "
                         "error rate: a new pilot and confirmation would)" if confirmed
                         else "for the inconclusive ones, " + _seeds_text(inc))
        if len(masked):
            parts.append(f"{len(masked)} would be better, but {_masked_summary(masked)}")
        fam = _family_of(table, metric)
        what = _family_text(tested, settings, f"comparisons of {fam} x noise rates x baselines" if fam else
                            "comparisons of this metric (noise rates x baselines)")
        lines.append(f"**{label}**: {head}" + (" (" + "; ".join(parts) + ")" if parts else "")
                     + f" [{what}]." + (f" The other {len(t) - len(tested)}: {rest}" if rest else ""))
    return lines


def _rest(t: pd.DataFrame, cat: pd.Series) -> str:
    """The comparisons of one metric that were not tested: outside the regime, not decidable within the plan's
    cap (with the seeds each would need), waiting for their confirmation seeds."""
    parts = []
    out = t[cat == "outside the regime"]
    if len(out):
        parts.append(_outside_summary(out))
    nd = t[cat == "not decidable"]
    if len(nd):
        cap = nd.outcome.iloc[0].split("(")[0].strip()
        parts.append(f"{_count(len(nd), 'comparison')} {cap} (" + "; ".join(
            f"noise {r.noise_rate:g} vs {r.baseline}: {r.outcome.split('(', 1)[1].rstrip(')')}"
            for r in nd.itertuples()) + ")")
    wait = t[cat == "waiting for seeds"]
    if len(wait):
        parts.append(f"{_count(len(wait), 'comparison')} waiting for seeds (" + "; ".join(
            f"noise {r.noise_rate:g} vs {r.baseline}: {r.outcome.split('(', 1)[1].rstrip(')')}"
            for r in wait.itertuples()) + ")")
    return ("; ".join(parts) + ".") if parts else ""


def _family_of(table: pd.DataFrame, metric: str) -> str | None:
    """For a robustness metric scored at several budgets, what its family is: 'PGD error at its 3 budgets
    (8/255, 2/255, 1/255)'; else None (the family is the metric alone)."""
    family = metric_family(metric)
    budgets = sorted({b for m in table.metric if metric_family(m) == family and (b := metric_budget(m)) is not None},
                     reverse=True)
    if len(budgets) <= 1:
        return None
    return f"{dict(METRICS)[family]} at its {len(budgets)} budgets ({', '.join(f'{b:g}/255' for b in budgets)})"


def _metrics_in(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(metric, label) of the comparisons in `table`, in its order (metrics_of's)."""
    return list(dict.fromkeys(zip(table.metric, table.label))) if len(table) else []


def _images_summary(t: pd.DataFrame) -> str:
    """For single-seed comparisons with per-image records: where the bootstrap over the test images puts
    the difference, labelled as what it is."""
    if "img_lo" not in t or t.img_lo.isna().all():
        return ""
    b = t.dropna(subset=["img_lo"])
    below, above = int((b.img_hi < 0).sum()), int((b.img_lo > 0).sum())
    return (f" Over the test images alone (a paired bootstrap of one seed's runs: it says how much the figure "
            f"would move on another test set, nothing of the seed-to-seed variation, which decides), the 95% "
            f"interval of the difference lies below 0 in {below}, above 0 in {above} and spans 0 in "
            f"{len(b) - below - above} of {len(b)} comparisons (`img_lo`, `img_hi`).")


def _masked_summary(masked: pd.DataFrame) -> str:
    """'unconfirmed: gradient masking suspected (...)' per noise rate, for the comparisons of `masked`."""
    by_rate = masked.groupby("noise_rate").outcome.first()
    return "; ".join(f"noise {r:g}: {why}" for r, why in by_rate.items())


def _outside_summary(out: pd.DataFrame) -> str:
    """'inconclusive: outside the regime (...)' for the comparisons of `out`, per noise rate."""
    by_rate = out.groupby("noise_rate").outcome.first()
    reasons = list(dict.fromkeys(by_rate))
    if len(reasons) == 1:
        return f"{reasons[0]} at noise {', '.join(f'{r:g}' for r in by_rate.index)}"
    return "; ".join(f"noise {r:g}: {why}" for r, why in by_rate.items())


def pooled_verdicts(pooled: pd.DataFrame, method: str, *, scope: str = "all",
                    settings: Settings = Settings()) -> list[str]:
    """One line per metric from the pooled comparisons (`scope` all or noisy): per baseline, better than,
    worse than, equivalent to (within the margin) or inconclusive against it, with the mean difference,
    its intervals, the count of lower pairs and the adjusted p-value."""
    lines = []
    for metric, label in _metrics_in(pooled):
        t = pooled[(pooled.metric == metric) & (pooled.scope == scope)]
        if t.empty:
            continue
        parts = []
        for r in t.itertuples():
            spread = " (no spread)" in str(r.outcome)
            o = str(r.outcome).replace(" (no spread)", "")
            if o.startswith((OUTSIDE, MASKED, NOT_DECIDABLE_WITHIN, WAITING)):
                parts.append(f"against {r.baseline}, {o}")
                continue
            outside = getattr(r, "outside_rates", "")
            left = f"; noise {outside} left out: outside the regime" if isinstance(outside, str) and outside else ""
            word = {"better": f"better than {r.baseline}", "worse": f"worse than {r.baseline}",
                    "equivalent": f"equivalent to {r.baseline} within ±{fmt(metric, r.margin)}",
                    "untested": f"untested against {r.baseline} (one pair)"}.get(o, f"inconclusive against {r.baseline}")
            boot = (f", bootstrap {fmt(metric, r.boot_lo, signed=True, unit=False)} to "
                    f"{fmt(metric, r.boot_hi, signed=True, unit=False)}"
                    if math.isfinite(r.boot_lo) else "")
            if spread:
                word += " (no spread: every pair differs by the same amount, so the exact sign test decides)"
            p = "" if math.isnan(r.p_adj) else f"; p = {r.p:.2g}, adjusted {r.p_adj:.2g}"
            eq = (f", equivalence p adjusted {r.p_equiv_adj:.2g}" if o == "equivalent" and math.isfinite(r.p_equiv_adj)
                  else "")
            rates = max(len(str(r.rates).split()), 1) if isinstance(getattr(r, "rates", None), str) else 1
            need = (f"; {math.ceil(r.seeds_needed / rates)} seeds would decide at the observed spread"
                    + (f" (each seed gives {rates} pairs, one per rate)" if rates > 1 else "")
                    if o == "inconclusive" and "seeds_needed" in t and math.isfinite(r.seeds_needed) else "")
            parts.append(f"{word} ({_effect(r, metric)}{boot}; lower in {int(r.lower)} of {int(r.n)} pairs{p}{eq}"
                         f"{need}{left})")
        tested = t[t.p_adj.notna()]
        fam = _family_of(pooled, metric)
        what = (_family_text(tested, settings, f"pooled comparisons in this scope of {fam} x baselines" if fam else
                             "pooled comparisons of this metric and scope (baselines)", "(rate, seed) pairs")
                if len(tested) else settings.describe())
        lines.append(f"**{label}**, pooled over {dict(SCOPES)[scope]}, {method}: " + "; ".join(parts) + f" [{what}].")
    return lines


def summary_lines(per_rate: pd.DataFrame, pooled: pd.DataFrame) -> list[str]:
    """The audit on one screen, one line per metric: its per-rate comparisons counted by outcome, then each pooled
    comparison's outcome (with its difference and 95% interval where it was decided)."""
    out = []
    for metric, label in _metrics_in(per_rate if len(per_rate) else pooled):
        rate = category(per_rate[per_rate.metric == metric].outcome) if len(per_rate) else pd.Series(dtype=str)
        text = f"{label}: per rate " + (", ".join(f"{k} {v}" for k, v in rate.value_counts().items()) or "none")
        rows = pooled[pooled.metric == metric] if len(pooled) else pooled
        parts = []
        for r, c in zip(rows.itertuples(), category(rows.outcome) if len(rows) else []):
            shown = c in ("better", "worse", "equivalent") and math.isfinite(r.ci_lo)
            parts.append(f"{c} vs {r.baseline} ({r.scope}" + (
                f": {fmt(metric, r.mean_diff, signed=True)}, 95% CI {fmt(metric, r.ci_lo, signed=True, unit=False)} "
                f"to {fmt(metric, r.ci_hi, signed=True, unit=False)}" if shown else "") + ")")
        out.append(text + (f"; pooled: {', '.join(parts)}" if parts else ""))
    return out
