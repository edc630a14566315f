"""The words of a planned audit: the plan's one-screen summary and plan.md, the confirmatory audit.md and its
one-screen summary (staged.py writes them)."""
from __future__ import annotations

import pandas as pd

from robustbench_ols.audit.comparison import POWER, Settings
from robustbench_ols.audit.confirm import seeds_text
from robustbench_ols.audit.plan import MAX_SEEDS, NOT_DECIDABLE, OUTSIDE_PILOT, PLANNED, SAFEGUARD_LEVEL
from robustbench_ols.audit.tables import SCOPES
from robustbench_ols.audit.verdicts import pooled_verdicts, summary_lines, tally, verdicts
from robustbench_ols.audit.write import frame_markdown, in_units, statistics_section

DESIGN = (f"**Design: pilot, then confirm.** The pilot's seeds only plan: for each claim, the fewest confirmation "
          f"seeds for which the confirmatory test has power {POWER:g} at the family's Bonferroni level (alpha / the "
          f"claims planned in the family), for a difference at the bound of the pilot's two-sided "
          f"{SAFEGUARD_LEVEL:.0%} interval nearer to zero, or for equivalence at its bound farther from zero "
          "(safeguard power analysis, Perugini et al. 2014), with the spread pooled over the noise rates (per-rate "
          "claims) or over the pairs (pooled claims). The confirmation tests each claim on its first n "
          "confirmation seeds only, with the family adjusted at the size the plan gave it; so its error rates "
          "hold whatever the pilot showed (tests/report/test_plan_simulation.py: 2,000 simulated audits at the "
          "cpu-regime tier's spreads). A claim that needs more than the cap is \"not decidable within N "
          "seeds\": more seeds than the cap, or a larger effect, would be needed.")


def _readable(df: pd.DataFrame) -> pd.DataFrame:
    """Noise rates as 0.4 (blank for a pooled claim), seeds as whole numbers: for the Markdown tables."""
    out = df.copy()
    out["noise_rate"] = out.noise_rate.map(lambda x: "" if pd.isna(x) else f"{x:g}")
    for c in ("seeds", "n", "pilot_n", "family_size"):
        if c in out:
            out[c] = out[c].astype("Int64")
    return out


def _claim(r) -> str:
    where = f"noise {r.noise_rate:g}" if r.kind == "per-rate" else f"pooled ({r.scope})"
    return f"{where} vs {r.baseline}"


def plan_lines(plan: pd.DataFrame, method: str, design, cost: dict) -> list[str]:
    """The plan on one screen: per metric, how many claims are decidable and with how many seeds, which are not
    (with their figure); the confirmation seeds per noise rate; what training them costs."""
    lines = [f"Plan for {method} from the pilot seeds {seeds_text(design.pilot)} (power {POWER:g} at alpha / "
             f"family size, safeguard effects; at most {design.max_seeds} confirmation seeds):"]
    inside = plan[plan.status.ne(OUTSIDE_PILOT)]
    for label, g in inside.groupby("label", sort=False):
        ok, nd = g[g.status.eq(PLANNED)], g[g.status.eq(NOT_DECIDABLE)]
        seeds = ok.seeds.astype(int)
        text = f"  {label}: {len(ok)} of {len(g)} claims decidable"
        if len(ok):
            text += f" ({seeds.min()}{'' if seeds.min() == seeds.max() else f'-{seeds.max()}'} seeds)"
        if len(nd):
            known = [r for r in nd.itertuples() if not str(r.needs).startswith("unknown")]
            unknown = len(nd) - len(known)
            text += (f"; {len(nd)} not decidable within {design.max_seeds} seeds"
                     + (" (" + ", ".join(f"{_claim(r)} needs {r.needs}" for r in known) + ")" if known else "")
                     + (f", {unknown} of them because the pilot's 60% interval spans both 0 and the margin"
                        if unknown else ""))
        lines.append(text)
    outside = plan.status.eq(OUTSIDE_PILOT).sum()
    if outside:
        lines.append(f"  {outside} claims outside the regime in the pilot (no seeds decide them; `reason` in plan.csv "
                     "says why)")
    need = design.per_rate or {}
    if need:
        lines.append("Confirmation seeds per noise rate: " + ", ".join(f"{'-' if r is None else f'{r:g}'}: {n}"
                                                                       for r, n in need.items())
                     + f" (seeds {seeds_text(design.confirmation)})")
        left = f"{cost['todo']} to train"
        if cost["todo"]:
            left += (" (" + ", ".join(f"{m} {k}" for m, k in cost["by_method"].items()) + ")"
                     + (f", about {cost['text']} of cell time on one core" if cost["text"] else "")
                     + (f"; {cost['unknown']} without an estimate" if cost["unknown"] else ""))
        lines.append(f"Cost: {cost['cells']} confirmation cells, {left}. Next: the same command with --confirm.")
    else:
        lines.append("No claim is decidable within the cap: a confirmation would decide nothing (raise --max-seeds "
                     "or accept these claims as not decidable at this scale).")
    return lines


