"""The run directory `<out>/<run_id>/`: its layout, atomic writes, checkpoints, and reading it back.

Files: `spec.json` (spec, execution, versions, git commit), `noise.json` + `noise.npz` (the noisy
labels, is-noisy mask, transition matrix, realised rate, train indices), `status.json`,
`executions.json` (one entry per session that trained it), `epochs.csv` (one row per epoch),
`checkpoint.pt` while unfinished, then `model.pt`, `evals/` (the evaluation records: evals.py),
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
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from robustbench_ols.common.errors import ContractError, DataError, SpecError
from robustbench_ols.common.provenance import device_name, git_info, now
from robustbench_ols.models import create_model
from robustbench_ols.spec import RunSpec
from robustbench_ols.store.reading import (  # noqa: F401  (the store's reading side, by its usual names)
    EPOCH_COLUMNS,
    has,
    incomplete,
    is_done,
    read_epochs,
    read_json,
    read_metrics,
    read_noise_arrays,
    read_noise_summary,
    read_record,
    run_dirs,
)

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


def write_epochs_csv(run_dir: Path, rows: list) -> None:
    """The run's epochs.csv: one row per finished epoch (training's history)."""
    write_csv(Path(run_dir) / "epochs.csv", EPOCH_COLUMNS, rows)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""  # no value (no validation split; an empty reliability bin)
    return repr(v) if isinstance(v, float) else str(v)


def save_torch(path: Path, obj) -> None:
    torch.save(obj, tmp_path(path))
    os.replace(tmp_path(path), path)


def ensure_writable(folder) -> None:
    """SpecError, before any work starts, when `folder` (or, if it does not exist yet, its nearest existing
    parent, where it would be created) is not a folder this process can write in. A probe file proves it
    (permission bits say nothing to root, nor about read-only mounts) and is removed; nothing is created."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SpecError(f"--out {folder} is a file; give a directory for the run directories")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".rbols-write-test-"):
            pass
    except OSError as e:
        where = "" if probe == folder else f" (it would be created in {probe})"
        raise SpecError(f"--out {folder} is not writable{where}: {e.strerror or e}; give a folder you can "
                        "write to (--out) or change its permissions") from None


def write_npz(path: Path, arrays: dict) -> None:
    """A compressed .npz written whole or not at all (temporary file, then rename)."""
    with open(tmp_path(path), "wb") as f:  # a file object: numpy adds no suffix
        np.savez_compressed(f, **arrays)
    os.replace(tmp_path(path), path)


# ---------------------------------------------------------------- one run's records

def write_record(run_dir: Path, record: dict, noise_summary: dict, arrays: dict) -> None:
    """noise.npz (`arrays`), noise.json and spec.json (`record`), each written once, whichever is
    missing (spec.json last), then status `running`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "noise.npz").exists():
        write_npz(run_dir / "noise.npz", arrays)
    if not (run_dir / "noise.json").exists():
        write_json(run_dir / "noise.json", noise_summary)
    if not (run_dir / "spec.json").exists():
        write_json(run_dir / "spec.json", record)
    set_status(run_dir, "running")


def set_status(run_dir: Path, status: str, **fields) -> None:
    """status.json: running, failed (with the epoch and the reason), interrupted (with the epoch and the
    stage: training or scoring) or done (with the epochs)."""
    write_json(run_dir / "status.json", {"status": status, **fields})


def log_execution(run_dir: Path, device, channels_last: bool, first_epoch: int, numerics: dict | None = None) -> None:
    """executions.json: one entry per session that trained this run (a resume may use another device, memory
    format or precision policy, which changes float rounding; this says which epochs ran where and how)."""
    path = run_dir / "executions.json"
    log = json.loads(path.read_text()) if path.exists() else []
    log.append({"first_epoch": first_epoch + 1, "device": str(device), "device_name": device_name(device),
                "channels_last": channels_last, "precision": numerics, "torch_threads": torch.get_num_threads(),
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


def load_checkpoint(run_dir: Path, models, optimizer, method, device, warn=print) -> dict | None:
    """The training state saved after the last finished epoch (models, optimizer and method restored
    in place), or None when there is none. An unreadable checkpoint (truncated, overwritten) is set
    aside under a new name, never deleted, `warn` says so, and training restarts from the first epoch."""
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return None
    try:
        ck = torch.load(path, map_location=device, weights_only=False)
        ck["models"], ck["optimizer"], ck["method"], ck["state"]  # noqa: B018 - every part is there
    except Exception as e:  # noqa: BLE001 - torch.load raises many types (OSError, RuntimeError, EOFError, ...)
        aside = set_aside(path)
        warn(f"warning: {path} is unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
             f"set aside as {aside.name}; training restarts from epoch 1")
        return None
    for m, sd in zip(models, ck["models"]):
        m.load_state_dict(sd)
    optimizer.load_state_dict(ck["optimizer"])
    method.load_state_dict(ck["method"])
    return ck["state"]


def set_aside(path: Path) -> Path:
    """Rename an unreadable file to `<name>.corrupt-<UTC time>` (kept for inspection, never deleted)."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    os.replace(path, aside)
    return aside


def replace_metrics(run_dir: Path, metrics: dict) -> Path:
    """A finished run's metrics.json written anew (`rbols repair`), the unreadable one set aside; its path."""
    path = Path(run_dir) / "metrics.json"
    if path.exists():
        set_aside(path)
    write_json(path, metrics)
    return path


def save_final(run_dir: Path, models, method) -> None:
    save_torch(run_dir / "model.pt", {"models": [m.state_dict() for m in models], "method": method.state_dict()})


def load_model_weights(run_dir: Path, device) -> dict:
    """The final weights of the run's evaluated model (models[0])."""
    return torch.load(run_dir / "model.pt", map_location=device, weights_only=True)["models"][0]


def load_run_model(run_dir: Path, num_classes: int, device, *, channels_last: bool = False):
    """The run's evaluated model (models[0]) with its final weights, on `device`, in eval mode."""
    model = create_model(read_spec(run_dir).model, num_classes).to(device)
    model.load_state_dict(load_model_weights(run_dir, device))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


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


# ---------------------------------------------------------------- reading back (reading.py; the spec here)

def read_spec(run_dir: Path) -> RunSpec:
    """The RunSpec of spec.json; SpecError when it is missing or unreadable."""
    f = Path(run_dir) / "spec.json"
    try:
        return RunSpec.from_dict(read_record(run_dir)["spec"])
    except (DataError, ValueError, KeyError, TypeError) as e:  # SpecError is a ValueError
        raise SpecError(f"{f} is missing or unreadable ({e}); is this a run directory?") from None


def check_existing(run_dir: Path, spec: RunSpec) -> None:
    """A directory that already holds spec.json must hold this spec."""
    f = run_dir / "spec.json"
    if f.exists():
        try:
            old = RunSpec.from_dict(read_record(run_dir)["spec"])
        except (DataError, ValueError, KeyError, TypeError) as e:
            raise SpecError(f"{f} is unreadable ({e}); move {run_dir} away to rerun this spec") from None
        if old != spec:
            raise SpecError(f"{run_dir} holds a different run (its spec.json differs); move it away")
