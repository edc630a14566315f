"""The run directory `<out>/<run_id>/`: its layout, atomic writes, checkpoints, and reading it back.

Files: `spec.json` (spec, execution, versions, git commit), `noise.json` + `noise.npz` (the noisy
labels, is-noisy mask, transition matrix, realised rate, train indices), `status.json`,
`executions.json` (one entry per session that trained it), `epochs.csv` (one row per epoch),
`checkpoint.pt` while unfinished, then `model.pt`, `evals/<eval_id>.json` (+ `.reliability.csv`),
`reliability.csv`, `metrics.json` and last `DONE`. Every file is written to a temporary name and
renamed, so a killed run never leaves a half-written file under a final name; a DONE directory is
never touched again except to add evaluation records.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
from pathlib import Path

import numpy as np
import torch

from .errors import ContractError, SpecError
from .provenance import device_name, git_info, now, versions
from .spec import RunSpec

EPOCH_COLUMNS = ("epoch", "lr", "train_loss", "train_err", "noisy_err", "noisy_true_acc",
                 "clean_subset_err", "test_loss", "test_err", "val_loss", "val_err", "seconds")
# val_loss and val_err: on the validation split (--val-split), empty when the run has none.
RELIABILITY_COLUMNS = ("lower", "upper", "count", "confidence", "accuracy")  # calibration.ReliabilityTable.rows()


# ---------------------------------------------------------------- atomic writes

def tmp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def write_text(path: Path, text: str) -> None:
    tmp = tmp_path(path)
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(path: Path, columns, rows: list) -> None:
    """A header of `columns`, then one line per dict of `rows` (floats by repr, None/NaN empty)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_fmt(r[c]) for c in columns])
    write_text(path, buf.getvalue())


def write_epochs_csv(path: Path, rows: list) -> None:
    write_csv(path, EPOCH_COLUMNS, rows)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""  # no value (no validation split; an empty reliability bin)
    return repr(v) if isinstance(v, float) else str(v)


def save_torch(path: Path, obj) -> None:
    torch.save(obj, tmp_path(path))
    os.replace(tmp_path(path), path)


# ---------------------------------------------------------------- one run's records

def write_record(run_dir: Path, record: dict, noise_summary: dict, arrays: dict) -> None:
    """noise.npz (`arrays`), noise.json and spec.json (`record`), each written once, whichever is
    missing (spec.json last), then status `running`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "noise.npz").exists():
        with open(tmp_path(run_dir / "noise.npz"), "wb") as f:  # a file object: numpy adds no suffix
            np.savez_compressed(f, **arrays)
        os.replace(tmp_path(run_dir / "noise.npz"), run_dir / "noise.npz")
    if not (run_dir / "noise.json").exists():
        write_json(run_dir / "noise.json", noise_summary)
    if not (run_dir / "spec.json").exists():
        write_json(run_dir / "spec.json", record)
    set_status(run_dir, "running")


def set_status(run_dir: Path, status: str, **fields) -> None:
    """status.json: running, failed (with the epoch and the reason) or done (with the epochs)."""
    write_json(run_dir / "status.json", {"status": status, **fields})


def log_execution(run_dir: Path, device, channels_last: bool, first_epoch: int) -> None:
    """executions.json: one entry per session that trained this run (a resume may use another
    device or memory format, which changes float rounding; this says which epochs ran where)."""
    path = run_dir / "executions.json"
    log = json.loads(path.read_text()) if path.exists() else []
    log.append({"first_epoch": first_epoch + 1, "device": str(device), "device_name": device_name(device),
                "channels_last": channels_last, "torch_threads": torch.get_num_threads(),
                "host": socket.gethostname(), "pid": os.getpid(), "started": now(), "git": git_info()})
    write_json(path, log)


def save_checkpoint(run_dir: Path, models, optimizer, method, state: dict) -> None:
    method_state = method.state_dict()
    if not isinstance(method_state, dict):
        raise ContractError(f"method {method.label!r}: state_dict() returned "
                            f"{type(method_state).__name__} (rule: state_dict() returns a dict)")
    save_torch(run_dir / "checkpoint.pt", {"models": [m.state_dict() for m in models],
                                           "optimizer": optimizer.state_dict(), "method": method_state,
                                           "state": state})


def load_checkpoint(run_dir: Path, models, optimizer, method, device) -> dict | None:
    """The training state saved after the last finished epoch (models, optimizer and method restored
    in place), or None when there is no checkpoint."""
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return None
    ck = torch.load(path, map_location=device, weights_only=False)
    for m, sd in zip(models, ck["models"]):
        m.load_state_dict(sd)
    optimizer.load_state_dict(ck["optimizer"])
    method.load_state_dict(ck["method"])
    return ck["state"]


def save_final(run_dir: Path, models, method) -> None:
    save_torch(run_dir / "model.pt", {"models": [m.state_dict() for m in models], "method": method.state_dict()})


def load_model_weights(run_dir: Path, device) -> dict:
    """The final weights of the run's evaluated model (models[0])."""
    return torch.load(run_dir / "model.pt", map_location=device, weights_only=True)["models"][0]


