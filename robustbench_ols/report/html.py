"""`rbols report --html`: report.html, one self-contained page (no network needed to view it) with what
report.md holds, from the same computation (`build`):

- Tables VII, VIII, XI and XII from the same DataFrames as the Markdown tables, sortable by a click on a
  column header (numbers by value, text alphabetically; a click again reverses);
- every figure of report.md as an inline PNG, and Fig. 4/5's curves as plotly figures in which a click on
  a method in the legend hides or shows it (plotly.js inlined once);
- the audits found (`audit.csv` under `audit_dirs` and `<results_dir>/audit`): the verdicts, each
  comparison with its intervals and p-values, the difference figures;
- the cost and provenance (settings, seeds, eval ids, devices, threads, torch and code versions).

The page comes from the Jinja2 template `templates/report.html.j2`; prose is report.md's Markdown,
converted by Python-Markdown. Needs the `html` extra (jinja2, markdown, plotly).
"""
from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path

import pandas as pd

from robustbench_ols.common.errors import SpecError
from robustbench_ols.common.provenance import git_info, now, versions
from robustbench_ols.report.cost import _clock, duration
from robustbench_ols.report.figures import _colors, curve_stats, noise_panels
from robustbench_ols.report.tables import SETTING, images_text, prepare, select_rows, setting_title

AUDIT_COLUMNS = ["label", "dataset", "model", "noise_rate", "baseline", "n", "new_mean", "base_mean", "mean_diff",
                 "ci_lo", "ci_hi", "boot_lo", "boot_hi", "p", "p_adj", "p_equiv_adj", "outcome", "reason"]
POOLED_COLUMNS = ["label", "dataset", "model", "scope", "baseline", "lower", "n", "mean_diff", "ci_lo", "ci_hi",
                  "boot_lo", "boot_hi", "p", "p_adj", "p_equiv_adj", "outcome", "reason"]
COST_COLUMNS = ["setting", "method_label", "cells", "mean_s", "std_s", "min_s", "max_s", "total_s"]
# Fig. 4's rows and Fig. 5's: (epochs.csv column, axis title)
CURVES = {"fig4": [("train_err", "training error vs noisy labels (%)"), ("test_err", "test error (%)")],
          "fig5": [("noisy_err", "error vs the wrong labels (%)")]}
PANEL = {"train_err": "training error", "test_err": "test error", "noisy_err": "wrong-label images"}


def libraries():
    try:
        import jinja2
        import markdown
        import plotly
    except ImportError as e:
        raise SpecError(f"--html needs jinja2, markdown and plotly ({e}): "
                        "pip install 'robustbench_ols[html]'") from None
    return jinja2, markdown, plotly


# ---------------------------------------------------------------- pieces of the page

def table_html(df: pd.DataFrame, uid: str, formatter=None):
    """A DataFrame as a sortable HTML table (pandas' Styler, cells escaped); a `**x**` cell (Markdown bold,
    as the report's tables mark the best) is shown as x in bold."""
    from markupsafe import Markup
    df = df.copy()
    if not df.columns.is_unique:
        df.columns = [f"{c} ({i})" if list(df.columns).count(c) > 1 else c for i, c in enumerate(df.columns)]
    df.index = range(len(df))
    bold = df.apply(lambda c: c.map(lambda v: isinstance(v, str) and len(v) > 4 and v[:2] == v[-2:] == "**"))
    df = df.mask(bold, df.apply(lambda c: c.map(lambda v: v[2:-2] if isinstance(v, str) else v)))
    if isinstance(formatter, dict):
        formatter = {c: f for c, f in formatter.items() if c in df}
    styler = (df.style.hide(axis="index").set_uuid(uid).set_table_attributes('class="sortable"')
              .set_td_classes(bold.apply(lambda c: c.map(lambda v: "best" if v else "")))
              .format(formatter, precision=4, na_rep="—", escape="html"))
    return Markup(styler.to_html())


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _rgba(color, alpha=1.0) -> str:
    r, g, b = (round(c * 255) for c in color[:3])
    return f"rgba({r},{g},{b},{alpha})"


