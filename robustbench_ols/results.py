"""Read finished run directories into tables: the one place `report` and `audit` get their numbers.

`collect(root)` gives one row per finished run (a directory `<root>/<run_id>/` with `DONE`): the spec
flattened, `method_label` (the method name, plus the options that differ from its defaults), the
noise kind and rate, and every figure of `metrics.json`. `epochs(root)` gives every run's
`epochs.csv`, long format, with the same identifying columns. Unfinished or failed directories are
never counted; `store.incomplete(root)` lists them so a report can say what is missing. A finished run
whose records cannot be read (a corrupt metrics.json, spec.json or evaluation record) is left out of
both and listed by `unreadable(root)` with the reason, so one bad file never stops a report.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import RbolsError
from .methods import method_label
from .noise import NoiseSpec
from .evals_store import metrics_for
from .store import read_record, run_dirs

ID_COLUMNS = ("run_id", "dataset", "model", "method", "method_label", "noise", "noise_kind", "noise_rate",
              "seed", "epochs", "train_subset", "val_split")


def _identity(d: Path) -> dict:
    rec = read_record(d)
    s = rec["spec"]
    ns = NoiseSpec.parse(s["noise"])
    return {"run_id": d.name, "run_dir": str(d), "dataset": s["dataset"], "model": s["model"],
            "method": s["method"], "method_label": rec.get("method", {}).get("label")
            or method_label(s["method"], s.get("method_options", {})),  # records before spec.json named it
            "noise": s["noise"], "noise_kind": ns.kind,
            "noise_rate": ns.rate if ns.kind != "human" else float("nan"),
            "seed": s["seed"], "epochs": s["epochs"], "epochs_planned": s["epochs"],
            "train_subset": s["train_subset"], "val_split": s.get("val_split", 0)}


def _read_runs(root, eval_id) -> tuple[list[dict], list[dict]]:
    """(rows of the readable finished runs, [{run_id, reason}] of the unreadable ones)."""
    rows, bad = [], []
    for d in run_dirs(root):
        try:
            rows.append({**_identity(d), **metrics_for(d, eval_id)})
        except (RbolsError, KeyError, TypeError, ValueError) as e:
            bad.append({"run_id": d.name, "reason": str(e)})
    return rows, bad


def unreadable(root, *, eval_id: str | None = None) -> list[dict]:
    """Finished runs under `root` whose records cannot be read: [{run_id, reason}] (the reason names the
    file and the fix)."""
    return _read_runs(root, eval_id)[1]


def collect(root, *, eval_id: str | None = None) -> pd.DataFrame:
    """One row per finished, readable run under `root` (`unreadable` lists the others). With `eval_id`,
    the scores come from that evaluation record (`evals/<eval_id>.json`) when the run's own scoring was
    another setting; runs without such a record have NaN scores for it."""
    df = pd.DataFrame(_read_runs(root, eval_id)[0])
    if df.empty:
        return pd.DataFrame(columns=[*ID_COLUMNS, "run_dir"])
    return df.sort_values(["dataset", "model", "method_label", "noise", "seed"], kind="stable").reset_index(drop=True)


def epochs(root) -> pd.DataFrame:
    """Every finished run's epochs.csv (long format) with the run's identifying columns."""
    frames = []
    skip = {b["run_id"] for b in unreadable(root)}
    for d in run_dirs(root):
        if d.name in skip:
            continue
        e = pd.read_csv(d / "epochs.csv")
        ident = _identity(d)
        for k in ID_COLUMNS:
            e[k] = ident[k]
        frames.append(e)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*ID_COLUMNS, "epoch"])


def reliability(run_dir) -> pd.DataFrame:
    """The run's reliability.csv (empty bins have NaN confidence and accuracy)."""
    return pd.read_csv(Path(run_dir) / "reliability.csv")
