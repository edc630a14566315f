"""The regime a claim needs, read from the baselines' own run records.

The OLS paper's claims about noisy labels (lower test error, fewer wrong labels fitted) are about what
happens when a network memorises them. A grid in which hard labels never fit the wrong labels (too few
epochs, too small a model) can neither confirm nor refute them, whatever a t-test says. So every
comparison the audit makes carries preconditions, checked here on the records:

- the runs compared finished their schedule (trained epochs = planned epochs);
- for the claims about learning under noise (`MEMORISATION_METRICS`) at a noise rate > 0: every
  hard-label run of that setting and noise rate fits at least `MIN_WRONG_FIT` of its wrong-label
  training images by the last epoch (`wrong_fit = 1 - noisy_err_last`: predicted as the wrong label);
- for the robustness claims, at each budget: not every compared model is at the floor there (robust error
  >= `FLOOR`).

A comparison that fails one is "inconclusive: outside the regime (...)" in audit.md, audit.csv and the
results pages, whatever its test gives; `rbols report` prints `fit_table` so the regime shows at a glance.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from robustbench_ols.audit.metric_names import ROBUSTNESS_METRICS, metric_family
from robustbench_ols.common.markdown import markdown_table

REFERENCE = "hard"
# The share of wrong labels hard labels must fit. The OLS paper's Fig. 5 has hard labels fitting ~100% of
# them at 40% noise after the lr drops; 60% (the cpu-regime tier's target) is well past chance (10% for
# ten classes) and past the noise rate itself, i.e. clearly memorising.
MIN_WRONG_FIT = 0.6
MEMORISATION_METRICS = ("test_err_last", "wrong_fit")
# Robust error at the floor: when every compared model errs on nearly every attacked image, no difference in
# robustness can show (the paper's 8/255 does this to small CPU-scale models). Checked at each budget.
FLOOR = 0.99
OUTSIDE = "inconclusive: outside the regime"


def wrong_fit(df: pd.DataFrame) -> pd.Series:
    """Per run: the share of wrong-label training images predicted as their wrong label at the last epoch."""
    if "noisy_err_last" not in df:
        return pd.Series(np.nan, index=df.index)
    return 1 - df["noisy_err_last"].astype(float)


# What a hard-label reference must share with the runs it vouches for (those of the columns a table has).
KEY = ("dataset", "model", "noise_kind", "noise_rate", "epochs", "train_subset")


def _key(df: pd.DataFrame) -> list[str]:
    return [k for k in KEY if k in df]


def fit_table(df: pd.DataFrame) -> pd.DataFrame:
    """The hard-label wrong-label fit per setting and noise rate > 0 (the `KEY` columns): seeds, lowest,
    mean and highest fit over the seeds, and whether the memorisation precondition holds there."""
    stats = ["seeds", "fit_min", "fit_mean", "fit_max", "memorises"]
    if df.empty or "method_label" not in df:
        return pd.DataFrame(columns=[*KEY, *stats])
    key = _key(df)
    h = df[(df.method_label == REFERENCE) & (df.noise_rate.astype(float) > 0)].assign(fit=wrong_fit(df))
    rows = []
    for values, g in h.groupby(key):
        f = g.fit.dropna()
        rows.append(dict(zip(key, values), seeds=len(f), seed_list=sorted(g.seed[g.fit.notna()]) if "seed" in g else [],
                         fit_min=float(f.min()) if len(f) else math.nan,
                         fit_mean=float(f.mean()) if len(f) else math.nan,
                         fit_max=float(f.max()) if len(f) else math.nan,
                         memorises=bool(len(f)) and bool(f.min() >= MIN_WRONG_FIT)))
    out = pd.DataFrame(rows, columns=[*key, *stats, "seed_list"])
    out["noise_rate"] = out["noise_rate"].astype(float)
    return out


def outside(df: pd.DataFrame, metric: str, dataset, model, noise_rate, runs: pd.DataFrame) -> str | None:
    """Why the comparison of `runs` (the compared runs of this dataset, model and noise rate) on `metric`
    is outside the regime, as the verdict text; None when every precondition holds. `df`: every record,
    the hard-label references among them; a reference must share the runs' setting (`KEY`) and cover
    each of their seeds. Only finished runs (DONE) are records at all; failed ones never enter."""
    unfinished = (runs[runs.epochs.astype(int) != runs.epochs_planned.astype(int)] if "epochs_planned" in runs
                  else runs[:0])
    if len(unfinished):
        return (f"{OUTSIDE} ({len(unfinished)} run(s) stopped before the end of their schedule: "
                f"{', '.join(unfinished.run_id)})")
    if (metric_family(metric) in ROBUSTNESS_METRICS and metric in runs and len(runs)
            and (runs[metric].astype(float) >= FLOOR).all()):
        return (f"{OUTSIDE} (every compared model errs on >= {FLOOR:.0%} of the attacked images: at this floor no "
                "difference in robustness can show)")
    if metric_family(metric) not in MEMORISATION_METRICS or not float(noise_rate) > 0:
        return None
    fits = fit_table(df)
    fits = fits[(fits.dataset == dataset) & (fits.model == model) & (fits.noise_rate == float(noise_rate))]
    for k in _key(fits):
        if k in runs and k not in ("dataset", "model", "noise_rate"):
            fits = fits[fits[k].isin(set(runs[k]))]
    seeds = set(runs.seed) if "seed" in runs else set()
    covered = set().union(*fits.seed_list) if len(fits) else set()
    if fits.empty or not fits.seeds.sum():
        return f"{OUTSIDE} (no hard-label run at noise {float(noise_rate):g} shows whether anything memorises)"
    if seeds - covered:
        return (f"{OUTSIDE} (no hard-label run of seed(s) {', '.join(map(str, sorted(seeds - covered)))} at noise "
                f"{float(noise_rate):g} shows whether anything memorises)")
    if fits.memorises.all():
        return None
    low, n = float(fits.fit_min.min()), int(fits.seeds.sum())
    which = "" if n == 1 else f" on its lowest of {n} seeds"
    return (f"{OUTSIDE} (hard labels fit {low:.1%} of the wrong labels{which}; the claim needs "
            f">= {MIN_WRONG_FIT:.0%})")


def fit_markdown(df: pd.DataFrame) -> str:
    """`fit_table` as a Markdown table (percent), or a sentence when there is no hard-label run with noise."""
    fits = fit_table(df)
    if fits.empty:
        return (f"No `{REFERENCE}` run with label noise here: whether anything memorises the wrong labels, and so "
                "any claim about noisy labels, cannot be read off these runs.\n")
    key = [k for k in KEY if k in fits]
    rows = [[*(f"{getattr(r, k):g}" if k == "noise_rate" else str(getattr(r, k)) for k in key), str(r.seeds),
             f"{r.fit_min:.1%}", f"{r.fit_mean:.1%}", f"{r.fit_max:.1%}", "yes" if r.memorises else "no"]
            for r in fits.itertuples()]
    names = {"noise_kind": "noise", "noise_rate": "noise rate", "train_subset": "train subset"}
    return markdown_table([*(names.get(k, k) for k in key), "seeds", "fit (lowest seed)", "fit (mean)",
                           "fit (highest seed)", f"memorises (all >= {MIN_WRONG_FIT:.0%})"], rows)


def fit_lines(df: pd.DataFrame) -> list[str]:
    """One plain line per setting and noise rate for a terminal."""
    def span(r) -> str:
        return f"{r.fit_min:.1%}" if r.seeds == 1 else f"{r.fit_min:.1%}-{r.fit_max:.1%}"

    def where(r) -> str:
        extra = [f"{getattr(r, 'epochs')} epochs" if hasattr(r, "epochs") else "",
                 f"subset {getattr(r, 'train_subset')}" if hasattr(r, "train_subset") else ""]
        return " ".join([r.dataset, r.model, *[e for e in extra if e], getattr(r, "noise_kind", "noise")])
    return [f"{where(r)} {r.noise_rate:g}: hard labels fit {span(r)} of the "
            f"wrong labels ({r.seeds} seed{'s' * (r.seeds != 1)}): "
            + ("memorising" if r.memorises else f"outside the regime (< {MIN_WRONG_FIT:.0%} on some seed)")
            for r in fit_table(df).itertuples()]