def curves_figure(ep: pd.DataFrame, kind: str, title: str):
    """Fig. 4 (`kind` "fig4") or Fig. 5 ("fig5") of one setting as a plotly figure: a column of panels per
    noise rate, one line per method (mean over seeds, band ± one std, the same figures as the PNG); every
    trace of a method is in its legend group, so a click on the legend hides or shows the method. None
    when there is no panel."""
    from plotly.subplots import make_subplots
    d = prepare(ep)
    panels = noise_panels(d, noisy_only=kind == "fig5")
    rows = CURVES[kind]
    if not panels or d.empty:
        return None
    colors = _colors(d["method_label"])
    fig = make_subplots(rows=len(rows), cols=len(panels), horizontal_spacing=0.06, vertical_spacing=0.12,
                        subplot_titles=[f"{PANEL[col]}, noise {nc}" for col, _ in rows for nc in panels])
    shown = set()
    for i, (metric, what) in enumerate(rows, start=1):
        for j, nc in enumerate(panels, start=1):
            for m, (mean, std, n, sparse) in curve_stats(d[d["noise_col"] == nc], metric).items():
                x, ok = list(mean.index), std.notna()
                if ok.any():
                    xs = list(mean.index[ok])
                    fig.add_scatter(x=xs + xs[::-1], y=list((mean + std)[ok]) + list((mean - std)[ok])[::-1],
                                    mode="lines", fill="toself", fillcolor=_rgba(colors[m], 0.2), line={"width": 0},
                                    hoverinfo="skip", legendgroup=m, showlegend=False, row=i, col=j)
                fig.add_scatter(x=x, y=list(mean), name=m, legendgroup=m, showlegend=m not in shown,
                                mode="lines+markers" if sparse else "lines", line={"color": _rgba(colors[m])},
                                marker={"color": _rgba(colors[m])},
                                hovertemplate=f"{m} (n={n})<br>epoch %{{x}}: %{{y:.2f}}%<extra></extra>",
                                row=i, col=j)
                shown.add(m)
            if i == len(rows):
                fig.update_xaxes(title_text="epoch", row=i, col=j)
        fig.update_yaxes(title_text=what, row=i, col=1)
    fig.update_layout(title=title, template="plotly_white", height=300 * len(rows) + 110,
                      legend={"title": {"text": "method (click: hide/show)"}}, margin={"t": 90})
    return fig


def _curves(b) -> list[dict]:
    """Per setting: Fig. 4 and Fig. 5 as plotly <div>s (without plotly.js: the page holds it once)."""
    out = []
    if b.ep is None or b.d is None:
        return out
    for n, (key, g) in enumerate(b.d.groupby(list(SETTING), sort=True, dropna=False)):
        title = setting_title(g.iloc[0])
        e = select_rows(b.ep, SETTING, key)
        divs = []
        for kind, name in (("fig4", "Fig. 4"), ("fig5", "Fig. 5")):
            fig = curves_figure(e, kind, f"{name}: {title}")
            if fig is not None:
                divs.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"{kind}-{n}",
                                        config={"displaylogo": False, "responsive": True}))
        out.append({"title": title, "divs": divs})
    return out


