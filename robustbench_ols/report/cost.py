"""Cost and provenance of the runs behind a report, from their records alone: the time per cell by
method, the wall time of the stretches in which the runs were made, and the devices, library versions
and code versions (git commits) that made them."""
from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd

from robustbench_ols.common.errors import DataError
from robustbench_ols.common.markdown import markdown_table
from robustbench_ols.report.tables import SETTING, images_per_run, method_key, setting_title
from robustbench_ols.store.evals import read_setting
from robustbench_ols.store.reading import read_epochs_frame, read_executions, read_record

GAP = timedelta(minutes=10)  # a pause longer than this between two runs starts a new stretch


# Training settings a reader needs beside the setting's name (which has the dataset, model, epochs, subset).
TRAINING = ("batch_size", "lr", "momentum", "nesterov", "weight_decay", "schedule", "milestones", "lr_decay",
            "augment", "amp", "test_every", "test_subset")


def _training(g: pd.DataFrame) -> dict:
    """The TRAINING fields of the runs' spec.json that every run of `g` shares (a field they differ in is
    already in the setting's `variant`)."""
    specs = []
    for rd in g["run_dir"]:
        try:
            specs.append(read_record(rd)["spec"])
        except (DataError, KeyError):
            return {}
    return {k: specs[0].get(k) for k in TRAINING
            if specs and k in specs[0] and all(s.get(k) == specs[0][k] for s in specs)}


def _evaluations(g: pd.DataFrame) -> list[dict]:
    """The scoring settings of the runs' figures: each eval_id with its setting (attacks, subset,
    bins) and how many runs it scored."""
    out: dict[str, dict] = {}
    for _, r in g.iterrows():
        eid = r.get("eval_id")
        if not isinstance(eid, str):
            continue
        if eid not in out:
            out[eid] = {"eval_id": eid, "setting": read_setting(r["run_dir"], eid), "runs": 0}
        out[eid]["runs"] += 1
    return list(out.values())


def run_times(d: pd.DataFrame) -> pd.DataFrame:
    """One row per run: `seconds` (training + final scoring, as recorded in metrics.json), and the start
    and estimated end of its last execution (start + the seconds of the epochs it trained + scoring)."""
    rows = []
    for _, r in d.iterrows():
        ex = read_executions(r["run_dir"])
        train, score = _seconds(r.get("train_seconds")), _seconds(r.get("eval_seconds"))
        start = end = None
        if ex:
            last = ex[-1]
            try:
                start = datetime.strptime(last["started"], "%Y-%m-%dT%H:%M:%S%z")
            except (KeyError, ValueError):  # a record without a readable start: no place in a stretch
                start = None
            try:
                ep = read_epochs_frame(r["run_dir"])
                trained = float(ep.loc[ep["epoch"] >= int(last.get("first_epoch", 1)), "seconds"].sum())
            except (OSError, ValueError, KeyError):
                trained = train
            end = start + timedelta(seconds=trained + score) if start else None
        rows.append({"run_id": r["run_id"], "method_label": r["method_label"], "seconds": train + score,
                     "train_seconds": train, "eval_seconds": score, "start": start, "end": end,
                     "executions": len(ex)})
    return pd.DataFrame(rows)


def per_method(times: pd.DataFrame) -> pd.DataFrame:
    """cells, mean / std / min / max seconds per cell and total seconds, per method (paper order)."""
    g = times.groupby("method_label")["seconds"]
    out = pd.DataFrame({"cells": g.size(), "mean_s": g.mean(), "std_s": g.std(ddof=1), "min_s": g.min(),
                        "max_s": g.max(), "total_s": g.sum()}).reset_index()
    return out.sort_values("method_label", key=lambda s: s.map(method_key)).reset_index(drop=True)


def stretches(times: pd.DataFrame, gap: timedelta = GAP) -> list[dict]:
    """The runs' executions grouped into stretches of work (a pause over `gap` starts a new one), each
    with its first start, last end, wall time and number of runs finished in it."""
    t = times.dropna(subset=["start"]).sort_values("start")
    out: list[dict] = []
    for _, r in t.iterrows():
        if out and r["start"] - out[-1]["end"] <= gap:
            cur = out[-1]
            cur["end"] = max(cur["end"], r["end"])
            cur["runs"] += 1
        else:
            out.append({"start": r["start"], "end": r["end"], "runs": 1})
    for s in out:
        s["wall_s"] = (s["end"] - s["start"]).total_seconds()
    return out


