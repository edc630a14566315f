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

from robustbench_ols.common.errors import SpecError

TRACKERS = ("tensorboard", "mlflow", "wandb")
# TensorBoard and W&B come with the `trackers` extra. MLflow is a pip command of its own: its databricks-sdk needs
# requests>=2.28.1 and torchattacks 3.5 pins requests~=2.25.1 (never importing it), so pip cannot resolve both
# in one install; installed afterwards, it upgrades requests and pip reports the (harmless) conflict.
EXTRA = "pip install 'robustbench_ols[trackers]' (TensorBoard, W&B), then pip install 'mlflow-skinny>=3.0'"


def parse_trackers(text, flag: str = "--log") -> tuple[str, ...]:
    """The trackers of `--log` ("tensorboard,mlflow", or a sequence of names), in order, each once; "" or None:
    none. SpecError, naming `flag`, for an unknown name. Whether the libraries are installed is asked where they
    are used (`require_installed`): a worker that only rebuilds the options needs none of them."""
    items = [] if text is None else text.split(",") if isinstance(text, str) else list(text)
    names = []
    for item in items:
        name = str(item).strip().lower()
        if name and name not in TRACKERS:
            raise SpecError(f"unknown tracker {name!r} in {flag}; valid: {', '.join(TRACKERS)} (any subset, "
                            f"comma-separated, e.g. {flag} tensorboard,mlflow)")
        if name and name not in names:
            names.append(name)
    return tuple(names)


def require_installed(names, flag: str = "--log") -> tuple[str, ...]:
    """`names` (parse_trackers' text or tuple) when each tracker's library is installed; SpecError naming `flag`
    and the pip command otherwise."""
    names = parse_trackers(names, flag)
    missing = [n for n in names if importlib.util.find_spec(n) is None]  # each library's module has its name
    if missing:
        raise SpecError(f"{flag} {','.join(missing)}: {' and '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} not installed; {EXTRA} installs the trackers")
    return names
