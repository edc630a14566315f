"""`rbols report`: the OLS paper's tables and figures rebuilt from finished run directories alone.

`write_report(results_dir, report_dir)` reads the runs through a `ResultSet` (store/results.py)
(never retrains) and writes, under `report_dir`:

- `table7.md/.csv`: test error, mean ± std over seeds (ddof=1), method x noise rate, a table per checkpoint
  selection (last epoch, noisy-validation epoch, oracle epoch: selection.py), the one used first (table7.py);
- `table8.md/.csv`: clean, FGSM and PGD-k error; `table11.md/.csv`: error and ECE per model and method;
  `table12.md/.csv`: error and CIFAR-10H KL (CIFAR-10 only);
- `fig4`, `fig5`, `error_vs_noise` and `reliability_<method>` as PNG and PDF, or the formats asked
  for (one set per setting);
- `robustness.csv`: per run, the robust error under every attack, the gradient-masking checks' flag and
  figures, and the eps sweep (where recorded);
- `robust_vs_eps`: robust error against the budget (runs scored with the checks);
- `cost.csv`: seconds per cell by setting and method, `provenance.json`: the wall time, its stretches,
  and the devices, torch and code versions with their run counts (see `cost.py`);
- `report.md`, which says for every table which cells exist and which are missing, and closes with the
  cost (time per cell, wall time) and provenance (devices, threads, torch and code versions) of the runs;
- with `html=True` (or `write_html` alone), `report.html`: the same tables (sortable), figures, audits and
  provenance in one self-contained page (`html.py`; the `html` extra).

`build()` computes all of it once; report.md and report.html render that one computation.

Conventions: the CSV files hold fractions in [0, 1] like metrics.json; the Markdown tables and the
figures show percent (KL divergence as is). A *setting* is everything a run's spec fixes apart from the
method, the noise and the seeds (dataset, model, epochs, training subset, validation split, and any other
spec field that differs between the runs, shown as `variant`): numbers of different settings are never
averaged together. A cell with fewer runs than the fullest cell of its setting is marked "n=k of N",
a cell with none "— (no run)". Figures are built on `matplotlib.figure.Figure` with the Agg canvas, so
pyplot's global state is never touched; the figure functions return the Figure for tests to inspect.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from robustbench_ols.audit.regime import MIN_WRONG_FIT, fit_markdown
from robustbench_ols.common.markdown import markdown_table
from robustbench_ols.report.cost import cost_markdown
from robustbench_ols.report.figures import (
    PNG_DPI,
    error_vs_noise,
    fig4,
    fig5,
    noise_panels,
    pool_reliability,
    prediction_rows,
    reliability_figure,
    reliability_rows,
    robust_vs_eps,
    save_figure,
)
from robustbench_ols.report.paper_tables import robustness_frame, table_parts
from robustbench_ols.report.table7 import table7, table7_markdown
from robustbench_ols.report.tables import (
    SETTING,
    TABLE_NAMES,
    attack_columns,
    images_per_run,
    images_text,
    method_key,
    noise_column,
    parts_markdown,
    prepare,
    select_rows,
    setting_title,
    slug,
    summarise,
)
from robustbench_ols.store.results import ResultSet
from robustbench_ols.train.selection import LABELS

__all__ = ["write_report", "write_html", "build", "table7", "table7_markdown", "summarise", "prepare", "noise_column",
           "attack_columns", "fig4", "fig5", "error_vs_noise", "pool_reliability", "reliability_figure"]


# ---------------------------------------------------------------- the report

def _links(names: list[str]) -> str:
    """The first file as an image, the others as links: `![stem](a.png) ([pdf](a.pdf))`."""
    rest = "".join(f" ([{n.rsplit('.', 1)[-1]}]({n}))" for n in names[1:])
    return f"![{names[0].rsplit('.', 1)[0]}]({names[0]}){rest}\n"


@dataclass
class Drawn:
    """One figure of the report: its file stem, the Figure, and the PNG file once written."""
    name: str
    fig: object
    png_file: Path | None = None

    def png(self) -> bytes:
        """The PNG (the file written for report.md when there is one, else rendered alike)."""
        if self.png_file is not None and self.png_file.exists():
            return self.png_file.read_bytes()
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=PNG_DPI)
        return buf.getvalue()


def _figures(d: pd.DataFrame, ep: pd.DataFrame, eval_id) -> list[tuple[str, list]]:
    """Draw every figure: per setting, (title, items), an item a `Drawn` or a Markdown line saying why
    a figure is missing."""
    out, used = [], set()
    groups = list(d.groupby(list(SETTING), sort=True, dropna=False))
    for key, g in groups:
        r = g.iloc[0]
        title = setting_title(r)
        sfx = "" if len(groups) == 1 else "_" + slug(
            f"{r['dataset']}_{r['model']}_e{r['epochs']}_sub{r['train_subset']}_val{r['val_split']}_{r['variant']}")
        e = select_rows(ep, SETTING, key)
        items = []
        for stem, fig in (("fig4", fig4(e, title=f"Fig. 4: {title}")), ("fig5", fig5(e, title=f"Fig. 5: {title}")),
                          ("error_vs_noise", error_vs_noise(g, title=f"Test error vs noise: {title}")),
                          ("robust_vs_eps", robust_vs_eps(g, title=f"Robust error vs eps: {title}"))):
            if fig is not None:
                items.append(Drawn(f"{stem}{sfx}", fig))
        rel = reliability_rows(g, eval_id)
        preds = prediction_rows(g, eval_id)
        for m in sorted(g["method_label"].unique(), key=method_key):
            name = f"reliability_{slug(m)}{sfx}"
            while name in used:
                name += "_"
            used.add(name)
            rm = rel[rel["method_label"] == m] if len(rel) else rel
            if rm.empty:
                items.append(f"- {m}: no reliability.csv in its runs: no diagram\n")
                continue
            pooled = pool_reliability(rm)
            panels = [p for p in noise_panels(g[g["method_label"] == m]) if p in set(pooled["noise_col"])]
            smooth = {nc: v for (mm, nc), v in preds.items() if mm == m}
            items.append(Drawn(name, reliability_figure(pooled, panels=panels, title=f"{m}: {title}",
                                                        smooth=smooth or None)))
        out.append((title, items))
    return out


def _figures_md(drawn: list[tuple[str, list]], out: Path, formats) -> list[str]:
    """Save the figures; the report's Markdown lines for them."""
    lines = []
    for title, items in drawn:
        lines.append(f"### {title}\n")
        for it in items:
            if isinstance(it, str):
                lines.append(it)
                continue
            lines.append(_links(save_figure(it.fig, out / it.name, formats)))
            if "png" in formats:
                it.png_file = out / f"{it.name}.png"
    return lines