def provenance(d: pd.DataFrame) -> dict[str, dict[str, int]]:
    """How many runs each device, torch version, code version (git commit, `+dirty` when the tree
    had changes) and number of torch threads made; a run resumed elsewhere counts under each of its
    executions' values."""
    seen: dict[str, dict[str, int]] = {"device": {}, "torch": {}, "git": {}, "threads": {}}

    def add(kind, value):
        seen[kind][value] = seen[kind].get(value, 0) + 1
    for _, r in d.iterrows():
        ex = read_executions(r["run_dir"])
        for value in sorted({f"{e.get('device_name', '?')} ({e.get('device', '?')})" for e in ex}):
            add("device", value)
        for value in sorted({(e.get("git") or {}).get("commit", "unknown")[:12]
                             + ("+dirty" if (e.get("git") or {}).get("dirty") else "") for e in ex}):
            add("git", value)
        for value in sorted({str(e.get("torch_threads", "unknown")) for e in ex}):
            add("threads", value)
        try:
            add("torch", read_record(r["run_dir"])["versions"]["torch"])
        except (DataError, KeyError):
            add("torch", "unknown")
    return seen


def _clock(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M UTC%z").replace("UTC+0000", "UTC")


def duration(seconds: float) -> str:
    """`2 h 03 min`, `7 min`."""
    m = round(seconds / 60)
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min"


def cost_markdown(d: pd.DataFrame) -> tuple[str, pd.DataFrame, dict]:
    """The report's "Cost and provenance" section, the per-method table as a CSV frame, and the
    summary written as provenance.json (stretches, wall and cell time, devices, versions)."""
    times = run_times(d)
    lines = ["## Cost and provenance\n",
             "Seconds per cell = training (all epochs, with the per-epoch test pass) + the final scoring "
             "(clean, attacks, calibration, CIFAR-10H), as recorded in each run's metrics.json; start-up and "
             "data loading are not in it but are in the wall times of the stretches below.\n"]
    frames, scale = [], []
    for _, g in d.groupby(list(SETTING), sort=True, dropna=False):
        r = g.iloc[0]
        scale.append({"setting": setting_title(r), "dataset": r["dataset"], "model": r["model"], "epochs": int(r["epochs"]),
                      "train_subset": int(r["train_subset"]), "val_split": int(r["val_split"]),
                      "images": images_per_run(g), "training": _training(g),
                      "attack_examples": sorted({int(a) for a in g.get("attack_examples", pd.Series(dtype=float))
                                                 .dropna()}),
                      "evaluations": _evaluations(g),
                      "methods": sorted(g["method_label"].unique(), key=method_key),
                      "noise": sorted(g["noise"].unique()), "seeds": sorted(int(x) for x in g["seed"].unique()),
                      "runs": len(g)})
        table = per_method(times[times["run_id"].isin(set(g["run_id"]))])
        title = setting_title(g.iloc[0])
        frames.append(table.assign(setting=title))
        rows = [[m, c, f"{a:.0f}", "—" if pd.isna(s) else f"{s:.0f}", f"{lo:.0f}–{hi:.0f}", duration(t)]
                for m, c, a, s, lo, hi, t in table[["method_label", "cells", "mean_s", "std_s", "min_s", "max_s",
                                                    "total_s"]].itertuples(index=False)]
        lines += [f"### {title}\n", markdown_table(["method", "cells", "mean s / cell", "std", "range", "total"], rows)]
    lines.append(f"All {len(times)} runs: {duration(times['seconds'].sum())} of cell time, "
                 f"{times['seconds'].mean():.0f} s per cell on average.\n")
    st = stretches(times)
    if st:
        lines.append(f"Wall time: {duration(sum(s['wall_s'] for s in st))} in {len(st)} stretch"
                     f"{'es' * (len(st) != 1)} of work (a pause over {GAP.seconds // 60} min between runs starts "
                     "a new one; the end of a run is its last execution's start + its epochs' and scoring's "
                     "seconds):\n")
        lines += [f"- {_clock(s['start'])} to {_clock(s['end'])}: {s['runs']} run{'s' * (s['runs'] != 1)}, "
                  f"{duration(s['wall_s'])}" for s in st]
        lines.append("")
    prov = provenance(d)
    for kind, title in (("device", "Devices"), ("torch", "torch"), ("git", "Code (git commit)"),
                        ("threads", "torch threads")):
        lines.append(f"- {title}: " + "; ".join(f"`{k}` ({v} run{'s' * (v != 1)})"
                                                for k, v in sorted(prov[kind].items())))
    summary = {"scale": scale, "runs": len(times), "cell_seconds": float(times["seconds"].sum()),
               "mean_cell_seconds": float(times["seconds"].mean()),
               "wall_seconds": float(sum(s["wall_s"] for s in st)), "pause_splits_stretch_s": GAP.seconds,
               "stretches": [{"start": s["start"].isoformat(), "end": s["end"].isoformat(), "runs": s["runs"],
                              "wall_s": s["wall_s"]} for s in st], **prov}
    return "\n".join(lines) + "\n", pd.concat(frames, ignore_index=True), summary


def _seconds(value) -> float:
    """A recorded duration; 0 where the run has none (a run without the chosen evaluation record: NaN)."""
    return 0.0 if value is None or pd.isna(value) else float(value)
