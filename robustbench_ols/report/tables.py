"""Tables of `rbols report`: the runs table, summaries over seeds and the Markdown/CSV tables (see the
package docstring for the conventions)."""
from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pandas as pd

from robustbench_ols.attacks import DEFAULT_EPS, AttackSpec
from robustbench_ols.common.errors import DataError
from robustbench_ols.common.markdown import markdown_table
from robustbench_ols.data.noise import NAMED_KINDS
from robustbench_ols.report import paper as paper_data
from robustbench_ols.spec.ids import LATER_RUN_FIELDS
from robustbench_ols.store.reading import read_record

SETTING = ("dataset", "model", "epochs", "train_subset", "val_split", "variant")
# The paper's row order (Table VII), then anything else alphabetically.
METHOD_ORDER = ("hard", "bootsoft", "boothard", "sce", "gce", "disturblabel", "l2rw", "mwnet", "arazo",
                "pencil", "coteaching", "ls", "ols-single", "ols")
# Spec fields that are not part of a setting: what a table's rows, columns and replicates vary.
_NOT_SETTING = {"method", "method_options", "noise", "seed", "noise_seed", "subset_seed", *SETTING}
TABLE_NAMES = {"table7": "Table VII", "table8": "Table VIII", "table11": "Table XI", "table12": "Table XII"}


# ---------------------------------------------------------------- the runs table

def noise_column(kind: str, rate, text: str = "") -> str:
    """Column label of a noise setting: `0%` (no noise), `40%` (symmetric), `pairflip 20%`, `human:worst`."""
    if kind == "none" or (kind == "symmetric" and rate == 0):
        return "0%"
    if kind in NAMED_KINDS or rate is None or pd.isna(rate):
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
        # a field added to RunSpec after a record was made is at its old value there (spec/ids.py's rule), so
        # a record without it and one with that value are one setting, not two variants
        run_spec = [{**LATER_RUN_FIELDS, **s.get("spec", {})} for s in spec_of]
        fields = {k for s in run_spec for k in s} - _NOT_SETTING
        varying = sorted(k for k in fields if len({json.dumps(s.get(k)) for s in run_spec}) > 1)
        d["variant"] = [", ".join(f"{k}={s.get(k)}" for k in varying) for s in run_spec]
        fallback = d.get("best_epoch_rule", pd.Series([None] * len(d), index=d.index))
        d["best_rule"] = [s.get("reporting", {}).get("test_err_best") or (fb if isinstance(fb, str) else "unknown")
                          for s, fb in zip(spec_of, fallback)]
    return d


def _spec_record(run_dir) -> dict:
    try:
        return read_record(run_dir)
    except (DataError, TypeError):
        return {}


def method_key(label: str):
    base = str(label).split(":")[0]
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), str(label))


def noise_key(col: str, kind: str, rate):
    return (0 if kind in ("none", "symmetric") else 1, kind, 0.0 if pd.isna(rate) else float(rate), col)


def _model_key(name: str):
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name)))


# ---------------------------------------------------------------- summaries

