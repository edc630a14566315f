"""A verdict on a new method against baselines, from the run records of a grid (write.py writes
it: audit.md, audit.csv, the figures).

For every metric, noise rate (and dataset and model) and baseline: the paired differences
new - baseline over the seeds both have, summarised by comparison.py: the mean difference with a 95%
t interval and a bootstrap interval, a two-sided difference test (paired t or Wilcoxon), an equivalence
test within the metric's practical margin (TOST), and the seeds an undecided comparison would need.
Each metric's comparisons form a family whose p-values are adjusted together (Holm-Bonferroni by
default); a robustness metric is tested at every budget the records share (never one chosen after looking
at the results), and its budgets are in one family. The outcome: *better* / *worse* (the adjusted difference test rejects), *equivalent* (within
+-margin: the adjusted TOST rejects), *inconclusive* (neither), "untested" with one paired seed. Every
metric here is lower-is-better; the fit of the wrong labels is `wrong_fit = 1 - noisy_err_last` (the
fraction of wrong-label images the model predicts as their wrong label: Fig. 5 read the other way round).

Before any test is read, every comparison carries the preconditions of its claim (`regime`): one whose
experiment cannot show the claim (hard labels never memorised at that noise rate, a run that stopped
early, every model at the robust-error floor) is "inconclusive: outside the regime (...)" whatever its
tests give; the tests' own outcome stays in `test_outcome`.

Robustness is judged per attack and on the strongest attack recorded: `robust_err` is the per-image worst
case over the attacks at a budget (`worst_err`, from each image's outcomes) when two or more ran, else the
one attack's error. Where the gradient-masking checks (attacks/sanity.py, and the transfer check from a
hard-label surrogate: attacks/transfer.py) flagged a run of the audited method, a comparison it would win on
a robustness metric is "unconfirmed: gradient masking suspected (...)" instead: a lower robust error from a
model whose gradients mislead the attacks shows nothing. The verdict sentences: verdicts.py.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from robustbench_ols.attacks import DEFAULT_EPS, PGD, AttackSpec
from robustbench_ols.attacks.spec import WorstCase
from robustbench_ols.audit import regime
from robustbench_ols.audit.comparison import Settings, adjust, outcome, seeds_needed, summarize
from robustbench_ols.audit.image_bootstrap import image_bootstrap
from robustbench_ols.audit.metric_names import (
    DEFAULT_BUDGET,
    ROBUSTNESS_METRICS,
    at_budget,
    metric_budget,
    metric_family,
)
from robustbench_ols.audit.regime import OUTSIDE
from robustbench_ols.train.selection import suffix

# (column, label); all lower is better. A robustness metric is a family of one metric per budget the records
# share (`pgd_err` at 8/255, `pgd_eps2_err` at 2/255, ...: metric_family), every one tested.
METRICS = (("test_err_last", "test error (last epoch)"), ("fgsm_err", "FGSM error"), ("pgd_err", "PGD error"),
           ("aa_err", "AutoAttack error"), ("robust_err", "robust error (worst case over the attacks)"),
           ("ece", "ECE"), ("c10h_kl_correct", "CIFAR-10H KL (correct images)"),
           ("wrong_fit", "wrong-label fit (1 - noisy_err)"))
MASKED = "unconfirmed: gradient masking suspected"
SELECTION_NAMES = {"noisy-val": "noisy-validation epoch", "oracle": "oracle epoch, optimistic"}
GROUP = ["dataset", "model", "noise_rate"]


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Add the derived columns, at every budget the attacks ran at (`_eps2` in a name: 2/255; none: 8/255):
    `pgd_err` (PGD-20 when recorded, else the one PGD-k there is), `robust_err` (the worst case over the
    attacks at that budget: `worst_err` when recorded, else the one attack's error) and `wrong_fit`. FGSM's
    and AutoAttack's columns are the records' own (`fgsm_eps2_err`, `aa_eps2_err`)."""
    df = df.copy()
    specs = {c: a for c in df.columns if (a := AttackSpec.from_key(c)) is not None and a.kind != "worst"}
    for eps in sorted({a.eps for a in specs.values() if a.eps > 0}, reverse=True):
        budget = eps * 255 if abs(eps - DEFAULT_EPS) > 1e-12 else DEFAULT_BUDGET
        here = {c: a for c, a in specs.items() if abs(a.eps - eps) < 1e-12}
        pgd = [c for c, a in here.items() if isinstance(a, PGD)]
        pgd20 = [c for c in pgd if here[c].steps == 20]
        if len(pgd20) == 1 or len(pgd) == 1:
            df[at_budget("pgd_err", budget)] = df[(pgd20 or pgd)[0]]
        single = df[list(here)].notna().sum(axis=1) == 1
        worst = WorstCase(eps=eps).key
        worst = df[worst] if worst in df else pd.Series(float("nan"), index=df.index)
        df[at_budget("robust_err", budget)] = worst.where(worst.notna(), df[list(here)].max(axis=1).where(single))
    df["wrong_fit"] = regime.wrong_fit(df)
    return df


def metrics_of(df: pd.DataFrame, select: str = "last") -> list[tuple[str, str]]:
    """(metric, label) of every metric of METRICS that `df` (prepared) has, the robustness ones at each of
    their budgets (largest first): `("pgd_eps2_err", "PGD error (2/255)")`; the test error at the epoch
    checkpoint selection `select` chooses (`test_err_noisy_val`, ...: selection.py)."""
    out = []
    for family, label in METRICS:
        if family not in ROBUSTNESS_METRICS:
            selected = family == "test_err_last" and select != "last"
            out.append((f"test_err_{suffix(select)}", f"test error ({SELECTION_NAMES[select]})") if selected
                       else (family, label))
            continue
        budgets = {metric_budget(c) for c in df.columns if metric_family(c) == family}
        out += [(at_budget(family, b), f"{label} ({b:g}/255)") for b in sorted(budgets, reverse=True)]
    return [(m, label) for m, label in out if m in df and not df[m].isna().all()]


