"""The transfer check (attacks/transfer.py, transfer_check.py): adversarial images crafted on a hard-label
surrogate and classified by the scored model. A model whose gradients are masked on purpose (its logits scaled
by 1e4: a saturated softmax, zero input gradients) is flagged, since the transfer fools it where its own
gradients do not; an ordinary model passes. In a results folder the hard-label run of the same setting is the
surrogate (found beside the run, added after the fact when it finishes later), a hard-label run is its own,
and --transfer-from of another architecture or dataset exits 2 writing nothing."""

import numpy as np
import pytest
import torch

from robustbench_ols.attacks.robust import attack_outcomes
from robustbench_ols.attacks.spec import PGD
from robustbench_ols.attacks.transfer import TRANSFER_SLACK, transfer_check
from robustbench_ols.scoring.evaluation import attack_subset
from robustbench_ols.scoring.transfer_check import complete_transfers
from robustbench_ols.spec import EvalSpec, ExecOptions, RunSpec
from robustbench_ols.store.evals import metrics_for, read_transfer
from robustbench_ols.train.run import execute
from tests.scoring.test_masking import ScaledLogits

# 20 attacked images (two per class); the checks on all of them, with a short sweep
EV = EvalSpec(attacks=("pgd",), attack_examples=20, check_examples=0, eps_sweep=(0, 8), cifar10h=False)


def _spec(method: str) -> RunSpec:
    return RunSpec(dataset="cifar10", model="resnet8", method=method, epochs=4, batch_size=64, train_subset=2000,
                   milestones=(), augment=False)


@pytest.fixture(scope="module")
def runs(real_data, tmp_path_factory, one_torch_thread):
    """LS trained first, then hard labels of the same setting, in one results folder (about 40 s)."""
    out = tmp_path_factory.mktemp("transfer")
    ex = ExecOptions(device="cpu", progress=False, data_root=str(real_data), download=False)
    ls = execute(_spec("ls"), ex, out, EV)
    waiting = dict(metrics_for(ls.run_dir, EV.eval_id))
    hard = execute(_spec("hard"), ex, out, EV)
    return out, ex, ls.run_dir, hard.run_dir, waiting


def test_the_grids_hard_cell_is_the_surrogate_and_is_added_when_it_finishes(runs):
    out, ex, ls_dir, hard_dir, waiting = runs
    # LS finished before its surrogate: its record waits for the check, which the grid's pass adds
    assert "transfer_err" not in waiting and "transfer_surrogate" not in waiting
    assert complete_transfers(out, [_spec("ls"), _spec("hard")], EV, ex) == 1
    m = metrics_for(ls_dir, EV.eval_id)
    assert m["transfer_surrogate"] == hard_dir.name and 0 <= m["transfer_err"] <= 1
    addon = read_transfer(ls_dir, EV.eval_id)
    assert addon["surrogate"] == {"run_id": hard_dir.name, "method": "hard", "chosen_by": "grid"}
    budget = addon["checks"]["transfer"]["budgets"]["8/255"]
    assert budget["white_box_err"] == pytest.approx(m["pgd20_err"]) and budget["transfer_err"] == m["transfer_err"]
    # the figure is the per-image outcomes kept beside it
    with np.load(ls_dir / "evals" / f"{EV.eval_id}.transfer-{hard_dir.name}.npz") as o:
        assert m["transfer_err"] == pytest.approx(o["pgd20"].mean()) and len(o["pgd20"]) == 20
    # the flag follows the threshold, and the masking flags carry it
    assert m["transfer_flagged"] == (budget["excess"] > TRANSFER_SLACK)
    assert ("transfer" in m["masking_checks"].split(",")) == m["transfer_flagged"]
    # a second pass adds nothing; the hard-label run is its own surrogate, with no figure
    assert complete_transfers(out, [_spec("ls"), _spec("hard")], EV, ex) == 0
    h = metrics_for(hard_dir, EV.eval_id)
    assert h["transfer_surrogate"] == "self" and h["transfer_err"] is None and h["transfer_flagged"] is False


def _model(run_dir):
    from robustbench_ols import store
    return store.load_run_model(run_dir, 10, torch.device("cpu"))