# An axis of a table: its key column, the columns it determines, and its sort order.
_AXES = {"method_label": (("method",), lambda r: method_key(r["method_label"])),
         "noise_col": (("noise_kind", "noise_rate"),
                       lambda r: noise_key(r["noise_col"], r["noise_kind"], r["noise_rate"])),
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


# Table VIII's column order within a budget: the paper's attacks, AutoAttack's, then the worst case over all.
_KIND_ORDER = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square", "autoattack", "worst")


def attack_columns(df: pd.DataFrame) -> list[str]:
    """Every attack figure present: the default budget (8/255) first, then the others from the largest;
    within one, FGSM, PGD-k (PGD-20, the paper's, first), AutoAttack's attacks, AutoAttack, the worst case."""
    found = {c: a for c in df.columns if (a := AttackSpec.from_key(c)) is not None and df[c].notna().any()}

    def order(c):
        a = found[c]
        kind = _KIND_ORDER.index(a.kind) if a.kind in _KIND_ORDER else len(_KIND_ORDER)
        return (a.eps != DEFAULT_EPS, -a.eps, kind, c != "pgd20_err", _model_key(c))
    return sorted(found, key=order)


# ---------------------------------------------------------------- Markdown

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
    ours = sorted({(str(m), int(e), int(t)) for m, e, t in zip(g["model"], g["epochs"], g["train_subset"])})
    paper_model = {"table7": "resnet56b", "table8": "resnet29b", "table12": "resnet29b"}.get(table)
    same = all(e == paper_data.PAPER_EPOCHS and t in (0, 50000) and paper_model in (None, m) for m, e, t in ours)
    mine = "; ".join(f"{m}, {e} epochs on " + (f"a {t}-image subset" if t else "the whole training set")
                     for m, e, t in ours)
    return (f"\n† the paper's {TABLE_NAMES[table]}, under the paper's full protocol "
            f"({paper_data.PROTOCOLS[table]}). "
            f"Ours: {mine}" + (" (the same model, length and training set)." if same else
                               ": a different setting, so compare the ordering, not the values.") + "\n")


def select_rows(frame: pd.DataFrame, cols, key) -> pd.DataFrame:
    key = key if isinstance(key, tuple) else (key,)
    return frame[(frame[list(cols)] == pd.Series(dict(zip(cols, key)))).all(axis=1)]


def setting_title(r, with_model: bool = True) -> str:
    parts = [f"{r['dataset']} / {r['model']}" if with_model else str(r["dataset"]), f"{r['epochs']} epochs",
             f"train subset {r['train_subset']}" if r["train_subset"] else "whole training set",
             f"val split {r['val_split']}" if r["val_split"] else
             f"noisy-validation share {r['noisy_val']:g}" if r.get("noisy_val") else "no val split"]
    return ", ".join(parts) + (f", {r['variant']}" if r.get("variant") else "")


def images_per_run(g: pd.DataFrame) -> list[dict]:
    """The images the runs of one setting trained on, grouped: {train, meta, val, methods}. `train` is
    what the method fits (noisy labels); `meta` the clean images a method such as MW-Net holds out of
    the training subset for itself; `val` the validation split. Empty for records without the counts."""
    if "num_train" not in g or g["num_train"].isna().all():
        return []
    keys = g.reindex(columns=["num_train", "num_meta", "num_val"]).fillna(0).astype(int)  # older records: no meta
    out = []
    for (t, m, v), idx in keys.groupby(["num_train", "num_meta", "num_val"]).groups.items():
        methods = sorted(g.loc[idx, "method_label"].unique(), key=method_key)
        out.append({"train": int(t), "meta": int(m), "val": int(v), "methods": methods})
    return out


def images_text(groups: list[dict], n_methods: int) -> str:
    """`4,000 training images (every method)`; `3,000 training + 1,000 clean meta images (mwnet)`."""
    parts = []
    for x in groups:
        text = f"{x['train']:,} training" + (f" + {x['meta']:,} clean meta" if x["meta"] else "") + \
            (f" + {x['val']:,} validation" if x["val"] else "") + " images"
        who = "every method" if len(groups) == 1 and len(x["methods"]) == n_methods else ", ".join(x["methods"])
        parts.append(f"{text} ({who})")
    return "; ".join(parts)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def _cells_text(g: pd.DataFrame, outer, axes) -> str:
    """What a section's cells are (methods, noise, seeds, runs, attack examples) and which are missing."""
    noises = g.drop_duplicates("noise_col").apply(lambda r: noise_key(r["noise_col"], r["noise_kind"],
                                                                        r["noise_rate"]), axis=1)
    line = (f"- cells: methods {', '.join(sorted(g['method_label'].unique(), key=method_key))}; "
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


def parts_markdown(parts) -> str:
    """Markdown of a table's parts: text as is, each DataFrame (cells as shown) as a Markdown table."""
    return "".join(p if isinstance(p, str) else markdown_table(list(p.columns), p.values.tolist()) for p in parts)


def metric_markdown(d: pd.DataFrame, table: str, metrics, outer, axes, paper: bool) -> tuple[str, pd.DataFrame]:
    """Tables VIII, XI, XII: one Markdown table per `outer` group, rows = cells of `axes`, a column per
    metric (`metrics`: (column, label, scale, digits)) with the paper's figure beside it when it has one."""
    parts, csv = metric_parts(d, table, metrics, outer, axes, paper)
    return parts_markdown(parts), csv


def metric_parts(d: pd.DataFrame, table: str, metrics, outer, axes, paper: bool) -> tuple[list, pd.DataFrame]:
    """`metric_markdown` as parts: Markdown text and DataFrames of the cells as shown."""
    absent = [m[1] for m in metrics if m[0] not in d or d[m[0]].isna().all()]
    metrics = [m for m in metrics if m[1] not in absent]
    s = summarise(d, [m[0] for m in metrics], outer, axes)
    if paper and not s.empty:
        for col, *_ in metrics:
            _with_paper(s, table, col, f"paper_{col}")
    parts = []
    for key, g in d.groupby(list(outer), sort=True, dropna=False):
        sg = select_rows(s, outer, key)
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
        parts += [f"### {setting_title(g.iloc[0], 'model' in outer)}\n\n{_cells_text(g, outer, axes)}\n",
                  pd.DataFrame(rows, columns=header, dtype=object) if metrics
                  else "No figures for this table in these runs.\n", f"{note}\n"]
    return parts, s