def _family(metric: str) -> dict:
    """A comparison's multiplicity family (the metric, or for robustness the metric at every budget) and its
    budget in /255 units (NaN for a metric without one)."""
    budget = metric_budget(metric)
    return {"family": metric_family(metric), "budget": math.nan if budget is None else float(budget)}


def _masking(metric: str, new_runs: pd.DataFrame) -> str:
    """For a robustness metric: "(checks ... failed in k of n runs)" when the gradient-masking checks flagged
    runs of the audited method among `new_runs`, else ""."""
    if metric_family(metric) not in ROBUSTNESS_METRICS or "masking_suspected" not in new_runs:
        return ""
    flagged = new_runs[new_runs["masking_suspected"].eq(True)]
    if not len(flagged):
        return ""
    checks = sorted({c for text in flagged["masking_checks"].fillna("") for c in text.split(",") if c})
    return f"({', '.join(checks)} failed in {len(flagged)} of {len(new_runs)} runs)"


def decide(table: pd.DataFrame, s: Settings, family: list[str], exploratory: bool = True) -> pd.DataFrame:
    """The outcome of every comparison of `table` (rows from `summarize`, with `regime`, `reason` and
    `masking`). A family is the comparisons that share `family` (one metric: every noise rate and baseline;
    a robustness metric: at every budget too) and were tested inside the regime; their p-values are adjusted together (`p_adj`, `p_equiv_adj`) and
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
    for i in t.index[t.test_outcome.eq("inconclusive") & inside & exploratory]:
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
                 records: pd.DataFrame | None = None, select: str = "last", exploratory: bool = True) -> pd.DataFrame:
    """One row per (metric, dataset, model, noise_rate, baseline): n paired seeds, the means, the paired
    differences new - baseline summarised by `comparison.summarize` (mean, std, t and bootstrap intervals,
    difference and equivalence tests, seeds needed), and the outcome (`decide`; the regime is read from
    `records`: every run of the grid, the hard-label ones included; default `df`). Each metric is one family.
    `exploratory=False` (a plan or a confirmation: seeds are fixed beforehand there) leaves out the seeds an
    inconclusive comparison would need and the one-seed bootstrap over the test images."""
    df = prepare(df)
    records = df if records is None else records
    rows = []
    for metric, label in metrics_of(df, select):
        margin = settings.margins[metric_family(metric)]
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
                                       old_runs.set_index("seed").loc[seeds[0]], metric)
                       if len(seeds) == 1 and exploratory else None)
                rows.append(dict(zip(GROUP, key), metric=metric, label=label, baseline=base, **_family(metric),
                                 new_mean=float(new[seeds].mean()) if seeds else math.nan,
                                 base_mean=float(old[seeds].mean()) if seeds else math.nan,
                                 **summarize(d, margin, settings),
                                 **dict(zip(("img_diff", "img_lo", "img_hi"), one or (math.nan,) * 3)),
                                 regime="ok" if reason is None else "outside", reason=reason or "",
                                 masking=_masking(metric, new_runs[new_runs.seed.isin(seeds)])))
    return decide(pd.DataFrame(rows), settings, ["family"], exploratory)


SCOPES = (("noisy", "noise rates > 0"), ("all", "all noise rates"))


def pooled_table(df: pd.DataFrame, method: str, against: list[str], *, settings: Settings = Settings(),
                 records: pd.DataFrame | None = None, select: str = "last", exploratory: bool = True) -> pd.DataFrame:
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
    for metric, label in metrics_of(df, select):
        margin = settings.margins[metric_family(metric)]
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
                        metric=metric, label=label, **_family(metric), dataset=key[0], model=key[1], method=method,
                        baseline=base,
                        scope=scope, rates=" ".join(f"{r:g}" for r in sorted({p[0] for p in kept})),
                        outside_rates=" ".join(f"{r:g}" for r, why in reasons.items() if why is not None),
                        new_mean=float(np.mean([new[p] for p in kept])) if kept else math.nan,
                        base_mean=float(np.mean([old[p] for p in kept])) if kept else math.nan,
                        min_diff=float(d.min()) if kept else math.nan, max_diff=float(d.max()) if kept else math.nan,
                        lower=int((d < 0).sum()), **summarize(d, margin, settings),
                        regime="ok" if kept else "outside",
                        reason="" if kept else _pooled_reason([w for w in reasons.values() if w]),
                        masking=_masking(metric, runs[runs.index.isin(kept)])))
    return decide(pd.DataFrame(rows), settings, ["family", "scope"], exploratory)


def _pooled_reason(reasons: list[str]) -> str:
    """One 'outside the regime' text for a pooled comparison with no rate left: the rates' reasons,
    each once, the fits given as a range."""
    fits = [float(m) for r in reasons for m in re.findall(r"hard labels fit (\d+(?:\.\d+)?)%", r)]
    if fits and len(fits) == len(reasons):
        span = f"{min(fits):.1f}%" if min(fits) == max(fits) else f"{min(fits):.1f}-{max(fits):.1f}%"
        return (f"{OUTSIDE} (hard labels fit {span} of the wrong labels at these noise rates; the claim needs "
                f">= {regime.MIN_WRONG_FIT:.0%})")
    return f"{OUTSIDE} (" + "; ".join(dict.fromkeys(r[len(OUTSIDE) + 2:-1] for r in reasons)) + ")"
