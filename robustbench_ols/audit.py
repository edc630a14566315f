"""A verdict on a new method against baselines, from the run records of a grid (audit_report.py writes
it: audit.md, audit.csv, the figures).

For every metric, noise rate (and dataset and model) and baseline: the paired differences
new - baseline over the seeds both have, their mean, and a paired t-test (scipy.stats.ttest_rel,
two-sided). An outcome is a win or a loss only when p < alpha; otherwise a tie; with fewer than two
paired seeds it is "untested" (no test is possible). Every metric here is lower-is-better; the fit
of the wrong labels is `wrong_fit = 1 - noisy_err_last` (the fraction of wrong-label images the model
predicts as their wrong label: Fig. 5 read the other way round). No correction for multiple
comparisons is made, and the verdict lines say so.

Every comparison also carries the preconditions of its claim (`regime`): one whose experiment cannot
show the claim (hard labels never memorised at that noise rate, a run that stopped early) is
"inconclusive: outside the regime (...)" whatever its test gives; the test's own outcome stays in
`test_outcome`.

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
from scipy import stats

from . import regime
from .attacks import DEFAULT_EPS, PGD, AttackSpec
from .regime import OUTSIDE

ALPHA = 0.05
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


def _masked(row: dict, metric: str, new_runs: pd.DataFrame) -> dict:
    """A robustness win of the audited method whose runs the gradient-masking checks flagged becomes
    `MASKED (checks ...)`; the test's outcome stays in `test_outcome`."""
    if (metric not in regime.ROBUSTNESS_METRICS or not str(row["outcome"]).startswith("win")
            or "masking_suspected" not in new_runs):
        return row
    flagged = new_runs[new_runs["masking_suspected"].eq(True)]
    if len(flagged):
        checks = sorted({c for text in flagged["masking_checks"].fillna("") for c in text.split(",") if c})
        row["outcome"] = f"{MASKED} ({', '.join(checks)} failed in {len(flagged)} of {len(new_runs)} runs)"
    return row


def _guard(row: dict, reason: str | None) -> dict:
    """The row with its test's outcome kept as `test_outcome` and, outside the regime, the outcome
    replaced by the reason."""
    row["test_outcome"] = row["outcome"]
    row["regime"] = "ok" if reason is None else "outside"
    if reason is not None and row["outcome"] != "missing":
        row["outcome"] = reason
    return row


def _decide(d: np.ndarray, alpha: float, test) -> dict:
    """The outcome for the differences `d` (new - baseline; lower is better): `missing` (no pair),
    `untested` (one pair), `win`/`loss`/`tie` ... ` (no spread)` when every difference is the same (the
    test is then 0/0), else `test()` (a scipy result) decides at `alpha`, with its t and p."""
    if len(d) < 2:
        return {"outcome": "untested" if len(d) == 1 else "missing"}
    if np.all(d == d[0]):
        return {"outcome": "tie" if d[0] == 0 else ("win" if d[0] < 0 else "loss") + " (no spread)"}
    res = test()
    p = float(res.pvalue)
    return {"t": float(res.statistic), "p": p, "outcome": "tie" if not p < alpha else "win" if d.mean() < 0 else "loss"}


