"""A verdict on a new method against baselines, from the run records of a grid (audit_report.py writes
it: audit.md, audit.csv, the figures).

For every metric, noise rate (and dataset and model) and baseline: the paired differences
new - baseline over the seeds both have, summarised by comparison.py: the mean difference with a 95%
t interval and a bootstrap interval, a two-sided difference test (paired t or Wilcoxon), an equivalence
test within the metric's practical margin (TOST), and the seeds an undecided comparison would need.
Each metric's comparisons form a family whose p-values are adjusted together (Holm-Bonferroni by
default). The outcome: *better* / *worse* (the adjusted difference test rejects), *equivalent* (within
+-margin: the adjusted TOST rejects), *inconclusive* (neither), "untested" with one paired seed. Every
metric here is lower-is-better; the fit of the wrong labels is `wrong_fit = 1 - noisy_err_last` (the
fraction of wrong-label images the model predicts as their wrong label: Fig. 5 read the other way round).

Before any test is read, every comparison carries the preconditions of its claim (`regime`): one whose
experiment cannot show the claim (hard labels never memorised at that noise rate, a run that stopped
early, every model at the robust-error floor) is "inconclusive: outside the regime (...)" whatever its
tests give; the tests' own outcome stays in `test_outcome`.

Robustness is judged on the strongest attack recorded: `robust_err` is the per-image worst case over
the attacks at 8/255 (`worst_err`, from each image's outcomes) when two or more ran, else the one
attack's error. Where the gradient-masking checks (attacks/sanity.py) flagged a run of the audited
method, a comparison it would win on a robustness metric is "unconfirmed: gradient masking suspected
(...)" instead: a lower robust error from a model whose gradients mislead the attacks shows nothing.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from . import regime
from .attacks import DEFAULT_EPS, PGD, AttackSpec
from .comparison import POWER, SEEDS_CAP, Settings, adjust, fmt, outcome, seeds_needed, summarize
from .image_bootstrap import image_bootstrap
from .regime import OUTSIDE

# (column, label); all lower is better.
METRICS = (("test_err_last", "test error (last epoch)"), ("fgsm_err", "FGSM error"), ("pgd_err", "PGD error"),
           ("robust_err", "robust error (worst case over the attacks)"),
           ("ece", "ECE"), ("c10h_kl_correct", "CIFAR-10H KL (correct images)"),
           ("wrong_fit", "wrong-label fit (1 - noisy_err)"))
MASKED = "unconfirmed: gradient masking suspected"
GROUP = ["dataset", "model", "noise_rate"]


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Add the derived columns: `pgd_err` (PGD-20 when recorded, else the one PGD-k there is),
    `robust_err` (the worst case over the attacks at 8/255: `worst_err` when recorded, else the one
    attack's error) and `wrong_fit`."""
    df = df.copy()
    at_default = {c: a for c in df.columns if (a := AttackSpec.from_key(c)) is not None and a.eps == DEFAULT_EPS}
    pgd = [c for c, a in at_default.items() if isinstance(a, PGD)]
    if "pgd20_err" in df:
        df["pgd_err"] = df["pgd20_err"]
    elif len(pgd) == 1:
        df["pgd_err"] = df[pgd[0]]
    attacks = [c for c, a in at_default.items() if a.kind != "worst"]
    if attacks:
        single = df[attacks].notna().sum(axis=1) == 1
        worst = df["worst_err"] if "worst_err" in df else pd.Series(float("nan"), index=df.index)
        df["robust_err"] = worst.where(worst.notna(), df[attacks].max(axis=1).where(single))
    df["wrong_fit"] = regime.wrong_fit(df)
    return df


def _masking(metric: str, new_runs: pd.DataFrame) -> str:
    """For a robustness metric: "(checks ... failed in k of n runs)" when the gradient-masking checks flagged
    runs of the audited method among `new_runs`, else ""."""
    if metric not in regime.ROBUSTNESS_METRICS or "masking_suspected" not in new_runs:
        return ""
    flagged = new_runs[new_runs["masking_suspected"].eq(True)]
    if not len(flagged):
        return ""
    checks = sorted({c for text in flagged["masking_checks"].fillna("") for c in text.split(",") if c})
    return f"({', '.join(checks)} failed in {len(flagged)} of {len(new_runs)} runs)"


