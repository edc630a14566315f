"""A run's evaluation records, `<run_dir>/evals/`: one setting's record `<eval_id>.json` (+ `.reliability.csv`,
`.predictions.npz`, `.robust.npz`), written once and never overwritten, and the transfer check's add-ons
`<eval_id>.transfer-<surrogate run_id>.json` (+ `.npz`: each attacked image's outcome).

The transfer check needs another run's model (a hard-label surrogate: transfer_check.py), which may finish
after this run was scored, so its figures live in an add-on of their own, written when the surrogate exists,
and every reader gets a record with them merged in (`read_eval_record`, `metrics_for`): the `transfer_*`
figures, and `masking_suspected` / `masking_checks` with `transfer` added when the check failed.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from robustbench_ols.common.provenance import device_name, git_info, now, versions
from robustbench_ols.models import precision
from robustbench_ols.store import (
    RELIABILITY_COLUMNS,
    read_json,
    read_metrics,
    write_csv,
    write_json,
    write_npz,
)
from robustbench_ols.store.reading import read_text

_RECORD = re.compile(r"[0-9a-f]{12}\.json")  # a setting's own record, not an add-on


def eval_record_path(run_dir: Path, eval_id: str, suffix: str = "json") -> Path:
    """evals/<eval_id>.json, or the record's file of another `suffix`: reliability.csv, predictions.npz (each test
    image's top-label confidence and correctness), robust.npz (each attacked image's outcome per attack)."""
    return Path(run_dir) / "evals" / f"{eval_id}.{suffix}"


def read_setting(run_dir: Path, eval_id: str) -> dict:
    """The scoring setting (EvalSpec.to_dict) of evals/<eval_id>.json; {} when it is missing or unreadable."""
    try:
        return json.loads(read_text(eval_record_path(run_dir, eval_id)))["eval"]
    except (OSError, ValueError, KeyError):
        return {}


def write_eval_record(run_dir: Path, ev, scores, channels_last: bool, device) -> Path:
    """evals/<eval_id>.json (+ .reliability.csv, + .predictions.npz: each test image's top-label confidence
    and correctness, + .robust.npz: each attacked image's outcome under each attack): the figures of one
    evaluation setting (`evaluation.Scores`), with how and where they were computed. The JSON is written
    last: its presence means the record is whole."""
    folder = run_dir / "evals"
    folder.mkdir(exist_ok=True)
    write_csv(eval_record_path(run_dir, ev.eval_id, "reliability.csv"), RELIABILITY_COLUMNS, scores.reliability)
    if scores.outcomes is not None:
        write_npz(eval_record_path(run_dir, ev.eval_id, "robust.npz"), scores.outcomes)
    if scores.predictions is not None:
        write_npz(eval_record_path(run_dir, ev.eval_id, "predictions.npz"), scores.predictions)
    if scores.shift_rows:  # --shift corruptions: a row per corruption and severity (scoring/shift.py)
        write_csv(eval_record_path(run_dir, ev.eval_id, "corruptions.csv"), list(scores.shift_rows[0]),
                  scores.shift_rows)
    path = eval_record_path(run_dir, ev.eval_id)
    extra = {} if scores.checks is None else {"checks": scores.checks}
    write_json(path, {"eval_id": ev.eval_id, "run_id": run_dir.name, "eval": ev.to_dict(), "metrics": scores.metrics,
                      **extra, "notes": scores.notes, **_provenance(device, channels_last)})
    return path


def _provenance(device, channels_last: bool) -> dict:
    return {"device": str(device), "device_name": device_name(device), "channels_last": channels_last,
            "precision": precision.current(device), "torch_threads": torch.get_num_threads(), "when": now(),
            "git": git_info(), "versions": versions()}


def first_eval_record(run_dir: Path) -> dict | None:
    """The earliest evaluation record (by its `when`): the scoring done right after training."""
    records = []
    for p in sorted((Path(run_dir) / "evals").glob("*.json")):
        if not _RECORD.fullmatch(p.name):
            continue
        try:
            records.append(json.loads(read_text(p)))
        except (OSError, ValueError):
            continue
    return min(records, key=lambda r: r.get("when", ""), default=None)


def read_eval_record(run_dir: Path, eval_id: str) -> dict | None:
    """evals/<eval_id>.json with its transfer add-on merged in (`merge_transfer`), or None."""
    path = eval_record_path(run_dir, eval_id)
    if not path.exists():
        return None
    rec = read_json(path, f"set it aside and `rbols eval {run_dir}` with the same scoring options writes it again")
    addon = read_transfer(run_dir, eval_id)
    if addon is not None:
        rec = {**rec, "metrics": merge_transfer(rec["metrics"], addon), "transfer": addon}
    return rec


def without_scores(run_dir: Path, metrics: dict) -> dict:
    """`metrics` (a run's metrics.json) without the figures of the setting it was scored with (those
    of its own evals/<eval_id>.json), to be replaced by another setting's."""
    own = read_eval_record(run_dir, metrics.get("eval_id"))
    if own is None:
        return metrics
    return {k: v for k, v in metrics.items() if k not in own["metrics"]}


def metrics_for(run_dir: Path, eval_id: str | None) -> dict:
    """metrics.json with the scores of evaluation setting `eval_id` (NaN-free: the scores are absent and
    `eval_id` is None when the run has no record for it); `eval_id` None: the run's own scores. Either
    way with the setting's transfer add-on merged in."""
    m = read_metrics(run_dir)
    if eval_id is None or m.get("eval_id") == eval_id:
        addon = read_transfer(run_dir, m.get("eval_id")) if m.get("eval_id") else None
        return m if addon is None else merge_transfer(m, addon)
    m = without_scores(run_dir, m)  # drop the other setting's figures
    rec = read_eval_record(run_dir, eval_id)
    if rec is not None:
        m = {**m, **rec["metrics"]}
    m["eval_id"] = eval_id if rec is not None else None
    return m


# ---------------------------------------------------------------- the transfer check's add-ons

def transfer_path(run_dir: Path, eval_id: str, surrogate_id: str, suffix: str = ".json") -> Path:
    return Path(run_dir) / "evals" / f"{eval_id}.transfer-{surrogate_id}{suffix}"


def write_transfer(run_dir: Path, eval_id: str, addon: dict, outcomes: dict | None, channels_last: bool,
                   device) -> Path:
    """The add-on of one surrogate (`addon`: surrogate, metrics, checks, notes), its per-image outcomes first,
    the JSON last."""
    sid = addon["surrogate"]["run_id"]
    if outcomes is not None:
        write_npz(transfer_path(run_dir, eval_id, sid, ".npz"), outcomes)
    path = transfer_path(run_dir, eval_id, sid)
    write_json(path, {"eval_id": eval_id, "run_id": Path(run_dir).name, **addon, **_provenance(device, channels_last)})
    return path


def read_transfer(run_dir: Path, eval_id: str, surrogate_id: str | None = None) -> dict | None:
    """The transfer add-on of setting `eval_id` (of `surrogate_id` when given), or None. With several
    surrogates: the run itself (a hard-label run) or the grid's own hard-label cell first, then any other by
    run_id, its `failed_elsewhere` naming the others whose check failed (merge_transfer flags those too)."""
    paths = ([transfer_path(run_dir, eval_id, surrogate_id)] if surrogate_id else
             sorted((Path(run_dir) / "evals").glob(f"{eval_id}.transfer-*.json")))
    addons = [read_json(p, f"set it aside and `rbols eval {run_dir}` adds the transfer check again")
              for p in paths if p.exists()]
    if not addons:
        return None
    rank = {"self": 0, "grid": 1}
    addons.sort(key=lambda a: rank.get(a["surrogate"]["chosen_by"], 2))
    failed = [a["surrogate"]["run_id"] for a in addons[1:] if a["metrics"].get("transfer_flagged")]
    return {**addons[0], "failed_elsewhere": failed} if failed else addons[0]


def merge_transfer(metrics: dict, addon: dict) -> dict:
    """`metrics` with the add-on's figures, and the check's failure (from any surrogate) added to the masking
    flags."""
    m = {**metrics, **addon["metrics"]}
    if addon["metrics"].get("transfer_flagged") or addon.get("failed_elsewhere"):
        failed = [c for c in str(metrics.get("masking_checks") or "").split(",") if c]
        m.update(masking_suspected=True, masking_checks=",".join([*failed, "transfer"]))
    return m
