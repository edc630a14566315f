"""The generated sections on the methods issue 28 added to the cpu-regime tier (generalized label smoothing at
-0.2 and 0.2, ELR) and on CIFAR-10N's synthetic twin: one in docs/results/cpu-regime.md, one in the README.
build_readme.py writes and checks them with its other sections; every number comes from committed files:
`docs/results/cpu-regime/added-methods.csv` and `cifar10n-twin.csv` (one row per run: added_tables.py) and the
exploratory audits in `gls-claims/` and `elr-claims/` (rbols audit --no-run on the pilot seeds 0 and 1), and ELR's
confirmatory audit in `elr-confirm/` (rbols audit --confirm: the seeds its plan asked for) once published.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from text_format import signed as _signed  # a sibling: build_readme.py puts this folder on the path
from text_format import table as _table

ROOT = Path(__file__).resolve().parents[2]
TIER = Path("docs/results/cpu-regime")
ADDED_BEGIN = "<!-- added:begin (written by docs/results/build_readme.py from docs/results/; do not edit) -->"
ADDED_END = "<!-- added:end -->"
ADDED_SUMMARY_BEGIN = ("<!-- added-summary:begin (written by docs/results/build_readme.py from docs/results/; do not "
                       "edit) -->")
ADDED_SUMMARY_END = "<!-- added-summary:end -->"
NAMES = {"hard": "hard labels", "ls": "LS (eps 0.1)", "ols": "OLS", "gls": "NLS (gls, rate −0.2)",
         "gls:warmup=20": "NLS after 20 CE epochs (gls:warmup=20)", "gls:rate=0.2": "PLS (gls, rate 0.2)", "elr": "ELR"}
# (audit folder, the method audited, its baselines)
AUDITS = [("gls-claims", "gls", ["hard", "ls", "gls:rate=0.2"]),
          ("gls-warmup-claims", "gls:warmup=20", ["hard", "ls", "gls:rate=0.2"]), ("elr-claims", "elr", ["hard", "ls"])]
# the confirmatory audits (`rbols audit --confirm` on the seeds their plans asked for), once trained
CONFIRMS = [("elr-confirm", "elr", ["hard", "ls"])]
# (metric of audit_pooled.csv, scope, what, scale, digits)
CLAIMS = [("test_err_last", "noisy", "test error, noisy rates (points)", 100, 1),
          ("wrong_fit", "noisy", "wrong-label fit, noisy rates (points)", 100, 1),
          ("ece", "all", "ECE, all rates (points)", 100, 1),
          ("c10h_kl_correct", "all", "CIFAR-10H KL, all rates", 1, 3),
          ("robust_eps1_err", "all", "robust error at 1/255, all rates (points)", 100, 1)]
SHORT = {"better": "**lower**", "worse": "**higher**", "equivalent": "**equivalent**", "inconclusive": "inconclusive"}


def _csv(name: str) -> pd.DataFrame | None:
    path = ROOT / TIER / name
    return pd.read_csv(path) if path.exists() else None


def _verdict(folder: str, base: str, metric: str, scope: str, scale: float, digits: int) -> str:
    path = ROOT / TIER / folder / "audit_pooled.csv"
    if not path.exists():
        return "—"
    p = pd.read_csv(path)
    r = p[(p.metric == metric) & (p.scope == scope) & (p.baseline == base)]
    if r.empty:
        return "no paired runs"
    r = r.iloc[0]
    outcome = str(r.outcome).replace(" (no spread)", "")
    if outcome.startswith("inconclusive: outside"):
        return "outside the regime"
    return f"{SHORT.get(outcome, outcome)} ({_signed(r.mean_diff * scale, digits)}, n = {int(r.n)})"


def _confirmed(folder: str, base: str, metric: str, scope: str, scale: float, digits: int) -> str:
    """A pooled claim as the confirmatory audit (audit.csv of `rbols audit --confirm`) decided it."""
    a = pd.read_csv(ROOT / TIER / folder / "audit.csv")
    r = a[(a.kind == "pooled") & (a.metric == metric) & (a.scope == scope) & (a.baseline == base)]
    if r.empty:
        return "no paired runs"
    r = r.iloc[0]
    outcome = str(r.outcome)
    if outcome in SHORT:
        return f"{SHORT[outcome]} ({_signed(r.mean_diff * scale, digits)}, n = {int(r.n)}, seeds {r.seeds_used})"
    return outcome.split(" (")[0]  # not decidable within N seeds, waiting for seeds, outside the regime


def verdict_table(audits=AUDITS, cell=_verdict) -> str:
    """One row per comparison (method vs baseline), one column per claim; `cell` reads the audit's decision."""
    rows = [[f"{NAMES[m]} vs {NAMES[b]}"] + [cell(folder, b, metric, scope, scale, digits)
                                            for metric, scope, _, scale, digits in CLAIMS]
            for folder, m, bases in audits if (ROOT / TIER / folder).exists() for b in bases]
    return _table(["comparison (method − baseline)"] + [what for _, _, what, _, _ in CLAIMS], rows)


