"""Table VII: test error under label noise, a table per checkpoint selection (selection.py), the one a report
uses first and named."""
from __future__ import annotations

import pandas as pd

from robustbench_ols.report.tables import (
    SETTING,
    _cell,
    _cells_text,
    _paper_note,
    _paper_text,
    _with_paper,
    parts_markdown,
    prepare,
    select_rows,
    setting_title,
    summarise,
)
from robustbench_ols.train.selection import SELECTIONS, suffix


def table7(df: pd.DataFrame, *, which: str = "last") -> pd.DataFrame:
    """Table VII: test error at the epoch a checkpoint selection chooses (`which`: last, noisy-val, oracle;
    or best, each run's own rule: `test_err_best`), fractions, per setting x method x noise rate: columns
    mean, std (ddof=1; NaN with one seed), n (seeds with a figure), n_expected, seeds, runs. Missing
    combinations are rows with n = 0."""
    if which not in (*SELECTIONS, "best"):
        raise ValueError(f"which must be one of {', '.join(SELECTIONS)} or best, got {which!r}")
    m = f"test_err_{suffix(which)}"
    s = summarise(df, [m], SETTING, ("method_label", "noise_col"))
    if s.empty:
        return pd.DataFrame(columns=[*SETTING, "method", "method_label", "noise_col", "noise_kind", "noise_rate",
                                     "runs", "seeds", "n", "n_expected", "mean", "std"])
    return s.rename(columns={f"{m}_mean": "mean", f"{m}_std": "std", f"{m}_n": "n"})


def table7_markdown(df: pd.DataFrame, *, paper: bool = False, select: str = "last") -> tuple[str, pd.DataFrame]:
    """(Markdown, long CSV frame) of Table VII for runs `df`: per setting, a table per checkpoint selection
    (`select`'s first); with `paper`, the paper's figure beside each noise column it reports."""
    parts, csv = table7_parts(df, paper=paper, select=select)
    return parts_markdown(parts), csv


# Table VII's heading of each checkpoint selection (selection.py)
SELECTION_TITLES = {
    "last": "Last epoch (`test_err_last`)",
    "noisy-val": "Noisy-validation epoch (`test_err_noisy_val`): the epoch with the lowest error on the share "
                 "of the noisy training set each run held out (its noisy labels; no clean label chooses it)",
    "oracle": "Oracle epoch, optimistic (`test_err_oracle`): the epoch with the lowest test error, chosen on the "
              "test set it is scored on (the OLS code's reporting)",
}


def table7_parts(df: pd.DataFrame, *, paper: bool = False, select: str = "last") -> tuple[list, pd.DataFrame]:
    """`table7_markdown` as parts: Markdown text and DataFrames of the cells as shown (`**x**`: bold). The
    table of checkpoint selection `select` first, marked as the one used, then the others the runs allow."""
    d = prepare(df)
    parts, frames = [], []
    # runs whose validation split has clean labels: their own best epoch (chosen on it) as well
    clean_val = "has_noisy_val" in d and ((d.val_split > 0) & ~d.has_noisy_val.astype(bool)).any()
    for which in dict.fromkeys([select, *SELECTIONS, *(["best"] if clean_val else [])]):
        col = f"test_err_{suffix(which)}"
        if col not in d or d[col].isna().all():
            continue  # e.g. noisy-val without a noisy validation split
        t = table7(d, which=which)
        t["which"] = which
        if paper and not t.empty:
            _with_paper(t, "table7", col, "paper")
        frames.append(t)
    for key, g in d.groupby(list(SETTING), sort=True, dropna=False):
        parts.append(f"### {setting_title(g.iloc[0])}\n\n{_cells_text(g, SETTING, ('method_label', 'noise_col'))}\n")
        for t in frames:
            which, tg = t["which"].iloc[0], select_rows(t, SETTING, key)
            label = (SELECTION_TITLES[which] if which != "best" else "Best epoch (`test_err_best`): "
                     + "; ".join(sorted(g["best_rule"].unique())))
            label += f" — the selection used (`--select {which}`)" if which == select else ""
            table = _pivot7(tg, paper)
            note = "\nBold: the two lowest means of each column.\n"
            if any("paper†" in c for c in table.columns):
                note += _paper_note("table7", g) + "The OLS code reports the best epoch.\n"
            parts += [f"**{label}**: top-1 test error (%), mean ± std over seeds\n\n", table, note + "\n"]
    return parts, pd.concat(frames, ignore_index=True)


def _pivot7(t: pd.DataFrame, paper: bool) -> pd.DataFrame:
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
    return pd.DataFrame(rows, columns=header, dtype=object)


