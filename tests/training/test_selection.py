"""Checkpoint selection (selection.py): a run holds out a share of its noisy training set (--noisy-val), keeps
the weights of the epoch each selection chooses, and `rbols eval`, `rbols report` and `rbols audit` take
`--select last|noisy-val|oracle`; bad values exit 2 with nothing written."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from robustbench_ols import store
from robustbench_ols.cli import main
from robustbench_ols.common.errors import SpecError
from robustbench_ols.spec import EvalSpec, ExecOptions, RunSpec
from robustbench_ols.store.results import collect
from robustbench_ols.train import selection
from robustbench_ols.train.run import execute

EX = ExecOptions(device="cpu", progress=False)
EV = EvalSpec(attacks=("pgd:steps=2",), attack_examples=20, eps_sweep=(0, 8), cifar10h=False)


def spec(**kw):
    base = dict(dataset="synthetic", model="resnet8", method="ls", noise="symmetric:0.4", epochs=5, batch_size=100,
                milestones=(3,), train_subset=600, noisy_val=0.1)
    base.update(kw)
    return RunSpec(**base)


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("sel")
    return out, execute(spec(), EX, out, EV).run_dir


def test_the_noisy_share_is_held_out_with_its_noisy_labels_and_is_in_the_run_id(run):
    _, d = run
    assert spec().run_id != spec(noisy_val=0.0).run_id != spec(noisy_val=0.05).run_id
    assert spec(noisy_val=0.0).run_id == RunSpec(**{k: v for k, v in spec().to_dict().items() if k != "noisy_val"}
                                                 | {"method_options": (), "milestones": (3,)}).run_id
    with np.load(d / "noise.npz") as z:
        val, labels = z["val_indices"], z["val_labels"]
        noisy = dict(zip(z["train_indices"], z["noisy_labels"]))
    assert len(val) == round(0.1 * 600) and [noisy[i] for i in val] == list(labels)  # its noisy labels
    assert np.bincount(labels, minlength=10).tolist() == [6] * 10  # balanced by the noisy labels
    assert json.loads((d / "metrics.json").read_text())["num_val"] == 60


def test_each_selection_keeps_the_weights_of_the_epoch_it_chooses(run):
    _, d = run
    history = store.read_epochs(d)
    tested = [r for r in history if r["test_err"] is not None]
    want = {"noisy-val": min(tested, key=lambda r: r["val_err"])["epoch"],
            "oracle": min(tested, key=lambda r: r["test_err"])["epoch"]}
    for how, epoch in want.items():
        kept = torch.load(d / f"model_{how}.pt", weights_only=True)
        assert kept["epoch"] == epoch
        assert selection.chosen(history, how, noisy_val=True)["epoch"] == epoch
    row = collect(d.parent).iloc[0]
    assert row["epoch_noisy_val"] == want["noisy-val"] and row["epoch_oracle"] == want["oracle"]
    assert row["test_err_noisy_val"] == history[want["noisy-val"] - 1]["test_err"]


def test_eval_at_a_selection_scores_that_epochs_weights(run, capsys):
    _, d = run
    args = ["eval", str(d), "--attack", "pgd:steps=2", "--attack-examples", "20", "--eps-sweep", "0,8",
            "--no-cifar10h", "--device", "cpu", "--no-progress", "--threads", "1"]
    for how in ("noisy-val", "oracle"):
        assert main([*args, "--select", how]) == 0
        ev = EvalSpec(attacks=("pgd:steps=2",), attack_examples=20, eps_sweep=(0, 8), cifar10h=False, select=how)
        rec = json.loads((d / "evals" / f"{ev.eval_id}.json").read_text())
        epoch = torch.load(d / f"model_{how}.pt", weights_only=True)["epoch"]
        assert rec["eval"]["select"] == how and rec["metrics"]["selected_epoch"] == epoch
        # the clean error of the kept weights is the test error epochs.csv recorded at that epoch
        assert rec["metrics"]["clean_err"] == pytest.approx(store.read_epochs(d)[epoch - 1]["test_err"], abs=1e-12)
    assert EvalSpec().eval_id == EvalSpec(select="last").eval_id  # the default keeps every earlier eval_id
    # the report at a selection: Table VII's first table is that selection's, the scores are that epoch's
    rep = d.parent / "rep"
    assert main(["report", str(d.parent), "--to", str(rep), "--format", "png", "--select", "noisy-val"]) == 0
    t7 = (rep / "table7.md").read_text()
    assert t7.index("Noisy-validation epoch") < t7.index("Last epoch") < t7.index("Oracle epoch, optimistic")
    assert "the selection used (`--select noisy-val`)" in t7
    csv = pd.read_csv(rep / "table7.csv")
    assert csv.query("which == 'noisy-val'")["mean"].iloc[0] == pytest.approx(
        collect(d.parent).test_err_noisy_val.iloc[0])


def test_a_kept_epoch_that_is_not_the_chosen_one_is_refused(run, tmp_path):
    _, d = run
    history = store.read_epochs(d)
    other = [dict(r) for r in history]
    best = selection.chosen(history, "oracle", noisy_val=True)["epoch"]
    for r in other:  # make another tested epoch the best: the kept file no longer matches
        if r["test_err"] is not None and r["epoch"] != best:
            r["test_err"] = -1.0
            break
    with pytest.raises(SpecError, match="did not keep the weights of epoch"):
        selection.load_weights(d, "oracle", other, torch.device("cpu"), noisy_val=True)


@pytest.mark.parametrize("argv, message", [
    (["run", "--noisy-val", "0.7"], "must lie in (0, 0.5]"),
    (["run", "--noisy-val", "0"], "must lie in (0, 0.5]"),
    (["run", "--noisy-val", "--val-split", "50"], "give one"),
    (["run", "--select", "best"], "valid: last, noisy-val, oracle"),
    (["run", "--select", "noisy-val"], "this run holds none"),
])
def test_bad_selection_input_exits_2_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "r"
    assert main([*argv, "--dataset", "synthetic", "--epochs", "1", "--train-subset", "100", "--device", "cpu",
                 "--no-progress", "--attack", "none", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_select_on_a_run_without_kept_weights_or_noisy_split_exits_2(run, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "--dataset", "synthetic", "--epochs", "1", "--train-subset", "100", "--device", "cpu",
                 "--no-progress", "--attack", "none", "--out", str(out)]) == 0
    d = next(out.iterdir())
    before = sorted(p.name for p in (d / "evals").iterdir())
    assert main(["eval", str(d), "--select", "noisy-val", "--attack", "none", "--device", "cpu"]) == 2
    assert "has no noisy validation split" in capsys.readouterr().err
    (d / "model_oracle.pt").unlink()  # a run from before the weights were kept
    assert main(["eval", str(d), "--select", "oracle", "--attack", "none", "--device", "cpu"]) == 2
    assert "is missing" in capsys.readouterr().err
    assert sorted(p.name for p in (d / "evals").iterdir()) == before
    assert main(["report", str(run[0]), "--to", str(tmp_path / "rep"), "--select", "best"]) == 2
    assert "valid: last, noisy-val, oracle" in capsys.readouterr().err and not (tmp_path / "rep").exists()


def test_the_audit_at_a_selection_states_it_and_compares_that_epochs_test_error(tmp_path):
    """`rbols audit --select noisy-val` on a grid trained with --noisy-val: the cells are scored at that epoch,
    audit.md says which checkpoint it judged, and its test-error comparisons are of the selected epochs."""
    out, to = tmp_path / "runs", tmp_path / "audit"
    assert main(["audit", "--method", "ls", "--against", "hard", "--preset", "smoke", "--seeds", "0,1",
                 "--noise", "symmetric:0.4", "--noisy-val", "0.2", "--select", "noisy-val", "--attack", "fgsm",
                 "--attack-examples", "30", "--device", "cpu", "--no-progress", "--threads", "1",
                 "--out", str(out), "--to", str(to)]) == 0
    md = (to / "audit.md").read_text()
    assert "Checkpoint: every figure but the wrong-label fit" in md and "`--select noisy-val`" in md
    table = pd.read_csv(to / "audit.csv")
    t = table[table.metric == "test_err_noisy_val"]
    assert len(t) == 1 and t.label.iloc[0] == "test error (noisy-validation epoch)"
    runs = collect(out)
    for m, col in (("ls", "new_mean"), ("hard", "base_mean")):
        assert t[col].iloc[0] == pytest.approx(runs[runs.method_label == m].test_err_noisy_val.mean())
    # each cell's record is the selected epoch's, and says so
    for d in (p.parent for p in out.glob("*/DONE")):
        m = json.loads((d / "metrics.json").read_text())
        rec = json.loads((d / "evals" / f"{m['eval_id']}.json").read_text())
        assert m["selected_epoch"] == rec["metrics"]["selected_epoch"] == torch.load(
            d / "model_noisy-val.pt", weights_only=True)["epoch"]


def test_a_grid_scored_at_a_selection_reports_no_last_epoch_score_it_never_made(tmp_path, capsys):
    """Cells scored with --select noisy-val after training: their metrics.json holds that epoch's scores, so a
    report at the last epoch takes no score from it (NaN), one at noisy-val takes them; asking for noisy-val
    where no cell holds a noisy split, or an --eval-id of another selection, exits 2 with nothing written."""
    out = tmp_path / "runs"
    base = ["--preset", "smoke", "--methods", "ls", "--seeds", "0", "--noise", "symmetric:0.4", "--attack", "fgsm",
            "--attack-examples", "30", "--device", "cpu", "--no-progress", "--threads", "1", "--out", str(out)]
    assert main(["matrix", *base, "--select", "noisy-val"]) == 2
    assert "these cells hold none" in capsys.readouterr().err and not out.exists()
    assert main(["matrix", *base, "--noisy-val", "0.2", "--select", "noisy-val"]) == 0
    last, chosen = collect(out).iloc[0], collect(out, select="noisy-val").iloc[0]
    assert np.isnan(last.get("clean_err", np.nan)) and chosen["clean_err"] == pytest.approx(chosen["test_err_noisy_val"])
    own = json.loads((next(out.glob("*/metrics.json"))).read_text())["eval_id"]
    for argv, message in ((["--select", "last", "--eval-id", own], "scored the epoch of --select noisy-val"),):
        assert main(["report", str(out), "--to", str(tmp_path / "rep"), *argv]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "rep").exists()
    plain = tmp_path / "plain"
    assert main(["run", "--dataset", "synthetic", "--epochs", "1", "--train-subset", "100", "--device", "cpu",
                 "--no-progress", "--attack", "none", "--out", str(plain)]) == 0
    assert main(["report", str(plain), "--to", str(tmp_path / "rep"), "--select", "noisy-val"]) == 2
    assert "no run under" in capsys.readouterr().err and not (tmp_path / "rep").exists()
