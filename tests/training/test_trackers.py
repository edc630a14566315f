"""Experiment trackers (trackers/): a real tiny run logged live to TensorBoard, MLflow and W&B (offline),
killed after an epoch's checkpoint and resumed, then read back with each library's own reader (TensorBoard's
EventAccumulator, MLflow's client, W&B's transaction-log inspector) and compared with its epochs.csv, spec and
metrics.json; `export` of finished runs; bad names. W&B never reaches the network (offline, no login)."""
import importlib.util
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from robustbench_ols import store, trackers
from robustbench_ols.common.errors import SpecError
from robustbench_ols.spec import EvalSpec, ExecOptions, RunSpec
from robustbench_ols.store import EPOCH_COLUMNS
from robustbench_ols.trackers import records, session
from robustbench_ols.trackers.export import export
from robustbench_ols.train.run import execute

HAVE = {n: importlib.util.find_spec(n) is not None for n in trackers.TRACKERS}


def needs(name):
    return pytest.mark.skipif(not HAVE[name], reason=f"{name} is not installed ({trackers.EXTRA})")


# noise, a validation split and a test pass every 2nd epoch: every column, some with empty cells
SPEC = RunSpec(dataset="synthetic", model="resnet8", method="ols", noise="symmetric:0.4", epochs=3, batch_size=100,
               train_subset=600, val_split=60, test_every=2)
EV = EvalSpec(attacks=())  # scoring is not what these tests are about
FIGURES = ("tensorboard", "mlflow")  # the trackers the export tests use


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """W&B offline, quiet, with its config, cache and staging folders in a temporary folder; no login, no
    MLflow settings from outside."""
    tmp = tmp_path_factory.mktemp("env")
    with pytest.MonkeyPatch.context() as mp:
        for k in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_PROJECT", "WANDB_DIR", "MLFLOW_TRACKING_URI",
                  "MLFLOW_EXPERIMENT_NAME"):
            mp.delenv(k, raising=False)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("NETRC", str(tmp / "netrc"))  # none
        for k in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            mp.setenv(k, str(tmp / k.lower()))
        yield


@pytest.fixture(scope="module")
def live(tmp_path_factory, env, one_torch_thread):
    """The run trained with every installed tracker through `ExecOptions.log` (what --log sets): killed between
    epoch 2's checkpoint and its epochs.csv (as in test_run's resume test), then resumed."""
    tmp = tmp_path_factory.mktemp("live")
    out, root = tmp / "runs", tmp / "logs"
    names = tuple(n for n in trackers.TRACKERS if HAVE[n])
    ex = ExecOptions(device="cpu", progress=False, log=names, log_dir=str(root))
    real_csv = store.write_epochs_csv

    def killed_at_epoch_2(path, history):
        if len(history) == 2:
            raise KeyboardInterrupt
        real_csv(path, history)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store, "write_epochs_csv", killed_at_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            execute(SPEC, ex, out, EV)
    result = execute(SPEC, ex, out, EV)
    assert result.status == "done" and len(store.read_epochs(result.run_dir)) == 3
    return result.run_dir, root


# ---------------------------------------------------------------- reading back, each with its library

def expected(run_dir) -> dict:
    """{column: [(epoch, value), ...]} of epochs.csv's non-empty cells."""
    rows = store.read_epochs(run_dir)
    return {c: [(r["epoch"], r[c]) for r in rows if r[c] is not None] for c in EPOCH_COLUMNS if c != "epoch"}


def hparams(run_dir) -> dict:
    return {"run_id": run_dir.name, **records.hyperparams(store.read_record(run_dir)["spec"])}


def numeric_metrics(run_dir) -> dict:
    return {k: float(v) for k, v in store.read_metrics(run_dir).items()
            if isinstance(v, (int, float)) and math.isfinite(v)}  # booleans too, as 0 or 1