def paired_table(df: pd.DataFrame, method: str, against: list[str], *, alpha: float = ALPHA,
                 records: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (metric, dataset, model, noise_rate, baseline): n paired seeds, the mean and std of
    new - baseline, the t statistic and p-value of the paired t-test, and the outcome (the test's, or
    outside the regime read from `records`: every run of the grid, the hard-label ones included;
    default `df`)."""
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
                row = dict(zip(GROUP, key), metric=metric, label=label, baseline=base, n=len(seeds),
                           new_mean=float(new[seeds].mean()) if seeds else math.nan,
                           base_mean=float(old[seeds].mean()) if seeds else math.nan,
                           mean_diff=float(d.mean()) if len(d) else math.nan,
                           std_diff=float(d.std(ddof=1)) if len(d) > 1 else math.nan, t=math.nan, p=math.nan)
                row.update(_decide(d, alpha, lambda: stats.ttest_rel(new[seeds].to_numpy(), old[seeds].to_numpy())))
                compared = g[g.method_label.isin([method, base]) & g.seed.isin(seeds)]
                row = _guard(row, regime.outside(records, metric, *key, compared))
                rows.append(_masked(row, metric, new_runs[new_runs.seed.isin(seeds)]))
    return pd.DataFrame(rows)


SCOPES = (("noisy", "noise rates > 0"), ("all", "all noise rates"))


def pooled_table(df: pd.DataFrame, method: str, against: list[str], *, alpha: float = ALPHA,
                 records: pd.DataFrame | None = None) -> pd.DataFrame:
    """The per-rate comparisons pooled over noise rates: one row per (metric, dataset, model, baseline,
    scope), scope `noisy` (rates > 0) or `all`. Every (noise rate, seed) the two methods share is one
    pair; `lower` counts the pairs where the new method is lower. The paired t-test over all pairs asks
    whether the mean difference over the rates is zero (pairs at different rates differ in spread, so
    read it as approximate); with 2 seeds per rate it has far more power than a test within one rate,
    which has one degree of freedom. Only the noise rates inside the regime (read from `records`, as in
    `paired_table`) are pooled; `outside_rates` names the others."""
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
                    left_out = " ".join(f"{r:g}" for r, why in reasons.items() if why is not None)
                    if not kept:
                        rows.append(dict(metric=metric, label=label, dataset=key[0], model=key[1], method=method,
                                         baseline=base, scope=scope, rates="", outside_rates=left_out, n=0,
                                         **dict.fromkeys(("new_mean", "base_mean", "mean_diff", "std_diff",
                                                          "min_diff", "max_diff", "lower", "t", "p"), math.nan),
                                         regime="outside", test_outcome="none",
                                         outcome=_pooled_reason([w for w in reasons.values() if w])))
                        continue
                    pairs = kept
                    d = np.array([new[p] - old[p] for p in pairs])
                    row = dict(metric=metric, label=label, dataset=key[0], model=key[1], method=method, baseline=base,
                               scope=scope,
                               rates=" ".join(f"{r:g}" for r in sorted({p[0] for p in pairs})),
                               outside_rates=left_out, n=len(pairs),
                               new_mean=float(np.mean([new[p] for p in pairs])),
                               base_mean=float(np.mean([old[p] for p in pairs])), mean_diff=float(d.mean()),
                               std_diff=float(d.std(ddof=1)) if len(d) > 1 else math.nan,
                               min_diff=float(d.min()), max_diff=float(d.max()), lower=int((d < 0).sum()),
                               t=math.nan, p=math.nan)
                    row.update(_decide(d, alpha, lambda: stats.ttest_1samp(d, 0.0)))
                    row.update(regime="ok", test_outcome=row["outcome"])
                    runs = s[(s.method_label == method)].set_index(["noise_rate", "seed"], drop=False)
                    rows.append(_masked(row, metric, runs[runs.index.isin(pairs)]))
    return pd.DataFrame(rows)


def _pooled_reason(reasons: list[str]) -> str:
    """One 'outside the regime' text for a pooled comparison with no rate left: the rates' reasons,
    each once, the fits given as a range."""
    fits = [float(m) for r in reasons for m in re.findall(r"hard labels fit (\d+(?:\.\d+)?)%", r)]
    if fits and len(fits) == len(reasons):
        span = f"{min(fits):.1f}%" if min(fits) == max(fits) else f"{min(fits):.1f}-{max(fits):.1f}%"
        return (f"{OUTSIDE} (hard labels fit {span} of the wrong labels at these noise rates; the claim needs "
                f">= {regime.MIN_WRONG_FIT:.0%})")
    return f"{OUTSIDE} (" + "; ".join(dict.fromkeys(r[len(OUTSIDE) + 2:-1] for r in reasons)) + ")"


def tally(table: pd.DataFrame) -> pd.DataFrame:
    """Wins / ties / losses / untested / missing per metric and baseline."""
    if table.empty:
        return pd.DataFrame()
    outcome = table.outcome.str.replace(" (no spread)", "", regex=False)
    outcome = outcome.where(~outcome.str.startswith(OUTSIDE), "outside the regime")
    t = table.assign(outcome=outcome.where(~outcome.str.startswith(MASKED), "masking suspected"))
    out = t.pivot_table(index=["label", "baseline"], columns="outcome", values="n", aggfunc="count", fill_value=0)
    cols = ("win", "tie", "loss", "masking suspected", "outside the regime", "untested", "missing")
    for c in cols:
        if c not in out:
            out[c] = 0
    return out[list(cols)].reset_index()


def verdicts(table: pd.DataFrame, method: str, *, alpha: float = ALPHA) -> list[str]:
    """One plain-language line per metric that claims no more than the tests support."""
    lines = []
    for metric, label in METRICS:
        t = table[table.metric == metric]
        if t.empty:
            continue
        tested = t[~t.outcome.isin(["untested", "missing"])]
        out = tested[tested.outcome.str.startswith(OUTSIDE)]
        tested = tested[~tested.outcome.str.startswith(OUTSIDE)]
        if len(out) and tested.empty:
            lines.append(f"**{label}**: {_outside_summary(out)}.")
            continue
        if tested.empty:
            n = int(t.n.max()) if len(t) else 0
            lines.append(f"**{label}**: {'one seed' if n == 1 else 'no paired seeds'} per cell, so no test is "
                         f"possible; the differences in the table are single runs and may be noise.")
            continue
        masked = tested[tested.outcome.str.startswith(MASKED)]
        tested = tested[~tested.outcome.str.startswith(MASKED)]
        if len(masked) and tested.empty:
            lines.append(f"**{label}**: {method} looks better in {len(masked)} comparisons, but "
                         f"{_masked_summary(masked)}.")
            continue
        wins = tested.outcome.str.startswith("win").sum()
        losses = tested.outcome.str.startswith("loss").sum()
        ties = len(tested) - wins - losses
        seeds = sorted(set(tested.n))
        base = ", ".join(sorted(set(tested.baseline)))
        what = (f"(comparisons with {base} at each noise rate; paired t-test over {'/'.join(map(str, seeds))} "
                f"seeds, p < {alpha}, no correction for multiple comparisons)")
        n = len(tested)
        if wins and not losses:
            verdict = (f"{method} is better in {wins} of {n} comparisons and never worse; the other {ties} "
                       "cannot be told apart from seed noise")
        elif losses and not wins:
            verdict = (f"{method} is worse in {losses} of {n} comparisons and never better; the other {ties} "
                       "cannot be told apart from seed noise")
        elif wins and losses:
            verdict = (f"mixed: {method} is better in {wins} and worse in {losses} of {n} comparisons; the other "
                       f"{ties} cannot be told apart from seed noise")
        else:
            verdict = f"in none of {n} comparisons can a difference be told apart from seed noise"
        rest = f" The other {len(out)}: {_outside_summary(out)}." if len(out) else ""
        if len(masked):
            rest += f" In {len(masked)} more it looks better, but {_masked_summary(masked)}."
        lines.append(f"**{label}**: {verdict} {what}.{rest}")
    return lines


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


def pooled_verdicts(pooled: pd.DataFrame, method: str, *, scope: str = "all", alpha: float = ALPHA) -> list[str]:
    """One line per metric from the pooled comparisons (`scope` all or noisy): per baseline, better,
    worse or cannot be told apart, with the count of lower pairs and the p-value."""
    lines = []
    for metric, label in METRICS:
        t = pooled[(pooled.metric == metric) & (pooled.scope == scope)] if len(pooled) else pooled
        if t.empty:
            continue
        parts = []
        for r in t.itertuples():
            outcome = str(r.outcome).replace(" (no spread)", "")
            if outcome.startswith((OUTSIDE, MASKED)):
                parts.append(f"against {r.baseline}, {outcome}")
                continue
            if getattr(r, "outside_rates", "") and isinstance(r.outside_rates, str):
                outcome_note = f" (noise {r.outside_rates} left out: outside the regime)"
            else:
                outcome_note = ""
            word = {"win": "better than", "loss": "worse than"}.get(outcome, "cannot be told apart from")
            p = "" if math.isnan(r.p) else f", p = {r.p:.2g}"
            parts.append(f"{word} {r.baseline} (lower in {int(r.lower)} of {int(r.n)} pairs{p}){outcome_note}")
        lines.append(f"**{label}**, pooled over {dict(SCOPES)[scope]}, "
                     f"{method}: " + "; ".join(parts) + f" (t-test of the mean difference, p < {alpha}).")
    return lines
