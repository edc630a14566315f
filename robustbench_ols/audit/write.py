"""`rbols audit`'s files: audit.md (the verdicts, the regime, every comparison), audit.csv and
audit_pooled.csv, and the difference figures, from the tests of tables.py."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from robustbench_ols.audit import regime
from robustbench_ols.audit.comparison import MARGINS, POINTS, Settings
from robustbench_ols.audit.metric_names import metric_family
from robustbench_ols.audit.tables import paired_table, pooled_table
from robustbench_ols.audit.verdicts import OUTCOMES, pooled_verdicts, summary_lines, tally, verdicts
from robustbench_ols.common.markdown import markdown_table
from robustbench_ols.store.results import ResultSet


def figures(table: pd.DataFrame, to: Path) -> list[str]:
    """diff_<metric>.png: new - baseline against noise rate, one line per baseline, the 95% t interval of
    the mean difference as error bars (none with one seed), the equivalence margin shaded. Returns the file
    names."""
    import matplotlib  # pyplot with the Agg backend: the backend is chosen before pyplot's import
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = []
    for metric, label in dict.fromkeys(zip(table.metric, table.label)):
        t = table[(table.metric == metric) & (table.n > 0)]
        if t.empty:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for base, g in t.groupby("baseline"):
            g = g.sort_values("noise_rate")
            err = [(g.mean_diff - g.ci_lo).fillna(0), (g.ci_hi - g.mean_diff).fillna(0)]
            ax.errorbar(g.noise_rate, g.mean_diff, yerr=err, marker="o", capsize=3, label=f"- {base}")
        ax.axhline(0, color="grey", lw=0.8)
        m = float(t.margin.iloc[0])
        ax.axhspan(-m, m, color="grey", alpha=0.15, lw=0, label=f"±margin {m:g}")
        ax.set_xlabel("noise rate")
        ax.set_ylabel(f"difference in {label}")
        ax.set_title(f"{label}: new - baseline, 95% CI (below 0: new is better)", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"diff_{metric}.png"
        fig.savefig(to / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def _regime_section(records: pd.DataFrame) -> list[str]:
    """audit.md's account of the preconditions and of the hard-label fit they were read from."""
    return ["## Regime", "",
            f"A claim about test error or the wrong-label fit under noise is checked only where the experiment "
            f"can show it: every `{regime.REFERENCE}` run at that noise rate fits at least "
            f"{regime.MIN_WRONG_FIT:.0%} of its wrong-label training images by the last epoch (predicted as "
            "their wrong label). Every compared run must also have finished its schedule. Elsewhere the verdict "
            "is \"inconclusive: outside the regime\" whatever the test gives (`test_outcome` in audit.csv). The "
            "wrong-label fit compared with hard labels is judged on the same hard-label runs that decide the "
            "regime: the rates kept are those where hard labels fitted much, which can favour the new method "
            "there (regression to the mean); read that comparison with this in mind. A robustness comparison "
            f"in which every compared model errs on >= {regime.FLOOR:.0%} of the attacked images is at the floor "
            "and inconclusive too. Robustness is judged on the strongest attack recorded (`robust_err`: the "
            "per-image worst case over the attacks at each budget); where the gradient-masking checks flagged a run "
            "of the audited method, a robustness comparison it wins is \"unconfirmed: gradient masking "
            "suspected\" with the checks that failed.", "",
            regime.fit_markdown(records), ""]


VALUE_COLUMNS = ["new_mean", "base_mean", "mean_diff", "std_diff", "ci_lo", "ci_hi", "boot_lo", "boot_hi", "min_diff",
                 "max_diff", "img_diff", "img_lo", "img_hi"]


def in_units(df: pd.DataFrame, columns=VALUE_COLUMNS) -> pd.DataFrame:
    """`df` with its value `columns` in each row's metric's unit, the one the verdicts use: points (x100) for
    the errors, ECE and the wrong-label fit, as is (nats) for KL; a `unit` column says which."""
    if df.empty or "metric" not in df:
        return df
    points = df.metric.map(lambda m: metric_family(m) in POINTS)
    out = df.copy()
    for c in columns:
        if c in out:
            out[c] = out[c].astype(float).where(~points, out[c].astype(float) * 100)
    out.insert(list(out.columns).index("metric") + 1, "unit", points.map({True: "points", False: "nats"}))
    return out


