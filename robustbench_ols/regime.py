"""The regime a claim needs, read from the baselines' own run records.

The OLS paper's claims about noisy labels (lower test error, fewer wrong labels fitted) are about what
happens when a network memorises them. A grid in which hard labels never fit the wrong labels (too few
epochs, too small a model) can neither confirm nor refute them, whatever a t-test says. So every
comparison the audit makes carries preconditions, checked here on the records:

- the runs compared finished their schedule (trained epochs = planned epochs);
- for the claims about learning under noise (`MEMORISATION_METRICS`) at a noise rate > 0: every
  hard-label run of that (dataset, model, noise rate) fits at least `MIN_WRONG_FIT` of its wrong-label
  training images by the last epoch (`wrong_fit = 1 - noisy_err_last`: predicted as the wrong label).

A comparison that fails one is "inconclusive: outside the regime (...)" in audit.md, audit.csv and the
README, whatever its test gives; `rbols report` prints `fit_table` so the regime shows at a glance.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

REFERENCE = "hard"
# The share of wrong labels hard labels must fit. The OLS paper's Fig. 5 has hard labels fitting ~100% of
# them at 40% noise after the lr drops; 60% (the tier's target in issue 11) is well past chance (10% for
# ten classes) and past the noise rate itself, i.e. clearly memorising.
MIN_WRONG_FIT = 0.6
MEMORISATION_METRICS = ("test_err_last", "wrong_fit")
OUTSIDE = "inconclusive: outside the regime"


def wrong_fit(df: pd.DataFrame) -> pd.Series:
    """Per run: the share of wrong-label training images predicted as their wrong label at the last epoch."""
    if "noisy_err_last" not in df:
        return pd.Series(np.nan, index=df.index)
    return 1 - df["noisy_err_last"].astype(float)


def fit_table(df: pd.DataFrame) -> pd.DataFrame:
    """The hard-label wrong-label fit per (dataset, model, noise rate > 0): seeds, lowest, mean and
    highest fit over the seeds, and whether the memorisation precondition holds there."""
    cols = ["dataset", "model", "noise_rate", "seeds", "fit_min", "fit_mean", "fit_max", "memorises"]
    if df.empty or "method_label" not in df:
        return pd.DataFrame(columns=cols)
    h = df[(df.method_label == REFERENCE) & (df.noise_rate.astype(float) > 0)].assign(fit=wrong_fit(df))
    rows = []
    for (dataset, model, rate), g in h.groupby(["dataset", "model", "noise_rate"]):
        f = g.fit.dropna()
        rows.append(dict(dataset=dataset, model=model, noise_rate=float(rate), seeds=len(f),
                         fit_min=float(f.min()) if len(f) else math.nan,
                         fit_mean=float(f.mean()) if len(f) else math.nan,
                         fit_max=float(f.max()) if len(f) else math.nan,
                         memorises=bool(len(f)) and bool(f.min() >= MIN_WRONG_FIT)))
    return pd.DataFrame(rows, columns=cols)


def outside(df: pd.DataFrame, metric: str, dataset, model, noise_rate, runs: pd.DataFrame) -> str | None:
    """Why the comparison of `runs` (the compared runs of this dataset, model and noise rate) on
    `metric` is outside the regime, as the verdict text; None when every precondition holds."""
    unfinished = (runs[runs.epochs.astype(int) != runs.epochs_planned.astype(int)] if "epochs_planned" in runs
                  else runs[:0])
    if len(unfinished):
        return (f"{OUTSIDE} ({len(unfinished)} run(s) stopped before the end of their schedule: "
                f"{', '.join(unfinished.run_id)})")
    if metric not in MEMORISATION_METRICS or not float(noise_rate) > 0:
        return None
    fits = fit_table(df)
    row = fits[(fits.dataset == dataset) & (fits.model == model) & (fits.noise_rate == float(noise_rate))]
    if row.empty or not row.seeds.iloc[0]:
        return f"{OUTSIDE} (no hard-label run at noise {float(noise_rate):g} shows whether anything memorises)"
    r = row.iloc[0]
    if r.memorises:
        return None
    which = "" if r.seeds == 1 else f" on its lowest of {r.seeds} seeds"
    return (f"{OUTSIDE} (hard labels fit {r.fit_min:.0%} of the wrong labels{which}; the claim needs "
            f">= {MIN_WRONG_FIT:.0%})")


def fit_markdown(df: pd.DataFrame) -> str:
    """`fit_table` as a Markdown table (percent), or a sentence when there is no hard-label run with noise."""
    from .report.tables import markdown_table
    fits = fit_table(df)
    if fits.empty:
        return (f"No `{REFERENCE}` run with label noise here: whether anything memorises the wrong labels, and so "
                "any claim about noisy labels, cannot be read off these runs.\n")
    rows = [[r.dataset, r.model, f"{r.noise_rate:g}", str(r.seeds), f"{r.fit_min:.1%}", f"{r.fit_mean:.1%}",
             f"{r.fit_max:.1%}", "yes" if r.memorises else "no"] for r in fits.itertuples()]
    return markdown_table(["dataset", "model", "noise rate", "seeds", "fit (lowest seed)", "fit (mean)",
                           "fit (highest seed)", f"memorises (all >= {MIN_WRONG_FIT:.0%})"], rows)


def fit_lines(df: pd.DataFrame) -> list[str]:
    """One plain line per (dataset, model, noise rate) for a terminal."""
    def span(r) -> str:
        return f"{r.fit_min:.1%}" if r.seeds == 1 else f"{r.fit_min:.1%}-{r.fit_max:.1%}"
    return [f"{r.dataset} {r.model} noise {r.noise_rate:g}: hard labels fit {span(r)} of the "
            f"wrong labels ({r.seeds} seed{'s' * (r.seeds != 1)}): "
            + ("memorising" if r.memorises else f"outside the regime (< {MIN_WRONG_FIT:.0%} on some seed)")
            for r in fit_table(df).itertuples()]
