"""`rbols matrix --backend slurm` on a real single-node Slurm cluster (tests/slurm_cluster.py): the smoke grid
equals the local backend's cell by cell; a task cancelled mid-run (scancel) leaves its cell's epochs, and the
same command submits it again, resumes it, and leaves the finished cells alone; a preempted task (USR2) is
requeued by submitit and resumes its cell. Without Slurm here the tests are skipped and say why; with
RBOLS_REQUIRE=slurm (.ci/run) they fail instead."""
import csv
import json
import os
import subprocess
import time

import pytest

from robustbench_ols.cli import main

from .. import slurm_cluster
from .grid_helpers import ENV, SMOKE, files, rbols, results

pytest.importorskip("submitit", reason="the slurm extra is not installed (pip install -e '.[slurm]')")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm")
    try:
        env = slurm_cluster.start(folder)
    except slurm_cluster.Unavailable as e:
        if "slurm" in os.environ.get("RBOLS_REQUIRE", "").split(","):
            pytest.fail(f"no Slurm cluster, and RBOLS_REQUIRE asks for one: {e}")
        pytest.skip(f"no Slurm cluster could start here: {e}")
    yield {**ENV, "SLURM_CONF": env["SLURM_CONF"]}
    slurm_cluster.stop(folder)


def test_smoke_grid_through_slurm_equals_the_local_backend(cluster, reference, tmp_path):
    out = tmp_path / "slurm"
    p = rbols([*SMOKE, "--backend", "slurm", "--out", str(out)], env=cluster)
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 0, stderr[-3000:]
    assert "6 cells submitted as job" in stdout and "6 of 6 cells done, 0 failed" in stdout
    assert results(out) == results(reference)  # cell by cell: epochs.csv and the scores
    jobs = [json.loads(line) for line in (out / ".slurm" / "jobs.jsonl").read_text().splitlines()]
    assert {j["run_id"] for j in jobs} == {d.parent.name for d in out.glob("*/DONE")}
    for j in jobs:  # each cell ran in its own array task, whose log is under the output folder
        assert (out / ".slurm" / j["job_id"]).is_dir()
        host = json.loads((out / j["run_id"] / "executions.json").read_text())[0]
        assert host["pid"] != p.pid
    # nothing left to do: no job is submitted again
    again = rbols([*SMOKE, "--backend", "slurm", "--out", str(out)], env=cluster)
    stdout, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and "submitted" not in stdout and len(jobs) == 6


def test_packed_tasks_run_several_cells_at_once_and_equal_the_local_backend(cluster, reference, tmp_path):
    """--slurm-workers-per-device 2: the 6 smoke cells as 3 array tasks of 2 cells, each cell in a worker process of
    its own inside the task (the local backend), one thread each of the task's 2 CPUs; the same records."""
    out = tmp_path / "packed"
    p = rbols([*SMOKE, "--backend", "slurm", "--slurm-workers-per-device", "2", "--out", str(out)], env=cluster)
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 0, stderr[-3000:]
    assert "6 cells submitted as job" in stdout and "2 per task" in stdout and "6 of 6 cells done" in stdout
    assert results(out) == results(reference)
    jobs = [json.loads(line) for line in (out / ".slurm" / "jobs.jsonl").read_text().splitlines()]
    by_task = {}
    for j in jobs:
        by_task.setdefault(j["job_id"], []).append(j["run_id"])
    assert sorted(map(len, by_task.values())) == [2, 2, 2]
    for run_ids in by_task.values():  # two worker processes of one task, each with one thread
        execs = [json.loads((out / r / "executions.json").read_text())[0] for r in run_ids]
        assert execs[0]["pid"] != execs[1]["pid"] and execs[0]["host"] == execs[1]["host"]
        assert [e["torch_threads"] for e in execs] == [1, 1]