def decide(table: pd.DataFrame, s: Settings, family: list[str]) -> pd.DataFrame:
    """The outcome of every comparison of `table` (rows from `summarize`, with `regime`, `reason` and
    `masking`). A family is the comparisons that share `family` (one metric: every noise rate and baseline)
    and were tested inside the regime; their p-values are adjusted together (`p_adj`, `p_equiv_adj`) and
    `family_size` says how many they were; an inconclusive one gets `seeds_needed` at alpha / family size.
    `test_outcome` is what the tests say (for a comparison outside the regime: its own tests, uncorrected,
    in no family, and no seeds needed: more seeds do not bring an experiment into its regime); `outcome` is
    the verdict: the regime's reason first, then gradient masking for a robustness comparison the new
    method would win, then the test."""
    if table.empty:
        return table
    t = table.copy()
    inside = t.regime.eq("ok") & t.p.notna()
    t["p_adj"], t["p_equiv_adj"], t["family_size"] = math.nan, math.nan, 0
    for _, g in t[inside].groupby(family, dropna=False):
        idx = g.index
        t.loc[idx, "p_adj"] = adjust(t.loc[idx, "p"], s.correction)
        t.loc[idx, "p_equiv_adj"] = adjust(t.loc[idx, "p_equiv"], s.correction)
        t.loc[idx, "family_size"] = len(idx)
    alone = t.assign(p_adj=t.p_adj.where(inside, t.p), p_equiv_adj=t.p_equiv_adj.where(inside, t.p_equiv))
    t["test_outcome"] = [outcome(r, s.alpha) for _, r in alone.iterrows()]
    for i in t.index[t.test_outcome.eq("inconclusive") & inside]:
        level = s.alpha / max(int(t.at[i, "family_size"]), 1) if s.correction != "none" else s.alpha
        t.at[i, "seeds_needed"], t.at[i, "seeds_for"] = seeds_needed(t.at[i, "mean_diff"], t.at[i, "std_diff"],
                                                                     t.at[i, "margin"], level)
    t["outcome"] = t.test_outcome
    masked = t.test_outcome.str.startswith("better") & t.masking.ne("")
    t.loc[masked, "outcome"] = MASKED + " " + t.loc[masked, "masking"]
    outside = t.regime.eq("outside")
    t.loc[outside, "outcome"] = t.loc[outside, "reason"]
    return t


