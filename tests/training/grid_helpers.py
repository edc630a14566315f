"""What the grid tests share: the smoke grid's command, a subprocess runner, and what a grid computed."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

SMOKE = ["matrix", "--preset", "smoke", "--device", "cpu", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def rbols(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "robustbench_ols", *args], env=kw.pop("env", ENV),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def results(out: Path) -> dict:
    """run_id -> (epochs.csv without seconds, metrics without timings): what a grid computed."""
    got = {}
    for d in sorted(p.parent for p in out.glob("*/DONE")):
        with open(d / "epochs.csv") as f:
            rows = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]
        m = {k: v for k, v in json.loads((d / "metrics.json").read_text()).items()
             if k not in ("train_seconds", "eval_seconds")}
        got[d.name] = (rows, m)
    return got


def files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def training_pids(out: Path) -> set:
    """The pids that trained the DONE runs under `out`; each run must have been trained in one session."""
    pids = set()
    for d in out.glob("*/DONE"):
        sessions = json.loads((d.parent / "executions.json").read_text())
        assert len(sessions) == 1, d.parent.name  # trained once, by one process
        pids.add(sessions[0]["pid"])
    return pids
