"""Reading a run directory back (its layout: store/__init__.py): the records as written, a DataError naming the
file and the fix when one is unreadable.

Every file is read through `read_text`, so that a `ResultSet` (results.py) reads each file of a results folder
once per command, however many tables, figures and checks ask for it: inside `reading_once(files)` the first
read of a file is kept in `files` and later reads return it. Outside, every read opens the file.
"""
from __future__ import annotations

import csv
import io
import json
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from robustbench_ols.common.errors import DataError

EPOCH_COLUMNS = ("epoch", "lr", "train_loss", "train_err", "noisy_err", "noisy_true_acc",
                 "clean_subset_err", "test_loss", "test_err", "val_loss", "val_err", "seconds")
# val_loss and val_err: on the validation split (--val-split), empty when the run has none.

_FILES: ContextVar[dict | None] = ContextVar("rbols_files_read", default=None)


@contextmanager
def reading_once(files: dict):
    """Within: each file is read once, its content kept in `files`; nested, the outer one counts."""
    token = _FILES.set(files) if _FILES.get() is None else None
    try:
        yield files
    finally:
        if token is not None:
            _FILES.reset(token)


def _once(path, read):
    """`read(path)`, done once per file and reader within `reading_once`."""
    files = _FILES.get()
    if files is None:
        return read(Path(path))
    key = (str(path), read.__name__)
    if key not in files:
        files[key] = read(Path(path))
    return files[key]


def read_text(path) -> str:
    """The file's text, read once within `reading_once`."""
    return _once(path, Path.read_text)


def read_bytes(path) -> bytes:
    """The file's bytes (a .npz of recorded outcomes), read once within `reading_once`."""
    return _once(path, Path.read_bytes)


def read_frame(path):
    """A CSV file (epochs.csv, a reliability table) as a pandas DataFrame, read once within `reading_once`."""
    import pandas as pd  # only the report's and the audit's readers need it
    return pd.read_csv(io.StringIO(read_text(path)))


def read_epochs_frame(run_dir: Path):
    """epochs.csv as a pandas DataFrame (empty cells NaN), read once within `reading_once`."""
    return read_frame(Path(run_dir) / "epochs.csv")


def read_arrays(path) -> dict | None:
    """The arrays of a .npz record (per-image outcomes), None when there is none; read once within `reading_once`."""
    import numpy as np
    if not Path(path).exists():
        return None
    with np.load(io.BytesIO(read_bytes(path))) as z:
        return {k: z[k] for k in z.files}


def is_done(run_dir: Path) -> bool:
    return (run_dir / "DONE").exists()


def read_metrics(run_dir: Path) -> dict:
    """metrics.json; DataError naming the file and the fix when it is unreadable."""
    return read_json(Path(run_dir) / "metrics.json", f"`rbols repair {run_dir}` rebuilds it from the run's "
                      "epochs.csv, noise records and evaluation record (the unreadable file is set aside)")


def read_json(path: Path, fix: str) -> dict:
    try:
        return json.loads(read_text(path))
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is unreadable ({type(e).__name__}: {e}); {fix}") from None


def read_epochs(run_dir: Path) -> list[dict]:
    """epochs.csv as written (write_csv: floats by repr, so read back exactly; empty cells None)."""
    path = Path(run_dir) / "epochs.csv"
    try:
        rows = list(csv.DictReader(io.StringIO(read_text(path), newline="")))
    except OSError as e:
        raise DataError(f"{path} is unreadable ({e})") from None
    if not rows or list(rows[0]) != list(EPOCH_COLUMNS):
        raise DataError(f"{path} is empty or its columns are not {', '.join(EPOCH_COLUMNS)}")
    return [{k: None if v == "" else int(v) if k == "epoch" else float(v) for k, v in r.items()} for r in rows]


def has(run_dir: Path, record: str) -> bool:
    """Whether the run directory holds `record`: "model" (model.pt, the final weights) or "metrics" (metrics.json)."""
    return (Path(run_dir) / {"model": "model.pt", "metrics": "metrics.json"}[record]).exists()


def read_noise_arrays(run_dir: Path) -> dict:
    """noise.npz: the noisy labels, the is-noisy mask, the training indices and those of the held-out splits."""
    arrays = read_arrays(Path(run_dir) / "noise.npz")
    if arrays is None:
        raise DataError(f"{run_dir}/noise.npz is missing; it is rebuilt only by running the spec again")
    return arrays


def read_executions(run_dir: Path) -> list[dict]:
    """executions.json: one entry per session that trained the run ([] when it is missing or unreadable)."""
    try:
        return json.loads(read_text(Path(run_dir) / "executions.json"))
    except (OSError, ValueError):
        return []


def read_noise_summary(run_dir: Path) -> dict:
    return read_json(Path(run_dir) / "noise.json", "it is rebuilt only by running the spec again")


def read_record(run_dir: Path) -> dict:
    """spec.json as written (the spec, the method, the reporting rules, the execution)."""
    return read_json(Path(run_dir) / "spec.json", f"it names the run: move {run_dir} away and run its spec again")


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
            status = json.loads(read_text(d / "status.json"))
        except (OSError, ValueError):
            status = {"status": "unknown"}
        out.append({"run_id": d.name, **status})
    return out