def _rows(run_dir):
    path = run_dir / "epochs.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def _two_cells_underway(out, timeout=300):
    """The two cells once each has at least 2 epochs and neither is finished."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        time.sleep(0.5)
        dirs = [d.parent for d in out.glob("*/epochs.csv")]
        if len(dirs) == 2 and all(len(_rows(d)) >= 2 and not (d / "DONE").exists() for d in dirs):
            return sorted(dirs)
    return None


# A smoke epoch takes about 0.5 s: with 10 epochs a cancelled task finished them all within Slurm's KillWait
# (5 s; submitit ignores the SIGTERM), so nothing was left to resume (seen in CI).
EPOCHS = 30


def test_preempted_task_is_requeued_and_a_cancelled_one_resumes_on_resubmission(cluster, tmp_path):
    out = tmp_path / "cancel"
    grid = ["matrix", "--preset", "smoke", "--methods", "hard", "--noise", "symmetric:0.4", "--seeds", "0,1",
            "--epochs", str(EPOCHS), "--backend", "slurm", "--device", "cpu", "--no-progress", "--out", str(out)]
    p = rbols(grid, env=cluster)
    dirs = _two_cells_underway(out)
    assert dirs is not None, p.communicate(timeout=60)
    preempted, cancelled = dirs
    jobs = {json.loads(x)["run_id"]: json.loads(x)["job_id"]
            for x in (out / ".slurm" / "jobs.jsonl").read_text().splitlines()}
    # preemption as Slurm signals it (USR2, submitit's --signal): submitit checkpoints and requeues the task
    subprocess.run(["scancel", "--signal=USR2", jobs[preempted.name]], env=cluster, check=True)
    subprocess.run(["scancel", jobs[cancelled.name]], env=cluster, check=True)  # killed outright
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:  # Slurm holds a requeued job for 2 minutes: start it now
        state = subprocess.run(["squeue", "--noheader", "--states=all", "--array", "--format=%T %r", "--jobs",
                                jobs[preempted.name]], env=cluster, capture_output=True, text=True).stdout
        if "PENDING" in state:
            subprocess.run(["scontrol", "update", f"JobId={jobs[preempted.name]}", "StartTime=now"], env=cluster)
            break
        time.sleep(0.5)
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 1, stderr[-3000:]  # not every cell done
    # the requeued task resumed its cell in a second session, after the epochs it had
    assert (preempted / "DONE").exists()
    sessions = json.loads((preempted / "executions.json").read_text())
    assert len(sessions) == 2 and sessions[1]["first_epoch"] > 2  # 1-based: resumed after >= 2 epochs
    assert f"unfinished {cancelled.name}: Slurm task {jobs[cancelled.name]} ended" in stdout
    assert not (cancelled / "DONE").exists()
    kept = _rows(cancelled)
    assert 2 <= len(kept) < EPOCHS
    finished = files(preempted)
    # the same command again: only the cancelled cell is submitted, and it resumes from its checkpoint
    again = rbols(grid, env=cluster)
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-3000:]
    assert "1 cell submitted" in stdout and "2 of 2 cells done, 0 failed" in stdout
    sessions = json.loads((cancelled / "executions.json").read_text())
    assert len(sessions) == 2 and sessions[1]["first_epoch"] > len(kept)  # 1-based: resumed after them
    rows = _rows(cancelled)
    assert len(rows) == EPOCHS and rows[:len(kept)] == kept  # the earlier epochs kept as they were
    assert files(preempted) == finished  # the finished cell untouched


def test_dry_run_prints_the_sbatch_file_and_bad_options_exit_2(tmp_path, capsys):
    out = tmp_path / "never"
    code = main([*SMOKE, "--backend", "slurm", "--out", str(out), "--dry-run", "--slurm-partition", "gpu",
                 "--slurm-time", "1-02:30:00", "--slurm-gpus-per-task", "1", "--slurm-cpus-per-task", "4",
                 "--slurm-array-parallelism", "3", "--slurm-extra", "account=proj", "--slurm-extra", "qos=high"])
    text = capsys.readouterr().out
    assert code == 0 and not out.exists()
    for line in ("#SBATCH --partition=gpu", f"#SBATCH --time={26 * 60 + 30}", "#SBATCH --gpus-per-task=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --array=0-5%3", "#SBATCH --account=proj", "#SBATCH --qos=high",
                 f"#SBATCH --output={out}/.slurm/%A_%a/%A_%a_0_log.out", "#SBATCH --signal=USR2@90"):
        assert line in text, line
    for bad, words in ((["--slurm-time", "soon"], "[D-]HH:MM[:SS]"), (["--slurm-extra", "account"], "KEY=VALUE"),
                       (["--slurm-extra", "time=5"], "set by rbols"), (["--slurm-cpus-per-task", "0"], ">= 1"),
                       (["--slurm-workers-per-device", "0"], "--slurm-workers-per-device must be >= 1")):
        assert main([*SMOKE, "--backend", "slurm", "--out", str(out), *bad]) == 2
        assert words in capsys.readouterr().err, bad
        assert not out.exists()
    assert main([*SMOKE, "--out", str(out), "--slurm-time", "30"]) == 2  # the local backend
    assert "--slurm-time: for --backend slurm only" in capsys.readouterr().err and not out.exists()
