"""Write the generated sections of the results pages and the README from committed files alone.

    python docs/results/build_readme.py          # rewrite the sections between the markers (PAGES below)
    python docs/results/build_readme.py --check  # exit 1 if a file differs from what the report files give

The sections and the files they go in: the cpu-regime tier, its AutoAttack re-scoring and checkpoint selection
in `docs/results/cpu-regime.md`; the quick results in `docs/results/quick.md`; the README's short results
table (`summary`) in `README.md`. Links in a section are relative to the file it goes in (the results pages
sit in `docs/results/`, so their links are relative to that folder, as the MkDocs site needs them); files
outside `docs/` are named as paths, not linked.

Every number comes from a report folder (`docs/results/cpu-regime/`, `docs/results/quick/`: written by
`rbols report`) and its `claims/` (written by `rbols audit --no-run`), which come from the run records, or
from the tier search's run records and the epoch-cost benchmark's JSON; nothing is typed in by hand. The
test suite runs `--check`, so an edited number or a report committed without its section fails CI.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pandas as pd

from robustbench_ols.audit.comparison import ALPHA
from robustbench_ols.audit.regime import FLOOR, MIN_WRONG_FIT, OUTSIDE
from robustbench_ols.audit.verdicts import pooled_verdicts
from robustbench_ols.report.cost import duration
from robustbench_ols.report.tables import method_key

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling, also when imported by the tests
from added_sections import ADDED_BEGIN, ADDED_END, ADDED_SUMMARY_BEGIN, ADDED_SUMMARY_END, CONFIRMS, added_section, added_summary  # noqa: E402,I001
from text_format import signed as _signed, table as _table  # noqa: E402,I001

ROOT = Path(__file__).resolve().parents[2]
SEARCH = Path("docs/results/tier-search")  # the records of the runs that chose the cpu-regime tier
EPOCH_COST = Path("docs/results/epoch_cost.json")  # benchmarks/epoch_cost.py --json
TIER_BEGIN = "<!-- tier:begin (written by docs/results/build_readme.py from docs/results/; do not edit) -->"
TIER_END = "<!-- tier:end -->"
TIER = Path("docs/results/cpu-regime")  # rbols report of the cpu-regime grid (and its claims/), once it exists
QUICK = Path("docs/results/quick")
EXAMPLE = Path("docs/results/audit-example")
AA = TIER / "autoattack"  # the tier re-scored with AutoAttack and the gradient-masking checks
AA_BEGIN = "<!-- autoattack:begin (written by docs/results/build_readme.py from docs/results/; do not edit) -->"
AA_END = "<!-- autoattack:end -->"
BUDGETS = ("8", "2", "1")  # /255: the re-scored tier's budgets, the paper's first
AA_CLAIMS = [(f"OLS is more robust to the strongest attack recorded at {b}/255", "robust_err" if b == "8" else
              f"robust_eps{b}_err", "all", 100, " points", f"per-image worst case over FGSM, PGD-20 and AutoAttack "
              f"at {b}/255") for b in BUDGETS]
CONFIRM = TIER / "confirm"  # `rbols audit --confirm` on the tier: the claims decided on the confirmation seeds alone
PLAN = TIER / "plan"  # the plan it follows, made from the pilot (seeds 0, 1) before any confirmation result
CONFIRM_BEGIN = "<!-- confirm:begin (written by docs/results/build_readme.py from docs/results/; do not edit) -->"
CONFIRM_END = "<!-- confirm:end -->"
# How far the tier is from the paper's protocol: every CPU verdict is about this scale, and says so
SCALE_GAP = ("CIFAR-10 instead of the paper's CIFAR-100 (its Table VII), resnet8 on 4,000 training images without "
             "augmentation for 28 epochs instead of ResNet-56 on 50,000 with augmentation for 300")
SEL = Path("docs/results/noisy-val")  # checkpoint selection on a small real grid (publish_noisy_val.sh)
SEL_BEGIN = "<!-- selection:begin (written by docs/results/build_readme.py from docs/results/; do not edit) -->"
SEL_END = "<!-- selection:end -->"
SEL_CLAIM = ("OLS has a lower test error than LS and hard labels under symmetric noise, at the noisy-validation "
             "epoch", "test_err_noisy_val", "noisy", 100, " points", "test error at the epoch with the lowest "
             "noisy-validation error")
BEGIN = "<!-- results:begin (written by docs/results/build_readme.py from docs/results/; do not edit) -->"
END = "<!-- results:end -->"
SUMMARY_BEGIN = "<!-- summary:begin (written by docs/results/build_readme.py from docs/results/; do not edit) -->"
SUMMARY_END = "<!-- summary:end -->"
TIER_PAGE = Path("docs/results/cpu-regime.md")  # the tier, its AutoAttack re-scoring and checkpoint selection
QUICK_PAGE = Path("docs/results/quick.md")
README = Path("README.md")
RESULTS_PAGES = Path("docs/results")  # the folder of the results pages: their links are relative to it

COMMANDS = """\
```bash
rbols matrix --preset quick --seeds 0,1 --out results/quick --data-root ../shared/data
rbols matrix --preset quick --methods ols-single --seeds 0,1 --out results/quick --data-root ../shared/data
rbols report results/quick --to docs/results/quick --paper --format png
rbols audit --method ols --against hard,ls --preset quick --seeds 0,1 --out results/quick --no-run \\
  --to docs/results/quick/claims
PYTHONPATH=. rbols audit --method examples.prior_smoothing:PriorSmoothing --against ls,ols --preset quick --seeds 0,1 \\
  --out results/quick --to docs/results/audit-example --data-root ../shared/data
python docs/results/build_readme.py   # this section
```"""
TIER_COMMANDS = """\
```bash
rbols matrix --preset cpu-regime --out results/cpu-regime --data-root ../shared/data
bash docs/results/publish_tier.sh results/cpu-regime   # the archive, this report and audit, this section
```"""

# The paper's claims: (text, metric of audit_pooled.csv, scope, unit scale, unit, what the metric is).
CLAIMS_LIST = [
    ("OLS has a lower test error than LS and hard labels under symmetric noise", "test_err_last", "noisy",
     100, " points", "last-epoch test error"),
    ("OLS fits the wrong labels less (Fig. 5)", "wrong_fit", "noisy", 100, " points",
     "share of the wrong-label training images predicted as their wrong label at the last epoch"),
    ("OLS is more robust to FGSM", "fgsm_err", "all", 100, " points", "FGSM error at 8/255; every other budget "
     "scored is in the claims audit, in one family with it"),
    ("OLS is more robust to PGD-20", "pgd_err", "all", 100, " points", "PGD-20 error at 8/255; the other budgets "
     "likewise"),
    ("OLS has a lower ECE", "ece", "all", 100, " points", "ECE"),
    ("OLS is closer to the human label distribution on CIFAR-10H", "c10h_kl_correct", "all", 1, "",
     "KL(human ‖ model) over the correctly classified test images"),
]
VERDICT = {"better": "**holds**", "worse": "**does not hold**, OLS is worse", "inconclusive": "**inconclusive**",
           "equivalent": "**does not hold**: OLS is equivalent to it"}


def _href(path) -> str:
    """A link from a results page (in docs/results/) to `path` (relative to the repository root)."""
    return Path(os.path.relpath(path, RESULTS_PAGES)).as_posix()


def _read(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(ROOT / folder / name, keep_default_na=True)


def _pct(v, scale=100.0, digits=1) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * scale:.{digits}f}"


def _ms(mean, std, n, scale=100.0, digits=1) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    return _pct(mean, scale, digits) + (f" ± {_pct(std, scale, digits)}" if n and n > 1 else f" (n={n})")


def _methods(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["method_label"]))  # the report's order (the paper's rows)


def _noise_text(noise: list) -> str:
    """'symmetric noise 0, 20, 40%' and the other settings by name (`human:worst`, ...)."""
    rates = [n for n in noise if n.startswith("symmetric:")]
    other = [f"`{n}`" for n in noise if n not in rates]
    text = f"symmetric noise {', '.join(f'{float(n.split(chr(58))[1]) * 100:g}' for n in rates)}%" if rates else ""
    return ", ".join(filter(None, [text, *other]))


def scale_text(prov: dict) -> str:
    (s,) = prov["scale"]  # one setting: the quick preset
    (ev,) = s["evaluations"]  # one scoring setting for every run
    e = ev["setting"]
    held = "".join(f"; {', '.join(x['methods'])} hold{'s' * (len(x['methods']) == 1)} {x['meta']:,} of them out as a "
                   f"clean-labelled meta set, the method's default, and train{'s' * (len(x['methods']) == 1)} on the "
                   f"other {x['train']:,}" for x in s.get("images", []) if x["meta"])
    return (f"**Scale** (every table below): {s['dataset'].upper().replace('CIFAR', 'CIFAR-')}, {s['model']}, "
            f"{s['train_subset']:,} training images (a class-balanced subset{held}), {s['epochs']} epochs, "
            f"{_noise_text(s['noise'])}, seeds "
            f"{', '.join(map(str, s['seeds']))}; {s['runs']} runs. Scoring (evaluation `{ev['eval_id']}`, every "
            f"run): attacks {'; '.join(f'`{a}`' for a in e['attacks'])} on a class-balanced subset of "
            f"{e['attack_examples']} test images (seed {e['attack_seed']}), calibration in {e['n_bins']} bins, "
            "clean error and CIFAR-10H on the whole test set." + training_text(s.get("training", {}))
            + " The paper trains ResNets for 300 epochs on the whole training set, with augmentation: compare "
            "orderings, not values.")


def training_text(t: dict) -> str:
    """What the records say of the training every run shared (report provenance's `training`)."""
    if not t:
        return ""
    parts = [f"batch {t['batch_size']}" if "batch_size" in t else "",
             f"lr {t['lr']:g}" + (f", x{t['lr_decay']:g} at epochs {', '.join(map(str, t['milestones']))}"
                                  if t.get("milestones") else "") if "lr" in t else "",
             {True: "crop + flip augmentation", False: "**no augmentation**"}.get(t.get("augment"), ""),
             "bf16 autocast" if t.get("amp") else "",
             f"a test pass every {t['test_every']} epochs" if t.get("test_every", 1) > 1 else ""]
    return " Training: " + ", ".join(p for p in parts if p) + "."


def cost_text(prov: dict, folder: Path) -> str:
    cost = _read(folder, "cost.csv")
    rows = [[r.method_label, f"{r.mean_s:.0f}", f"{r.min_s:.0f}–{r.max_s:.0f}"] for r in cost.itertuples()]
    dev = "; ".join(f"{k} ({v} runs)" for k, v in prov["device"].items())
    torch = "; ".join(f"{k} ({v} runs)" for k, v in prov["torch"].items())
    code = ", ".join(f"`{k}` ({v})" for k, v in sorted(prov["git"].items(), key=lambda kv: -kv[1]))
    st = prov["stretches"]
    return "\n".join([
        f"**Machine**: {dev}{', no GPU' if all('(cpu)' in k for k in prov['device']) else ''}; torch {torch}. **Code**: the runs were made at commits {code} (runs per "
        "commit; `+dirty`: the checkout had uncommitted changes when the run started; the matrix process keeps "
        "the code it loaded at its start). Every run records its own commit, device and versions.",
        "",
        f"**Time**: {prov['runs']} runs, {_at_once(prov)}: {duration(prov['wall_seconds'])} of wall "
        f"time in {len(st)} stretch{'es' * (len(st) != 1)} of work (sessions end, the matrix resumes), "
        f"{prov['mean_cell_seconds']:.0f} s per cell on average (training + scoring):",
        "",
        _table(["method", "s / cell (mean)", "range"], rows)])


def _at_once(prov: dict) -> str:
    """How many runs went at once, from the cell time and the wall time of the stretches."""
    k = prov["cell_seconds"] / prov["wall_seconds"] if prov["wall_seconds"] else 1
    return "one at a time" if k < 1.3 else f"about {k:.1f} at a time on average (cell time / wall time)"


def table7_text(folder: Path) -> str:
    t = _read(folder, "table7.csv")
    t = t[t["which"] == "last"]
    cols = list(dict.fromkeys(t["noise_col"]))
    rows = []
    for m in _methods(t):
        g = t[t["method_label"] == m].set_index("noise_col")
        rows.append([m] + [_ms(g.loc[c, "mean"], g.loc[c, "std"], int(g.loc[c, "n"])) if c in g.index else "—"
                           for c in cols])
    others = {"oracle": "the oracle (best test epoch, optimistic) table", "noisy-val": "the noisy-validation "
              "epoch's", "best": "the best-epoch table"}
    shown = ", ".join(others[w] for w in dict.fromkeys(_read(folder, "table7.csv")["which"]) if w in others)
    return ("Top-1 test error (%) at the last epoch (checkpoint selection `last`), mean ± std over the seeds "
            f"(ddof=1); {shown or 'the other tables'}, the number of runs per cell and the paper's numbers are in "
            f"the [report]({_href(folder)}/report.md).\n\n" + _table(["method", *cols], rows))


def scores_text(rate: float, folder: Path) -> str:
    t8, t11, t12 = _read(folder, "table8.csv"), _read(folder, "table11.csv"), _read(folder, "table12.csv")
    pick = [x[x["noise_rate"].round(6) == round(rate, 6)].set_index("method_label") for x in (t8, t11, t12)]
    rows = []
    for m in _methods(pick[0].reset_index()):
        a, b, c = (p.loc[m] for p in pick)
        rows.append([m, _ms(a.clean_err_mean, a.clean_err_std, a.clean_err_n),
                     _ms(a.fgsm_err_mean, a.fgsm_err_std, a.fgsm_err_n),
                     _ms(a.pgd20_err_mean, a.pgd20_err_std, a.pgd20_err_n),
                     _ms(b.ece_mean, b.ece_std, b.ece_n),
                     _ms(c.c10h_kl_correct_mean, c.c10h_kl_correct_std, c.c10h_kl_correct_n, 1, 3),
                     _ms(c.c10h_agree_mean, c.c10h_agree_std, c.c10h_agree_n)])
    return _table(["method", "clean err (%)", "FGSM err (%)", "PGD-20 err (%)", "ECE (%)", "CIFAR-10H KL",
                   "agrees with humans (%)"], rows)


def _pooled_row(rows: pd.DataFrame, base: str):
    """(the pooled row against `base`, its outcome without " (no spread)"), or (None, None) when there is none."""
    r = rows[rows.baseline == base]
    if r.empty:
        return None, None
    r = r.iloc[0]
    return r, str(r.outcome).replace(" (no spread)", "")


def claim_text(claim, pooled: pd.DataFrame, per_rate: pd.DataFrame) -> str:
    """One claim's line; the audit says per row whether its rates were inside the regime (`outcome`,
    `outside_rates`)."""
    text, metric, scope, scale, unit, what = claim
    rows = pooled[(pooled.metric == metric) & (pooled.scope == scope)]
    rates = [_rates_of(x) for x in rows["rates"] if _rates_of(x)]
    uniform = all(r == rates[0] for r in rates)  # else each baseline's part names its own rates
    if rates and uniform:
        what += ", noise rates " + _rates_text(rates[0])
    parts = []
    digits = 1 if scale == 100 else 3
    for base, name in (("hard", "hard labels"), ("ls", "LS")):
        r, outcome = _pooled_row(rows, base)
        if r is None:
            parts.append(f"against {name}: no paired runs")
            continue
        if outcome.startswith(OUTSIDE):
            parts.append(f"against {name} **{outcome}**")
            continue
        # the seed-to-seed spread over exactly the noise rates this comparison pooled (its `rates`)
        kept = set(_rates_of(r.rates))
        spread = per_rate[(per_rate.metric == metric) & (per_rate.baseline == base)
                          & per_rate.noise_rate.astype(float).isin(kept)]["std_diff"].dropna()
        said = VERDICT.get(outcome, outcome)
        if outcome == "equivalent":
            said += f" within ±{r.margin * scale:g}{unit}"
        left = getattr(r, "outside_rates", None)
        left = (f"; noise {', '.join(f'{float(x) * 100:g}%' for x in left.split())} left out: outside the regime"
                if isinstance(left, str) and left.strip() else "")
        ci = (f", 95% CI {_signed(r.ci_lo * scale, digits)} to {_signed(r.ci_hi * scale, digits)}"
              if math.isfinite(r.ci_lo) else "")
        p = f"p = {r.p:.2g}" + (f", adjusted {r.p_adj:.2g}" if math.isfinite(r.p_adj) else "")
        need = (f"; {int(r.seeds_needed)} (rate, seed) pairs would decide at this spread"
                if outcome == "inconclusive" and math.isfinite(r.seeds_needed) else "")
        own_rates = "" if uniform else f" at noise rates {_rates_text(kept)}"
        parts.append(
            f"against {name}{own_rates} {said} (OLS − {base}: mean {_signed(r.mean_diff * scale, digits)}"
            f"{unit}{ci} over {r.n} (rate, seed) pairs, std {abs(r.std_diff) * scale:.{digits}f}, range "
            f"{_signed(r.min_diff * scale, digits)} to {_signed(r.max_diff * scale, digits)}; OLS lower in {int(r.lower)} "
            f"of {int(r.n)}; {p}{need}"
            + (f"; seed-to-seed std of the difference within a rate ({_rates_text(kept)}): median "
               f"{spread.median() * scale:.{digits}f}" if len(spread) else "") + left + ")")
    return f"- *{text}* ({what}): " + "; ".join(parts) + "."


def _rates_of(value) -> list[float]:
    """The noise rates of an audit row's `rates` ("0.2 0.4", or one number when pandas read a single rate)."""
    if isinstance(value, str):
        return [float(x) for x in value.split()]
    return [float(value)] if isinstance(value, float) and math.isfinite(value) else []


def _rates_text(rates) -> str:
    """'20%, 40%, 60%, 80%': the noise rates a sentence's figure is over."""
    return ", ".join(f"{x * 100:g}%" for x in sorted(rates))


def reading_text(per_rate: pd.DataFrame, prov: dict, folder: Path) -> str:
    """What the scale means for the claims, from the same files: the clean error, and whether hard labels
    memorised the wrong labels (the hard-label runs' mean fit per noise rate, from the audit's table)."""
    (s,) = prov["scale"]
    k = {"cifar10": 10, "cifar100": 100}[s["dataset"]]
    t8 = _read(folder, "table8.csv")
    clean = t8[t8["noise_rate"] == 0]
    wf = per_rate[(per_rate.metric == "wrong_fit") & (per_rate.baseline == "hard")].sort_values("noise_rate")
    wf = wf.dropna(subset=["base_mean"]).drop_duplicates("noise_rate")
    fits = ", ".join(f"{r.base_mean * 100:.1f}%" for r in wf.itertuples())
    at = ", ".join(f"{r.noise_rate * 100:g}%" for r in wf.itertuples())
    clean_text = (f"clean test error {clean.clean_err_mean.min() * 100:.1f}–{clean.clean_err_mean.max() * 100:.1f}% "
                  "at 0% noise across the methods")
    if len(wf) and (wf.base_mean < MIN_WRONG_FIT).all():
        lines = [f"At this scale the networks are far from fitting even clean labels ({clean_text}), and with hard "
                 f"labels only {fits} of the wrong-label training images (at {at} noise) are predicted as their "
                 f"wrong label at the last epoch, about what a random guess among {k} classes gives ({100 / k:g}%): "
                 f"in {s['epochs']} epochs the noise is not memorised, and memorisation is where the paper's Fig. 5 "
                 "separates OLS from hard labels and LS."]
    else:
        lines = [f"In this tier the {clean_text.replace('error ', 'error is ', 1)}, and hard labels predict {fits} of the wrong-label training images "
                 f"(at {at} noise) as their wrong label at the last epoch (mean over the seeds; each seed's figure "
                 f"is in the audit's Regime table): the noise is memorised wherever that is {MIN_WRONG_FIT:.0%} or "
                 "more on every seed, and only there are the claims about noisy labels checked."]
    h = t8[(t8["noise_rate"] == 0) & (t8["method_label"] == "hard")]
    c = t8[(t8["noise_rate"] == 0) & (t8["method_label"] == "coteaching")]
    if len(h) and len(c) and h.clean_err_mean.iloc[0] == c.clean_err_mean.iloc[0]:
        lines.append("Co-teaching equals hard labels at 0% noise: with no noise its forget rate is 0, so it "
                     "trains the same network on the same batches.")
    return " ".join(lines)


def example_text() -> str:
    """The example plugin's pooled verdicts, from its audit (which applies the regime guard itself)."""
    from robustbench_ols.audit.tables import METRICS
    pooled = pd.read_csv(ROOT / EXAMPLE / "audit_pooled.csv")
    (method,) = set(pooled["method"])
    lines = []
    for metric, _ in METRICS:
        t = pooled[pooled.metric == metric]
        for v in pooled_verdicts(t, method.split(":")[1] if ":" in method else method) if len(t) else []:
            lines.append(f"- {v}")
    return "\n".join([
        f"## A new method audited: `{method}`", "",
        "`examples/prior_smoothing.py` smooths towards a fixed class-similarity "
        f"prior (CIFAR-10's vehicles and animals). Its audit against LS and OLS on the same grid "
        f"([audit.md]({_href(EXAMPLE)}/audit.md), per noise rate and pooled):", "", *lines])


def html_text(folder: Path) -> str:
    """The link to the folder's report.html (`rbols report --html`), when it was published."""
    if not (ROOT / folder / "report.html").exists():
        return ""
    return (f"; all of it with the audits as [one self-contained page]({_href(folder)}/report.html): download it and open "
            "it in a browser for sortable tables and Fig. 4/5 with methods to show or hide")


def results_body(folder: Path, commands: str, intro: str) -> list[str]:
    """The tables, figures and claims of one report folder (and its claims/ audit), as lines of a results page."""
    claims = folder / "claims"
    f, c = _href(folder), _href(claims)  # the links
    prov = json.loads((ROOT / folder / "provenance.json").read_text())
    pooled = pd.read_csv(ROOT / claims / "audit_pooled.csv")
    per_rate = pd.read_csv(ROOT / claims / "audit.csv")
    rates = sorted(set(_read(folder, "table8.csv")["noise_rate"]))
    mid = min((r for r in rates if r > 0), key=lambda r: abs(r - 0.4))
    n_seeds = len(prov["scale"][0]["seeds"])
    return [
        f"{intro} ([report]({f}/report.md), with every table as Markdown and CSV, the reliability diagrams and "
        f"the cost of each cell{html_text(folder)}), and the claims tested with `rbols audit` ([claims]({c}/audit.md)):",
        "",
        commands, "", scale_text(prov), "", cost_text(prov, folder), "",
        "## Test error under label noise (Table VII style)", "", table7_text(folder), "",
        "## Fig. 4 and Fig. 5", "",
        f"![Fig. 4: training error against the noisy labels and test error per epoch]({f}/fig4.png)", "",
        f"![Fig. 5: error on the wrong-label training images, against the wrong labels]({f}/fig5.png)", "",
        "## Robustness, calibration and agreement with humans", "",
        f"Final model (last epoch), mean ± std over the seeds. Trained on clean labels (the paper's setting for "
        f"these tables):\n\n{scores_text(0.0, folder)}\n\nTrained with {mid * 100:g}% symmetric noise:\n\n"
        f"{scores_text(mid, folder)}\n\nEvery noise rate and every attack: [table8]({f}/table8.md), "
        f"[table11]({f}/table11.md), [table12]({f}/table12.md).", "",
        "## The paper's claims at this scale", "",
        "Each claim is tested by pairing OLS with each baseline at the same noise rate and seed, pooling the "
        "pairs over the noise rates the claim is about, and a two-sided t-test of the mean difference "
        + f"(p < {ALPHA} after the Holm-Bonferroni correction over the two baselines of each claim; a claim that "
          "does not show is *equivalent* when the two one-sided tests put the difference within the metric's "
          "margin, else *inconclusive*, with the (rate, seed) pairs that would decide at the observed spread). "
        + (f"With {n_seeds} seeds, a test within one noise rate has {n_seeds - 1} degree{'s' * (n_seeds != 2)} of "
           "freedom and decides little" if n_seeds > 1 else "With one seed, no test within a noise rate is possible")
        + f"; the per-rate comparisons are in the [claims audit]({c}/audit.md). Negative differences favour OLS. The "
        f"reliability diagrams behind the ECE: [ols]({f}/reliability_ols.png), "
        f"[ls]({f}/reliability_ls.png), [hard]({f}/reliability_hard.png).", "",
        *[claim_text(c, pooled, per_rate) for c in CLAIMS_LIST], "", reading_text(per_rate, prov, folder)]


def section() -> str:
    return "\n".join([
        BEGIN, "",
        *results_body(QUICK, COMMANDS, "The `quick` preset of `rbols matrix` on the real CIFAR-10, reported with "
                      "`rbols report --paper` (the cell times below were taken while test suites shared the 2 "
                      "cores)"), "",
        example_text(), "",
        END])


def tier_results() -> list[str]:
    """The cpu-regime grid's results, once its report is committed (interim while the grid is unfinished)."""
    if not (ROOT / TIER / "provenance.json").exists():
        return ["The grid's results are not published yet: no report under "
                f"`{TIER}` (see the issue's closing notes for where the grid stands)."]
    from robustbench_ols.spec.grid import Grid
    runs = json.loads((ROOT / TIER / "provenance.json").read_text())["runs"]
    cells = len(Grid.build("cpu-regime").cells())
    interim = ("" if runs >= cells else f"**Interim: {runs} of the grid's {cells} cells are finished** (the matrix "
               "resumes; these numbers will change as the rest come in). ")
    return ["## Results", "", *results_body(TIER, TIER_COMMANDS, f"{interim}The `cpu-regime` grid on the real "
                                             "CIFAR-10, reported with `rbols report --paper`")]


def search_rows() -> list[list[str]]:
    """One row per run of the tier search, from its spec.json and epochs.csv (stopped runs included)."""
    rows = []
    for d in sorted((ROOT / SEARCH).iterdir()):
        s = json.loads((d / "spec.json").read_text())["spec"]
        e = pd.read_csv(d / "epochs.csv")
        fit = 1 - e["noisy_err"]
        tested = e.dropna(subset=["test_err"])
        first = e.loc[fit >= MIN_WRONG_FIT, "epoch"]
        noise = float(s["noise"].split(":")[1])
        drops = ", ".join(map(str, s["milestones"]))
        rows.append([f"{s['train_subset']:,}", "crop + flip" if s["augment"] else "none",
                     f"{s['epochs']} ({drops})", f"{noise * 100:g}%",
                     f"{len(e)}" + ("" if len(e) == s["epochs"] else " (stopped)"),
                     "—" if noise == 0 else f"{fit.iloc[-1] * 100:.1f}%",
                     "—" if noise == 0 else (str(int(first.iloc[0])) if len(first) else "never"),
                     f"{tested['test_err'].iloc[-1] * 100:.1f}% (epoch {int(tested['epoch'].iloc[-1])})"])
    return rows


def epoch_cost_text() -> str:
    """The per-epoch cost with and without each speed option, from benchmarks/epoch_cost.py's record."""
    c = json.loads((ROOT / EPOCH_COST).read_text())
    p, sec, ep = c["provenance"], c["seconds"], c["epoch_seconds"]
    base = next(iter(ep.values()))
    rows = [[k, f"{v:.2f}", f"{base / v:.2f}x"] for k, v in ep.items()]
    t = c.get("threads_images_per_s")
    git = p["git"]["commit"][:12] + ("+dirty" if p["git"]["dirty"] else "")
    lines = [f"Measured by `python benchmarks/epoch_cost.py --preset {p['preset']}` ({p['model']}, "
             f"{p['train_subset']:,} training images, augmentation {'on' if p['augment'] else 'off'}, batch "
             f"{p['batch_size']}; {p['cpu']}, {p['cpu_capability']}, {p['threads']} torch thread; torch {p['torch']}; "
             f"code `{git}`; fastest of {p['repeats']} interleaved repeats, {p['when'][:10]}): one training epoch "
             f"takes {sec['train fp32']:.2f} s and one pass over the 10,000 test images {sec['test fp32 batch 1000']:.2f} "
             f"s at evaluation batch 1000, {sec['test fp32 batch 256']:.2f} s at batch 256 (now the default).", "",
             _table(["one epoch", "seconds", "speed-up"], rows), "",
             f"bf16 autocast on this CPU, which has no bf16 units ({p['cpu_capability']}): training "
             f"{sec['train bf16'] / sec['train fp32']:.1f}x and the test pass "
             f"{sec['test bf16 batch 256'] / sec['test fp32 batch 256']:.1f}x **slower** than fp32, so the tier "
             "trains and scores in fp32 (`--amp` and `--attack-amp` pay off on GPUs and on CPUs with AVX-512 BF16 "
             "or AMX, where they were measured 1.6-2.0x faster)."]
    if t:
        lines += ["", f"Process layout for a grid (training images/s, both cores busy): one process with 2 threads "
                      f"{t['1x2']:.0f}, two processes with 1 thread each {t['2x1']:.0f} in all "
                      f"({t['2x1'] / t['1x2']:.2f}x): `rbols matrix` runs one single-thread worker per core unless "
                      "`--workers`/`--threads` say otherwise."]
    return "\n".join(lines)


def tier_section() -> str:
    return "\n".join([
        TIER_BEGIN, "",
        "How the tier was chosen: hard labels, 40% symmetric noise (0% for the clean error), seed 0, resnet8, batch "
        "128, lr 0.1, one thread per run with two or three runs sharing the 2 cores. Every row is a run record "
        f"under `{SEARCH}` (spec.json, epochs.csv); \"fitted\" is the share of the wrong-label "
        "training images predicted as their wrong label at the last recorded epoch:", "",
        _table(["images", "augmentation", "epochs (lr x0.1 at)", "noise", "epochs run", "wrong labels fitted",
                f"first epoch >= {MIN_WRONG_FIT:.0%}", "test error (last tested epoch)"], search_rows()), "",
        "## Cost of an epoch, and what each speed option saves", "", epoch_cost_text(), "",
        *tier_results(), "",
        TIER_END])


def _ordering(r: pd.DataFrame, col: str, numbers: bool = True) -> str:
    """'hard 99.0% < LS 99.5% = OLS 99.5%': hard labels, LS and OLS by their mean error under `col` (equal
    when equal to the printed digit); without `numbers`, the order alone: 'hard < LS = OLS'."""
    means = sorted((round(r[r.method_label == m][col].mean() * 100, 1), name)
                   for m, name in (("hard", "hard"), ("ls", "LS"), ("ols", "OLS")))
    out = means[0][1] + (f" {means[0][0]:.1f}%" if numbers else "")
    for (a, _), (b, name) in zip(means, means[1:]):
        out += f" {'=' if a == b else '<'} {name}" + (f" {b:.1f}%" if numbers else "")
    return out


def _by_method(r: pd.DataFrame) -> list[str]:
    return sorted(r.method_label.unique(), key=method_key)  # the report's order (the paper's rows)


def _sfx(eps: str) -> str:
    return "" if eps == "8" else f"_eps{eps}"


def _survives(r: pd.DataFrame, eps: str) -> str:
    """One sentence: does the FGSM/PGD-20 ordering of hard, LS and OLS survive AutoAttack at this budget?"""
    fgsm, pgd, aa = (f"{a}{_sfx(eps)}_err" for a in ("fgsm", "pgd20", "aa"))
    core = r[r.method_label.isin(["hard", "ls", "ols"])].dropna(subset=[aa])
    head = (f"At {eps}/255 ({len(core)} runs of hard labels, LS and OLS; mean robust error): FGSM "
            f"{_ordering(core, fgsm)}; PGD-20 {_ordering(core, pgd)}; AutoAttack {_ordering(core, aa)}")
    if min(core.groupby("method_label")[c].mean().min() for c in (fgsm, pgd, aa)) >= FLOOR:
        return head + (f": every model is at the floor (>= {FLOOR:.0%}) under every attack, so there is no ordering "
                       "to survive.")
    before, after = _ordering(core, pgd, False), _ordering(core, aa, False)
    verdict = (f"the PGD-20 ordering ({before}; lower is more robust) survives AutoAttack" if before == after else
               f"the PGD-20 ordering ({before}) does **not** survive AutoAttack ({after})")
    return head + f": {verdict} (means over 100 images per run; the tests are the claims below)."


def step_rule_text(folder: Path) -> str:
    """What PGD's budget-scaled step changed, from step_rule.csv (both records of every run)."""
    t = _read(folder, "step_rule.csv")
    parts = []
    for b, g in t.groupby("budget", sort=False):
        core = g[g.method_label.isin(["hard", "ls", "ols"])]
        means = {m: core[core.method_label == m][["pgd20_step_2_255", "pgd20_step_eps_4", "aa"]].mean() * 100
                 for m in ("hard", "ls", "ols")}
        gap_old = (g.aa - g.pgd20_step_2_255).mean() * 100
        gap_new = (g.aa - g.pgd20_step_eps_4).mean() * 100
        parts.append(f"at {b:g}/255 ({len(g)} runs) the step 2/255 gave PGD-20 "
                     + " / ".join(f"{means[m]['pgd20_step_2_255']:.1f}" for m in means) + " and the step eps/4 "
                     + " / ".join(f"{means[m]['pgd20_step_eps_4']:.1f}" for m in means)
                     + " (hard / LS / OLS, mean %), against AutoAttack's " + " / ".join(
                         f"{means[m]['aa']:.1f}" for m in means)
                     + f"; over every run, AutoAttack's error exceeds PGD-20's by {gap_old:.1f} points with the old "
                       f"step and {gap_new:.1f} with the new")
    return ("**PGD's step now follows its budget** (eps/4 unless `alpha` is given; before, every budget stepped "
            "2/255, twice the radius at 1/255): " + "; ".join(parts) + f" ([step_rule.csv]({_href(folder)}/step_rule.csv), "
            "run by run, from both records of each run).")


def transfer_text(r: pd.DataFrame) -> str:
    """The transfer check's figures: per budget, the mean transfer error of LS and OLS against their white-box
    worst case, and how many runs it flagged."""
    parts = []
    for b in BUDGETS:
        t, w = f"transfer{_sfx(b)}_err", f"worst{_sfx(b)}_err"
        if t not in r:
            continue
        core = r[r.method_label.isin(["ls", "ols"])].dropna(subset=[t])
        parts.append(f"{b}/255: " + ", ".join(f"{m.upper()} {core[core.method_label == m][t].mean() * 100:.1f}% "
                                               f"(white-box worst case {core[core.method_label == m][w].mean() * 100:.1f}%)"
                                               for m in ("ls", "ols")))
    flagged = r[r.get("masking_checks", pd.Series("", index=r.index)).fillna("").str.contains("transfer")]
    others = r[~r.method_label.eq("hard")].dropna(subset=["transfer_err"])
    return ("The transfer check (adversarial images crafted on the hard-label run of the same noise rate and seed with "
            "PGD-20 and APGD-CE, classified by the model; flagged when that beats the model's own strongest "
            f"white-box figure by more than 1 point) ran on the {len(others)} runs that are not hard labels; mean "
            "transfer error: " + "; ".join(parts) + f". It flagged {len(flagged)} run(s)"
            + (": " + ", ".join(f"{x.method_label} {x.noise_col} seed {x.seed}" for x in flagged.itertuples())
               if len(flagged) else "") + ".")


def autoattack_section() -> str:
    """The tier re-scored with AutoAttack, the checks and the transfer check (docs/results/cpu-regime/autoattack/)."""
    if not (ROOT / AA / "robustness.csv").exists():
        return "\n".join([AA_BEGIN, "", "Not published yet: no report under "
                           f"`{AA}` (`bash docs/results/publish_autoattack.sh`).", "", AA_END])
    r = _read(AA, "robustness.csv")
    r = r[r["aa_err"].notna()]
    pooled = _read(AA / "claims", "audit_pooled.csv")
    per_rate = _read(AA / "claims", "audit.csv")
    aa = _href(AA)  # the links
    flagged = r[r.masking_suspected.astype(str).str.lower() == "true"]
    per_method = r.groupby("method_label").size()
    cols = [f"{a}{_sfx(b)}_err" for b in BUDGETS for a in ("pgd20", "aa", "worst", "transfer")]
    rows = []
    for m in _by_method(r):
        g = r[r.method_label == m]
        rows.append([m, str(len(g)), *("—" if c not in g or g[c].isna().all() else f"{g[c].mean() * 100:.1f}"
                                       for c in cols),
                     str(int((g.masking_suspected.astype(str).str.lower() == "true").sum()))])

    def failed(m) -> str:
        g = flagged[flagged.method_label == m]
        checks = ", ".join(sorted(set(",".join(g.masking_checks.fillna("")).split(",")) - {""}))
        runs = ", ".join(f"{r.noise_col} noise seed {r.seed}: clean error {r.clean_err * 100:.1f}%"
                         for r in g.itertuples())
        return f"{checks}; {runs}"
    flags = ("No run was flagged by the gradient-masking checks" if flagged.empty else
             f"{len(flagged)} run(s) were flagged: " + "; ".join(
                 f"{m} {int((flagged.method_label == m).sum())} of {per_method[m]} ({failed(m)})"
                 for m in _by_method(flagged)))
    heads = [f"{h} ({b}/255)" if b != "8" else h for b in BUDGETS for h in ("PGD-20", "AutoAttack", "worst", "transfer")]
    return "\n".join([
        AA_BEGIN, "",
        f"The tier's runs re-scored (no retraining) with FGSM, PGD-20 (step eps/4) and the official standard "
        f"AutoAttack at 8/255, 2/255 and 1/255 on {int(r.attack_examples.iloc[0])} class-balanced test images per run, "
        f"the gradient-masking checks on all of them, and the transfer check from each run's hard-label cell "
        f"({len(r)} runs; [report]({aa}/report.md), [table8]({aa}/table8.md), per run "
        f"[robustness.csv]({aa}/robustness.csv), [claims]({aa}/claims/audit.md)):",
        "", "```bash\nbash docs/results/publish_autoattack.sh   # rbols eval per run, rbols report, rbols audit, "
        "this section\n```", "",
        f"The evaluation records themselves (figures, checks, transfer add-ons, per-image outcomes in `robust.npz`, "
        f"provenance) are in `{AA}/evals.tar.xz`, and the records they replace (PGD-20 stepping "
        f"2/255 at every budget) in `{AA}/evals-step-2-255.tar.xz`: `tar xJf "
        f"{AA}/evals.tar.xz -C results/cpu-regime` (and the other) adds them to the restored runs, and the report and "
        "audit commands of the script then rebuild these files without re-scoring.",
        "", "Robust error (%), mean over each method's runs (5 noise rates x 2 seeds); *worst* is the per-image worst "
        "case over FGSM, PGD-20 and AutoAttack at that budget; *transfer*: the error on adversarial images crafted on "
        "the hard-label run of the same noise rate and seed (— for hard labels, their own surrogate); *flagged*: runs "
        "the gradient-masking checks (the transfer check included) flagged:",
        "",
        _table(["method", "runs", *heads, "flagged"], rows), "",
        f"![Robust error against eps]({aa}/robust_vs_eps.png)", "",
        *(["- " + step_rule_text(AA)] if (ROOT / AA / "step_rule.csv").exists() else []),
        *("- " + _survives(r, b) for b in BUDGETS),
        *(claim_text(c, pooled, per_rate) for c in AA_CLAIMS),
        "- " + transfer_text(r),
        f"- {flags} ({len(r)} runs, {int(r.check_examples.iloc[0])} images each: eps 0, the eps sweep, 64/255, "
        "PGD-100 with restarts, Square, zero gradients, the transfer).",
        "- The `quick` grid's run records were not kept (only its report), so it was not re-scored; "
        "retraining it (about 67 min per seed) and running the same commands would add it.",
        "", AA_END])


def selection_section() -> str:
    """Checkpoint selection on the small real grid (docs/results/noisy-val/): the test error each selection
    reports, the epochs it chose, and the audit at the noisy-validation epoch."""
    if not (ROOT / SEL / "selection.csv").exists():
        return "\n".join([SEL_BEGIN, "", "Not published yet (`bash docs/results/publish_noisy_val.sh`).", "", SEL_END])
    t = _read(SEL, "selection.csv")
    rows = []
    for m in _by_method(t):
        g = t[t.method_label == m]
        cells = [_ms(g[c].mean(), g[c].std(ddof=1), len(g)) for c in ("test_err_last", "test_err_noisy_val",
                                                                        "test_err_oracle")]
        rows.append([m, cells[0], f"{cells[1]} (epochs {', '.join(str(int(e)) for e in g.epoch_noisy_val)})",
                     f"{cells[2]} (epochs {', '.join(str(int(e)) for e in g.epoch_oracle)})"])
    optimism = (t.test_err_noisy_val - t.test_err_oracle).mean() * 100
    early = (t.test_err_last - t.test_err_noisy_val).mean() * 100
    pooled, per_rate = _read(SEL / "claims", "audit_pooled.csv"), _read(SEL / "claims", "audit.csv")
    sel = _href(SEL)  # the links
    return "\n".join([
        SEL_BEGIN, "",
        f"Hard labels, LS and OLS at 40% symmetric noise on the tier's settings, with {int(t.num_val.iloc[0])} "
        f"images ({t.num_val.iloc[0] / (t.num_val.iloc[0] + t.num_train.iloc[0]) * 100:.0f}% of the noisy training "
        f"set) held out with their noisy labels (`--noisy-val`), seeds {', '.join(map(str, sorted(t.seed.unique())))} "
        f"({len(t)} runs; [report]({sel}/report.md) with Table VII per selection, [selection.csv]({sel}/selection.csv) "
        f"per run, [claims]({sel}/claims/audit.md) at the noisy-validation epoch, the runs in "
        f"`{SEL}/runs.tar.xz`):", "",
        "```bash\nbash docs/results/publish_noisy_val.sh   # train, score at each selection, report, audit, this "
        "section\n```", "",
        "Top-1 test error (%), mean ± std over the seeds, at the epoch each checkpoint selection chooses (only "
        "the tested epochs, every 4th and the last, compete):", "",
        _table(["method", "last epoch", "noisy-validation epoch", "oracle epoch (optimistic)"], rows), "",
        f"- Mean over the runs: the oracle reports {optimism:.1f} points less test error than the noisy-validation "
        f"choice (what choosing on the test set adds), and the noisy-validation epoch {abs(early):.1f} points "
        f"{'less' if early >= 0 else 'more'} than the last epoch.",
        claim_text(SEL_CLAIM, pooled, per_rate),
        "", SEL_END])


def _short_scale(folder: Path) -> str:
    """'CIFAR-10, resnet8, 4,000 training images without augmentation, 28 epochs, seeds 0, 1, 80 runs'; seeds
    that only some methods have (the tier's confirmation seeds) are named with those methods."""
    prov = json.loads((ROOT / folder / "provenance.json").read_text())
    (s,) = prov["scale"]
    augment = {True: " with augmentation", False: " without augmentation"}.get(s.get("training", {}).get("augment"), "")
    seeds = f"seeds {', '.join(map(str, s['seeds']))}"
    last = {}  # method -> its last confirmation seed, over the tier's confirmatory audits (OLS's, then CONFIRMS)
    audits = [(CONFIRM, ("hard", "ls", "ols"))] + [(TIER / f, (*bases, m)) for f, m, bases in CONFIRMS]
    for audit, methods in audits if folder == TIER else []:
        if (ROOT / audit / "audit.csv").exists():
            used = _read(audit, "audit.csv").seeds_used.dropna().astype(str)
            n = max(int(x.replace(",", "-").split("-")[-1]) for x in used)
            last.update({m: max(last.get(m, 0), n) for m in methods})
    if last:
        groups = {n: [m for m in last if last[m] == n] for n in sorted(set(last.values()))}
        seeds = "seeds 0, 1 (" + "; ".join(
            f"{', '.join(ms[:-1]) + ' and ' + ms[-1] if len(ms) > 1 else ms[0]}: 0-{n}" for n, ms in groups.items()) + ")"
    return (f"{s['dataset'].upper().replace('CIFAR', 'CIFAR-')}, {s['model']}, {s['train_subset']:,} training "
            f"images{augment}, {s['epochs']} epochs, {seeds}, {prov['runs']} runs")


SHORT_VERDICT = {"better": "**holds**", "worse": "**does not hold**, OLS is worse",
                 "equivalent": "**does not hold**, OLS is equivalent", "inconclusive": "inconclusive"}


def verdict_cell(claim, folder: Path | None) -> str:
    """One claim's pooled verdicts against hard labels and LS in one audit (`folder`/claims), with the mean
    difference OLS − baseline: the short form of `claim_text`."""
    if folder is None or not (ROOT / folder / "claims" / "audit_pooled.csv").exists():
        return "—"
    pooled = _read(folder / "claims", "audit_pooled.csv")
    _, metric, scope, scale, unit, _ = claim
    rows = pooled[(pooled.metric == metric) & (pooled.scope == scope)]
    parts = []
    for base, name in (("hard", "hard"), ("ls", "LS")):
        r, outcome = _pooled_row(rows, base)
        if r is None:
            parts.append(f"vs {name}: no paired runs")
            continue
        if outcome.startswith(OUTSIDE):
            parts.append(f"vs {name}: outside the regime")
            continue
        said = SHORT_VERDICT.get(outcome, outcome.split(" (")[0])
        parts.append(f"vs {name}: {said} ({_signed(r.mean_diff * scale, 1 if scale == 100 else 3)}{unit})")
    return "; ".join(parts)


CONFIRMED = {"better": "**holds**: better", "worse": "**does not hold**: worse",
             "equivalent": "**does not hold**: equivalent"}


def confirm_table() -> pd.DataFrame | None:
    """The tier's confirmatory audit (audit.csv of `rbols audit --confirm`), None before it is published."""
    path = ROOT / CONFIRM / "audit.csv"
    return pd.read_csv(path) if path.exists() else None


def confirm_cell(claim, table: pd.DataFrame | None) -> str:
    """One claim's pooled decision against hard labels and LS on the confirmation seeds alone: better / worse /
    equivalent within the margin with the mean difference, its 95% interval and the seeds that decided; else
    why not (not decidable within N seeds, waiting for seeds, outside the regime)."""
    if table is None:
        return "—"
    _, metric, scope, scale, unit, _ = claim
    rows = table[(table.kind == "pooled") & (table.metric == metric) & (table.scope == scope)]
    digits = 1 if scale == 100 else 3
    parts = []
    for base, name in (("hard", "hard"), ("ls", "LS")):
        r, outcome = _pooled_row(rows, base)
        if r is None:
            parts.append(f"vs {name}: no claim")
        elif outcome in CONFIRMED:
            within = f" within ±{r.margin * scale:g}{unit}" if outcome == "equivalent" else ""
            ci = (f", 95% CI {_signed(r.ci_lo * scale, digits)} to {_signed(r.ci_hi * scale, digits)}"
                  if math.isfinite(r.ci_lo) else "")
            parts.append(f"vs {name}: {CONFIRMED[outcome]}{within} ({_signed(r.mean_diff * scale, digits)}{unit}{ci}; "
                         f"seeds {r.seeds_used})")
        else:
            parts.append(f"vs {name}: {'outside the regime' if outcome.startswith(OUTSIDE) else outcome}")
    return "; ".join(parts)


def _seeds_in(text: str) -> list[int]:
    """The seeds of an audit's `seeds_used` ('2-8' or '2, 3')."""
    first, dash, last = text.partition("-")
    return list(range(int(first), int(last) + 1)) if dash else [int(x) for x in text.split(",")]


def confirm_section() -> str:
    """cpu-regime.md's account of the confirmatory audit: the design in a sentence, each claim's decision per
    noise rate and pooled (the audit's one-screen summary), links to the plan and the audit."""
    table = confirm_table()
    if table is None:
        body = [f"Not published yet: the [plan]({_href(PLAN / 'plan.md')}) asks for confirmation seeds that are "
                "still training; `publish_tier.sh` writes this section when they are done."]
    else:
        from robustbench_ols.audit.verdicts import summary_lines
        per_rate, pooled = table[table.kind == "per-rate"], table[table.kind == "pooled"]
        claims = {m for _, m, *_ in [*CLAIMS_LIST, AA_CLAIMS[-1]]}
        widest = max(table.seeds_used.dropna().astype(str), key=lambda v: len(_seeds_in(v)))
        waiting = int(table.outcome.astype(str).str.startswith("waiting").sum())
        interim = (f". **Interim**: {waiting} of the {int((table.status == 'planned').sum())} planned claims still "
                   "wait for confirmation seeds in training; each is decided when its seeds are done, on the seeds "
                   "the plan fixed, and until then counts in its family with p = 1, so a claim now inconclusive may "
                   "still become decided (a decided difference stays decided)" if waiting else "")
        body = [f"Planned on the pilot seeds {table.planned_on.iloc[0]} ([plan]({_href(PLAN / 'plan.md')})), decided "
                f"on the confirmation seeds alone ({widest}, each claim on its first n, n from the plan), at this CPU "
                "scale: "
                f"{SCALE_GAP}. Each line: the per-rate comparisons counted by outcome, then each pooled one "
                f"([audit.md]({_href(CONFIRM / 'audit.md')}) has every test, interval and seed){interim}:", "",
                *[f"- {line}" for line in summary_lines(per_rate[per_rate.metric.isin(claims)],
                                                        pooled[pooled.metric.isin(claims)])]]
    return "\n".join([CONFIRM_BEGIN, "", *body, "", CONFIRM_END])


def summary_section() -> str:
    """The README's one results table: each claim's pooled verdicts in the tier and in the quick grid, linking
    to the results pages that hold the details."""
    tier_page, quick_page = TIER_PAGE.as_posix(), QUICK_PAGE.as_posix()  # the README's links
    confirmed = confirm_table()
    rows = [[f"*{c[0]}*", confirm_cell(c, confirmed), verdict_cell(c, TIER), verdict_cell(c, QUICK)]
            for c in CLAIMS_LIST]
    rows.append([f"*{AA_CLAIMS[-1][0]}* ([AutoAttack re-scoring]({tier_page}#robustness-under-autoattack-and-"
                 "gradient-masking))", confirm_cell(AA_CLAIMS[-1], confirmed), verdict_cell(AA_CLAIMS[-1], AA),
                 "not re-scored"])
    rows.append([f"*{SEL_CLAIM[0]}* ([checkpoint selection]({tier_page}#checkpoint-selection-on-a-small-real-grid), "
                 "the tier's settings at 40% noise)", "—", verdict_cell(SEL_CLAIM, SEL), "—"])
    return "\n".join([
        SUMMARY_BEGIN, "",
        f"The `cpu-regime` tier: {_short_scale(TIER)}, where hard labels memorise the noise "
        f"([{tier_page}]({tier_page})). The `quick` grid: {_short_scale(QUICK)}, outside that regime "
        f"([{quick_page}]({quick_page})). Each cell: the verdict pooled over the noise rates against hard labels "
        "and against LS, and the mean difference OLS − baseline (negative favours OLS; ECE and errors in points, "
        "CIFAR-10H as KL); the tests, intervals, per-rate comparisons and the regime guard are on those pages "
        f"([claims in the tier]({tier_page}#the-papers-claims-at-this-scale), "
        f"[in the quick grid]({quick_page}#the-papers-claims-at-this-scale)). The first column decides each claim "
        "on confirmation seeds alone, planned from the tier's pilot seeds 0 and 1 (better, worse, equivalent within "
        "the margin, not decidable within 10 seeds, or waiting for seeds still training: "
        f"[the confirmatory audit]({tier_page}#decided-on-confirmation-seeds)); the second is the pilot's own, "
        f"exploratory audit. Every verdict here is about this CPU scale: {SCALE_GAP}.", "",
        _table(["the paper's claim", "`cpu-regime`, confirmed", "`cpu-regime` pilot (seeds 0, 1)", "`quick` grid"],
               rows), "",
        SUMMARY_END])


# The files with generated sections, and their sections (begin marker, end marker, what writes it) in order.
PAGES = {
    README: [(SUMMARY_BEGIN, SUMMARY_END, summary_section), (ADDED_SUMMARY_BEGIN, ADDED_SUMMARY_END, added_summary)],
    TIER_PAGE: [(TIER_BEGIN, TIER_END, tier_section), (CONFIRM_BEGIN, CONFIRM_END, confirm_section),
                (AA_BEGIN, AA_END, autoattack_section), (SEL_BEGIN, SEL_END, selection_section),
                (ADDED_BEGIN, ADDED_END, added_section)],
    QUICK_PAGE: [(BEGIN, END, section)],
}


def _replace(text: str, begin: str, end: str, section: str, page: Path) -> str:
    if begin not in text or end not in text:
        raise SystemExit(f"{page} has no results markers: put the lines\n{begin}\n{end}\nwhere the section goes")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + section + tail


def render(text: str, page: Path) -> str:
    """`text` (the file `page`, relative to the repository root) with its generated sections rewritten."""
    for begin, end, make in PAGES[page]:
        text = _replace(text, begin, end, make(), page)
    return text


def main(argv: list[str]) -> int:
    stale = []
    for page in PAGES:
        path = ROOT / page
        old = path.read_text()
        new = render(old, page)
        if new != old:
            stale.append(page)
            if "--check" not in argv:
                path.write_text(new)
    if "--check" in argv and stale:
        print(f"{', '.join(map(str, stale))}: the generated sections differ from docs/results/: run python "
              "docs/results/build_readme.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