def frame_markdown(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """`df` as a Markdown table: floats with `floatfmt`, NaN as a dash."""

    def cell(v) -> str:
        if v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return "—"
        return format(v, floatfmt) if isinstance(v, float) else str(v)
    return markdown_table([str(c) for c in df.columns], [[cell(v) for v in r] for _, r in df.iterrows()])


EXPLORATORY = ("These tests use the seeds found, so they are exploratory where the number of seeds was not fixed "
               "before the results were seen: adding seeds to a comparison until it passes inflates its "
               "false-positive rate. To decide a claim, plan confirmation seeds from these runs (`rbols audit ... "
               "--plan`) and test on those alone (`--confirm`; docs/grids.md, \"Pilot, then confirm\").")


def statistics_section(s: Settings, confirmatory: bool = False) -> list[str]:
    """audit.md's account of how a comparison is decided, with the margins used (and, for an audit of every seed
    found, that it is exploratory)."""
    margins = ", ".join(f"`{k}` {v * 100:g} points" if k in POINTS else f"`{k}` {v:g}"
                        for k, v in s.margins.items())
    changed = [k for k in s.margins if s.margins[k] != MARGINS[k]]
    return ["## How a comparison is decided", "",
            f"For the paired differences new - baseline (lower is better for every metric): the mean with a 95% "
            f"t interval (`ci_lo`, `ci_hi`) and a 95% percentile bootstrap interval over the pairs (`boot_lo`, "
            f"`boot_hi`; it cannot reach beyond the observed differences, so with few seeds it is too narrow); "
            f"the {s.describe().split(',')[0]} of a zero difference (`p`); the equivalence test (two one-sided "
            f"tests, TOST) that the difference lies within ±margin (`p_equiv`). Each metric's comparisons are "
            f"one family (per-rate: every noise rate and baseline; pooled: every baseline, per scope; a robustness "
            f"metric's family spans every budget it was scored at, `family` and `budget` in the CSV files), and their "
            f"p-values are adjusted together ({s.describe().split(', ')[-1]}: `p_adj`, `p_equiv_adj`; "
            f"`family_size` comparisons). The outcome: **better** or **worse** when `p_adj` < {s.alpha:g}, else "
            f"**equivalent** when `p_equiv_adj` < {s.alpha:g}, else **inconclusive**"
            + (" (a family's size is the plan's, a member not yet tested counting with p = 1)." if confirmatory else
               ", with `seeds_needed`: the seeds (pooled: (rate, seed) pairs) a paired t-test would need for power "
               "0.8 at the observed mean and spread (the exact power for normal differences, at alpha / family "
               "size), to show the difference or the equivalence (`seeds_for`), whichever needs fewer.")
            + " With one paired seed a comparison is **untested**. Where every pair differs by the same amount (no "
            "spread: a figure counted in images can repeat exactly) the t-test is 0/0 and the exact sign test takes "
            "its place (`p` = 2/2^n, `p_equiv` = 1/2^n within the margin; two seeds: 0.5), adjusted in the family "
            "like any other, the outcome marked \"(no spread)\". A claim outside its regime is inconclusive before "
            "any test is read, and its tests (`test_outcome`) are in no family.", "",
            f"Margins (`--margin METRIC=VALUE`): {margins}" + (f"; changed from the defaults: {', '.join(changed)}"
                                                               if changed else " (the defaults)") + ".", "",
            *([] if confirmatory else [EXPLORATORY, ""])]


# What audit.md says of the epoch its figures are of (selection.py)
SELECTION_TEXT = {
    "last": "every figure is of the last epoch",
    "noisy-val": "every figure but the wrong-label fit (the last epoch's: memorisation) is of the epoch with the "
                 "lowest error on each run's noisy validation split",
    "oracle": "every figure but the wrong-label fit (the last epoch's) is of the epoch with the lowest test error: "
              "an oracle choice, optimistic (the test set chooses the model it scores)",
}


def verdict_section(table: pd.DataFrame, pooled: pd.DataFrame, method: str, settings: Settings) -> list[str]:
    """audit.md's "Verdict": a line per metric within each noise rate, then pooled over the rates."""
    verdict = ([f"- {v}" for v in verdicts(table, method, settings=settings)] if not table.empty else
               ["- no comparison possible: missing runs"])
    pooled_lines = ([f"- {v}" for v in pooled_verdicts(pooled, method, settings=settings)]
                    if not pooled.empty else [])
    lines = ["## Verdict", "", "Within each noise rate:", "", *verdict, ""]
    if pooled_lines:
        lines += ["Pooled over the noise rates (every (rate, seed) pair; more power with few seeds):", "",
                  *pooled_lines, ""]
    return lines


def outcome_section(table: pd.DataFrame, pooled: pd.DataFrame) -> list[str]:
    """audit.md's "Outcomes", "Every comparison" and "Pooled over noise rates": the tables themselves."""
    lines = ["## Outcomes", "", "Comparisons per outcome: " + ", ".join(OUTCOMES) + ".", ""]
    cols = ["n", "new_mean", "base_mean", "mean_diff", "ci_lo", "ci_hi", "boot_lo", "boot_hi", "p", "p_adj",
            "p_equiv_adj", "seeds_needed", "outcome"]
    if not table.empty:
        one_seed = "img_lo" in table and table.img_lo.notna().any()
        per_rate = cols[:-1] + (["img_lo", "img_hi"] if one_seed else []) + cols[-1:]
        lines += [frame_markdown(tally(table), ".0f"), "", "## Every comparison", "",
                  "`mean_diff` = mean over seeds of (new - baseline), like every difference and mean below in the "
                  "metric's unit (`unit`: percentage points, or nats for KL), as in the verdicts; negative is better "
                  "for the new method."
                  + (" `img_lo`, `img_hi`: with one paired seed, the 95% paired bootstrap interval of the "
                     "difference over the test images (it says nothing of seed-to-seed variation)." if one_seed else ""),
                  "", frame_markdown(in_units(table)[["label", "unit", "dataset", "model", "noise_rate", "baseline",
                                                      *per_rate]]), ""]
    if not pooled.empty:
        lines += ["## Pooled over noise rates", "",
                  "Every (noise rate, seed) both methods have is one pair; `lower` = pairs where the new method is "
                  "lower. Scope `noisy` = noise rates > 0, `all` = every rate (the wrong-label fit exists only "
                  "with noise).", "",
                  frame_markdown(in_units(pooled)[["label", "unit", "dataset", "model", "scope", "baseline", "lower",
                                                    *cols]]), ""]
    return lines


def write_audit(results_dir, to, method: str, against: list[str], *, about: str = "",
                eval_id: str | None = None, settings: Settings = Settings(), select: str = "last",
                echo: bool = False, seeds=None) -> Path:
    """audit.md, audit.csv (every comparison), audit_pooled.csv and the difference figures, from the run
    records (scored with `eval_id`, whose checkpoint selection is `select`) of the `seeds` (None: every seed
    found); `echo`: the one-screen summary printed too."""
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    results = ResultSet.of(results_dir)
    with results.reading():  # the image bootstrap reads the runs' per-image records
        return _write(results, to, method, against, about, eval_id, settings, select, echo, seeds)


def _write(results, to: Path, method, against, about, eval_id, settings, select, echo, seeds) -> Path:
    records = results.runs(eval_id=eval_id)
    if seeds is not None and len(records):  # the seeds the audit names, and no other (the regime's too)
        records = records[records.seed.isin(list(seeds))]
    df = records[records.method_label.isin([method, *against])] if len(records) else records
    kw = dict(settings=settings, records=records, select=select)
    table = paired_table(df, method, against, **kw) if len(df) else pd.DataFrame()
    pooled = pooled_table(df, method, against, **kw) if len(df) else pd.DataFrame()
    if not table.empty:
        table.to_csv(to / "audit.csv", index=False)
    if not pooled.empty:
        pooled.to_csv(to / "audit_pooled.csv", index=False)
    figs = figures(table, to) if not table.empty else []
    present = df.groupby("method_label").seed.nunique().to_dict() if len(df) else {}
    lines = [f"# Audit of `{method}` against {', '.join(f'`{b}`' for b in against)}", ""]
    if about:
        lines += [about, ""]
    lines += [f"Runs read from `{results}`: {len(df)} finished runs; seeds per method: "
              + (", ".join(f"{k} {v}" for k, v in sorted(present.items())) or "none") + ".",
              f"Scale: datasets {sorted(set(df.dataset)) if len(df) else []}, models "
              f"{sorted(set(df.model)) if len(df) else []}, epochs {sorted(set(df.epochs)) if len(df) else []}, "
              f"train subset {sorted(set(df.train_subset)) if len(df) else []} (0 = all).",
              f"Statistics: {settings.describe()}; equivalence margins below.",
              f"Checkpoint: {SELECTION_TEXT[select]} (`--select {select}`).", ""]
    lines += [f"Left out, unreadable: {b['reason']}" for b in results.unreadable(eval_id=eval_id)]
    if method not in present:
        lines += [f"**No finished run of `{method}`**: nothing can be said. Run the grid first.", ""]
    lines += verdict_section(table, pooled, method, settings)
    lines += statistics_section(settings)
    lines += _regime_section(records)
    lines += outcome_section(table, pooled)
    if not table.empty:
        lines += ["## Figures", ""]
        lines += [f"![{f}]({f})" for f in figs]
    path = to / "audit.md"
    path.write_text("\n".join(lines) + "\n")
    if echo:
        per_method = ", ".join(f"{k} {v}" for k, v in sorted(present.items()))
        print(f"Audit of {method} against {', '.join(against)} (exploratory, seeds per method: {per_method}; "
              "to decide, plan with --plan and confirm with --confirm):")
        print("\n".join(f"  {s}" for s in summary_lines(table, pooled)))
    return path
