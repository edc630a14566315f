"""--compile (issue 27) on the CPU: a compiled training step equals the eager one within float rounding, a compiled
run says so in its records and keeps scoring eager, and where torch.compile cannot run the command exits 2 with
nothing written (no C++ compiler, for `rbols run` and `rbols matrix`; a compiler that fails; MW-Net's double
backward)."""
import csv
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from robustbench_ols.cli import main
from robustbench_ols.models import create_model
from robustbench_ols.models.compiling import compiled
from robustbench_ols.spec import EvalSpec, ExecOptions, RunSpec
from robustbench_ols.train.run import execute

from .grid_helpers import ENV

TINY = dict(dataset="synthetic", model="resnet8", epochs=2, train_subset=200, batch_size=50, milestones=())
RUN = ["run", "--dataset", "synthetic", "--model", "resnet8", "--epochs", "2", "--train-subset", "200",
       "--device", "cpu", "--no-progress", "--attack", "none", "--compile"]


def _step(model, x, y):
    model.zero_grad(set_to_none=True)
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    return logits.detach(), [p.grad.clone() for p in model.parameters()]


def test_a_compiled_step_equals_the_eager_one_within_rounding(one_torch_thread):
    torch.manual_seed(0)
    eager, comp = create_model("resnet8", 10), create_model("resnet8", 10)
    comp.load_state_dict(eager.state_dict())
    x, y = torch.rand(64, 3, 32, 32), torch.randint(0, 10, (64,))
    logits, grads = _step(eager, x, y)
    graphs = counters["stats"]["unique_graphs"]
    with compiled([comp]) as (m,):
        assert "forward" in vars(m)  # the compiled forward, over the class's
        c_logits, c_grads = _step(m, x, y)
    assert "forward" not in vars(comp)  # the eager model again: scoring and saving see the model itself
    assert list(comp.state_dict()) == list(eager.state_dict())
    assert counters["stats"]["unique_graphs"] > graphs  # TorchDynamo did capture the forward
    torch.testing.assert_close(c_logits, logits, rtol=1e-4, atol=1e-5)
    for a, b in zip(c_grads, grads):  # fused kernels sum in another order: equal to ~1e-3 of each tensor's scale
        assert (a - b).abs().max() <= 2e-3 * b.abs().max() + 1e-7


def test_a_compiled_run_records_it_and_trains_as_eager_does(tmp_path, one_torch_thread):
    ex = ExecOptions(device="cpu", progress=False)
    runs = {c: execute(RunSpec(**TINY), replace(ex, compile=c), tmp_path / str(c), EvalSpec(attacks=()))
            for c in (False, True)}
    spec = {c: json.loads((r.run_dir / "spec.json").read_text()) for c, r in runs.items()}
    assert spec[True]["run_id"] == spec[False]["run_id"]  # an execution option: the same run
    assert spec[False]["execution"]["precision"]["compile"] is None
    assert spec[True]["execution"]["precision"]["compile"].startswith("torch.compile (inductor")
    (session,) = json.loads((runs[True].run_dir / "executions.json").read_text())
    assert session["precision"]["compile"] == spec[True]["execution"]["precision"]["compile"]
    rows = {c: list(csv.DictReader((r.run_dir / "epochs.csv").open())) for c, r in runs.items()}
    for a, b in zip(rows[True], rows[False]):  # within float rounding after two epochs of four steps
        for k in ("train_loss", "test_loss"):
            assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-3), k
    (record,) = [json.loads(p.read_text()) for p in (runs[True].run_dir / "evals").glob("*.json")]
    assert "compile" not in record["precision"]  # scoring ran eager


def test_compile_without_a_cpu_compiler_exits_2_with_nothing_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CXX", "no-such-compiler-rbols")
    assert main(RUN + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--compile on the CPU needs a C++ compiler" in err and "'no-such-compiler-rbols'" in err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert main(["matrix", "--preset", "smoke", "--device", "cpu", "--compile", "--out", str(tmp_path / "grid")]) == 2
    assert "--compile on the CPU needs a C++ compiler" in capsys.readouterr().err
    assert not (tmp_path / "grid").exists()


def test_a_step_torch_cannot_compile_exits_2_with_nothing_written(tmp_path):
    """A compiler on PATH that fails: inductor's kernels cannot be built at the first step. In a fresh process with
    an empty inductor cache, so that no kernel compiled earlier is reused."""
    fake = tmp_path / "bin" / "failing-cxx"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'this compiler refuses' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = {**ENV, "CXX": str(fake), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
           "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "robustbench_ols", *RUN, "--threads", "1", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 2, p.stderr[-3000:]
    assert "--compile: torch.compile could not compile this run's step" in p.stderr
    assert "run without --compile" in p.stderr
    assert list(out.iterdir()) == []  # the directory this command created is gone


def test_mwnet_double_backward_under_compile_exits_2_with_nothing_written(tmp_path, capsys, one_torch_thread):
    """MW-Net's look-ahead differentiates through a gradient, which torch.compile's compiled backward refuses at the
    first step: exit 2 naming it, and the run directory this command created is removed."""
    out = tmp_path / "out"
    assert main(RUN + ["--method", "mwnet:meta=50", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--compile: this method's step differentiates through a gradient (a double backward" in err
    assert list(out.iterdir()) == []
    assert main(RUN[:-1] + ["--method", "mwnet:meta=50", "--out", str(out)]) == 0  # eager, it trains
