"""Issue 27 on the CPU: the precision policy written in every record, float16 autocast with a gradient scaler,
workers pinned to their GPU by CUDA_VISIBLE_DEVICES, and a grid that takes its threads from the CPU affinity."""
import json
import math
import shutil
import subprocess
import sys

import pytest
import torch

from robustbench_ols.cli import main
from robustbench_ols.common.errors import SpecError
from robustbench_ols.executors.local import pinned
from robustbench_ols.models.precision import amp_dtype
from robustbench_ols.spec import EvalSpec, ExecOptions, RunSpec
from robustbench_ols.train.run import execute

from .grid_helpers import ENV

TINY = dict(dataset="synthetic", model="resnet8", epochs=2, train_subset=200, batch_size=50, milestones=())


def test_every_record_carries_the_precision_policy(tmp_path, one_torch_thread):
    r = execute(RunSpec(**TINY), ExecOptions(device="cpu", progress=False), tmp_path, EvalSpec(attacks=()))
    spec = json.loads((r.run_dir / "spec.json").read_text())
    policy = {"float32": "ieee", "deterministic": False, "autocast": None, "grad_scaler": False, "compile": None}
    assert spec["execution"]["precision"] == policy
    assert [s["precision"] for s in json.loads((r.run_dir / "executions.json").read_text())] == [policy]
    (record,) = [json.loads(p.read_text()) for p in (r.run_dir / "evals").glob("*.json")]
    assert record["precision"] == {"float32": "ieee", "deterministic": False}
    # TF32 exists on GPUs only: asked for on a CPU, the record still says IEEE float32
    r2 = execute(RunSpec(**TINY, seed=1), ExecOptions(device="cpu", progress=False, tf32=True), tmp_path,
                 EvalSpec(attacks=()))
    assert json.loads((r2.run_dir / "spec.json").read_text())["execution"]["precision"]["float32"] == "ieee"


def test_float16_autocast_trains_with_a_gradient_scaler_and_says_so(tmp_path, one_torch_thread):
    """--amp on a device without bfloat16 (V100, T4) takes float16 and a GradScaler; --amp-dtype float16 forces
    that path on this CPU, so that it is exercised here."""
    assert amp_dtype("cpu") is torch.bfloat16 and amp_dtype("cpu", "float16") is torch.float16
    ex = ExecOptions(device="cpu", progress=False, amp_dtype="float16")
    r = execute(RunSpec(**TINY, amp=True), ex, tmp_path, EvalSpec(attacks=()))
    precision = json.loads((r.run_dir / "spec.json").read_text())["execution"]["precision"]
    assert precision["autocast"] == "float16" and precision["grad_scaler"] is True
    metrics = json.loads((r.run_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["test_err_last"]) and math.isfinite(metrics["nll"])
    with pytest.raises(SpecError, match="--amp-dtype 'fp8'"):
        ExecOptions(amp_dtype="fp8")


def test_a_worker_sees_its_gpu_alone_as_cuda_0():
    assert pinned("cuda:1", None) == ("cuda:0", "1")
    assert pinned("cuda:1", "4,6") == ("cuda:0", "6")  # the parent's own CUDA_VISIBLE_DEVICES, respected
    assert pinned("cuda:0", " 3 , 5") == ("cuda:0", "3")
    assert pinned("cpu", "4,6") == ("cpu", None)


def test_workers_per_device_must_be_positive(tmp_path, capsys):
    assert main(["matrix", "--preset", "smoke", "--workers-per-device", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--workers-per-device must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_a_grid_on_one_allowed_core_starts_one_single_threaded_worker(tmp_path):
    """`taskset -c 0 rbols matrix` on two cells: the CPUs this process may use, not the host's count, size the
    grid, so both cells train in the taskset process itself (no worker processes) with one torch thread."""
    out = tmp_path / "out"
    args = ["taskset", "-c", "0", sys.executable, "-m", "robustbench_ols", "matrix", "--preset", "smoke",
            "--methods", "hard", "--attack", "none", "--device", "cpu", "--no-progress", "--out", str(out)]
    env = {k: v for k, v in ENV.items() if k != "OMP_NUM_THREADS"}  # the affinity alone must decide
    p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    sessions = [json.loads((d.parent / "executions.json").read_text()) for d in out.glob("*/DONE")]
    assert len(sessions) == 2  # taskset execs python: its pid is the grid's
    assert all(s["torch_threads"] == 1 and s["pid"] == p.pid for (s,) in sessions)
