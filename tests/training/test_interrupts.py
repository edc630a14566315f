"""Ctrl-C and damaged checkpoints: a real SIGINT to a real `rbols run` and `rbols matrix`, then the same
command again. One line and exit 130, status `interrupted`, nothing finished changed; a truncated
checkpoint is set aside (never deleted) and training restarts from the first epoch."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from robustbench_ols.cli import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
RUN = ["run", "--dataset", "synthetic", "--model", "resnet8", "--train-subset", "300", "--batch-size", "50",
       "--epochs", "30", "--attack", "none", "--threads", "1", "--device", "cpu"]


def start(args, out: Path) -> subprocess.Popen:
    """`rbols ARGS --out OUT` in a process group of its own, with SIGINT at its default: a process inherits an
    ignored SIGINT (earlier tests, e.g. Ray's, may leave pytest ignoring it), and Python then installs no
    KeyboardInterrupt handler, as for any job started in the background by a non-interactive shell."""
    return subprocess.Popen([sys.executable, "-m", "robustbench_ols", *args, "--out", str(out)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(pattern: str, folder: Path, proc, timeout: float = 120) -> Path:
    """The first file matching `pattern` under `folder`, once it exists (the process must still run)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        hits = sorted(folder.glob(pattern))
        if hits:
            return hits[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no {pattern} under {folder} after {timeout} s")


def ctrl_c(proc) -> tuple[int, str, str]:
    """SIGINT to the process group, as a terminal's Ctrl-C sends it."""
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_sigint_during_run_then_a_truncated_checkpoint(tmp_path, capsys):
    out = tmp_path / "out"
    proc = start(RUN, out)
    epochs_csv = wait_for("*/epochs.csv", out, proc)  # at least one epoch in the checkpoint
    rc, _, err = ctrl_c(proc)
    run_dir = epochs_csv.parent
    assert rc == 130
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("rbols: interrupted at epoch ") and "run the same command to resume" in last
    status = json.loads((run_dir / "status.json").read_text())
    kept = status["epochs_kept"]
    assert status["status"] == "interrupted" and status["stage"] == "training" and 1 <= kept < 30
    assert f"keeps {kept} epoch(s)" in last
    assert not (run_dir / "DONE").exists() and (run_dir / "checkpoint.pt").exists()

    # the checkpoint truncated (a full disk, a bad copy): the same command sets it aside and starts over
    data = (run_dir / "checkpoint.pt").read_bytes()
    (run_dir / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    assert main([*RUN, "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    aside = sorted(run_dir.glob("checkpoint.pt.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == data[: len(data) // 3]  # kept, never deleted
    assert f"{run_dir}/checkpoint.pt is unreadable" in err and f"set aside as {aside[0].name}" in err
    assert "training restarts from epoch 1" in err
    sessions = json.loads((run_dir / "executions.json").read_text())
    assert [s["first_epoch"] for s in sessions] == [1, 1]
    assert (run_dir / "DONE").exists() and json.loads((run_dir / "metrics.json").read_text())["epochs"] == 30


def test_sigint_during_a_two_worker_grid(tmp_path):
    out = tmp_path / "grid"
    grid = ["matrix", "--preset", "smoke", "--epochs", "40", "--workers", "2", "--threads", "1", "--device", "cpu",
            "--no-progress"]
    proc = start(grid, out)
    wait_for("*/epochs.csv", out, proc)
    rc, _, err = ctrl_c(proc)
    assert rc == 130
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("rbols: grid interrupted with 0 of 6 cells done")
    states = [json.loads(p.read_text())["status"] for p in out.glob("*/status.json")]
    assert states and set(states) == {"interrupted"}  # no cell left looking as if it still ran
    assert not list(out.glob(".failed/*"))  # an interrupt is not a failure
