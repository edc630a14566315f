"""Issue 27 where a GPU exists (skipped without one; `pytest -m cuda` runs them alone): the same batches and PGD
starts as the CPU's, a --deterministic kill-and-resume equal bit for bit, scoring, two workers packed on one GPU,
float16 and bfloat16 autocast, --compile, and MW-Net's resumed optimiser without host syncs."""
import json

import pytest
import torch

from robustbench_ols.attacks import AttackSpec
from robustbench_ols.attacks.robust import StartsFrom, attack_outcomes, start_stream
from robustbench_ols.data import TrainLoader
from robustbench_ols.models import create_model
from robustbench_ols.spec import EvalSpec, ExecOptions, RunSpec
from robustbench_ols.train.run import execute

from .grid_helpers import rbols
from .test_interrupts import ctrl_c, start, wait_for

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")]
TINY = dict(dataset="synthetic", model="resnet8", train_subset=300, batch_size=50, milestones=())


def test_the_batches_and_pgd_starts_are_the_cpus():
    x = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(300) % 10
    on_cpu, on_gpu = (list(TrainLoader(x.to(d), y.to(d), 64, seed=4).epoch(2)) for d in ("cpu", "cuda"))
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert torch.equal(a.index, b.index.cpu()) and torch.equal(a.x, b.x.cpu())
    spec = AttackSpec.parse("pgd")
    starts = []
    for d in ("cpu", "cuda"):
        with StartsFrom(start_stream(spec, 3)):
            starts.append(torch.empty(100, 3, 32, 32, device=d).uniform_(-spec.eps, spec.eps).cpu())
    assert torch.equal(*starts)


def test_scoring_on_the_gpu_does_not_depend_on_the_attack_batch_size():
    torch.manual_seed(0)
    model = create_model("resnet8", 10).cuda().eval()
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, device="cuda")
    labels = torch.arange(96, device="cuda") % 10
    spec = AttackSpec.parse("pgd:steps=3")
    a, b = (attack_outcomes(model, images, labels, spec, seed=1, batch_size=n).fooled for n in (32, 96))
    assert torch.equal(a, b)


@pytest.mark.parametrize("method", ["hard", "ols", "pencil"])  # OLS and PENCIL: float index_add_ / scatter_reduce
def test_a_deterministic_run_killed_and_resumed_equals_an_uninterrupted_one(tmp_path, method):
    args = ["run", "--dataset", "synthetic", "--model", "resnet8", "--method", method, "--train-subset", "300",
            "--batch-size", "50", "--epochs", "12", "--attack", "none", "--device", "cuda", "--deterministic",
            "--no-progress"]
    whole = tmp_path / "whole"
    assert rbols([*args, "--out", str(whole)]).wait(timeout=600) == 0
    cut = tmp_path / "cut"
    proc = start(args, cut)
    wait_for("*/epochs.csv", cut, proc)
    assert ctrl_c(proc)[0] == 130
    assert rbols([*args, "--out", str(cut)]).wait(timeout=600) == 0
    (a,), (b,) = (list(o.glob("*/model.pt")) for o in (whole, cut))
    wa, wb = (torch.load(p, weights_only=True)["models"][0] for p in (a, b))
    assert len(json.loads((b.parent / "executions.json").read_text())) == 2  # it was resumed
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_two_workers_packed_on_one_gpu(tmp_path):
    out = tmp_path / "out"
    p = rbols(["matrix", "--preset", "smoke", "--methods", "hard", "--attack", "none", "--device", "cuda",
               "--workers-per-device", "2", "--no-progress", "--out", str(out)])
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    sessions = [json.loads((d.parent / "executions.json").read_text())[0] for d in out.glob("*/DONE")]
    assert len(sessions) == 2 and len({s["pid"] for s in sessions}) == 2  # two worker processes
    assert all(s["device"] == "cuda:0" for s in sessions)  # each sees its GPU alone, as cuda:0


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_autocast_trains_in_either_dtype_and_says_which(tmp_path, dtype):
    if dtype == "bfloat16" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("bfloat16 needs compute capability 8.0")
    r = execute(RunSpec(**TINY, epochs=2, amp=True), ExecOptions(device="cuda", progress=False, amp_dtype=dtype),
                tmp_path, EvalSpec(attacks=("pgd:steps=2",), attack_examples=50))
    precision = json.loads((r.run_dir / "spec.json").read_text())["execution"]["precision"]
    assert precision["autocast"] == dtype and precision["grad_scaler"] is (dtype == "float16")
    assert precision["float32"] == "ieee"  # TF32 off unless --tf32


def test_a_compiled_run_on_the_gpu_trains_as_eager_does(tmp_path):
    """--compile with Triton's GPU kernels: recorded, and the first epoch's figures equal eager's within rounding."""
    runs = [execute(RunSpec(**TINY, epochs=1), ExecOptions(device="cuda", progress=False, compile=c), tmp_path / str(c),
                    EvalSpec(attacks=())) for c in (False, True)]
    spec = json.loads((runs[1].run_dir / "spec.json").read_text())
    assert spec["execution"]["precision"]["compile"].startswith("torch.compile")
    rows = [(r.run_dir / "epochs.csv").read_text().splitlines()[1].split(",") for r in runs]
    assert float(rows[1][2]) == pytest.approx(float(rows[0][2]), rel=1e-3)  # train_loss


def test_mwnet_resumed_on_the_gpu_keeps_adams_step_on_the_cpu(tmp_path):
    args = ["run", "--dataset", "synthetic", "--model", "resnet8", "--method", "mwnet:meta=40", "--train-subset",
            "400", "--batch-size", "50", "--epochs", "12", "--attack", "none", "--device", "cuda", "--no-progress"]
    proc = start(args, tmp_path)
    wait_for("*/epochs.csv", tmp_path, proc)
    assert ctrl_c(proc)[0] == 130
    (ckpt,) = tmp_path.glob("*/checkpoint.pt")
    from robustbench_ols.methods import FitInfo, build_method
    state = torch.load(ckpt, map_location="cuda", weights_only=False)["method"]
    method, _ = build_method("mwnet", {})
    y = torch.arange(400, device="cuda") % 10
    meta = (torch.zeros(20, 3, 32, 32, dtype=torch.uint8, device="cuda"), torch.arange(20, device="cuda") % 10)
    method.setup(FitInfo(10, 400, y, epochs=12, steps_per_epoch=8, device=torch.device("cuda"), dataset="synthetic",
                         seed=0, lr_at=lambda e: 0.1, meta_images=meta[0], meta_labels=meta[1]))
    method.load_state_dict(state)
    steps = [st["step"] for st in method.opt.state.values() if "step" in st]
    assert steps and all(t.device.type == "cpu" for t in steps)  # a non-capturable Adam reads them every step