_FIGURE_NOTES = """\
- `fig4`: per epoch (the whole curve from epochs.csv, neither a last- nor a best-epoch figure): top row
  the training error against the **noisy** labels (the paper's Fig. 4 training error), bottom row the test
  error; one column per noise rate, one line per method = mean over seeds, shaded band ± one std. Runs
  with a test pass every K epochs (`--test-every`) have test points on those epochs and the last only
  (drawn with markers); spec.json's `reporting.epoch_test` says which images each pass used.
- `fig5`: per epoch, the error on the training images whose label is wrong, measured against the wrong
  label (`noisy_err`; high = the wrong labels were not memorised); one panel per noise rate > 0.
- `error_vs_noise`: test error against the symmetric noise rate, one line per method (mean ± std over
  seeds); left the last epoch (`test_err_last`), right the best epoch (`test_err_best`, rule above).
- `robust_vs_eps` (runs scored with the gradient-masking checks): robust error against the L-inf budget,
  PGD-20 with step eps/4 on the checks' images, one panel per noise rate, one line per method (mean ±
  std over seeds); eps 0 is the clean error of those images, and every curve should rise to 100%.
- `reliability_<method>`: the final model (last epoch); the calibration bins of all of that method's
  seeds are summed at each noise rate (counts add, confidence and accuracy are count-weighted), one
  panel per noise rate; the title gives the ECE of the pooled bins. For runs that recorded each test
  image's prediction (`evals/<eval_id>.predictions.npz`), a second row draws relplot's smoothed
  reliability diagram of the same images (Blasiok & Nakkiran 2024: kernel-smoothed accuracy against
  confidence, its bootstrap band, the density of the confidences, the smooth ECE).
"""


FORMATS = ("png", "pdf")


