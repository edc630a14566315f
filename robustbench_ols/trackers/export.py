"""`rbols export`: finished runs replayed into the trackers from their run directories."""
from __future__ import annotations

from pathlib import Path

from robustbench_ols.common.errors import RbolsError, SpecError
from robustbench_ols.trackers import TRACKERS, require_installed
from robustbench_ols.trackers.session import _stderr, open_trackers


def export(results_dir, to, root=None, warn=_stderr) -> int:
    """Replay every finished run directory (DONE) directly under `results_dir` into the trackers `to`: its
    epochs.csv rows, its spec, its final scores, its learning curves and record files. Logs go under `root`
    (default: `<results_dir>/tracking`, where `--log` puts them). Returns how many runs were exported; a run
    whose records cannot be read is left out with a warning. Exporting again adds no second copy (MLflow: the
    same run, found by tag; TensorBoard: the replay supersedes; W&B: the same id, a new offline folder)."""
    from robustbench_ols import store
    names = require_installed(to, "--to")
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