def plan_markdown(plan: pd.DataFrame, labels, design, settings: Settings, cost: dict, about: str,
                  lines: list[str]) -> str:
    """plan.md: the design, the summary and every claim's row."""
    cols = ["kind", "label", "unit", "noise_rate", "scope", "baseline", "pilot_n", "plan_mean", "plan_sd", "status",
            "seeds", "plan_for", "needs", "plan_alpha"]
    body = [f"# Plan: confirmation seeds for `{labels[0]}` against {', '.join(f'`{b}`' for b in labels[1:])}", "",
            about, "", DESIGN, "", f"Statistics: {settings.describe()}; cap `--max-seeds {design.max_seeds}` "
            f"(default {MAX_SEEDS}).", "", "```", *lines, "```", "", "## Every claim", "",
            "`plan_mean`, `plan_sd`: the pilot's mean difference and the spread the plan assumes, in the metric's "
            "unit (points for errors, ECE and the wrong-label fit; nats for KL); `seeds`: confirmation seeds needed "
            "(pooled claims: each gives one pair per rate); `needs`: for a claim not decidable within the cap, the "
            "seeds it would need.", "", frame_markdown(_readable(in_units(plan, ["plan_mean", "plan_sd"]))[cols]), ""]
    return "\n".join(body)


def confirmed_markdown(table: pd.DataFrame, labels, design, settings: Settings, about: str,
                       results: str) -> tuple[str, list[str]]:
    """(audit.md, the one-screen summary) of the confirmatory audit."""
    method = labels[0]
    per_rate, pooled = table[table.kind.eq("per-rate")], table[table.kind.eq("pooled")]
    lines = verdicts(per_rate, method, settings=settings)
    for scope, _ in SCOPES:
        lines += pooled_verdicts(pooled, method, scope=scope, settings=settings)
    head = (f"Confirmatory audit of {method} against {', '.join(labels[1:])}: planned on seeds "
            f"{seeds_text(design.pilot)}, decided on seeds {seeds_text(design.confirmation)} (each claim on its "
            f"first n; {settings.describe()})")
    summary = [head + ":", *(f"  {s}" for s in summary_lines(per_rate, pooled))]
    cols = ["kind", "label", "unit", "noise_rate", "scope", "baseline", "seeds", "seeds_used", "n", "mean_diff",
            "ci_lo", "ci_hi", "p", "p_adj", "p_equiv_adj", "family_size", "outcome"]
    body = [f"# Confirmatory audit of `{method}` against {', '.join(f'`{b}`' for b in labels[1:])}", "", about, "",
            f"Runs read from `{results}`. Planned on the pilot seeds {seeds_text(design.pilot)} (they decide "
            f"nothing); decided on the confirmation seeds {seeds_text(design.confirmation)}, each claim on its first "
            "n (`seeds`; `seeds_used`).", "", DESIGN, "", "## Verdict", "", *(f"- {v}" for v in lines), "",
            *statistics_section(settings, confirmatory=True), "## Outcomes", "",
            frame_markdown(tally(per_rate), ".0f"), "",
            "## Every claim", "", "Differences new - baseline in the metric's unit (points for errors, ECE and the "
            "wrong-label fit; nats for KL); negative is better for the new method.", "",
            frame_markdown(_readable(in_units(table, ["mean_diff", "ci_lo", "ci_hi"]))[[c for c in cols
                                                                                       if c in table]]), ""]
    return "\n".join(body), summary
