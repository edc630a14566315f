"""Simulated pilot-then-confirm audits at the published cpu-regime tier's spreads (test_plan_simulation.py;
benchmarks/plan_simulation.py runs more): each audit draws a pilot of two seeds per claim, plans with
audit/plan.py's `plan_rows`, draws the confirmation seeds the plan asks for, tests them with
comparison.summarize and decides with confirm.decide_confirmed, exactly as `rbols audit --confirm` does on
run records."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from robustbench_ols.audit.comparison import Settings, summarize
from robustbench_ols.audit.confirm import decide_confirmed
from robustbench_ols.audit.plan import PLANNED, plan_rows

PUBLISHED = Path(__file__).resolve().parents[2] / "docs/results/cpu-regime/claims/audit.csv"
METRICS = ("test_err_last", "ece", "c10h_kl_correct", "wrong_fit")


def tier() -> pd.DataFrame:
    """The published tier's per-rate comparisons of ols against hard and ls (two seeds each) for the claims
    the plan decides: metric, baseline, noise_rate, margin, the observed mean difference and the spread
    pooled over the rates of the same metric and baseline (the plan's own estimate)."""
    a = pd.read_csv(PUBLISHED)
    a = a[a.metric.isin(METRICS) & a.regime.eq("ok")].copy()
    a["sd"] = a.groupby(["metric", "baseline"]).std_diff.transform(lambda s: float(np.sqrt((s ** 2).mean())))
    return a[["metric", "label", "baseline", "noise_rate", "margin", "mean_diff", "sd"]].reset_index(drop=True)


def _pilot(d: np.ndarray) -> dict:
    """What the plan reads of a pilot comparison (paired_table's n, mean_diff, std_diff)."""
    return dict(n=len(d), mean_diff=float(d.mean()), std_diff=float(d.std(ddof=1)))


def _claims(base: pd.DataFrame, diffs: list[np.ndarray]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pilot's per-rate and pooled (scope all) tables of one audit from each claim's differences."""
    rows = [dict(metric=r.metric, label=r.label, family=r.metric, budget=np.nan, dataset="cifar10",
                 model="resnet8", noise_rate=r.noise_rate, baseline=r.baseline, regime="ok", reason="",
                 margin=r.margin, **_pilot(d)) for r, d in zip(base.itertuples(), diffs)]
    table = pd.DataFrame(rows)
    pooled = []
    for (metric, baseline), g in base.groupby(["metric", "baseline"], sort=False):
        d = np.concatenate([diffs[i] for i in g.index])
        pooled.append(dict(metric=metric, label=g.label.iloc[0], family=metric, budget=np.nan, dataset="cifar10",
                           model="resnet8", baseline=baseline, scope="all", regime="ok", reason="",
                           rates=" ".join(f"{x:g}" for x in g.noise_rate), margin=g.margin.iloc[0], **_pilot(d)))
    return table, pd.DataFrame(pooled)


def one_audit(rng: np.random.Generator, base: pd.DataFrame, means: np.ndarray, s: Settings = Settings(),
              max_seeds: int = 10, pilot_seeds: int = 2) -> pd.DataFrame:
    """One simulated audit: the decided claims (decide_confirmed's table) when the true mean differences are
    `means` (one per row of `base`) and the spreads `base.sd`, normal differences."""
    sd = base.sd.to_numpy()
    pilot = [m + x * rng.standard_normal(pilot_seeds) for m, x in zip(means, sd)]
    plan = plan_rows(*_claims(base, pilot), s, max_seeds, figures=False)
    confirm = [m + x * rng.standard_normal(max_seeds) for m, x in zip(means, sd)]
    stats = []
    for r in plan.itertuples():
        if r.status != PLANNED:
            stats.append({})
            continue
        n = int(r.seeds)
        if r.kind == "per-rate":
            i = base.index[(base.metric == r.metric) & (base.baseline == r.baseline) &
                           (base.noise_rate == r.noise_rate)][0]
            d = confirm[i][:n]
        else:
            d = np.concatenate([confirm[i][:n] for i in base.index[(base.metric == r.metric) &
                                                                   (base.baseline == r.baseline)]])
        test = summarize(d, r.margin, s, bootstrap=False)
        del test["margin"]
        stats.append(dict(test, confirm_regime="ok", confirm_reason="", masking=""))
    t = pd.concat([plan.reset_index(drop=True), pd.DataFrame(stats)], axis=1)
    return decide_confirmed(t, s, max_seeds)


def audits(scenario: str, count: int, seed: int) -> pd.DataFrame:
    """`count` simulated audits of the tier (scenario "null": every true difference 0; "tier": the published
    mean differences taken as the truth), one table with the audit's number in `audit`."""
    base = tier()
    means = np.zeros(len(base)) if scenario == "null" else base.mean_diff.to_numpy()
    rng = np.random.default_rng(seed)
    return pd.concat([one_audit(rng, base, means).assign(audit=i) for i in range(count)], ignore_index=True)


def audits_in_parallel(scenario: str, count: int, workers: int = 2) -> pd.DataFrame:
    """audits() split over `workers` processes (seeds 0, 1, ...); audit numbers stay distinct."""
    from concurrent.futures import ProcessPoolExecutor
    sizes = [count // workers + (i < count % workers) for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(audits, [scenario] * workers, sizes, range(workers)))
    return pd.concat([p.assign(audit=p.audit + sum(sizes[:i])) for i, p in enumerate(parts)], ignore_index=True)