def write_eval_record(run_dir: Path, ev, scores: dict, rel: list, notes: dict, channels_last: bool,
                      device) -> Path:
    """evals/<eval_id>.json (+ .reliability.csv): the figures of one evaluation setting, with how
    and where they were computed."""
    folder = run_dir / "evals"
    folder.mkdir(exist_ok=True)
    write_csv(folder / f"{ev.eval_id}.reliability.csv", RELIABILITY_COLUMNS, rel)
    path = eval_record_path(run_dir, ev.eval_id)
    write_json(path, {"eval_id": ev.eval_id, "run_id": run_dir.name, "eval": ev.to_dict(), "metrics": scores,
                      "notes": notes, "device": str(device), "device_name": device_name(device),
                      "channels_last": channels_last, "torch_threads": torch.get_num_threads(),
                      "when": now(), "git": git_info(), "versions": versions()})
    return path


def finish(run_dir: Path, metrics: dict, rel: list) -> None:
    """reliability.csv, then metrics.json (its presence means the run is over), then DONE."""
    write_csv(run_dir / "reliability.csv", RELIABILITY_COLUMNS, rel)
    write_json(run_dir / "metrics.json", metrics)
    mark_done(run_dir)


def mark_done(run_dir: Path) -> None:
    """Drop the training checkpoint, then DONE last (atomic rename): a DONE directory is never
    touched again."""
    set_status(run_dir, "done", epochs=read_metrics(run_dir)["epochs"])
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    write_text(run_dir / "DONE", f"{run_dir.name}\n")


# ---------------------------------------------------------------- reading back

def is_done(run_dir: Path) -> bool:
    return (run_dir / "DONE").exists()


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def read_record(run_dir: Path) -> dict:
    """spec.json as written (the spec, the method, the reporting rules, the execution)."""
    return json.loads((Path(run_dir) / "spec.json").read_text())


def read_spec(run_dir: Path) -> RunSpec:
    """The RunSpec of spec.json; SpecError when it is missing or unreadable."""
    f = Path(run_dir) / "spec.json"
    try:
        return RunSpec.from_dict(read_record(run_dir)["spec"])
    except (OSError, ValueError, KeyError, TypeError) as e:  # SpecError is a ValueError
        raise SpecError(f"{f} is missing or unreadable ({e}); is this a run directory?") from None


def check_existing(run_dir: Path, spec: RunSpec) -> None:
    """A directory that already holds spec.json must hold this spec."""
    f = run_dir / "spec.json"
    if f.exists():
        try:
            old = RunSpec.from_dict(read_record(run_dir)["spec"])
        except (ValueError, KeyError, TypeError) as e:
            raise SpecError(f"{f} is unreadable ({e}); move {run_dir} away to rerun this spec") from None
        if old != spec:
            raise SpecError(f"{run_dir} holds a different run (its spec.json differs); move it away")


def eval_record_path(run_dir: Path, eval_id: str) -> Path:
    return Path(run_dir) / "evals" / f"{eval_id}.json"


def read_eval_record(run_dir: Path, eval_id: str) -> dict | None:
    path = eval_record_path(run_dir, eval_id)
    return json.loads(path.read_text()) if path.exists() else None


def without_scores(run_dir: Path, metrics: dict) -> dict:
    """`metrics` (a run's metrics.json) without the figures of the setting it was scored with (those
    of its own evals/<eval_id>.json), to be replaced by another setting's."""
    own = read_eval_record(run_dir, metrics.get("eval_id"))
    if own is None:
        return metrics
    return {k: v for k, v in metrics.items() if k not in own["metrics"]}


def metrics_for(run_dir: Path, eval_id: str | None) -> dict:
    """metrics.json with the scores of evaluation setting `eval_id` (NaN-free: the scores are absent and
    `eval_id` is None when the run has no record for it); `eval_id` None: the run's own scores."""
    m = read_metrics(run_dir)
    if eval_id is None or m.get("eval_id") == eval_id:
        return m
    m = without_scores(run_dir, m)  # drop the other setting's figures
    rec = read_eval_record(run_dir, eval_id)
    if rec is not None:
        m = {**m, **rec["metrics"]}
    m["eval_id"] = eval_id if rec is not None else None
    return m


def run_dirs(root) -> list[Path]:
    """Finished run directories directly under `root`, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob("*/DONE"))


def incomplete(root) -> list[dict]:
    """Directories under `root` with a spec.json but no DONE: their status (running, failed, ...)."""
    out = []
    for spec_file in sorted(Path(root).glob("*/spec.json")):
        d = spec_file.parent
        if is_done(d):
            continue
        try:
            status = json.loads((d / "status.json").read_text())
        except (OSError, ValueError):
            status = {"status": "unknown"}
        out.append({"run_id": d.name, **status})
    return out
