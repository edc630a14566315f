"""MLflow: `$MLFLOW_TRACKING_URI`, else the local file store `<root>/mlruns`; one MLflow run per run_id, found again by its tag."""
from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlparse

from robustbench_ols.common.errors import SpecError
from robustbench_ols.trackers.records import PROJECT, RUN_TAG


class MLflow:
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
