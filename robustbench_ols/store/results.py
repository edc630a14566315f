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

import dataclasses
from pathlib import Path

import pandas as pd

from robustbench_ols.common.errors import RbolsError, SpecError
from robustbench_ols.data.noise import NoiseSpec
from robustbench_ols.methods import method_label
from robustbench_ols.spec import EvalSpec, holds_noisy_val
from robustbench_ols.store.evals import eval_record_path, metrics_for, read_eval_record
from robustbench_ols.store.reading import (
    incomplete,
    read_epochs,
    read_epochs_frame,
    read_metrics,
    read_record,
    reading_once,
    run_dirs,
)
from robustbench_ols.train.selection import selected_figures

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
            "noise_rate": float("nan") if ns.named else ns.rate,
            "seed": s["seed"], "epochs": s["epochs"], "epochs_planned": s["epochs"],
            "train_subset": s["train_subset"], "val_split": s.get("val_split", 0), "noisy_val": s.get("noisy_val", 0.0),
            "has_noisy_val": holds_noisy_val(s)}


def _read_runs(root, eval_id, select: str = "last") -> tuple[list[dict], list[dict]]:
    """(rows of the readable finished runs, [{run_id, reason}] of the unreadable ones)."""
    rows, bad = [], []
    for d in run_dirs(root):
        try:
            ident = _identity(d)
            rows.append({**ident, **metrics_for(d, eval_id or _own_setting_at(d, select)),
                         **selected_figures(read_epochs(d), noisy_val=ident["has_noisy_val"])})
        except (RbolsError, KeyError, TypeError, ValueError) as e:
            bad.append({"run_id": d.name, "reason": str(e)})
    return rows, bad


# An eval_id no record has: a run without a record of its own setting has no score at another epoch.
NO_RECORD = "no-record"


def _own_setting_at(run_dir: Path, select: str) -> str | None:
    """The eval_id of the run's own scoring setting (metrics.json's) at the epoch `select` chooses, None when
    that is the setting metrics.json holds. A run scored at another epoch than `select` after training (a
    grid run with --select) gets the record at `select`'s epoch, or no score."""
    own_id = read_metrics(run_dir).get("eval_id")
    own = read_eval_record(run_dir, own_id) if own_id else None
    if own is None:  # scored before evaluation records existed: its own scores are the last epoch's
        return None if select == "last" else NO_RECORD
    wanted = dataclasses.replace(EvalSpec.from_dict(own["eval"]), select=select).eval_id
    return None if wanted == own_id else wanted


class ResultSet:
    """The finished runs under one results folder, read for one command: `rbols report`, `rbols audit` and the
    claims take their rows, learning curves and checks from it. Each file of its run folders is read once
    (store/reading.py), and each table of rows is built once, however many tables and figures ask."""

    def __init__(self, root, where: dict | None = None):
        """`where`: {column: allowed values}, e.g. an audit's grid's datasets, models and noise settings, so that
        runs of other settings in the same folder (CIFAR-10N cells beside symmetric ones) never enter its rows."""
        self.given, self.root, self.where = root, Path(root), dict(where or {})
        self.files: dict = {}  # path -> text, filled by store.reading_once
        self._rows: dict = {}  # (eval_id, select) -> (rows, unreadable)

    @classmethod
    def of(cls, results) -> "ResultSet":
        """`results` itself when it is a ResultSet, else the ResultSet of the folder it names."""
        return results if isinstance(results, ResultSet) else cls(results)

    def __str__(self) -> str:  # the folder as the user named it (reports and audits print it)
        return str(self.given)

    def __fspath__(self) -> str:
        return str(self.root)

    def reading(self):
        """Within: every read of a file under this folder is served once (store.reading_once)."""
        return reading_once(self.files)

    def run_dirs(self) -> list[Path]:
        return run_dirs(self.root)

    def _read(self, eval_id, select) -> tuple[list[dict], list[dict]]:
        if (eval_id, select) not in self._rows:
            with self.reading():
                self._rows[eval_id, select] = _read_runs(self.root, eval_id, select)
        return self._rows[eval_id, select]

    def runs(self, *, eval_id: str | None = None, select: str = "last") -> pd.DataFrame:
        """One row per finished, readable run (`unreadable` lists the others). With `eval_id`, the scores come
        from that evaluation record (`evals/<eval_id>.json`) when the run's own scoring was another setting; runs
        without such a record have NaN scores for it. Without it, `select` other than `last` takes each run's
        own setting scored at the epoch the selection chooses (selection.py). Every row also has the test error,
        epoch and wrong-label error each selection chooses (`test_err_noisy_val`, `epoch_oracle`, ...), read
        from epochs.csv."""
        df = pd.DataFrame(self._read(eval_id, select)[0])
        for column, allowed in self.where.items():
            if not df.empty:
                df = df[df[column].isin(list(allowed))]
        if df.empty:
            return pd.DataFrame(columns=[*ID_COLUMNS, "run_dir"])
        return df.sort_values(["dataset", "model", "method_label", "noise", "seed"],
                              kind="stable").reset_index(drop=True)

    def unreadable(self, *, eval_id: str | None = None, select: str = "last") -> list[dict]:
        """Finished runs whose records cannot be read: [{run_id, reason}] (the reason names the file and the fix)."""
        return self._read(eval_id, select)[1]

    def incomplete(self) -> list[dict]:
        with self.reading():
            return incomplete(self.root)

    def epochs(self) -> pd.DataFrame:
        """Every finished, readable run's epochs.csv (long format) with the run's identifying columns."""
        frames = []
        skip = {b["run_id"] for b in self.unreadable()}
        with self.reading():
            for d in self.run_dirs():
                if d.name in skip:
                    continue
                e = read_epochs_frame(d)
                ident = _identity(d)
                for k in ID_COLUMNS:
                    e[k] = ident[k]
                frames.append(e)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*ID_COLUMNS, "epoch"])

    def check_readable_at(self, select: str, eval_id=None) -> None:
        """SpecError before a report is written whose selection its runs cannot give: noisy-val without a noisy
        validation split, or an `--eval-id` scored at another selection than `--select`."""
        runs = self.runs(eval_id=eval_id)
        if select == "noisy-val" and not ("has_noisy_val" in runs and runs.has_noisy_val.any()):
            raise SpecError(f"--select noisy-val: no run under {self} holds a noisy validation split "
                            "(--noisy-val); use --select last or oracle")
        if eval_id:
            with self.reading():
                scored = {read_eval_record(Path(d), eval_id)["eval"].get("select", "last") for d in runs.run_dir
                          if eval_record_path(d, eval_id).exists()}
            if scored - {select}:
                raise SpecError(f"--eval-id {eval_id} scored the epoch of --select {', '.join(sorted(scored))}, not "
                                f"--select {select}: give both the same (or leave --eval-id out: each run's own "
                                "setting at the selected epoch)")


def collect(root, *, eval_id: str | None = None, select: str = "last") -> pd.DataFrame:
    """`ResultSet(root).runs(...)`: one row per finished, readable run under `root`."""
    return ResultSet.of(root).runs(eval_id=eval_id, select=select)


def unreadable(root, *, eval_id: str | None = None, select: str = "last") -> list[dict]:
    return ResultSet.of(root).unreadable(eval_id=eval_id, select=select)


def epochs(root) -> pd.DataFrame:
    return ResultSet.of(root).epochs()