def confirm_lines(prefix: str = "") -> list[str]:
    """The claims decided on confirmation seeds alone (CONFIRMS), once published; links relative to docs/results/
    (`prefix` "docs/results/" for the README)."""
    if not any((ROOT / TIER / folder).exists() for folder, _, _ in CONFIRMS):
        return []
    return ["**ELR decided on its confirmation seeds alone** "
            f"([elr-confirm]({prefix}cpu-regime/elr-confirm/audit.md)): seeds 2 to 11, as many per claim as [its plan]({prefix}cpu-regime/elr-plan/plan.md) asked from the pilot "
            "before they were trained, each claim tested on its first n and Holm-adjusted at the plan's family sizes "
            "(the design issue 26 gave OLS); pooled over the rates; lower is better for every column:", "",
            verdict_table(CONFIRMS, _confirmed)]


def means_table(d: pd.DataFrame) -> str:
    rates = sorted(d.noise_rate.unique())
    rows = []
    for m in NAMES:
        r = d[d.method_label == m]
        if r.empty:
            continue
        cell = r.groupby("noise_rate")["test_err_last"].agg(["mean", "count"])
        rows.append([NAMES[m]] + [f"{cell.loc[x, 'mean'] * 100:.1f}" if x in cell.index else "—" for x in rates]
                    + [f"{r.wrong_fit[r.noise_rate > 0].mean() * 100:.1f}", f"{r.ece.mean() * 100:.1f}",
                       f"{r.c10h_kl_correct.mean():.3f}", f"{len(r)}"])
    return _table(["method"] + [f"test error {x * 100:g}%" for x in rates]
                  + ["wrong-label fit (noisy rates)", "ECE (all rates)", "CIFAR-10H KL", "runs"], rows)


def twin_table(t: pd.DataFrame) -> str:
    rows = []
    for m in ("hard", "ls", "ols"):
        real = t[(t.method_label == m) & (t.noise == "human:worst")].set_index("seed")
        syn = t[(t.method_label == m) & (t.noise == "cifar10n-synthetic:worst")].set_index("seed")
        seeds = sorted(set(real.index) & set(syn.index))
        if not seeds:
            continue
        row = [NAMES[m], ", ".join(map(str, seeds)),
               f"{real.noise_rate_realised[seeds].mean() * 100:.1f} / {syn.noise_rate_realised[seeds].mean() * 100:.1f}"]
        for col, scale, digits in (("test_err_last", 100, 1), ("wrong_fit", 100, 1), ("ece", 100, 1)):
            diff = (syn[col][seeds] - real[col][seeds]) * scale
            row.append(f"{real[col][seeds].mean() * scale:.{digits}f} / {syn[col][seeds].mean() * scale:.{digits}f} "
                       f"({_signed(diff.mean(), digits)}; per seed {', '.join(_signed(v, digits) for v in diff)})")
        rows.append(row)
    return _table(["method", "seeds", "realised noise % (real / synthetic)", "test error % (real / synthetic "
                   "(synthetic − real))", "wrong-label fit %", "ECE (points)"], rows)


