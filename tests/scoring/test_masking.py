"""AutoAttack and the gradient-masking checks on models built to show each case: an ordinary trained
model passes every check; the same model with its logits scaled by 1e4 (a saturated softmax: zero
gradients) or behind a non-differentiable input quantisation is flagged, with the checks that show it,
and its PGD-20 error lies well below AutoAttack's. The per-image outcomes give the worst case."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from robustbench_ols.attacks.sanity import CHECKS
from robustbench_ols.scoring.evaluation import EvalSpec, attack_subset, score

N = 20  # attacked images (two per class): every check runs on all of them
EV = EvalSpec(attacks=("pgd", "autoattack"), attack_examples=N, check_examples=0, cifar10h=False)


class ScaledLogits(nn.Module):
    """Logits x 1e4: the softmax saturates, so the cross-entropy gradient of a confidently classified
    image is exactly zero in float32 (masking by construction); the decisions are the model's."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) * 1e4


class Quantised(nn.Module):
    """The input rounded to 4 levels per channel before the model: rounding has a zero derivative, so
    every input gradient is zero (masking by construction; Athalye et al. 2018's thermometer/quantisation
    defences)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 3) / 3)


@pytest.fixture(scope="module")
def cifar_model(real_data, tmp_path_factory, one_torch_thread):
    """A resnet8 trained for 4 epochs on 2,000 real CIFAR-10 images (clean error about 60%), and the test set."""
    from robustbench_ols.data import load_dataset
    from robustbench_ols.models import create_model
    from robustbench_ols.spec import ExecOptions, RunSpec
    from robustbench_ols.train.run import execute
    r = execute(RunSpec(dataset="cifar10", model="resnet8", epochs=4, batch_size=64, train_subset=2000,
                        milestones=(), augment=False),
                ExecOptions(device="cpu", progress=False, data_root=str(real_data), download=False),
                tmp_path_factory.mktemp("masking"), EvalSpec(attacks=(), cifar10h=False))
    model = create_model("resnet8", 10)
    model.load_state_dict(torch.load(r.run_dir / "model.pt", weights_only=True)["models"][0])
    data = load_dataset("cifar10", real_data, download=False)
    return model.eval(), data.test_x, torch.as_tensor(data.test_y)


def _score(model, data):
    _, x, y = data
    return score(model, test_x=x, test_y=y, ev=EV)


def test_an_ordinary_model_passes_every_check(cifar_model):
    s = _score(cifar_model[0], cifar_model)
    m = s.metrics
    assert m["masking_suspected"] is False and m["masking_checks"] == ""
    assert all(s.checks[c]["passed"] for c in CHECKS), s.checks
    assert m["aa_err"] >= m["pgd20_err"]
    # eps 0 leaves exactly the clean error of the attacked images
    sub = attack_subset(cifar_model[2].numpy(), EV)
    with torch.no_grad():
        clean = (cifar_model[0](cifar_model[1][sub].float() / 255).argmax(1) != cifar_model[2][sub]).double().mean()
    assert m["sweep_eps0_err"] == pytest.approx(clean.item(), abs=1e-12)
    # the curve against eps rises to everything at 64/255
    curve = [m[f"sweep_eps{e}_err"] for e in (0, 1, 2, 4, 8, 16, 64)]
    assert curve[-1] == 1.0 and curve[0] < curve[3]
    # the worst case is computed from the per-image outcomes, not assumed
    o = s.outcomes
    assert list(o["test_index"]) == list(sub)
    assert m["worst_err"] == pytest.approx((o["clean_wrong"] | o["pgd20"] | o["aa"]).mean())
    assert o["aa"].mean() == pytest.approx(m["aa_err"]) and o["pgd20"].mean() == pytest.approx(m["pgd20_err"])


@pytest.mark.parametrize("wrap, expected", [(ScaledLogits, {"zero_grad", "large_eps", "square"}),
                                            (Quantised, {"zero_grad", "large_eps", "square"})])
def test_masking_by_construction_is_flagged(cifar_model, wrap, expected):
    s = _score(wrap(cifar_model[0]).eval(), cifar_model)
    m = s.metrics
    failed = set(m["masking_checks"].split(","))
    assert m["masking_suspected"] is True and expected <= failed, s.checks
    assert m["pgd20_err"] + 0.2 < m["aa_err"], m  # PGD-20 stalls; AutoAttack finds what it missed
    assert s.checks["eps_zero"]["passed"]  # the decisions themselves are unchanged


def test_the_record_keeps_outcomes_and_checks(tmp_path, real_data):
    """`rbols eval` on a finished run writes robust.npz next to the record, whose `checks` name every
    check; a setting from before the checks keeps its eval_id."""
    from robustbench_ols.cli import main
    out = tmp_path / "r"
    base = ["--dataset", "cifar10", "--model", "resnet8", "--epochs", "1", "--train-subset", "500",
            "--device", "cpu", "--no-progress", "--threads", "1", "--data-root", str(real_data), "--no-cifar10h"]
    assert main(["run", *base[:8], "--attack", "none", *base[8:], "--out", str(out)]) == 0
    run = next(out.iterdir())
    assert main(["eval", str(run), "--attack", "fgsm", "--attack", "pgd:steps=5", "--attack-examples", "20",
                 "--eps-sweep", "0,8,64", "--device", "cpu", "--no-progress", "--threads", "1",
                 "--data-root", str(real_data), "--no-cifar10h"]) == 0
    ev = EvalSpec(attacks=("fgsm", "pgd:steps=5"), attack_examples=20, eps_sweep=(0, 8, 64), cifar10h=False)
    rec = json.loads((run / "evals" / f"{ev.eval_id}.json").read_text())
    assert set(rec["checks"]) == set(CHECKS)
    z = np.load(run / "evals" / f"{ev.eval_id}.robust.npz")
    assert {"fgsm", "pgd5", "clean_wrong", "test_index"} <= set(z.files) and len(z["fgsm"]) == 20
    assert rec["metrics"]["worst_err"] == pytest.approx((z["clean_wrong"] | z["fgsm"] | z["pgd5"]).mean())
    assert set(k for k in rec["metrics"] if k.startswith("sweep_")) == {"sweep_eps0_err", "sweep_eps8_err",
                                                                       "sweep_eps64_err"}


@pytest.mark.parametrize("args, message", [
    (["--attack", "autoatack"], "valid: apgd-ce"),
    (["--attack", "autoattack:version=rand"], "version takes standard or plus"),
    (["--attack", "pgd:eps=2"], "need 0 <= eps <= 1"),
    (["--attack", "apgd-ce:eps=-1/255"], "need 0 <= eps <= 1"),
    (["--attack", "pgd:steps=0"], "steps >= 1"),
    (["--attack", "apgd-t:steps=0"], "steps >= 1"),
    (["--attack", "square:queries=0"], "queries >= 1"),
    (["--attack", "square:budget=10"], "square takes eps, queries"),
    (["--eps-sweep", "0,8,300"], "between 0 and 255"),
    (["--check-examples", "-1"], "--check-examples must be >= 0"),
])
def test_bad_attack_settings_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    from robustbench_ols.cli import main
    out = tmp_path / "r"
    assert main(["run", "--dataset", "synthetic", "--epochs", "1", "--train-subset", "100", "--device", "cpu",
                 "--no-progress", "--threads", "1", "--attack", "none", "--out", str(out)]) == 0
    run = next(out.iterdir())
    before = sorted(p.name for p in (run / "evals").iterdir())
    capsys.readouterr()
    assert main(["eval", str(run), *args, "--device", "cpu", "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in (run / "evals").iterdir()) == before


def test_a_setting_from_before_the_checks_keeps_its_eval_id():
    old = {"attack_batch_size": 256, "attack_examples": 500, "attack_seed": 0, "cifar10h": True, "n_bins": 15,
           "attacks": ["fgsm:eps=8/255", "pgd:eps=8/255,alpha=2/255,steps=20,random_start=true"]}
    ev = EvalSpec.from_dict(old)
    assert not ev.checks and ev.to_dict() == old
    assert EvalSpec(**{k: tuple(v) if k == "attacks" else v for k, v in old.items()}).checks  # new default: on
    assert EvalSpec(attacks=()).checks is False  # nothing to check without an attack
