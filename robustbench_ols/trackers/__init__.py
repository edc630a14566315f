"""Experiment trackers: a run's epochs, spec, final scores and figures streamed to TensorBoard, MLflow and/or
Weights & Biases while it trains (`--log`), and finished runs replayed into them (`rbols export`).

The run directory stays the record; a tracker is a mirror of it. Each library is used through its own API and
imported only when chosen (`pip install 'robustbench_ols[trackers]'`). Under a log root (`--log-dir`, default
`<out>/tracking`):

- tensorboard: `torch.utils.tensorboard`, one log directory per run, `<root>/tensorboard/<run_id>`;
- mlflow: `$MLFLOW_TRACKING_URI`, else the local file store `<root>/mlruns` (no server). MLflow 3 keeps that
  store in maintenance mode and refuses it unless MLFLOW_ALLOW_FILE_STORE=true, which is set for it (a
  database store needs no server either: MLFLOW_TRACKING_URI=sqlite:///PATH/mlflow.db, with sqlalchemy and
  alembic installed; artifacts then go to `<root>/mlartifacts`). Experiment `robustbench_ols` ($MLFLOW_EXPERIMENT_NAME), one MLflow run per run_id,
  named and tagged (`rbols.run_id`) with it;
- wandb: project `robustbench_ols` ($WANDB_PROJECT), W&B run id = run_id, files under `<root>/wandb`; offline
  (`wandb sync` uploads later) unless WANDB_MODE is set or an API key is configured (WANDB_API_KEY, ~/.netrc).

Per epoch, every numeric column of the epochs.csv row at step = epoch; the spec as hyper-parameters (nested
keys dotted, lists as comma-separated text); at the end the numeric final scores, the learning curves and the
run's record files (spec.json, epochs.csv, metrics.json, reliability.csv) as artifacts (TensorBoard: the
figure as an image). A resumed run (or a replay) logs its whole history again and each tracker keeps one copy
of every epoch: MLflow finds its run by tag and skips the epochs it has (tag `rbols.last_epoch`); TensorBoard
purges, at the first step a session writes, what earlier sessions wrote from that step on; W&B resumes the
same id (offline: each session's folder holds the history so far; online: steps it has are skipped).
"""
from __future__ import annotations

import importlib.util
import math
import netrc
import numbers
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from robustbench_ols.common.errors import RbolsError, SpecError

TRACKERS = ("tensorboard", "mlflow", "wandb")
# TensorBoard and W&B come with the `trackers` extra. MLflow is a pip command of its own: its databricks-sdk needs
# requests>=2.28.1 and torchattacks 3.5 pins requests~=2.25.1 (never importing it), so pip cannot resolve both
# in one install; installed afterwards, it upgrades requests and pip reports the (harmless) conflict.
EXTRA = "pip install 'robustbench_ols[trackers]' (TensorBoard, W&B), then pip install 'mlflow-skinny>=3.0'"
PROJECT = "robustbench_ols"  # MLflow experiment and W&B project
RUN_TAG = "rbols.run_id"
RECORDS = ("spec.json", "epochs.csv", "metrics.json", "reliability.csv")  # logged as artifacts when present
_LOSSES = ("train_loss", "test_loss", "val_loss")
_RATES = ("train_err", "noisy_err", "clean_subset_err", "test_err", "val_err", "noisy_true_acc")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def parse_trackers(text, flag: str = "--log") -> tuple[str, ...]:
    """The trackers of `--log` ("tensorboard,mlflow", or a sequence of names), in order, each once; "" or None:
    none. SpecError, naming `flag`, for an unknown name or a library that is not installed."""
    items = [] if text is None else text.split(",") if isinstance(text, str) else list(text)
    names = []
    for item in items:
        name = str(item).strip().lower()
        if name and name not in TRACKERS:
            raise SpecError(f"unknown tracker {name!r} in {flag}; valid: {', '.join(TRACKERS)} (any subset, "
                            f"comma-separated, e.g. {flag} tensorboard,mlflow)")
        if name and name not in names:
            names.append(name)
    missing = [n for n in names if importlib.util.find_spec(n) is None]  # each library's module has its name
    if missing:
        raise SpecError(f"{flag} {','.join(missing)}: {' and '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} not installed; {EXTRA} installs the trackers")
    return tuple(names)


def hyperparams(spec: dict) -> dict:
    """A run's spec (spec.json's "spec", or RunSpec.to_dict()) as flat hyper-parameters: nested dicts as dotted
    keys (method_options.alpha), lists and tuples as comma-separated text, None as "None", empty dicts as "";
    numbers, booleans and strings as they are."""
    out = {}

    def put(key, v):
        if isinstance(v, dict):
            if not v and key:
                out[key] = ""
            for k, x in v.items():
                put(f"{key}.{k}" if key else str(k), x)
        elif isinstance(v, (list, tuple)):
            out[key] = ",".join(str(x) for x in v)
        elif v is None:
            out[key] = "None"
        else:
            out[key] = v
    put("", spec)
    return out