def plan_lines(folder: str) -> str:
    """The plan's seeds and cost lines (`rbols audit --plan`: what confirming the pilot's claims would take)."""
    path = ROOT / TIER / folder / "plan.md"
    if not path.exists():
        return ""
    lines = [ln.strip() for ln in path.read_text().splitlines()
             if ln.startswith(("Confirmation seeds per noise rate", "Cost:"))]
    return "; ".join(ln.replace(" Next: the same command with --confirm.", "").rstrip(".") for ln in lines)


def added_section() -> str:
    d, t = _csv("added-methods.csv"), _csv("cifar10n-twin.csv")
    if d is None:
        return "\n".join([ADDED_BEGIN, "", "Not published yet: run `bash docs/results/publish_tier.sh`.", "",
                          ADDED_END])
    body = [
        f"Pilot seeds 0 and 1 only, every method on the same seeds and the same noisy labels ({len(d)} runs, "
        "[added-methods.csv](cpu-regime/added-methods.csv): one row per run). Mean test error (%) at each symmetric "
        "noise rate, and over the rates the wrong-label fit (the share of wrong-label training images predicted "
        "as their wrong label), the ECE and the CIFAR-10H KL:", "", means_table(d), "",
        "The exploratory audits of NLS, from scratch and after the warm-up, against hard labels, LS and PLS "
        "([gls-claims](cpu-regime/gls-claims/audit.md), [gls-warmup-claims](cpu-regime/gls-warmup-claims/audit.md)) "
        "and of ELR against hard labels and LS ([elr-claims](cpu-regime/elr-claims/audit.md)), pooled over the "
        "noise rates (the claim's scope), two seeds per rate: the verdict and the mean difference method − "
        "baseline over n (rate, seed) pairs; lower is better for every row; Holm within each audit's families:",
        "", verdict_table()]
    plans = [(f"[{name}'s plan](cpu-regime/{folder}/plan.md)", plan_lines(folder))
             for folder, name in (("gls-plan", "NLS"), ("elr-plan", "ELR"))]
    plans = [f"{link}: {text}" for link, text in plans if text]
    confirmed = confirm_lines()
    if plans:
        trained = "; ELR's trained, below" if confirmed else ""
        body += ["", "What confirming them would take, planned from these two seeds as issue 26 planned OLS's "
                 f"(NLS's not trained yet{trained}): " + "; ".join(plans)]
    if confirmed:
        body += ["", *confirmed]
    if t is not None and len(t):
        body += ["", "**CIFAR-10N worst: real human labels against their synthetic twin** "
                 "([cifar10n-twin.csv](cpu-regime/cifar10n-twin.csv)). The twin draws every label independently "
                 "from the transition matrix the human labels make over all 50,000 images; the difference is what "
                 "the human labels' dependence on the image adds. Two seeds: a description, not a verdict.", "",
                 twin_table(t)]
    return "\n".join([ADDED_BEGIN, "", *body, "", ADDED_END])


def added_summary() -> str:
    if _csv("added-methods.csv") is None:
        return "\n".join([ADDED_SUMMARY_BEGIN, "", ADDED_SUMMARY_END])
    page = "docs/results/cpu-regime.md#generalized-label-smoothing-elr-and-cifar-10ns-synthetic-twin"
    return "\n".join([
        ADDED_SUMMARY_BEGIN, "",
        "Added on the tier's pilot seeds 0 and 1 (issue 28): negative label smoothing (`gls`, rate −0.2, Wei et al. "
        "2022; from scratch, and after 20 epochs of cross-entropy: its loss has no lower bound, and from scratch it "
        "fails at 0% noise), positive label smoothing at 0.2 (`gls:rate=0.2`) and ELR (Liu et al. 2020), audited like OLS, "
        f"exploratory (two seeds; [the tables and the real vs synthetic CIFAR-10N comparison]({page})):", "",
        verdict_table(), *([""] + confirmed if (confirmed := confirm_lines("docs/results/")) else []), "",
        ADDED_SUMMARY_END])