def check_tensorboard(run_dir, root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    ea = EventAccumulator(str(root / "tensorboard" / run_dir.name), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    for column, points in expected(run_dir).items():
        got = [(e.step, e.value) for e in ea.Scalars(column)] if column in tags else []
        # the same steps, each once, and the same values in TensorBoard's float32
        assert got == [(s, float(np.float32(v))) for s, v in points], column
    assert {"val_loss", "noisy_err", "test_err"} <= tags
    for k, v in numeric_metrics(run_dir).items():
        assert [(e.step, e.value) for e in ea.Scalars(f"final/{k}")] == [(3, float(np.float32(v)))], k
    start = plugin_data_pb2.HParamsPluginData.FromString(
        ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info.hparams
    hp = hparams(run_dir)
    assert set(start) == set(hp)
    for k, v in hp.items():
        assert (start[k].string_value == v) if isinstance(v, str) else (start[k].number_value == float(v)), k
    (image,) = ea.Images("figures/learning_curves")
    assert image.step == 3 and image.width > 100


def mlflow_run(root, run_id):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=(root / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("robustbench_ols")
    runs = client.search_runs([exp.experiment_id])
    assert [r.data.tags[records.RUN_TAG] for r in runs] == [run_id]  # one MLflow run, reused on resume
    return client, runs[0]


def check_mlflow(run_dir, root):
    client, run = mlflow_run(root, run_dir.name)
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    for column, points in expected(run_dir).items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, column))
        assert history == points, column  # each epoch once, the values exactly
    assert run.data.params == {k: str(v) for k, v in hparams(run_dir).items()}
    metrics = numeric_metrics(run_dir)
    assert {k: run.data.metrics[k] for k in metrics} == metrics
    assert run.data.tags["rbols.eval_id"] == store.read_metrics(run_dir)["eval_id"]
    files = {a.path for folder in ("figures", "records") for a in client.list_artifacts(run.info.run_id, folder)}
    assert files == {"figures/learning_curves.png", "records/spec.json", "records/epochs.csv",
                     "records/metrics.json", "records/reliability.csv"}


def wandb_records(path) -> list[dict]:
    """The records of a W&B transaction log (.wandb), by wandb's own reader (`wandb leet inspect --json`)."""
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def merged(records, kind) -> dict:
    """The config or summary that the run's update records add up to."""
    out = {}
    for r in records:
        if r["type"] == kind or (kind == "config" and r["type"] == "run"):
            out.update((r[r["type"]].get("config", {}) if r["type"] == "run" else r[kind]).get("update", {}))
    return out


# ---------------------------------------------------------------- the live run

@needs("tensorboard")
def test_tensorboard_reads_back_the_epochs_csv(live):
    check_tensorboard(*live)


@needs("mlflow")
def test_mlflow_reads_back_the_epochs_csv(live):
    check_mlflow(*live)


@needs("wandb")
def test_wandb_offline_run_files_hold_the_history(live):
    run_dir, root = live
    run_id = run_dir.name
    folders = sorted((root / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(folders) == 2  # one per session, both with the run's own id
    first, last = (wandb_records(f / f"run-{run_id}.wandb") for f in folders)
    history = [r["history"] for r in last if r["type"] == "history"]
    assert [h["step"]["num"] for h in history] == [1, 2, 3]  # the resumed session logs the whole history
    assert [r["history"]["step"]["num"] for r in first if r["type"] == "history"] == [1]  # killed before epoch 2's
    by_step = {h["step"]["num"]: h["item"] for h in history}
    for column, points in expected(run_dir).items():
        assert [(s, by_step[s][column]) for s in sorted(by_step) if column in by_step[s]] == points, column
    (run,) = [r["run"] for r in last if r["type"] == "run"]
    assert run["run_id"] == run_id and run["project"] == "robustbench_ols" and run["resume"]
    config = merged(last, "config")
    assert {k: config[k] for k in hparams(run_dir)} == hparams(run_dir)
    summary = merged(last, "summary")
    metrics = numeric_metrics(run_dir)
    assert {k: summary[k] for k in metrics} == pytest.approx(metrics, rel=1e-12)
    (art,) = [r["artifact"] for r in last if r["type"] == "artifact"]
    assert {c["path"] for c in art["manifest"]["contents"]} >= {"figures/learning_curves.png", "records/metrics.json"}


# ---------------------------------------------------------------- export

@needs("tensorboard")
@needs("mlflow")
def test_export_replays_finished_runs_once(live, tmp_path, env):
    run_dir, live_root = live
    root = tmp_path / "logs"
    assert export(run_dir.parent, "tensorboard,mlflow", root) == 1
    check_tensorboard(run_dir, root)
    check_mlflow(run_dir, root)
    # again, and into the live run's logs: no second MLflow run, no epoch twice, the replay supersedes in TensorBoard
    assert export(run_dir.parent, ["mlflow", "tensorboard"], root) == 1
    assert export(run_dir.parent, FIGURES, live_root) == 1
    for r in (root, live_root):
        check_tensorboard(run_dir, r)
        check_mlflow(run_dir, r)


def test_export_needs_finished_runs_and_trackers(tmp_path):
    with pytest.raises(SpecError, match="no finished run directory"):
        export(tmp_path, "tensorboard", tmp_path / "logs")
    with pytest.raises(SpecError, match="name one or more trackers"):
        export(tmp_path, "", tmp_path / "logs")
    with pytest.raises(SpecError, match="unknown tracker 'comet' in --to; valid: tensorboard, mlflow, wandb"):
        export(tmp_path, "comet", tmp_path / "logs")


@needs("mlflow")
def test_mlflow_tracking_uri_and_experiment_from_the_environment(live, tmp_path, monkeypatch):
    run_dir, _ = live
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "elsewhere").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    with session.open_trackers("mlflow", run_dir, None, tmp_path / "logs") as tr:
        tr.epochs(store.read_epochs(run_dir))
    assert not (tmp_path / "logs" / "mlruns").exists()
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=(tmp_path / "elsewhere").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("mine").experiment_id])
    assert run.info.status == "KILLED"  # closed unfinished: as an interruption
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]


