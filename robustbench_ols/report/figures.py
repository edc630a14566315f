"""Figures of `rbols report`: Fig. 4, Fig. 5, error against noise rate and reliability diagrams, on
`matplotlib.figure.Figure` with the Agg canvas (pyplot's global state is never touched)."""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from robustbench_ols.report.table7 import table7
from robustbench_ols.report.tables import method_key, noise_key, prepare
from robustbench_ols.store.evals import eval_record_path
from robustbench_ols.store.reading import read_arrays, read_frame

# ---------------------------------------------------------------- figures

def _figure(n_rows: int, n_cols: int, width=4.0, height=3.2):
    fig = Figure(figsize=(width * n_cols, height * n_rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    return fig, axes


def _colors(labels) -> dict:
    methods = sorted(set(labels), key=method_key)
    if len(methods) <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return {m: cmap(i) for i, m in enumerate(methods)}
    # tab20's ten dark colours first, then its light ones: a colour of its own for up to 20 methods, and
    # the first ten as distinct as tab10's
    cmap = matplotlib.colormaps["tab20"]
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    return {m: cmap(order[i % 20]) for i, m in enumerate(methods)}


def _legend(fig, axes) -> None:
    """One legend for the whole figure, outside the panels on the right (the panels share their
    methods; a legend in each panel would cover the curves)."""
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            lab = lab.split(" (n=")[0]  # the seeds per panel are written in the panel (see _curves)
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize="small")


def noise_panels(d: pd.DataFrame, noisy_only: bool = False) -> list[str]:
    u = d.drop_duplicates("noise_col")
    keys = sorted((noise_key(r["noise_col"], r["noise_kind"], r["noise_rate"]) for _, r in u.iterrows()))
    return [k[-1] for k in keys if not (noisy_only and k[-1] == "0%")]


def curve_stats(d: pd.DataFrame, metric: str) -> dict:
    """{method: (mean, std, seeds, sparse)}: per epoch the mean over seeds and the std (ddof=1), in
    percent, on the epochs with a figure; `sparse` when some epochs have none (--test-every K).
    Empty when `d` has no such column (an old run directory). Fig. 4/5 here and in the HTML page."""
    out = {}
    if metric not in d:
        return out
    for m in sorted(d["method_label"].unique(), key=method_key):
        g = d[d["method_label"] == m].groupby("epoch")[metric]
        mean, std, n = g.mean() * 100, g.std(ddof=1) * 100, g.count()
        out[m] = (mean[mean.notna()], std[mean.notna()], int(n.max()), bool(mean.isna().any()))
    return out


def _curves(ax, d: pd.DataFrame, metric: str, colors: dict) -> None:
    """One line per method: the mean over seeds per epoch (percent), a band of ± one std (ddof=1)."""
    seeds = {}
    for m, (mean, std, n, sparse) in curve_stats(d, metric).items():
        seeds[m] = n  # sparse: only the tested epochs, drawn with markers
        ax.plot(mean.index, mean.values, color=colors[m], label=f"{m} (n={n})", marker="." if sparse else None)
        ok = std.notna()
        if ok.any():
            ax.fill_between(mean.index[ok], (mean - std)[ok], (mean + std)[ok], color=colors[m], alpha=0.2, lw=0)
    if seeds:  # never hide a short cell: the seeds per method, in the panel
        top = max(seeds.values())
        short = {k: [m for m, v in seeds.items() if v == k] for k in sorted(set(seeds.values()) - {top})}
        text = f"n={top} seed{'s' * (top != 1)}" + "".join(f"\nn={k}: {', '.join(ms)}" for k, ms in short.items())
        ax.text(0.99, 0.99, text, transform=ax.transAxes, ha="right", va="top", fontsize="x-small", color="dimgray")


def fig4(ep: pd.DataFrame, *, title: str = ""):
    """Fig. 4: training error against the noisy labels (top row) and test error (bottom row) per epoch;
    one column of panels per noise rate, one line per method (mean over seeds, band ± std).
    `ep`: `results.epochs()` for one setting."""
    d = prepare(ep)
    panels = noise_panels(d)
    fig, axes = _figure(2, max(len(panels), 1))
    colors = _colors(d["method_label"])
    for j, nc in enumerate(panels):
        sparse = d.loc[d["noise_col"] == nc, "test_err"].isna().any()
        test_label = "test error (%), tested epochs" if sparse else "test error (%)"
        for i, (metric, what) in enumerate((("train_err", "training error vs noisy labels (%)"),
                                            ("test_err", test_label))):
            ax = axes[i, j]
            _curves(ax, d[d["noise_col"] == nc], metric, colors)
            ax.set(title=f"{'training' if i == 0 else 'test'} error, noise {nc}", xlabel="epoch", ylabel=what)
            ax.xaxis.get_major_locator().set_params(integer=True)
    _legend(fig, axes)
    fig.suptitle(title or "Fig. 4: training (noisy labels) and test error per epoch")
    return fig


def fig5(ep: pd.DataFrame, *, title: str = ""):
    """Fig. 5: error on the training images whose label is wrong, measured against the wrong label, per
    epoch (high = the noise was not memorised); one panel per noise rate > 0, one line per method."""
    d = prepare(ep)
    panels = noise_panels(d, noisy_only=True)
    fig, axes = _figure(1, max(len(panels), 1))
    colors = _colors(d["method_label"])
    for j, nc in enumerate(panels):
        ax = axes[0, j]
        _curves(ax, d[d["noise_col"] == nc], "noisy_err", colors)
        ax.set(title=f"wrong-label images, noise {nc}", xlabel="epoch", ylabel="error vs the wrong labels (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)
    _legend(fig, axes)
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
        for m in sorted(t["method_label"].unique(), key=method_key):
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
    _legend(fig, axes)
    fig.suptitle(title or "Test error against the noise rate")
    return fig


def sweep_columns(df: pd.DataFrame) -> list[tuple[float, str]]:
    """(budget in /255 units, column) of the gradient-masking checks' eps sweep, by budget."""
    found = [(float(c[len("sweep_eps"):-len("_err")]), c) for c in df.columns
             if c.startswith("sweep_eps") and c.endswith("_err") and df[c].notna().any()]
    return sorted(found)


def robust_vs_eps(df: pd.DataFrame, *, title: str = ""):
    """Robust error (%) against the budget eps (the checks' PGD-20 sweep, alpha = eps/4), one panel per
    noise rate, one line per method (mean over seeds, band ± std); x on a symmetric-log scale so that
    eps = 0 (the clean error of the checked images) and 64/255 both show. None without a sweep."""
    d = prepare(df)
    cols = sweep_columns(d)
    if not cols:
        return None
    panels = noise_panels(d)
    fig, axes = _figure(1, len(panels))
    colors = _colors(d["method_label"])
    budgets = np.array([e for e, _ in cols])
    for ax, panel in zip(axes[0], panels):
        g = d[d["noise_col"] == panel]
        for m in sorted(g["method_label"].unique(), key=method_key):
            v = g[g["method_label"] == m][[c for _, c in cols]].astype(float) * 100
            y, s = v.mean().to_numpy(), v.std(ddof=1).to_numpy()
            ax.plot(budgets, y, marker="o", color=colors[m], label=f"{m} (n={len(v)})" if len(v) > 1 else m)
            ok = ~np.isnan(s)
            if ok.any():
                ax.fill_between(budgets[ok], (y - s)[ok], (y + s)[ok], color=colors[m], alpha=0.2, lw=0)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(budgets, [f"{e:g}" for e in budgets])
        ax.set(title=f"noise {panel}", xlabel="eps (/255)", ylabel="robust error (%)", ylim=(-2, 102))
    _legend(fig, axes)
    fig.suptitle(title or "Robust error against eps")
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


def reliability_figure(pooled: pd.DataFrame, *, panels=None, title: str = "", smooth: dict | None = None):
    """Reliability diagram, one panel per noise rate: accuracy per confidence bin (bars; empty bins
    left blank), the diagonal of perfect calibration, and the pooled ECE in the title. With `smooth`
    ({noise_col: (confidence, correct)} of every test image of the pooled runs), a second row draws
    relplot's smoothed reliability diagram of the same images (Blasiok & Nakkiran 2024): the kernel-smoothed
    accuracy against confidence with its bootstrap band, and the smooth ECE."""
    panels = panels or list(dict.fromkeys(pooled["noise_col"]))
    rows = 2 if smooth else 1
    fig, axes = _figure(rows, max(len(panels), 1), width=3.4, height=3.4)
    for ax, nc in zip(axes[0], panels):
        g = pooled[pooled["noise_col"] == nc]
        ok = g["count"] > 0
        ax.bar(g["lower"][ok], g["accuracy"][ok], width=(g["upper"] - g["lower"])[ok], align="edge",
               edgecolor="black", color="tab:blue", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
        ece = (g["count"][ok] * (g["accuracy"][ok] - g["confidence"][ok]).abs()).sum() / max(g["count"].sum(), 1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
               title=f"noise {nc}: pooled ECE {ece * 100:.2f}%")
    for ax, nc in zip(axes[1] if smooth else [], panels):
        if nc in smooth:
            _smooth_panel(ax, *smooth[nc])
            ax.set_title(f"noise {nc}: smoothed ({len(smooth[nc][0]):,} images)", fontsize=10)
        else:
            ax.set_axis_off()
    fig.suptitle(title or "Reliability diagram")
    return fig


def _smooth_panel(ax, confidence, correct) -> None:
    """relplot's smoothed reliability diagram on `ax`, without relplot's global matplotlib style; its
    bootstrap band is drawn from numpy's global generator, seeded here (and restored) so that the same
    records give the same figure."""
    import relplot  # scikit-learn and seaborn come with it: imported only when a diagram is drawn
    state = np.random.get_state()
    np.random.seed(0)
    try:
        with warnings.catch_warnings():
            # relplot 1.0.3's pandas calls, deprecated in pandas 3 (FutureWarning; Pandas4Warning, a DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            diagram = relplot.prepare_rel_diagram(np.asarray(confidence, dtype=np.float64),
                                                  np.asarray(correct, dtype=np.float64), report_CE_std=False)
            relplot.plot_rel_diagram(diagram, fig=ax.figure, ax=ax, use_default_style=False)
    finally:
        np.random.set_state(state)
    ax.set(xlabel="confidence", ylabel="accuracy")


def prediction_rows(d: pd.DataFrame, eval_id: str | None) -> dict:
    """{(method_label, noise_col): (confidence, correct)} pooled over the runs of `d` that recorded each
    test image's prediction (`evals/<eval_id>.predictions.npz`, the run's own scoring when `eval_id` is
    None); runs scored before these files existed are left out."""
    out: dict = {}
    for _, r in d.iterrows():
        eid = eval_id or r.get("eval_id")
        z = read_arrays(eval_record_path(r["run_dir"], eid, "predictions.npz")) if isinstance(eid, str) else None
        if z is None:
            continue
        key = (r["method_label"], r["noise_col"])
        conf, corr = out.get(key, (np.empty(0), np.empty(0)))
        out[key] = (np.concatenate([conf, z["confidence"]]), np.concatenate([corr, z["correct"]]))
    return out


PNG_DPI = 110


def save_figure(fig, stem: Path, formats=("png", "pdf")) -> list[str]:
    """`stem`.png, `stem`.pdf, ... one file per format (the stem may hold dots, e.g.
    `reliability_ls_eps_0.1`); returns the file names in the order of `formats`."""
    names = [f"{stem.name}.{f}" for f in formats]
    for name, f in zip(names, formats):
        fig.savefig(stem.parent / name, **({"dpi": PNG_DPI} if f == "png" else {}))
    return names


def reliability_rows(d: pd.DataFrame, eval_id: str | None) -> pd.DataFrame:
    """The reliability bins of the runs of `d` under setting `eval_id` (each row's own `eval_id` when None: its
    own scoring, or the one its checkpoint selection read)."""
    frames = []
    for _, r in d.iterrows():
        eid = eval_id or r.get("eval_id")
        f = eval_record_path(r["run_dir"], eid, "reliability.csv") if isinstance(eid, str) else \
            Path(r["run_dir"]) / "reliability.csv"
        if f.exists():
            frames.append(read_frame(f).assign(noise_col=r["noise_col"], method_label=r["method_label"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