def _check(model, surrogate, real_data):
    from robustbench_ols.data import load_dataset
    data = load_dataset("cifar10", real_data, download=False)
    sub = torch.as_tensor(attack_subset(data.test_y, EV))
    x, y = data.test_x[sub], torch.as_tensor(data.test_y)[sub].long()
    with torch.no_grad():
        clean_wrong = model(x.float() / 255).argmax(1) != y
    white = {PGD(): attack_outcomes(model, x, y, PGD(), fold_bn=False).fooled}
    return transfer_check(model, surrogate, x, y, clean_wrong=clean_wrong, white_box=white)


def test_masked_gradients_are_caught_by_the_transfer_and_an_ordinary_model_passes(runs, real_data):
    _, _, ls_dir, hard_dir, _ = runs
    ls, hard = _model(ls_dir), _model(hard_dir)
    figures, details, _ = _check(ScaledLogits(ls).eval(), hard, real_data)
    d = details["budgets"]["8/255"]
    assert figures["transfer_flagged"] is True and d["passed"] is False, details
    assert d["excess"] > TRANSFER_SLACK and d["transfer_err"] > d["white_box_err"]
    figures, details, _ = _check(ls, hard, real_data)
    assert figures["transfer_flagged"] is False and details["budgets"]["8/255"]["passed"], details
    # the masked model takes the same decisions: the transfer fools it exactly as it fools the plain one
    assert figures["transfer_err"] == _check(ScaledLogits(ls).eval(), hard, real_data)[0]["transfer_err"]


@pytest.mark.parametrize("other, message", [
    ("resnet20", "another architecture (resnet20, not resnet8)"),
    ("cifar10", "another dataset (and so test set) (cifar10, not synthetic)"),
])
def test_transfer_from_another_architecture_or_dataset_exits_2_and_writes_nothing(tmp_path, capsys, real_data,
                                                                                  other, message):
    from robustbench_ols.cli import main
    base = ["--dataset", "synthetic", "--model", "resnet8", "--epochs", "1", "--train-subset", "100",
            "--device", "cpu", "--no-progress", "--threads", "1", "--no-cifar10h"]
    replaced = "resnet8" if other.startswith("resnet") else "synthetic"
    src_args = [other if a == replaced else a for a in base]
    assert main(["run", *src_args, "--attack", "none", "--data-root", str(real_data), "--out", str(tmp_path / "b")]) == 0
    src = next((tmp_path / "b").iterdir())
    scoring = ["--attack", "pgd:steps=2", "--attack-examples", "20", "--eps-sweep", "0,8"]
    assert main(["run", *base, "--method", "ls", *scoring, "--out", str(tmp_path / "a")]) == 0
    run = next((tmp_path / "a").iterdir())
    before = sorted(p.name for p in (run / "evals").iterdir())
    capsys.readouterr()
    assert main(["eval", str(run), *scoring, "--device", "cpu", "--no-progress", "--no-cifar10h",
                 "--transfer-from", str(src)]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in (run / "evals").iterdir()) == before
    # a run asked for with it is refused before anything is trained or written
    assert main(["run", *base, "--method", "ols", "--out", str(tmp_path / "c"), "--transfer-from", str(src)]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "c").exists()
    # a folder that is no finished run
    assert main(["eval", str(run), *scoring, "--device", "cpu", "--no-progress", "--no-cifar10h",
                 "--transfer-from", str(tmp_path)]) == 2
    assert "is not a finished run directory" in capsys.readouterr().err


def test_transfer_from_must_be_another_hard_label_run(tmp_path, capsys):
    from robustbench_ols.cli import main
    base = ["--dataset", "synthetic", "--model", "resnet8", "--epochs", "1", "--train-subset", "100",
            "--device", "cpu", "--no-progress", "--threads", "1", "--attack", "none"]
    assert main(["run", *base, "--method", "ols", "--out", str(tmp_path / "b")]) == 0
    assert main(["run", *base, "--method", "ls", "--out", str(tmp_path / "a")]) == 0
    src, run = next((tmp_path / "b").iterdir()), next((tmp_path / "a").iterdir())
    scoring = ["--attack", "pgd:steps=2", "--attack-examples", "20", "--eps-sweep", "0,8", "--device", "cpu",
               "--no-progress"]
    before = sorted(p.name for p in (run / "evals").iterdir())
    capsys.readouterr()
    for other, message in ((src, "not hard labels"), (run, "is the run itself")):
        assert main(["eval", str(run), *scoring, "--transfer-from", str(other)]) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in (run / "evals").iterdir()) == before  # nothing scored or written