@dataclass
class Built:
    """What report.md and report.html show, computed once from the run records (`build`)."""
    results_dir: str
    eval_id: str | None
    intro: list[str]  # Markdown: the title, what was read, the eval record, incomplete and unreadable runs
    runs: int = 0
    d: pd.DataFrame | None = None  # prepare(collect(...)); None without finished runs
    overview: str = ""
    regime: str = ""
    tables: list = field(default_factory=list)  # table_parts()
    ep: pd.DataFrame | None = None  # epochs() of the runs, with variant and best_rule
    figures: list = field(default_factory=list)  # _figures()
    cost: str = ""
    cost_csv: pd.DataFrame | None = None
    provenance: dict = field(default_factory=dict)


def build(results_dir, *, paper: bool = False, eval_id: str | None = None, select: str = "last") -> Built:
    """Read the finished runs under `results_dir` (a folder or its ResultSet, each file read once) and compute every
    table and figure of the report, at the checkpoint selection `select` (selection.py)."""
    results = ResultSet.of(results_dir)
    with results.reading():  # the cost tables and the figures read run files too
        return _build(results, paper, eval_id, select)


def _build(results: ResultSet, paper: bool, eval_id: str | None, select: str) -> Built:
    runs, bad = results.runs(eval_id=eval_id, select=select), results.incomplete()
    md = [f"# Report: {results}\n",
          f"Built from the finished run directories under `{results}` alone (no retraining): "
          f"{len(runs)} finished runs. Markdown tables and figures show percent; the CSV files hold "
          "fractions in [0, 1] like metrics.json (KL divergence as is). A cell with fewer runs than the "
          "fullest cell of its setting says `n=k of N`; a cell with no run says `— (no run)`.\n"]
    if eval_id:
        md.append(f"Scores (clean, attacks, calibration, CIFAR-10H) come from evaluation record `{eval_id}`; "
                  "runs without that record show no figure for them.\n")
    if select != "last":
        md.append(f"Checkpoint selection `--select {select}`: Table VII's first table, and every score, is of the "
                  f"epoch it chooses ({LABELS[select]})"
                  + ("" if eval_id else "; the scores are each run's own scoring setting at that epoch") + ".\n")
    md.append(_incomplete_md(bad))
    md.append(_unreadable_md(results.unreadable(eval_id=eval_id, select=select)))
    b = Built(str(results), eval_id, md, runs=len(runs))
    if runs.empty:
        return b
    b.d = d = prepare(runs)
    b.overview, b.regime = _overview(d, eval_id), _regime_md(d)
    b.tables = table_parts(d, paper, select)
    ep = results.epochs()
    b.ep = ep.merge(d[["run_id", "variant", "best_rule"]], on="run_id", how="inner")
    b.figures = _figures(d, b.ep, eval_id)
    b.cost, b.cost_csv, b.provenance = cost_markdown(d)
    return b


def write_report(results_dir, report_dir, *, paper: bool = False, eval_id: str | None = None,
                 formats=FORMATS, html: bool = False, audit_dirs=(), select: str = "last") -> Path:
    """Write the tables, figures and report.md for the finished runs under `results_dir` into
    `report_dir`; returns the path of report.md. `paper`: add the OLS paper's numbers beside ours where
    it reports the same dataset, model, method and noise rate. `eval_id`: take the scores from that
    evaluation record (`rbols eval`) instead of each run's own. `formats`: the figures' file types
    (png, pdf, svg; the first is the one report.md shows). `html`: also report.html (`write_html`) from
    the same computation, with the audits under `audit_dirs`. `select`: the checkpoint selection (last,
    noisy-val, oracle)."""
    formats = tuple(formats)
    if not formats or any(f not in ("png", "pdf", "svg") for f in formats):
        raise ValueError(f"figure formats {formats!r}: choose one or more of png, pdf, svg (e.g. --format png)")
    if html:
        from robustbench_ols.report.html import libraries
        libraries()  # SpecError now, before any file is written, when the html extra is missing
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    b = build(results_dir, paper=paper, eval_id=eval_id, select=select)
    md = list(b.intro)
    if b.d is None:
        md.append("No finished runs: nothing to tabulate.\n")
        for stem in ("table7", "table8", "table11", "table12"):
            (out / f"{stem}.md").write_text(f"# {TABLE_NAMES[stem]}\n\nNo finished runs under `{results_dir}`.\n")
            pd.DataFrame().to_csv(out / f"{stem}.csv", index=False)
    else:
        md += [b.overview, b.regime]
        for stem, title, parts, csv in b.tables:
            body = parts_markdown(parts)
            (out / f"{stem}.md").write_text(f"# {title}\n\nFrom `{results_dir}`.\n\n{body}")
            csv.to_csv(out / f"{stem}.csv", index=False)
            md.append(f"## {title}\n\nFiles: [{stem}.md]({stem}.md), [{stem}.csv]({stem}.csv)\n\n{body}")
        robustness_frame(b.d).to_csv(out / "robustness.csv", index=False)
        md.append("## Figures\n\n" + _FIGURE_NOTES + "\n" + "\n".join(_figures_md(b.figures, out, formats)))
        b.cost_csv.to_csv(out / "cost.csv", index=False)
        (out / "provenance.json").write_text(json.dumps(b.provenance, indent=1) + "\n")
        md.append(b.cost)
    path = out / "report.md"
    path.write_text("\n".join(md))
    if html:
        from robustbench_ols.report.html import render_html  # jinja2 and plotly: the `html` extra
        render_html(b, out, audit_dirs=audit_dirs)
    return path


