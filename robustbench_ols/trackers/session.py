"""The trackers of one run, as run.py uses them: opened before the run's first file, fed each epoch and the
final scores, closed as finished, interrupted or failed; a tracker that fails is dropped with a warning."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from robustbench_ols.common.errors import RbolsError, SpecError
from robustbench_ols.trackers import require_installed
from robustbench_ols.trackers.mlflow_log import MLflow
from robustbench_ols.trackers.records import RECORDS, epoch_values, hyperparams, learning_curves, number
from robustbench_ols.trackers.tensorboard_log import TensorBoard
from robustbench_ols.trackers.wandb_log import WandB


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


class Trackers:
    """The trackers of one run. A tracker that fails after it opened is dropped with a warning (the run goes
    on; `rbols export` replays it later from the run directory). A context manager: leaving it closes every
    tracker, as interrupted (Ctrl-C) or failed (an exception) when it was not finished."""

    def __init__(self, backends: list, run_dir: Path, warn=_stderr):
        self.backends, self.run_dir, self.warn = backends, Path(run_dir), warn
        self.last_epoch = 0
        self.finished = False

    def __bool__(self) -> bool:
        return bool(self.backends)

    def epoch(self, row: dict, epoch: int) -> None:
        """One epochs.csv row (training's history entry) at step `epoch` (1-based, the row's `epoch`)."""
        self.last_epoch = max(self.last_epoch, epoch)
        if self.backends:
            self._each("epoch", epoch_values(row), epoch)

    def epochs(self, rows: list[dict]) -> None:
        """Every row of a history (a resumed run's checkpoint, a replayed epochs.csv); each tracker keeps
        one copy of the epochs it already has."""
        for row in rows:
            self.epoch(row, row["epoch"])

    def finish(self, metrics: dict, figures: list | None = None) -> None:
        """The final scores (metrics.json: the numeric ones as metrics, the texts such as eval_id as tags or
        summary entries) and the files as artifacts: `figures` (default: the learning curves drawn from the
        run's epochs.csv) and the run's record files."""
        self.finished = True
        if not self.backends:
            return
        step = int(metrics.get("epochs") or self.last_epoch)
        scores = {k: x for k, v in metrics.items() if (x := number(v)) is not None}
        texts = {k: v for k, v in metrics.items() if isinstance(v, str) and v}
        with tempfile.TemporaryDirectory(prefix="rbols-trackers-") as tmp:
            if figures is None:
                figures = self._curves(Path(tmp))
            files = [(Path(f), "figures") for f in figures]
            files += [(self.run_dir / n, "records") for n in RECORDS if (self.run_dir / n).is_file()]
            self._each("finish", scores, texts, files, step)

    def _curves(self, folder: Path) -> list[Path]:
        from robustbench_ols import store
        try:
            rows = store.read_epochs(self.run_dir)
            spec = store.read_record(self.run_dir).get("spec", {})
        except RbolsError as e:
            self.warn(f"warning: no learning curves for the trackers: {e}")
            return []
        title = f"{self.run_dir.name}: {spec.get('method', '')}, noise {spec.get('noise', '')}"
        return [learning_curves(rows, folder / "learning_curves.png", title)]

    def close(self, status: str | None = None) -> None:
        """Close every tracker; `status` (finished, interrupted or failed) defaults to finished when finish()
        was called, else interrupted."""
        status = status or ("finished" if self.finished else "interrupted")
        self._each("close", status)
        self.backends = []

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        self.close(None if kind is None else "interrupted" if issubclass(kind, KeyboardInterrupt) else "failed")
        return False

    def _each(self, method: str, *args) -> None:
        for b in list(self.backends):
            try:
                getattr(b, method)(*args)
            except Exception as e:  # noqa: BLE001 - each library raises its own types; the run must go on
                self.backends.remove(b)
                self.warn(f"warning: {b.name} logging failed ({type(e).__name__}: {e}); it stops for this run, "
                          f"whose files are unaffected: `rbols export {self.run_dir.parent} --to {b.name}` "
                          "replays it")


def open_trackers(names, run_dir, spec: dict | None = None, root=None, warn=_stderr) -> Trackers:
    """The trackers `names` (parse_trackers' text or tuple) opened for the run directory `run_dir` (its name is
    the run_id), with `spec` as hyper-parameters (spec.json's record, or its "spec" part; None: read from
    run_dir/spec.json) and their logs under `root` (default: `<run_dir>/../tracking`). No names: a Trackers
    that does nothing. SpecError, naming the tracker, when one cannot be opened (the others are closed)."""
    names = require_installed(names)
    run_dir = Path(run_dir)
    if not names:
        return Trackers([], run_dir, warn)
    if spec is None:
        from robustbench_ols import store
        spec = store.read_record(run_dir)
    run_id = run_dir.name
    hp = {"run_id": run_id, **hyperparams(spec.get("spec", spec))}
    root = Path(root) if root is not None else run_dir.parent / "tracking"
    opened = []
    for name in names:
        try:
            if name == "tensorboard":
                opened.append(TensorBoard(run_id, hp, root))
            elif name == "mlflow":
                opened.append(MLflow(run_id, hp, root, run_dir))
            else:
                opened.append(WandB(run_id, hp, root))
        except Exception as e:  # noqa: BLE001 - any library error: the run has not started, say which and stop
            Trackers(opened, run_dir, warn).close("failed")
            if isinstance(e, SpecError):
                raise
            raise SpecError(f"--log {name}: could not open the tracker ({type(e).__name__}: {e}); check its "
                            f"settings (log folder {root}, {_SETTINGS[name]}) or leave {name} out of --log") from None
    return Trackers(opened, run_dir, warn)


_SETTINGS = {"tensorboard": "write access", "mlflow": "MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME",
             "wandb": "WANDB_MODE, WANDB_PROJECT, your W&B login"}
