"""`rbols report`: the OLS paper's tables and figures rebuilt from finished run directories alone.

`write_report(results_dir, report_dir)` reads the runs through `results.collect` / `results.epochs`
(never retrains) and writes, under `report_dir`:

- `table7.md/.csv`: test error, mean ± std over seeds (ddof=1), method x noise rate, last-epoch and
  best-epoch figures in separate tables (the best-epoch rule is quoted from each run's spec.json);
- `table8.md/.csv`: clean, FGSM and PGD-k error; `table11.md/.csv`: error and ECE per model and method;
  `table12.md/.csv`: error and CIFAR-10H KL (CIFAR-10 only);
- `fig4`, `fig5`, `error_vs_noise` and `reliability_<method>` as PNG and PDF (one set per setting);
- `report.md`, which says for every table which cells exist and which are missing.

Conventions: the CSV files hold fractions in [0, 1] like metrics.json; the Markdown tables and the
figures show percent (KL divergence as is). A *setting* is everything a run's spec fixes apart from the
method, the noise and the seeds (dataset, model, epochs, training subset, validation split, and any other
spec field that differs between the runs, shown as `variant`): numbers of different settings are never
averaged together. A cell with fewer runs than the fullest cell of its setting is marked "n=k of N",
a cell with none "— (no run)". Figures are built on `matplotlib.figure.Figure` with the Agg canvas, so
pyplot's global state is never touched; the figure functions return the Figure for tests to inspect.
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import paper as paper_data

SETTING = ("dataset", "model", "epochs", "train_subset", "val_split", "variant")
# The paper's row order (Table VII), then anything else alphabetically.
METHOD_ORDER = ("hard", "bootsoft", "boothard", "sce", "gce", "disturblabel", "l2rw", "mwnet", "arazo",
                "pencil", "coteaching", "ls", "ols-single", "ols")
# Spec fields that are not part of a setting: what a table's rows, columns and replicates vary.
_NOT_SETTING = {"method", "method_options", "noise", "seed", "noise_seed", "subset_seed", *SETTING}
TABLE_NAMES = {"table7": "Table VII", "table8": "Table VIII", "table11": "Table XI", "table12": "Table XII"}
_ATTACK = re.compile(r"^(fgsm|pgd(\d+))_err$")  # default 8/255 budget only (see attacks.AttackSpec.key)


# ---------------------------------------------------------------- the runs table

def noise_column(kind: str, rate, text: str = "") -> str:
    """Column label of a noise setting: `0%` (no noise), `40%` (symmetric), `pairflip 20%`, `human:worst`."""
    if kind == "none" or (kind == "symmetric" and rate == 0):
        return "0%"
    if kind == "human" or rate is None or pd.isna(rate):
        return text or kind
    pct = f"{float(rate) * 100:g}%"
    return pct if kind == "symmetric" else f"{kind} {pct}"


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """`collect()` or `epochs()` output plus `noise_col`, `variant` and `best_rule` (idempotent)."""
    d = df.copy()
    if "noise_col" not in d:
        d["noise_col"] = [noise_column(k, r, t) for k, r, t in
                          zip(d["noise_kind"], d["noise_rate"], d.get("noise", d["noise_kind"]))]
    if "variant" not in d or "best_rule" not in d:
        specs = {rd: _spec_record(rd) for rd in d.get("run_dir", pd.Series([], dtype=object)).unique()}
        spec_of = [specs.get(rd, {}) for rd in d.get("run_dir", [None] * len(d))]
        fields = {k for s in spec_of for k in s.get("spec", {})} - _NOT_SETTING
        varying = sorted(k for k in fields if len({json.dumps(s.get("spec", {}).get(k)) for s in spec_of}) > 1)
        d["variant"] = [", ".join(f"{k}={s.get('spec', {}).get(k)}" for k in varying) for s in spec_of]
        fallback = d.get("best_epoch_rule", pd.Series([None] * len(d), index=d.index))
        d["best_rule"] = [s.get("reporting", {}).get("test_err_best") or (fb if isinstance(fb, str) else "unknown")
                          for s, fb in zip(spec_of, fallback)]
    return d


def _spec_record(run_dir) -> dict:
    try:
        return json.loads((Path(run_dir) / "spec.json").read_text())
    except (OSError, ValueError, TypeError):
        return {}


def _method_key(label: str):
    base = str(label).split(":")[0]
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), str(label))


def _noise_key(col: str, kind: str, rate):
    return (0 if kind in ("none", "symmetric") else 1, kind, 0.0 if pd.isna(rate) else float(rate), col)


def _model_key(name: str):
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name)))


# ---------------------------------------------------------------- summaries

# An axis of a table: its key column, the columns it determines, and its sort order.
_AXES = {"method_label": (("method",), lambda r: _method_key(r["method_label"])),
         "noise_col": (("noise_kind", "noise_rate"),
                       lambda r: _noise_key(r["noise_col"], r["noise_kind"], r["noise_rate"])),
         "model": ((), lambda r: _model_key(r["model"]))}


def summarise(df: pd.DataFrame, metrics, outer, axes) -> pd.DataFrame:
    """One row per cell of the full grid (product of the `axes` values present in each `outer` group):
    `runs`, `seeds`, `n_expected` (runs in the fullest cell of the group) and per metric
    `<m>_mean`, `<m>_std` (ddof=1, NaN with one value) and `<m>_n` (runs with a value)."""
    d = prepare(df)
    metrics = [m for m in metrics if m in d]
    rows = []
    for okey, g in d.groupby(list(outer), sort=True, dropna=False):
        okey = dict(zip(outer, okey if isinstance(okey, tuple) else (okey,)))
        values = []
        for a in axes:
            u = g[[a, *_AXES[a][0]]].drop_duplicates(a)
            values.append(sorted((r for _, r in u.iterrows()), key=_AXES[a][1]))
        n_expected = int(g.groupby(list(axes), dropna=False).size().max())
        for combo in itertools.product(*values):
            cell = g
            for a, r in zip(axes, combo):
                cell = cell[cell[a] == r[a]]
            row = dict(okey)
            for r in combo:
                row.update(r.to_dict())
            row.update(runs=len(cell), n_expected=n_expected,
                       seeds=", ".join(str(s) for s in sorted(cell["seed"].tolist())) if "seed" in cell else "")
            for m in metrics:
                v = pd.to_numeric(cell[m], errors="coerce").dropna()
                row.update({f"{m}_mean": v.mean() if len(v) else np.nan,
                            f"{m}_std": v.std(ddof=1) if len(v) > 1 else np.nan, f"{m}_n": len(v)})
            rows.append(row)
    return pd.DataFrame(rows)


def table7(df: pd.DataFrame, *, which: str = "last") -> pd.DataFrame:
    """Table VII: test error (`test_err_last` or `test_err_best`, fractions) per setting x method x noise
    rate: columns mean, std (ddof=1; NaN with one seed), n (seeds with a figure), n_expected, seeds, runs.
    Missing combinations are rows with n = 0."""
    if which not in ("last", "best"):
        raise ValueError(f"which must be 'last' or 'best', got {which!r}")
    m = f"test_err_{which}"
    s = summarise(df, [m], SETTING, ("method_label", "noise_col"))
    if s.empty:
        return pd.DataFrame(columns=[*SETTING, "method", "method_label", "noise_col", "noise_kind", "noise_rate",
                                     "runs", "seeds", "n", "n_expected", "mean", "std"])
    return s.rename(columns={f"{m}_mean": "mean", f"{m}_std": "std", f"{m}_n": "n"})


def attack_columns(df: pd.DataFrame) -> list[str]:
    """fgsm_err then every pgd{k}_err present (PGD-20, the paper's, first), at the default budget."""
    found = [c for c in df.columns if _ATTACK.match(c) and df[c].notna().any()]
    return sorted(found, key=lambda c: (c != "fgsm_err", c != "pgd20_err", _model_key(c)))


# ---------------------------------------------------------------- Markdown

def _md(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _cell(mean, std, n, n_expected, runs, scale=100.0, digits=2) -> str:
    if runs == 0:
        return "— (no run)"
    if n == 0 or pd.isna(mean):
        return f"— (no figure; n=0 of {n_expected})"
    s = f"{mean * scale:.{digits}f}" + (f" ± {std * scale:.{digits}f}" if n > 1 else "")
    return s + (f" (n={n} of {n_expected})" if n < n_expected else "")


def _with_paper(s: pd.DataFrame, table: str, metric: str, name: str) -> None:
    """Columns `name` and `name`_std: the paper's figure for each cell of `s`, in our units (fractions)."""
    figs = [paper_data.match(table, r, metric) for _, r in s.iterrows()]
    s[name] = [f.value / f.scale if f else np.nan for f in figs]
    s[f"{name}_std"] = [f.std / f.scale if f and f.std is not None else np.nan for f in figs]


def _paper_text(p, ps, scale=100.0, digits=2) -> str:
    if pd.isna(p):
        return "—"
    return f"{p * scale:.{digits}f}" + ("" if pd.isna(ps) else f" ± {ps * scale:.{digits}f}")


def _paper_note(table: str, g: pd.DataFrame) -> str:
    """Label the paper's column: its full protocol, and whether our runs differ from it."""
    ours = sorted({(int(e), int(t)) for e, t in zip(g["epochs"], g["train_subset"])})
    same = ours == [(paper_data.PAPER_EPOCHS, 0)] or ours == [(paper_data.PAPER_EPOCHS, 50000)]
    mine = "; ".join(f"{e} epochs on " + (f"a {t}-image subset" if t else "the whole training set") for e, t in ours)
    return (f"\n† the paper's {TABLE_NAMES[table]}, under the paper's full protocol "
            f"({paper_data.PROTOCOLS[table]}). "
            f"Ours: {mine}" + (" (the same length and training set)." if same else
                               ": a different setting, so compare the ordering, not the values.") + "\n")


def _select(frame: pd.DataFrame, cols, key) -> pd.DataFrame:
    key = key if isinstance(key, tuple) else (key,)
    return frame[(frame[list(cols)] == pd.Series(dict(zip(cols, key)))).all(axis=1)]


def _title(r, with_model: bool = True) -> str:
    parts = [f"{r['dataset']} / {r['model']}" if with_model else str(r["dataset"]), f"{r['epochs']} epochs",
             f"train subset {r['train_subset']}" if r["train_subset"] else "whole training set",
             f"val split {r['val_split']}" if r["val_split"] else "no val split"]
    return ", ".join(parts) + (f", {r['variant']}" if r.get("variant") else "")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def _cells_text(g: pd.DataFrame, outer, axes) -> str:
    """What a section's cells are (methods, noise, seeds, runs, attack examples) and which are missing."""
    noises = g.drop_duplicates("noise_col").apply(lambda r: _noise_key(r["noise_col"], r["noise_kind"],
                                                                        r["noise_rate"]), axis=1)
    line = (f"- cells: methods {', '.join(sorted(g['method_label'].unique(), key=_method_key))}; "
            f"noise {', '.join(k[-1] for k in sorted(noises))}; "
            f"seeds {', '.join(str(s) for s in sorted(set(g['seed'])))}; {len(g)} run{'s' * (len(g) != 1)}")
    if "model" in axes:
        line += f"; models {', '.join(sorted(g['model'].unique(), key=_model_key))}"
    if "attack_examples" in g and g["attack_examples"].notna().any():
        line += "; attack examples " + ", ".join(str(int(a)) for a in sorted(g["attack_examples"].dropna().unique()))
    if "eval_id" in g:
        line += "; eval ids " + ", ".join(sorted(str(e) for e in g["eval_id"].unique()))
    lines = [line]
    s = summarise(g, [], outer, axes)
    if s["n_expected"].max() == 1:
        lines.append("- one seed per cell: no std shown")
    for _, c in s[s["runs"] < s["n_expected"]].iterrows():
        lines.append(f"- MISSING: {' @ '.join(str(c[a]) for a in axes)}: n={c['runs']} of {c['n_expected']}"
                     + (f" (seeds {c['seeds']})" if c["runs"] else ""))
    return "\n".join(lines) + "\n"


def table7_markdown(df: pd.DataFrame, *, paper: bool = False) -> tuple[str, pd.DataFrame]:
    """(Markdown, long CSV frame) of Table VII for runs `df`: per setting, the last-epoch and the
    best-epoch table; with `paper`, the paper's figure beside each noise column it reports."""
    d = prepare(df)
    parts, frames = [], []
    for which in ("last", "best"):
        t = table7(d, which=which)
        t["which"] = which
        if paper and not t.empty:
            _with_paper(t, "table7", f"test_err_{which}", "paper")
        frames.append(t)
    for key, g in d.groupby(list(SETTING), sort=True, dropna=False):
        parts.append(f"### {_title(g.iloc[0])}\n\n{_cells_text(g, SETTING, ('method_label', 'noise_col'))}\n")
        for t in frames:
            which, tg = t["which"].iloc[0], _select(t, SETTING, key)
            label = ("Last epoch (`test_err_last`)" if which == "last" else
                     "Best epoch (`test_err_best`): " + "; ".join(sorted(g["best_rule"].unique())))
            body = _pivot7(tg, paper)
            if "paper†" in body:
                body += _paper_note("table7", g) + "The OLS code reports the best epoch.\n"
            parts.append(f"**{label}**: top-1 test error (%), mean ± std over seeds\n\n{body}\n")
    return "".join(parts), pd.concat(frames, ignore_index=True)


def _pivot7(t: pd.DataFrame, paper: bool) -> str:
    methods = list(dict.fromkeys(t["method_label"]))
    cols = list(dict.fromkeys(t["noise_col"]))  # summarise() gives the grid in noise order
    by = {(r["method_label"], r["noise_col"]): r for _, r in t.iterrows()}
    best = {}
    for c in cols:  # the best two means of the column
        means = sorted((by[(m, c)]["mean"], m) for m in methods if by[(m, c)]["n"] > 0)
        best[c] = {m for _, m in means[:2]}
    show_paper = {c: paper and t.loc[t["noise_col"] == c, "paper"].notna().any() for c in cols}
    header = ["method"] + [h for c in cols for h in ([c, f"{c} paper†"] if show_paper[c] else [c])]
    rows = []
    for m in methods:
        row = [m]
        for c in cols:
            r = by[(m, c)]
            v = _cell(r["mean"], r["std"], r["n"], r["n_expected"], r["runs"])
            row.append(f"**{v}**" if m in best[c] else v)
            if show_paper[c]:
                row.append(_paper_text(r["paper"], r["paper_std"]))
        rows.append(row)
    return _md(header, rows) + "\nBold: the two lowest means of each column.\n"


def _metric_md(d: pd.DataFrame, table: str, metrics, outer, axes, paper: bool) -> tuple[str, pd.DataFrame]:
    """Tables VIII, XI, XII: one Markdown table per `outer` group, rows = cells of `axes`, a column per
    metric (`metrics`: (column, label, scale, digits)) with the paper's figure beside it when it has one."""
    absent = [m[1] for m in metrics if m[0] not in d or d[m[0]].isna().all()]
    metrics = [m for m in metrics if m[1] not in absent]
    s = summarise(d, [m[0] for m in metrics], outer, axes)
    if paper and not s.empty:
        for col, *_ in metrics:
            _with_paper(s, table, col, f"paper_{col}")
    parts = []
    for key, g in d.groupby(list(outer), sort=True, dropna=False):
        sg = _select(s, outer, key)
        header, show = [a.replace("_col", "").replace("_label", "") for a in axes], {}
        for col, label, *_ in metrics:
            show[col] = paper and sg.get(f"paper_{col}", pd.Series(dtype=float)).notna().any()
            header += [label, f"{label} paper†"] if show[col] else [label]
        rows = []
        for _, r in sg.iterrows():
            row = [str(r[a]) for a in axes]
            for col, _, scale, digits in metrics:
                row.append(_cell(r[f"{col}_mean"], r[f"{col}_std"], r[f"{col}_n"], r["n_expected"], r["runs"],
                                 scale, digits))
                if show[col]:
                    row.append(_paper_text(r[f"paper_{col}"], r[f"paper_{col}_std"], scale, digits))
            rows.append(row)
        note = _paper_note(table, g) if any(show.values()) else ""
        if absent:
            note += f"\nNo run here has a figure for: {', '.join(absent)} (column left out).\n"
        table_md = _md(header, rows) if metrics else "No figures for this table in these runs.\n"
        parts.append(f"### {_title(g.iloc[0], 'model' in outer)}\n\n{_cells_text(g, outer, axes)}\n"
                     f"{table_md}{note}\n")
    return "".join(parts), s


# ---------------------------------------------------------------- figures

def _figure(n_rows: int, n_cols: int, width=4.0, height=3.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width * n_cols, height * n_rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    return fig, axes


def _colors(labels) -> dict:
    import matplotlib
    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(sorted(set(labels), key=_method_key))}


def _noise_panels(d: pd.DataFrame, noisy_only: bool = False) -> list[str]:
    u = d.drop_duplicates("noise_col")
    keys = sorted((_noise_key(r["noise_col"], r["noise_kind"], r["noise_rate"]) for _, r in u.iterrows()))
    return [k[-1] for k in keys if not (noisy_only and k[-1] == "0%")]


def _curves(ax, d: pd.DataFrame, metric: str, colors: dict) -> None:
    """One line per method: the mean over seeds per epoch (percent), a band of ± one std (ddof=1)."""
    if metric not in d:  # an old run directory without this column
        return
    for m in sorted(d["method_label"].unique(), key=_method_key):
        g = d[d["method_label"] == m].groupby("epoch")[metric]
        mean, std, n = g.mean() * 100, g.std(ddof=1) * 100, g.count()
        ax.plot(mean.index, mean.values, color=colors[m], label=f"{m} (n={int(n.max())})")
        ok = std.notna()
        if ok.any():
            ax.fill_between(mean.index[ok], (mean - std)[ok], (mean + std)[ok], color=colors[m], alpha=0.2, lw=0)


def fig4(ep: pd.DataFrame, *, title: str = ""):
    """Fig. 4: training error against the noisy labels (top row) and test error (bottom row) per epoch;
    one column of panels per noise rate, one line per method (mean over seeds, band ± std).
    `ep`: `results.epochs()` for one setting."""
    d = prepare(ep)
    panels = _noise_panels(d)
    fig, axes = _figure(2, max(len(panels), 1))
    colors = _colors(d["method_label"])
    for j, nc in enumerate(panels):
        for i, (metric, what) in enumerate((("train_err", "training error vs noisy labels (%)"),
                                            ("test_err", "test error (%)"))):
            ax = axes[i, j]
            _curves(ax, d[d["noise_col"] == nc], metric, colors)
            ax.set(title=f"{'training' if i == 0 else 'test'} error, noise {nc}", xlabel="epoch", ylabel=what)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.legend(fontsize="small")
    fig.suptitle(title or "Fig. 4: training (noisy labels) and test error per epoch")
    return fig


def fig5(ep: pd.DataFrame, *, title: str = ""):
    """Fig. 5: error on the training images whose label is wrong, measured against the wrong label, per
    epoch (high = the noise was not memorised); one panel per noise rate > 0, one line per method."""
    d = prepare(ep)
    panels = _noise_panels(d, noisy_only=True)
    fig, axes = _figure(1, max(len(panels), 1))
    colors = _colors(d["method_label"])
    for j, nc in enumerate(panels):
        ax = axes[0, j]
        _curves(ax, d[d["noise_col"] == nc], "noisy_err", colors)
        ax.set(title=f"wrong-label images, noise {nc}", xlabel="epoch", ylabel="error vs the wrong labels (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize="small")
    if not panels:
        axes[0, 0].set_title("no runs with label noise")
        axes[0, 0].set_axis_off()
    fig.suptitle(title or "Fig. 5: fit to the wrong labels per epoch")
    return fig


def error_vs_noise(df: pd.DataFrame, *, title: str = ""):
    """Test error (%) against the noise rate, one line per method (mean over seeds, band ± std); left
    panel the last epoch, right panel the best epoch. Symmetric noise (and none) only."""
    d = prepare(df)
    d = d[d["noise_kind"].isin(["none", "symmetric"])]
    fig, axes = _figure(1, 2)
    colors = _colors(d["method_label"])
    for ax, which in zip(axes[0], ("last", "best")):
        t = table7(d, which=which) if len(d) else pd.DataFrame(columns=["method_label"])
        for m in sorted(t["method_label"].unique(), key=_method_key):
            g = t[(t["method_label"] == m) & (t["n"] > 0)].sort_values("noise_rate")
            x, y, s = g["noise_rate"] * 100, g["mean"] * 100, g["std"] * 100
            ax.plot(x, y, marker="o", color=colors[m], label=m)
            for xi, yi, n, ne in zip(x, y, g["n"], g["n_expected"]):  # never hide a short cell
                if n < ne:
                    ax.annotate(f"n={n} of {ne}", (xi, yi), textcoords="offset points", xytext=(4, 4),
                                fontsize="small", color=colors[m])
            ok = s.notna()
            if ok.any():
                ax.fill_between(x[ok], (y - s)[ok], (y + s)[ok], color=colors[m], alpha=0.2, lw=0)
        ax.set(title=f"{which} epoch (test_err_{which})", xlabel="symmetric noise rate (%)",
               ylabel="test error (%)")
        ax.legend(fontsize="small")
    fig.suptitle(title or "Test error against the noise rate")
    return fig


def pool_reliability(rel: pd.DataFrame) -> pd.DataFrame:
    """Sum reliability bins over runs: counts add; confidence and accuracy are count-weighted means.
    `rel`: rows of reliability.csv with `noise_col`; returns one row per noise_col x bin."""
    r = rel.assign(cw=rel["confidence"].fillna(0) * rel["count"], aw=rel["accuracy"].fillna(0) * rel["count"],
                   lower=rel["lower"].round(9), upper=rel["upper"].round(9))
    g = r.groupby(["noise_col", "lower", "upper"], sort=False, as_index=False)[["count", "cw", "aw"]].sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        g["confidence"] = np.where(g["count"] > 0, g["cw"] / g["count"], np.nan)
        g["accuracy"] = np.where(g["count"] > 0, g["aw"] / g["count"], np.nan)
    return g.drop(columns=["cw", "aw"])


def reliability_figure(pooled: pd.DataFrame, *, panels=None, title: str = ""):
    """Reliability diagram, one panel per noise rate: accuracy per confidence bin (bars; empty bins
    left blank), the diagonal of perfect calibration, and the pooled ECE in the title."""
    panels = panels or list(dict.fromkeys(pooled["noise_col"]))
    fig, axes = _figure(1, max(len(panels), 1), width=3.4, height=3.4)
    for ax, nc in zip(axes[0], panels):
        g = pooled[pooled["noise_col"] == nc]
        ok = g["count"] > 0
        ax.bar(g["lower"][ok], g["accuracy"][ok], width=(g["upper"] - g["lower"])[ok], align="edge",
               edgecolor="black", color="tab:blue", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
        ece = (g["count"][ok] * (g["accuracy"][ok] - g["confidence"][ok]).abs()).sum() / max(g["count"].sum(), 1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
               title=f"noise {nc}: pooled ECE {ece * 100:.2f}%")
    fig.suptitle(title or "Reliability diagram")
    return fig


def _save(fig, stem: Path) -> list[str]:
    """`stem`.png and `stem`.pdf (the stem may hold dots, e.g. `reliability_ls_eps_0.1`)."""
    names = [f"{stem.name}.png", f"{stem.name}.pdf"]
    fig.savefig(stem.parent / names[0], dpi=110)
    fig.savefig(stem.parent / names[1])
    return names


def _reliability_rows(d: pd.DataFrame, eval_id: str | None) -> pd.DataFrame:
    frames = []
    for _, r in d.iterrows():
        f = Path(r["run_dir"]) / ("reliability.csv" if eval_id is None else f"evals/{eval_id}.reliability.csv")
        if f.exists():
            frames.append(pd.read_csv(f).assign(noise_col=r["noise_col"], method_label=r["method_label"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------- the report

def _tables(d: pd.DataFrame, paper: bool) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(file stem, title, Markdown body, CSV frame) of Tables VII, VIII, XI and XII."""
    err = "clean_err" if "clean_err" in d and d["clean_err"].notna().any() else "test_err_last"
    cells = ("noise_col", "method_label")
    out = []
    body, csv = table7_markdown(d, paper=paper)
    out.append(("table7", "Table VII: test error under label noise", (
        "Top-1 test error (%), mean ± std over seeds (ddof=1), rows = methods, columns = noise rates. The "
        "last-epoch and the best-epoch figures are separate tables; the best-epoch rule is quoted from the "
        "runs' spec.json.\n\n" + body), csv))
    attacks = [(c, c.replace("_err", "").upper().replace("PGD", "PGD-"), 100.0, 2)
               for c in attack_columns(d) or ["fgsm_err", "pgd20_err"]]  # absent ones are said so
    body, csv = _metric_md(d, "table8", [(err, "clean", 100.0, 2), *attacks], SETTING, cells, paper)
    out.append(("table8", "Table VIII: clean and adversarial error", (
        f"Top-1 error (%) of the final model (last epoch) on clean test images (`{err}`) and under FGSM / "
        "PGD-k at 8/255 on the attack subset (its size is listed as attack examples). PGD-20 is the paper's; "
        "other step counts are shown as recorded.\n\n" + body), csv))
    ece = [("ece", "ECE", 100.0, 2)] + ([("ece_ts", "ECE (temp. scaled)", 100.0, 2)]
                                        if "ece_ts" in d and d["ece_ts"].notna().any() else [])
    body, csv = _metric_md(d, "table11", [(err, "error", 100.0, 2), *ece],
                           [c for c in SETTING if c != "model"], ("noise_col", "model", "method_label"), paper)
    out.append(("table11", "Table XI: error and calibration", (
        f"Top-1 error (%, `{err}`) and ECE (x 100; 15 equal-width bins unless the runs' evaluation said "
        "otherwise) of the final model (last epoch), per model and method.\n\n" + body), csv))
    c10 = d[d["dataset"] == "cifar10"]
    if c10.empty or "c10h_kl_correct" not in c10 or c10["c10h_kl_correct"].isna().all():
        body, csv = ("No CIFAR-10 runs with CIFAR-10H figures in these results: Table XII is empty "
                     "(it exists for CIFAR-10 only).\n"), pd.DataFrame()
    else:
        kl = [(c, lab, 1.0, 4) for c, lab in (("c10h_kl_correct", "KL (correct)"), ("c10h_kl_all", "KL (all)"))]
        body, csv = _metric_md(c10, "table12", [(err, "error", 100.0, 2), *kl, ("c10h_agree", "agree (%)", 100.0, 2)],
                               SETTING, cells, paper)
    out.append(("table12", "Table XII: agreement with CIFAR-10H", (
        f"Top-1 error (%, `{err}`) and mean KL(human ‖ model) on CIFAR-10H over the test images the model "
        "classifies correctly (the paper's figure), over all images, and top-1 agreement with the human "
        "majority; final model (last epoch); CIFAR-10 only.\n\n" + body), csv))
    return out


def _figures(d: pd.DataFrame, ep: pd.DataFrame, out: Path, eval_id) -> list[str]:
    """Write every figure; returns the report's Markdown lines for them."""
    lines, used = [], set()
    groups = list(d.groupby(list(SETTING), sort=True, dropna=False))
    for key, g in groups:
        r = g.iloc[0]
        title = _title(r)
        sfx = "" if len(groups) == 1 else "_" + _slug(
            f"{r['dataset']}_{r['model']}_e{r['epochs']}_sub{r['train_subset']}_val{r['val_split']}_{r['variant']}")
        e = _select(ep, SETTING, key)
        lines.append(f"### {title}\n")
        for stem, fig in (("fig4", fig4(e, title=f"Fig. 4: {title}")), ("fig5", fig5(e, title=f"Fig. 5: {title}")),
                          ("error_vs_noise", error_vs_noise(g, title=f"Test error vs noise: {title}"))):
            names = _save(fig, out / f"{stem}{sfx}")
            lines.append(f"![{stem}]({names[0]}) ([pdf]({names[1]}))\n")
        rel = _reliability_rows(g, eval_id)
        for m in sorted(g["method_label"].unique(), key=_method_key):
            name = f"reliability_{_slug(m)}{sfx}"
            while name in used:
                name += "_"
            used.add(name)
            rm = rel[rel["method_label"] == m] if len(rel) else rel
            if rm.empty:
                lines.append(f"- {m}: no reliability.csv in its runs: no diagram\n")
                continue
            pooled = pool_reliability(rm)
            panels = [p for p in _noise_panels(g[g["method_label"] == m]) if p in set(pooled["noise_col"])]
            names = _save(reliability_figure(pooled, panels=panels, title=f"{m}: {title}"), out / name)
            lines.append(f"![reliability {m}]({names[0]}) ([pdf]({names[1]}))\n")
    return lines


_FIGURE_NOTES = """\
- `fig4`: per epoch (the whole curve from epochs.csv, neither a last- nor a best-epoch figure): top row
  the training error against the **noisy** labels (the paper's Fig. 4 training error), bottom row the test
  error; one column per noise rate, one line per method = mean over seeds, shaded band ± one std.
- `fig5`: per epoch, the error on the training images whose label is wrong, measured against the wrong
  label (`noisy_err`; high = the wrong labels were not memorised); one panel per noise rate > 0.
- `error_vs_noise`: test error against the symmetric noise rate, one line per method (mean ± std over
  seeds); left the last epoch (`test_err_last`), right the best epoch (`test_err_best`, rule above).
- `reliability_<method>`: the final model (last epoch); the calibration bins of all of that method's
  seeds are summed at each noise rate (counts add, confidence and accuracy are count-weighted), one
  panel per noise rate; the title gives the ECE of the pooled bins.
"""


def write_report(results_dir, report_dir, *, paper: bool = False, eval_id: str | None = None) -> Path:
    """Write the tables, figures and report.md for the finished runs under `results_dir` into
    `report_dir`; returns the path of report.md. `paper`: add the OLS paper's numbers beside ours where
    it reports the same dataset, model, method and noise rate. `eval_id`: take the scores from that
    evaluation record (`rbols eval`) instead of each run's own."""
    from .results import collect, epochs, incomplete
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs, bad = collect(results_dir, eval_id=eval_id), incomplete(results_dir)
    md = [f"# Report: {results_dir}\n",
          f"Built from the finished run directories under `{results_dir}` alone (no retraining): "
          f"{len(runs)} finished runs. Markdown tables and figures show percent; the CSV files hold "
          "fractions in [0, 1] like metrics.json (KL divergence as is). A cell with fewer runs than the "
          "fullest cell of its setting says `n=k of N`; a cell with no run says `— (no run)`.\n"]
    if eval_id:
        md.append(f"Scores (clean, attacks, calibration, CIFAR-10H) come from evaluation record `{eval_id}`; "
                  "runs without that record show no figure for them.\n")
    md.append(_incomplete_md(bad))
    if runs.empty:
        md.append("No finished runs: nothing to tabulate.\n")
        for stem in ("table7", "table8", "table11", "table12"):
            (out / f"{stem}.md").write_text(f"# {TABLE_NAMES[stem]}\n\nNo finished runs under `{results_dir}`.\n")
            pd.DataFrame().to_csv(out / f"{stem}.csv", index=False)
        (out / "report.md").write_text("\n".join(md))
        return out / "report.md"
    d = prepare(runs)
    md.append(_overview(d, eval_id))
    for stem, title, body, csv in _tables(d, paper):
        (out / f"{stem}.md").write_text(f"# {title}\n\nFrom `{results_dir}`.\n\n{body}")
        csv.to_csv(out / f"{stem}.csv", index=False)
        md.append(f"## {title}\n\nFiles: [{stem}.md]({stem}.md), [{stem}.csv]({stem}.csv)\n\n{body}")
    ep = epochs(results_dir)
    ep = ep.merge(d[["run_id", "variant", "best_rule"]], on="run_id", how="inner")
    md.append("## Figures\n\n" + _FIGURE_NOTES + "\n" + "\n".join(_figures(d, ep, out, eval_id)))
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


def _overview(d: pd.DataFrame, eval_id) -> str:
    lines = ["## Runs\n"]
    for _, g in d.groupby(list(SETTING), sort=True, dropna=False):
        lines.append(f"- **{_title(g.iloc[0])}**: {len(g)} run{'s' * (len(g) != 1)}; best-epoch rule: "
                     + "; ".join(sorted(g["best_rule"].unique())))
    if eval_id is None and "eval_id" in d and d["eval_id"].nunique(dropna=False) > 1:
        lines.append(f"\n**Warning**: the runs were scored under {d['eval_id'].nunique(dropna=False)} evaluation "
                     "settings (eval ids listed per table); pass `eval_id` to compare them under one.")
    return "\n".join(lines) + "\n"


def _incomplete_md(bad: list[dict]) -> str:
    if not bad:
        return "## Incomplete or failed runs\n\nNone: every run directory with a spec.json has DONE.\n"
    rows = [[b.get("run_id", "?"), b.get("status", "unknown"), b.get("epoch", ""), b.get("reason", "")] for b in bad]
    return ("## Incomplete or failed runs\n\nNot counted anywhere below (no DONE):\n\n"
            + _md(["run", "status", "epoch", "reason"], rows))