@needs("mlflow")
@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("sqlalchemy", "alembic")),
                    reason="sqlalchemy and alembic (MLflow's database store) are not installed")
def test_mlflow_sqlite_store_keeps_its_artifacts_under_the_log_root(live, tmp_path, monkeypatch):
    run_dir, _ = live
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    assert export(run_dir.parent, "mlflow", tmp_path / "logs") == 1
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("robustbench_ols").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]
    assert list((tmp_path / "logs" / "mlartifacts").glob("*/artifacts/figures/learning_curves.png"))
    assert not (tmp_path / "mlruns").exists()


# ---------------------------------------------------------------- names and failures

def test_bad_names_are_spec_errors_that_list_the_valid_ones():
    with pytest.raises(SpecError, match="valid: tensorboard, mlflow, wandb"):
        trackers.parse_trackers("tensorboard,comet")
    assert trackers.parse_trackers("") == trackers.parse_trackers(None) == ()
    if HAVE["mlflow"] and HAVE["tensorboard"]:  # in order, each once
        assert trackers.parse_trackers(" MLflow ,tensorboard,mlflow,") == ("mlflow", "tensorboard")


def test_a_missing_library_names_the_pip_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(SpecError, match=r"wandb is not installed; pip install 'robustbench_ols\[trackers\]'"):
        trackers.require_installed("wandb")
    # the options themselves need no library: a Ray or Slurm worker without W&B rebuilds them
    assert ExecOptions(log="wandb").log == ("wandb",)


def test_no_trackers_do_nothing(tmp_path):
    tr = session.open_trackers((), tmp_path / "abc")
    assert not tr
    tr.epoch({"epoch": 1, "lr": 0.1}, 1)
    tr.finish({"epochs": 1})
    tr.close()
    assert not list(tmp_path.iterdir())


def test_a_tracker_that_fails_is_dropped_with_a_warning(tmp_path):
    class Broken:
        name = "mlflow"

        def epoch(self, values, epoch):
            raise ConnectionError("server gone")

    class Kept:
        name = "tensorboard"
        seen = []

        def epoch(self, values, epoch):
            self.seen.append((epoch, values))

        def close(self, status):
            self.seen.append(status)
    warnings = []
    tr = session.Trackers([Broken(), Kept()], tmp_path / "abc123", warnings.append)
    tr.epoch({"epoch": 1, "lr": 0.1, "test_err": None, "seconds": float("nan")}, 1)
    tr.epoch({"epoch": 2, "lr": 0.1}, 2)
    tr.close()
    assert Kept.seen == [(1, {"lr": 0.1}), (2, {"lr": 0.1}), "interrupted"]  # empty cells left out
    (w,) = warnings
    assert "mlflow logging failed (ConnectionError: server gone)" in w and "rbols export" in w


def test_hyperparams_flatten_the_spec():
    hp = records.hyperparams(SPEC.to_dict())
    assert hp["method_options.alpha"] == SPEC.options["alpha"] and hp["milestones"] == "2"
    assert hp["nesterov"] is True and hp["epochs"] == 3 and hp["noise"] == "symmetric:0.4"
    assert records.hyperparams({"method_options": {}, "milestones": [], "x": None}) == {
        "method_options": "", "milestones": "", "x": "None"}