def _number(v) -> float | None:
    """`v` as a float when it is a finite number (booleans as 0 or 1), else None."""
    if isinstance(v, numbers.Real) and math.isfinite(v):
        return float(v)
    return None


def epoch_values(row: dict) -> dict:
    """The figures of one epochs.csv row that a tracker logs: every numeric column but `epoch` (the step);
    empty cells (no test pass that epoch, no validation split) are left out."""
    return {k: x for k, v in row.items() if k != "epoch" and (x := _number(v)) is not None}


def learning_curves(rows: list[dict], path, title: str = "") -> Path:
    """A small PNG of one run's epochs.csv: the losses (left) and the error rates (right) per epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # pyplot's global state is never touched
    from matplotlib.ticker import MaxNLocator
    fig = Figure(figsize=(8, 3), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, columns, label in zip(fig.subplots(1, 2), (_LOSSES, _RATES), ("loss", "rate")):
        for c in columns:
            pts = [(r["epoch"], x) for r in rows if (x := _number(r.get(c))) is not None]
            if pts:  # a sparse curve (--test-every) gets markers
                ax.plot(*zip(*pts), marker="." if len(pts) < len(rows) else None, label=c)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if ax.lines:
            ax.legend(fontsize="x-small")
    if title:
        fig.suptitle(title, fontsize="small")
    path = Path(path)
    fig.savefig(path, dpi=90)
    return path


# ---------------------------------------------------------------- one backend per library

class _TensorBoard:
    name = "tensorboard"

    def __init__(self, run_id: str, hparams: dict, root: Path):
        from torch.utils.tensorboard import SummaryWriter
        self._writer_class = SummaryWriter
        self.log_dir = root / "tensorboard" / run_id
        self.hparams = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
        self.writer = None

    def _at(self, step: int):
        """The writer, opened at this session's first step: its purge_step makes TensorBoard drop what earlier
        sessions (an interrupted run, an earlier replay) wrote from that step on, so each epoch reads once."""
        if self.writer is None:
            from torch.utils.tensorboard.summary import hparams
            self.writer = self._writer_class(str(self.log_dir), purge_step=step)
            self.writer.file_writer.add_summary(hparams(self.hparams, {})[1], step)  # session start: the spec
        return self.writer

    def epoch(self, values: dict, epoch: int) -> None:
        w = self._at(epoch)
        for k, v in values.items():
            w.add_scalar(k, v, epoch)
        w.flush()

    def finish(self, scores: dict, texts: dict, files: list, step: int) -> None:
        from matplotlib.image import imread
        from torch.utils.tensorboard.summary import hparams
        w = self._at(step)
        for k, v in scores.items():
            w.add_scalar(f"final/{k}", v, step)
        experiment, _, end = hparams(self.hparams, {f"final/{k}": v for k, v in scores.items()})
        w.file_writer.add_summary(experiment, step)  # the HParams dashboard's columns: the final scores
        w.file_writer.add_summary(end, step)
        for path, folder in files:  # TensorBoard keeps no files: the figures as images
            if folder == "figures" and path.suffix == ".png":
                w.add_image(f"figures/{path.stem}", imread(path), step, dataformats="HWC")
        w.flush()

    def close(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()


class _MLflow:
    name = "mlflow"
    _STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}

    def __init__(self, run_id: str, hparams: dict, root: Path, run_dir: Path):
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (root / "mlruns").resolve().as_uri()
        scheme = urlparse(uri).scheme
        if scheme in ("", "file"):  # MLflow 3 refuses its file store without this opt-out
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        # a new experiment in a local database keeps its artifacts under root (MLflow's default: ./mlruns)
        artifacts = (root / "mlartifacts").resolve().as_uri() if scheme == "sqlite" else None
        self.client = c = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or PROJECT
        exp = c.get_experiment_by_name(name)
        if exp is None:
            try:
                exp_id = c.create_experiment(name, artifact_location=artifacts)
            except MlflowException:  # created meanwhile by another process of the grid
                exp_id = c.get_experiment_by_name(name).experiment_id
        elif exp.lifecycle_stage != "active":
            raise SpecError(f"the MLflow experiment {name!r} at {uri} is deleted: restore it (`mlflow experiments "
                            "restore`) or set MLFLOW_EXPERIMENT_NAME to another name")
        else:
            exp_id = exp.experiment_id
        found = c.search_runs([exp_id], f"tags.`{RUN_TAG}` = '{run_id}'", max_results=1,
                              order_by=["attributes.start_time DESC"])
        if found:  # a resumed run or a replay: the same MLflow run
            run = found[0]
            c.update_run(run.info.run_id, status="RUNNING")
        else:
            run = c.create_run(exp_id, run_name=run_id, tags={RUN_TAG: run_id, "rbols.run_dir": str(run_dir)})
        self.id = run.info.run_id
        self.last_epoch = int(run.data.tags.get("rbols.last_epoch", 0))
        self.finished = run.data.tags.get("rbols.finished") == "true"
        params = [Param(k, str(v)) for k, v in hparams.items() if k not in run.data.params]  # params are write-once
        for i in range(0, len(params), 100):  # MLflow's limit per batch
            c.log_batch(self.id, params=params[i:i + 100])
        self.uri = uri

    def epoch(self, values: dict, epoch: int) -> None:
        from mlflow.entities import Metric, RunTag
        if epoch <= self.last_epoch:  # logged by an earlier session
            return
        now = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(k, v, now, epoch) for k, v in values.items()],
                              tags=[RunTag("rbols.last_epoch", str(epoch))])
        self.last_epoch = epoch

    def finish(self, scores: dict, texts: dict, files: list, step: int) -> None:
        from mlflow.entities import Metric, RunTag
        if self.finished:  # a replay of a run already complete here
            return
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in scores.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.id, metrics=metrics[i:i + 1000])
        if texts:
            self.client.log_batch(self.id, tags=[RunTag(f"rbols.{k}", v) for k, v in texts.items()])
        for path, folder in files:
            self.client.log_artifact(self.id, str(path), artifact_path=folder)
        self.client.set_tag(self.id, "rbols.finished", "true")
        self.finished = True

    def close(self, status: str) -> None:
        self.client.set_terminated(self.id, status="FINISHED" if self.finished else self._STATUS[status])


def _wandb_logged_in() -> bool:
    """Whether W&B credentials are configured here (environment or ~/.netrc), without asking the server."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class _WandB:
    name = "wandb"
    _EXIT = {"finished": 0, "interrupted": 255, "failed": 1}

    def __init__(self, run_id: str, hparams: dict, root: Path):
        import wandb
        self.wandb = wandb
        mode = None if os.environ.get("WANDB_MODE") else "online" if _wandb_logged_in() else "offline"
        root.mkdir(parents=True, exist_ok=True)
        # console off: the run's progress bars and messages stay as they are
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or PROJECT, id=run_id, name=run_id,
                              dir=str(root), config=hparams, resume="allow", mode=mode, reinit="create_new",
                              settings=wandb.Settings(console="off"))
        self.run_id = run_id
        self.first_step = self.run.starting_step  # online resume: the steps the server has are skipped

    def epoch(self, values: dict, epoch: int) -> None:
        if epoch >= self.first_step:
            self.run.log(values, step=epoch)

    def finish(self, scores: dict, texts: dict, files: list, step: int) -> None:
        self.run.summary.update({**scores, **texts})
        art = self.wandb.Artifact(f"run-{self.run_id}", type="rbols-run")
        for path, folder in files:
            art.add_file(str(path), name=f"{folder}/{path.name}")
        self.run.log_artifact(art)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=self._EXIT[status])