def write_html(results_dir, report_dir, *, paper: bool = False, eval_id: str | None = None, audit_dirs=(),
               select: str = "last") -> Path:
    """report.html alone (see `html.py`); `write_report(..., html=True)` writes it beside report.md
    without drawing the figures twice."""
    from robustbench_ols.report.html import render_html
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    return render_html(build(results_dir, paper=paper, eval_id=eval_id, select=select), out, audit_dirs=audit_dirs)


def _overview(d: pd.DataFrame, eval_id) -> str:
    lines = ["## Runs\n"]
    for _, g in d.groupby(list(SETTING), sort=True, dropna=False):
        lines.append(f"- **{setting_title(g.iloc[0])}**: {len(g)} run{'s' * (len(g) != 1)}; best-epoch rule: "
                     + "; ".join(sorted(g["best_rule"].unique())))
        images = images_per_run(g)
        if images:
            lines.append("  - images per run: " + images_text(images, g["method_label"].nunique()))
    if eval_id is None and "eval_id" in d and d["eval_id"].nunique(dropna=False) > 1:
        lines.append(f"\n**Warning**: the runs were scored under {d['eval_id'].nunique(dropna=False)} evaluation "
                     "settings (eval ids listed per table); pass `eval_id` to compare them under one.")
    return "\n".join(lines) + "\n"


def _regime_md(d: pd.DataFrame) -> str:
    """Per setting and noise rate, how much of the wrong labels hard labels fit: a claim about noisy labels
    says something only where they memorise (regime.py)."""
    lines = ["## Regime: do hard labels memorise the wrong labels?\n",
             "The share of wrong-label training images that the hard-label runs predict as their wrong label at "
             f"the last epoch (1 - `noisy_err_last`). The OLS paper's claims about noisy labels are about networks "
             f"that memorise them; `rbols audit` calls a claim at a noise rate where some hard-label seed fits less "
             f"than {MIN_WRONG_FIT:.0%} \"inconclusive: outside the regime\".\n"]
    groups = list(d.groupby(list(SETTING), sort=True, dropna=False))
    for _, g in groups:
        if len(groups) > 1:
            lines.append(f"**{setting_title(g.iloc[0])}**\n")
        lines.append(fit_markdown(g))
    return "\n".join(lines) + "\n"


def _unreadable_md(bad: list[dict]) -> str:
    if not bad:
        return ""
    return ("## Unreadable runs\n\nFinished (DONE) but left out: a record cannot be read. The reason names the file "
            "and the fix.\n\n" + markdown_table(["run", "reason"], [[b["run_id"], b["reason"]] for b in bad]) + "\n")


def _incomplete_md(bad: list[dict]) -> str:
    if not bad:
        return "## Incomplete or failed runs\n\nNone: every run directory with a spec.json has DONE.\n"
    rows = [[b.get("run_id", "?"), b.get("status", "unknown"), b.get("epoch", ""), b.get("reason", "")] for b in bad]
    return ("## Incomplete or failed runs\n\nNot counted anywhere below (no DONE):\n\n"
            + markdown_table(["run", "status", "epoch", "reason"], rows))