def paired_table(df: pd.DataFrame, method: str, against: list[str], *, settings: Settings = Settings(),
                 records: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (metric, dataset, model, noise_rate, baseline): n paired seeds, the means, the paired
    differences new - baseline summarised by `comparison.summarize` (mean, std, t and bootstrap intervals,
    difference and equivalence tests, seeds needed), and the outcome (`decide`; the regime is read from
    `records`: every run of the grid, the hard-label ones included; default `df`). Each metric is one family."""
    df = prepare(df)
    records = df if records is None else records
    rows = []
    for metric, label in METRICS:
        if metric not in df or df[metric].isna().all():
            continue
        for key, g in df.groupby(GROUP, dropna=False):
            new_runs = g[g.method_label == method]
            new = new_runs.set_index("seed")[metric].astype(float).dropna()
            for base in against:
                old_runs = g[g.method_label == base]
                old = old_runs.set_index("seed")[metric].astype(float).dropna()
                if len(new_runs) and len(old_runs) and not len(new) and not len(old):
                    continue  # undefined here for both (e.g. wrong-label fit without noise)
                seeds = sorted(set(new.index) & set(old.index))
                d = (new[seeds] - old[seeds]).to_numpy()
                compared = g[g.method_label.isin([method, base]) & g.seed.isin(seeds)]
                reason = regime.outside(records, metric, *key, compared) if seeds else None  # none: missing
                one = (image_bootstrap(new_runs.set_index("seed").loc[seeds[0]],
                                       old_runs.set_index("seed").loc[seeds[0]], metric) if len(seeds) == 1 else None)
                rows.append(dict(zip(GROUP, key), metric=metric, label=label, baseline=base,
                                 new_mean=float(new[seeds].mean()) if seeds else math.nan,
                                 base_mean=float(old[seeds].mean()) if seeds else math.nan,
                                 **summarize(d, settings.margins[metric], settings),
                                 **dict(zip(("img_diff", "img_lo", "img_hi"), one or (math.nan,) * 3)),
                                 regime="ok" if reason is None else "outside", reason=reason or "",
                                 masking=_masking(metric, new_runs[new_runs.seed.isin(seeds)])))
    return decide(pd.DataFrame(rows), settings, ["metric"])


SCOPES = (("noisy", "noise rates > 0"), ("all", "all noise rates"))


def pooled_table(df: pd.DataFrame, method: str, against: list[str], *, settings: Settings = Settings(),
                 records: pd.DataFrame | None = None) -> pd.DataFrame:
    """The per-rate comparisons pooled over noise rates: one row per (metric, dataset, model, baseline,
    scope), scope `noisy` (rates > 0) or `all`. Every (noise rate, seed) the two methods share is one
    pair; `lower` counts the pairs where the new method is lower. The tests over all pairs ask whether the
    mean difference over the rates is zero (pairs at different rates differ in spread, so read it as
    approximate); with 2 seeds per rate they have far more power than a test within one rate, which has one
    degree of freedom. Only the noise rates inside the regime (read from `records`, as in `paired_table`)
    are pooled; `outside_rates` names the others. Each (metric, scope) is one family."""
    df = prepare(df)
    records = df if records is None else records
    rows = []
    for metric, label in METRICS:
        if metric not in df or df[metric].isna().all():
            continue
        for key, g in df.groupby(["dataset", "model"], dropna=False):
            for scope, _ in SCOPES:
                s = g[g.noise_rate.astype(float) > 0] if scope == "noisy" else g
                new = s[s.method_label == method].set_index(["noise_rate", "seed"])[metric].astype(float).dropna()
                for base in against:
                    old = s[s.method_label == base].set_index(["noise_rate", "seed"])[metric].astype(float).dropna()
                    pairs = sorted(set(new.index) & set(old.index))
                    if not pairs:
                        continue
                    # only the noise rates whose experiment can show the claim are pooled
                    reasons = {r: regime.outside(records, metric, *key, r, s[(s.noise_rate == r) & s.method_label.isin(
                        [method, base]) & s.seed.isin([p[1] for p in pairs if p[0] == r])])
                        for r in sorted({p[0] for p in pairs})}
                    kept = [p for p in pairs if reasons[p[0]] is None]
                    d = np.array([new[p] - old[p] for p in kept])
                    runs = s[(s.method_label == method)].set_index(["noise_rate", "seed"], drop=False)
                    rows.append(dict(
                        metric=metric, label=label, dataset=key[0], model=key[1], method=method, baseline=base,
                        scope=scope, rates=" ".join(f"{r:g}" for r in sorted({p[0] for p in kept})),
                        outside_rates=" ".join(f"{r:g}" for r, why in reasons.items() if why is not None),
                        new_mean=float(np.mean([new[p] for p in kept])) if kept else math.nan,
                        base_mean=float(np.mean([old[p] for p in kept])) if kept else math.nan,
                        min_diff=float(d.min()) if kept else math.nan, max_diff=float(d.max()) if kept else math.nan,
                        lower=int((d < 0).sum()), **summarize(d, settings.margins[metric], settings),
                        regime="ok" if kept else "outside",
                        reason="" if kept else _pooled_reason([w for w in reasons.values() if w]),
                        masking=_masking(metric, runs[runs.index.isin(kept)])))
    return decide(pd.DataFrame(rows), settings, ["metric", "scope"])


def _pooled_reason(reasons: list[str]) -> str:
    """One 'outside the regime' text for a pooled comparison with no rate left: the rates' reasons,
    each once, the fits given as a range."""
    fits = [float(m) for r in reasons for m in re.findall(r"hard labels fit (\d+(?:\.\d+)?)%", r)]
    if fits and len(fits) == len(reasons):
        span = f"{min(fits):.1f}%" if min(fits) == max(fits) else f"{min(fits):.1f}-{max(fits):.1f}%"
        return (f"{OUTSIDE} (hard labels fit {span} of the wrong labels at these noise rates; the claim needs "
                f">= {regime.MIN_WRONG_FIT:.0%})")
    return f"{OUTSIDE} (" + "; ".join(dict.fromkeys(r[len(OUTSIDE) + 2:-1] for r in reasons)) + ")"


OUTCOMES = ("better", "equivalent", "worse", "inconclusive", "masking suspected", "outside the regime", "untested",
            "missing")


def _category(outcomes: pd.Series) -> pd.Series:
    """Each outcome's category of OUTCOMES (the reasons and '(no spread)' dropped)."""
    o = outcomes.astype(str).str.replace(" (no spread)", "", regex=False)
    o = o.where(~o.str.startswith(OUTSIDE), "outside the regime")
    return o.where(~o.str.startswith(MASKED), "masking suspected")


def tally(table: pd.DataFrame) -> pd.DataFrame:
    """How many comparisons of each metric and baseline came out in each category of OUTCOMES."""
    if table.empty:
        return pd.DataFrame()
    t = table.assign(outcome=_category(table.outcome))
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
    """'4-40 seeds (median 9) would decide at the observed spread' for inconclusive rows."""
    n = rows.seeds_needed.dropna()
    never = len(rows) - len(n)
    beyond = f"; {never} would need more than {SEEDS_CAP:,}" if never else ""
    if n.empty:
        return f"no number of {unit} up to {SEEDS_CAP:,} would decide at the observed spread"
    span = f"{int(n.min())}" if n.min() == n.max() else f"{int(n.min())}-{int(n.max())} (median {int(n.median())})"
    return f"{span} {unit} would decide at the observed spread (power {POWER:g}, at alpha / family size){beyond}"


def _family_text(rows: pd.DataFrame, s: Settings, what: str) -> str:
    seeds = "/".join(map(str, sorted(set(rows.n))))
    size = int(rows.family_size.max())
    corr = "no correction" if s.correction == "none" else f"{s.describe().split(', ')[-1]} over the {size} {what}"
    return f"{s.describe().split(',')[0]} over {seeds} seeds, {corr}, alpha {s.alpha:g}"


def verdicts(table: pd.DataFrame, method: str, *, settings: Settings = Settings()) -> list[str]:
    """One plain-language line per metric that claims no more than the tests support: how many
    comparisons are better / equivalent / worse / inconclusive after the family's correction, the
    better and worse ones with their intervals, the seeds an inconclusive one would need, and what
    stayed outside the regime or was flagged for gradient masking."""
    lines = []
    for metric, label in METRICS:
        t = table[table.metric == metric]
        if t.empty:
            continue
        cat = _category(t.outcome)
        out, masked = t[cat == "outside the regime"], t[cat == "masking suspected"]
        tested = t[cat.isin(["better", "equivalent", "worse", "inconclusive"]) | (cat == "masking suspected")]
        if tested.empty:
            if len(out):
                lines.append(f"**{label}**: {_outside_summary(out)}.")
            else:
                n = int(t.n.max()) if len(t) else 0
                lines.append(f"**{label}**: {'one seed' if n == 1 else 'no paired seeds'} per cell, so no test is "
                             f"possible; the differences in the table are single runs and may be noise."
                             + _images_summary(t))
            continue
        c = _category(tested.outcome)
        margin = fmt(metric, settings.margins[metric])
        counts = {k: int((c == k).sum()) for k in ("better", "equivalent", "worse", "inconclusive")}
        head = (f"of {len(tested)} comparisons, {method} is better in {counts['better']}, equivalent within "
                f"±{margin} in {counts['equivalent']}, worse in {counts['worse']}, and {counts['inconclusive']} "
                "are inconclusive")
        parts = []
        for word in ("better", "worse"):
            rows = tested[c == word]
            if len(rows):
                parts.append(f"{word}: " + "; ".join(f"noise {r.noise_rate:g} vs {r.baseline} {_effect(r, metric)}"
                                                     for r in rows.itertuples()))
        inc = tested[c == "inconclusive"]
        if len(inc):
            parts.append("for the inconclusive ones, " + _seeds_text(inc))
        if len(masked):
            parts.append(f"{len(masked)} would be better, but {_masked_summary(masked)}")
        what = _family_text(tested, settings, "comparisons of this metric (noise rates x baselines)")
        rest = f" The other {len(out)}: {_outside_summary(out)}." if len(out) else ""
        lines.append(f"**{label}**: {head}" + (" (" + "; ".join(parts) + ")" if parts else "")
                     + f" [{what}].{rest}")
    return lines


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
    for metric, label in METRICS:
        t = pooled[(pooled.metric == metric) & (pooled.scope == scope)] if len(pooled) else pooled
        if t.empty:
            continue
        parts = []
        for r in t.itertuples():
            o = str(r.outcome).replace(" (no spread)", "")
            if o.startswith((OUTSIDE, MASKED)):
                parts.append(f"against {r.baseline}, {o}")
                continue
            left = (f"; noise {r.outside_rates} left out: outside the regime"
                    if isinstance(r.outside_rates, str) and r.outside_rates else "")
            word = {"better": f"better than {r.baseline}", "worse": f"worse than {r.baseline}",
                    "equivalent": f"equivalent to {r.baseline} within ±{fmt(metric, r.margin)}",
                    "untested": f"untested against {r.baseline} (one pair)"}.get(o, f"inconclusive against {r.baseline}")
            boot = (f", bootstrap {fmt(metric, r.boot_lo, signed=True, unit=False)} to "
                    f"{fmt(metric, r.boot_hi, signed=True, unit=False)}"
                    if math.isfinite(r.boot_lo) else "")
            p = "" if math.isnan(r.p_adj) else f"; p = {r.p:.2g}, adjusted {r.p_adj:.2g}"
            eq = f", equivalence p adjusted {r.p_equiv_adj:.2g}" if o == "equivalent" else ""
            need = (f"; {int(r.seeds_needed)} (rate, seed) pairs would decide at the observed spread"
                    if o == "inconclusive" and math.isfinite(r.seeds_needed) else "")
            parts.append(f"{word} ({_effect(r, metric)}{boot}; lower in {int(r.lower)} of {int(r.n)} pairs{p}{eq}"
                         f"{need}{left})")
        tested = t[t.p_adj.notna()]
        what = (_family_text(tested, settings, "pooled comparisons of this metric and scope (baselines)")
                .replace(" seeds,", " pairs,") if len(tested) else settings.describe())
        lines.append(f"**{label}**, pooled over {dict(SCOPES)[scope]}, {method}: " + "; ".join(parts) + f" [{what}].")
    return lines