# ---------------------------------------------------------------- what run.py and the CLI use

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
        scores = {k: x for k, v in metrics.items() if (x := _number(v)) is not None}
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
    names = parse_trackers(names)
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
                opened.append(_TensorBoard(run_id, hp, root))
            elif name == "mlflow":
                opened.append(_MLflow(run_id, hp, root, run_dir))
            else:
                opened.append(_WandB(run_id, hp, root))
        except Exception as e:  # noqa: BLE001 - any library error: the run has not started, say which and stop
            Trackers(opened, run_dir, warn).close("failed")
            if isinstance(e, SpecError):
                raise
            raise SpecError(f"--log {name}: could not open the tracker ({type(e).__name__}: {e}); check its "
                            f"settings (log folder {root}, {_SETTINGS[name]}) or leave {name} out of --log") from None
    return Trackers(opened, run_dir, warn)


_SETTINGS = {"tensorboard": "write access", "mlflow": "MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME",
             "wandb": "WANDB_MODE, WANDB_PROJECT, your W&B login"}


def export(results_dir, to, root=None, warn=_stderr) -> int:
    """Replay every finished run directory (DONE) directly under `results_dir` into the trackers `to`: its
    epochs.csv rows, its spec, its final scores, its learning curves and record files. Logs go under `root`
    (default: `<results_dir>/tracking`, where `--log` puts them). Returns how many runs were exported; a run
    whose records cannot be read is left out with a warning. Exporting again adds no second copy (MLflow: the
    same run, found by tag; TensorBoard: the replay supersedes; W&B: the same id, a new offline folder)."""
    from robustbench_ols import store
    names = parse_trackers(to, "--to")
    if not names:
        raise SpecError(f"--to: name one or more trackers: {', '.join(TRACKERS)}")
    dirs = store.run_dirs(results_dir)
    if not dirs:
        raise SpecError(f"{results_dir} holds no finished run directory (<run_id>/DONE); give the --out folder of "
                        "`rbols run` or `rbols matrix`")
    root = Path(root) if root is not None else Path(results_dir) / "tracking"
    count = 0
    for d in dirs:
        try:
            record, rows, metrics = store.read_record(d), store.read_epochs(d), store.read_metrics(d)
        except RbolsError as e:
            warn(f"warning: {d.name} not exported: {e}")
            continue
        with open_trackers(names, d, record, root, warn) as tr:
            tr.epochs(rows)
            tr.finish(metrics)
        count += 1
    return count