def _section(text: str, heading: str) -> str:
    """The Markdown section of `text` that starts at the line `heading`, up to the next `## ` heading."""
    lines = text.splitlines()
    if heading not in lines:
        return ""
    start = lines.index(heading) + 1
    end = next((k for k in range(start, len(lines)) if lines[k].startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).strip() + "\n"


def find_audits(results_dir, audit_dirs=()) -> list[Path]:
    """Every audit.csv under `audit_dirs` and under `<results_dir>/audit`, once each, in path order."""
    found = {}
    for folder in [*map(Path, audit_dirs), Path(results_dir) / "audit"]:
        if folder.is_file() and folder.name == "audit.csv":
            found[folder.resolve()] = folder
        elif folder.is_dir():
            for f in sorted(folder.rglob("audit.csv")):
                found.setdefault(f.resolve(), f)
    return sorted(found.values(), key=str)


def _p(v) -> str:
    return f"{v:.3g}"


def _audit(csv: Path, k: int) -> dict:
    """One audit folder: title and verdicts (audit.md), every comparison and the pooled ones (sortable),
    the difference figures."""
    folder = csv.parent
    md = (folder / "audit.md").read_text() if (folder / "audit.md").exists() else ""
    title = next((line[2:] for line in md.splitlines() if line.startswith("# ")), f"Audit in {folder}")
    fmt = {c: _p for c in ("p", "p_adj", "p_equiv_adj")} | {"noise_rate": "{:g}", "n": "{:.0f}", "lower": "{:.0f}"}
    tables = []
    for name, cols, caption in (("audit.csv", AUDIT_COLUMNS, "Every comparison (per noise rate)"),
                                ("audit_pooled.csv", POOLED_COLUMNS, "Pooled over the noise rates")):
        if not (folder / name).exists():
            continue
        t = pd.read_csv(folder / name)
        keep = [c for c in cols if c in t and (c != "reason" or t[c].notna().any())]
        tables.append({"caption": caption, "file": name,
                       "html": table_html(t[keep], f"audit-{k}-{len(tables)}", fmt)})
    figs = [{"name": f.stem, "src": _data_uri(f.read_bytes())} for f in sorted(folder.glob("diff_*.png"))]
    return {"id": f"audit-{k}", "title": title, "folder": str(folder), "verdict": _section(md, "## Verdict"),
            "tables": tables, "figures": figs}


def _provenance(b) -> dict:
    """The provenance block: per setting its scale, training, seeds and evaluations; the devices, threads,
    torch and code versions with their run counts; the stretches of work; the cost per method."""
    p = b.provenance
    settings = []
    for s in p.get("scale", []):
        settings.append({**s, "images": images_text(s["images"], len(s["methods"])) if s["images"] else "",
                         "evaluations": [{**e, "setting": json.dumps(e["setting"], indent=1)}
                                         for e in s["evaluations"]]})
    kinds = [(k, title) for k, title in (("git", "Code (git commit)"), ("device", "Devices"),
                                         ("threads", "torch threads"), ("torch", "torch")) if p.get(k)]
    cost = None
    if b.cost_csv is not None and len(b.cost_csv):
        cost = table_html(b.cost_csv[[c for c in COST_COLUMNS if c in b.cost_csv]], "cost",
                          dict.fromkeys(("mean_s", "std_s", "min_s", "max_s", "total_s"), "{:.0f}"))
    code = git_info()
    built = (f"robustbench_ols {versions()['robustbench_ols']}, commit "
             f"{(code['commit'] or 'unknown')[:12]}{'+dirty' if code['dirty'] else ''}, {now()}")
    stretches = [f"{_clock(datetime.fromisoformat(s['start']))} to {_clock(datetime.fromisoformat(s['end']))}: "
                 f"{s['runs']} run{'s' * (s['runs'] != 1)}, {duration(s['wall_s'])}" for s in p.get("stretches", [])]
    return {"settings": settings, "kinds": [(title, sorted(p[k].items())) for k, title in kinds],
            "stretches": stretches, "runs": p.get("runs", 0), "cell_time": duration(p.get("cell_seconds", 0)),
            "wall_time": duration(p.get("wall_seconds", 0)), "pause_min": p.get("pause_splits_stretch_s", 0) // 60,
            "cost": cost, "built": built}


# ---------------------------------------------------------------- the page

def render_html(b, report_dir, *, audit_dirs=()) -> Path:
    """Write `<report_dir>/report.html` from a `build()`; returns its path."""
    jinja2, markdown, _ = libraries()
    from markupsafe import Markup
    from plotly.offline import get_plotlyjs

    from robustbench_ols.report import _FIGURE_NOTES
    env = jinja2.Environment(loader=jinja2.PackageLoader("robustbench_ols.report", "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["md"] = lambda text: Markup(markdown.markdown(text, extensions=["tables"]))
    tables = [{"stem": stem, "title": title,
               "parts": [p if isinstance(p, str) else table_html(p, f"{stem}-{k}") for k, p in enumerate(parts)]}
              for stem, title, parts, _ in b.tables]
    figures = [{"title": title, "entries": [it if isinstance(it, str) else {"name": it.name, "src": _data_uri(it.png())}
                                          for it in items]} for title, items in b.figures]
    curves = _curves(b)
    page = env.get_template("report.html.j2").render(
        b=b, title=b.intro[0].lstrip("# ").strip(), intro="\n".join(b.intro[1:]), tables=tables, figures=figures,
        figure_notes=_FIGURE_NOTES, curves=curves, plotly_js=get_plotlyjs() if any(c["divs"] for c in curves) else "",
        audits=[_audit(f, k) for k, f in enumerate(find_audits(b.results_dir, audit_dirs))],
        provenance=_provenance(b) if b.d is not None else None)
    path = Path(report_dir) / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
