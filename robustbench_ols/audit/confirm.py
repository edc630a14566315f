"""The confirmatory audit of a pilot-then-confirm design (plan.py): every claim the plan found decidable is
tested on its first n confirmation seeds (n the plan's), never on a pilot seed, and the claims of a family are
adjusted together at the size the plan gave that family. While some seeds still train, a claim whose seeds are
not all done counts with p = 1 ("waiting for seeds"): Holm's adjusted p-values never rise when an input falls,
so as seeds arrive an inconclusive claim may become decided, and a decided difference stays decided; the
audit with every planned seed done is the confirmatory one. The rest keep the plan's word: "not decidable
within N seeds" with its figure, or outside the regime."""
from __future__ import annotations

import math

import pandas as pd

from robustbench_ols.audit.comparison import Settings, adjust, outcome
from robustbench_ols.audit.plan import NOT_DECIDABLE, PLANNED
from robustbench_ols.audit.tables import MASKED, paired_table, pooled_table

KEYS = {"per-rate": ["metric", "dataset", "model", "noise_rate", "baseline"],
        "pooled": ["metric", "dataset", "model", "baseline", "scope"]}
NOT_DECIDABLE_WITHIN = "not decidable within"
WAITING = "waiting for seeds"


def seeds_text(seeds) -> str:
    """'2-8' for a run of consecutive seeds, else '2, 4, 5'."""
    seeds = sorted(int(s) for s in seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def confirm_table(df: pd.DataFrame, records: pd.DataFrame, method: str, against: list[str], plan: pd.DataFrame,
                  pilot: list[int], confirmation: list[int], s: Settings, max_seeds: int,
                  select: str = "last") -> pd.DataFrame:
    """The plan's claims (plan_rows) with their confirmatory outcome: for a planned claim, the tests of
    paired_table / pooled_table over `confirmation[:seeds]` only (`seeds_used`), p-values adjusted within the
    plan's families; `planned_on` the pilot seeds. `df` and `records` hold every seed; the pilot's rows are
    never read here."""
    confirmation = [c for c in confirmation if c not in set(pilot)]
    plan = plan.assign(claim=range(len(plan)))  # the plan's order (metric by metric) kept in the result
    out = []
    for kind, builder in (("per-rate", paired_table), ("pooled", pooled_table)):
        p = plan[plan.kind.eq(kind)]
        for n in sorted(set(p.seeds.dropna().astype(int))):
            use = confirmation[:n]
            tested = builder(df[df.seed.isin(use)], method, against, settings=s,
                             records=records[records.seed.isin(use)], select=select, exploratory=False)
            claims = p[p.seeds.eq(n)]
            if tested.empty:
                out.append(claims.assign(seeds_used=seeds_text(use), n=0))
                continue
            keep = ["n", "new_mean", "base_mean", "mean_diff", "std_diff", "ci_lo", "ci_hi", "boot_lo", "boot_hi",
                    "t", "p", "p_equiv", "regime", "reason", "masking", "lower", "rates", "outside_rates"]
            tested = tested[KEYS[kind] + [c for c in keep if c in tested]].rename(
                columns={"regime": "confirm_regime", "reason": "confirm_reason", "rates": "confirm_rates"})
            out.append(claims.merge(tested, on=KEYS[kind], how="left").assign(seeds_used=seeds_text(use)))
        out.append(p[~p.status.eq(PLANNED)])
    t = pd.concat(out, ignore_index=True).sort_values("claim", kind="stable").reset_index(drop=True)
    t["planned_on"] = seeds_text(pilot)
    return decide_confirmed(t, s, max_seeds)


def decide_confirmed(t: pd.DataFrame, s: Settings, max_seeds: int) -> pd.DataFrame:
    """Outcome of every claim: planned ones from their adjusted tests (a family = the plan's family; an
    untested member counts as p = 1), the regime on the confirmation seeds and the masking checks applied as
    in tables.decide; the others from the plan."""
    t = t.copy()
    for c, empty in (("n", math.nan), ("p", math.nan), ("p_equiv", math.nan), ("mean_diff", math.nan),
                     ("std_diff", math.nan), ("confirm_regime", ""), ("confirm_reason", ""), ("masking", "")):
        t[c] = t[c] if c in t else empty
    planned = t.status.eq(PLANNED)
    # seeds both methods have: a pooled claim's pairs over its rates (the confirmation's own, else the plan's)
    rates = (t.confirm_rates.fillna("").astype(str).str.split().str.len() if "confirm_rates" in t else 0)
    per_seed = pd.Series(rates, index=t.index).where(lambda x: x > 0, t.per_seed).astype(float)
    t["seeds_trained"] = (t.n.fillna(0) // per_seed).where(planned)
    short = planned & (t.seeds_trained < t.seeds)
    tested = planned & ~short & t.confirm_regime.eq("ok") & t.p.notna()
    t["p_adj"], t["p_equiv_adj"] = math.nan, math.nan
    for _, g in t[planned].groupby("family_key"):
        idx = g.index
        p = t.loc[idx, "p"].where(tested[idx], 1.0)
        q = t.loc[idx, "p_equiv"].where(tested[idx], 1.0)
        no_spread = planned[idx] & ~short[idx] & t.loc[idx, "std_diff"].eq(0)
        t.loc[idx, "p_adj"] = adjust(p.where(~no_spread, math.nan), s.correction)
        t.loc[idx, "p_equiv_adj"] = adjust(q.where(~no_spread, math.nan), s.correction)
    t.loc[~tested, ["p_adj", "p_equiv_adj"]] = math.nan  # an untested member counted, but has no p-value
    outcomes = []
    for i, r in t.iterrows():
        if r.status == NOT_DECIDABLE:
            why = r.needs if str(r.needs).startswith("unknown") else f"needs {r.needs} seeds"
            outcomes.append(f"{NOT_DECIDABLE_WITHIN} {max_seeds} seeds ({why})")
        elif r.status != PLANNED:
            outcomes.append(r.reason)
        elif short[i]:
            outcomes.append(f"{WAITING} ({int(r.seeds_trained)} of {int(r.seeds)} confirmation seeds trained)")
        elif r.confirm_regime != "ok":
            outcomes.append(r.confirm_reason)
        else:
            o = outcome(r, s.alpha)
            outcomes.append(MASKED + " " + r.masking if o.startswith("better") and r.masking else o)
    t["outcome"] = outcomes
    return t
