"""One run end to end on the synthetic set: files, determinism, resume, failure, bad inputs."""
import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustbench_ols import store
from robustbench_ols.cli import main
from robustbench_ols.common.errors import RunFailed
from robustbench_ols.methods import METHODS, Method, register
from robustbench_ols.scoring.evaluation import EvalSpec
from robustbench_ols.spec import ExecOptions, RunSpec
from robustbench_ols.store import EPOCH_COLUMNS
from robustbench_ols.train import run as run_mod
from robustbench_ols.train.run import execute

EX = ExecOptions(device="cpu", progress=False)
EV = EvalSpec(attacks=("fgsm", "pgd:steps=2"), attack_examples=20)  # light scoring: these tests are about runs


def spec(**kw):
    base = dict(dataset="synthetic", model="resnet8", method="ols",
                method_options=(("alpha", 0.5), ("init", "uniform"), ("period", 0)),
                noise="symmetric:0.4", epochs=3, batch_size=100, milestones=(2,), train_subset=600)
    base.update(kw)
    return RunSpec(**base)


def rows(run_dir):
    with open(run_dir / "epochs.csv") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.md5(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return execute(spec(), EX, out, EV)


def test_run_writes_every_file(finished):
    d = finished.run_dir
    assert d.name == spec().run_id and len(d.name) == 12
    names = {p.name for p in d.iterdir()}
    assert names == {"spec.json", "noise.json", "noise.npz", "epochs.csv", "metrics.json", "model.pt",
                     "model_oracle.pt",  # the best test epoch's weights (selection.py; no noisy split: no other)
                     "status.json", "executions.json", "reliability.csv", "evals", "DONE"}  # no checkpoint, no .tmp
    assert {p.name for p in (d / "evals").iterdir()} == {f"{EV.eval_id}.json", f"{EV.eval_id}.reliability.csv",
                                                         f"{EV.eval_id}.robust.npz", f"{EV.eval_id}.predictions.npz"}
    (session,) = json.loads((d / "executions.json").read_text())
    assert session["first_epoch"] == 1 and session["device"] == "cpu" and session["pid"] == os.getpid()
    r = rows(d)
    assert [int(x["epoch"]) for x in r] == [1, 2, 3]
    with open(d / "epochs.csv") as f:
        assert tuple(next(csv.reader(f))) == EPOCH_COLUMNS
    assert [float(x["lr"]) for x in r] == pytest.approx([0.1, 0.1, 0.01])
    m = json.loads((d / "metrics.json").read_text())
    # numbers, but the eval's name and the names of the gradient-masking checks that failed
    assert [k for k, v in m.items() if isinstance(v, str)] == ["eval_id", "masking_checks"]
    assert all(isinstance(m[k], float) for k in ("test_err_last", "test_err_best", "noise_rate_realised",
                                                 "train_seconds", "noisy_err_last"))
    assert m["noise_rate_realised"] == pytest.approx(0.4) and m["num_noisy"] == 240
    assert m["test_err_best"] == min(float(x["test_err"]) for x in r)
    assert m["test_err_last"] == float(r[-1]["test_err"])
    s = json.loads((d / "spec.json").read_text())
    assert s["run_id"] == d.name and s["spec"]["method_options"] == {"alpha": 0.5, "init": "uniform", "period": 0}
    assert s["execution"]["device"] == "cpu" and s["versions"]["torch"] == torch.__version__
    assert "commit" in s["git"]
    z = np.load(d / "noise.npz")
    assert (z["noisy_labels"] != z["clean_labels"]).sum() == 240
    assert np.array_equal(z["is_noisy"], z["noisy_labels"] != z["clean_labels"])
    assert np.allclose(z["T"].sum(1), 1) and len(z["train_indices"]) == 600
    noise = json.loads((d / "noise.json").read_text())
    assert noise["noise_rate_realised"] == pytest.approx(0.4) and len(noise["T"]) == 10
    assert json.loads((d / "status.json").read_text())["status"] == "done"


def test_statistics_are_consistent(finished):
    for r in rows(finished.run_dir):
        train_err, noisy_err = float(r["train_err"]), float(r["noisy_err"])
        clean_err = float(r["clean_subset_err"])
        # train_err is the mix of the wrong-label error and the clean-label error (40% / 60%).
        assert train_err == pytest.approx(0.4 * noisy_err + 0.6 * clean_err, abs=1e-9)
        # Predicting the true class of a wrong-label image is one way of missing its wrong label.
        assert 0 <= float(r["noisy_true_acc"]) <= noisy_err


def test_epoch_statistics_hand_computed():
    from robustbench_ols.data import Batch
    from robustbench_ols.methods import StepOutput
    from robustbench_ols.train.training import _batch_stats, _epoch_figures
    # 5 samples, K = 3. Clean labels 0 1 2 0 1; samples 1 and 3 carry wrong labels (2 and 1).
    clean = torch.tensor([0, 1, 2, 0, 1])
    noisy = torch.tensor([0, 2, 2, 1, 1])
    is_noisy = noisy != clean
    pred = torch.tensor([0, 1, 0, 1, 1])  # sample 1: true class; sample 3: fits its wrong label
    logits = F.one_hot(pred, 3).float() * 5
    out = StepOutput(torch.tensor(0.7), logits)
    f = _epoch_figures(_batch_stats(out, Batch(torch.zeros(5, 3, 32, 32), noisy, torch.arange(5)),
                                    is_noisy, clean).tolist())
    assert f["train_err"] == pytest.approx(2 / 5)  # samples 1 and 2 disagree with their noisy label
    assert f["noisy_err"] == pytest.approx(1 / 2)  # against the WRONG label: sample 1 misses it, 3 fits it
    assert f["noisy_true_acc"] == pytest.approx(1 / 2)  # sample 1 predicted as its true class
    assert f["clean_subset_err"] == pytest.approx(1 / 3)  # sample 2 of the clean 0, 2, 4
    assert f["train_loss"] == pytest.approx(0.7)


def test_same_command_twice_gives_the_same_epochs_csv(finished, tmp_path):
    again = execute(spec(), EX, tmp_path, EV)
    assert rows(again.run_dir) == rows(finished.run_dir)
    a = torch.load(again.run_dir / "model.pt")["models"][0]
    b = torch.load(finished.run_dir / "model.pt")["models"][0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_done_run_is_not_retrained(finished):
    before = snapshot(finished.run_dir)
    result = execute(spec(), EX, finished.run_dir.parent, EV)
    assert result.status == "already done"
    assert snapshot(finished.run_dir) == before


def test_resume_after_interruption_equals_uninterrupted(finished, tmp_path, monkeypatch):
    calls = []
    real = store.write_epochs_csv

    def dies_after_second_checkpoint(path, history):
        calls.append(len(history))
        if len(history) == 2:  # killed between the epoch-2 checkpoint and its epochs.csv
            raise KeyboardInterrupt
        real(path, history)
    monkeypatch.setattr(store, "write_epochs_csv", dies_after_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        execute(spec(), EX, tmp_path, EV)
    d = tmp_path / spec().run_id
    assert not (d / "DONE").exists() and (d / "checkpoint.pt").exists() and len(rows(d)) == 1
    monkeypatch.setattr(store, "write_epochs_csv", real)
    resumed = execute(spec(), EX, tmp_path, EV)
    assert resumed.status == "done"
    assert rows(d) == rows(finished.run_dir)
    a, b = torch.load(d / "model.pt"), torch.load(finished.run_dir / "model.pt")
    assert all(torch.equal(a["models"][0][k], b["models"][0][k]) for k in a["models"][0])
    assert torch.equal(a["method"]["S"], b["method"]["S"])  # OLS soft labels resumed exactly
    # the kept weights of the oracle epoch travel in the checkpoint: the resumed run keeps the same ones
    ka, kb = torch.load(d / "model_oracle.pt"), torch.load(finished.run_dir / "model_oracle.pt")
    assert ka["epoch"] == kb["epoch"] and all(torch.equal(ka["state_dict"][k], kb["state_dict"][k])
                                              for k in ka["state_dict"])


def test_two_methods_on_one_cell_see_the_same_noisy_labels(finished, tmp_path):
    hard = execute(spec(method="hard", method_options=(), epochs=1, milestones=()), EX, tmp_path, EV)
    a, b = np.load(hard.run_dir / "noise.npz"), np.load(finished.run_dir / "noise.npz")
    assert hard.run_dir.name != finished.run_dir.name
    for key in ("noisy_labels", "is_noisy", "train_indices", "T"):
        assert np.array_equal(a[key], b[key])


class NaNInSecondEpoch(Method):
    name = "test-nan-epoch2"
    citation = "test only"

    def loss(self, logits, batch, epoch):
        return F.cross_entropy(logits, batch.y) * (float("nan") if epoch == 1 else 1.0)


@pytest.fixture
def nan_method():
    register(NaNInSecondEpoch)
    yield NaNInSecondEpoch.name
    METHODS.unregister(NaNInSecondEpoch.name)


def test_non_finite_loss_stops_and_records_failure(nan_method, tmp_path, capsys):
    code = main(["run", "--dataset", "synthetic", "--model", "resnet8", "--method", nan_method,
                 "--epochs", "3", "--train-subset", "300", "--device", "cpu", "--no-progress",
                 "--attack", "none", "--out", str(tmp_path)])
    assert code == 1
    assert "non-finite train_loss" in capsys.readouterr().err
    (d,) = tmp_path.iterdir()
    status = json.loads((d / "status.json").read_text())
    assert status["status"] == "failed" and status["epoch"] == 2 and "non-finite" in status["reason"]
    assert not (d / "DONE").exists() and (d / "checkpoint.pt").exists()
    assert len(rows(d)) == 1  # the good epoch is kept
    with pytest.raises(RunFailed):  # rerunning resumes from epoch 1 and fails the same way
        execute(RunSpec.from_dict(json.loads((d / "spec.json").read_text())["spec"]), EX, tmp_path, EV)


def test_weights_that_blow_up_fail_the_run(tmp_path):
    s = spec(method="hard", method_options=(), epochs=2, milestones=(), lr=1e9)
    with pytest.raises(RunFailed, match="non-finite"):
        execute(s, EX, tmp_path, EV)
    d = tmp_path / s.run_id
    status = json.loads((d / "status.json").read_text())
    assert status["status"] == "failed" and status["epoch"] == 1
    assert not (d / "DONE").exists() and not (d / "checkpoint.pt").exists()


def test_killed_between_final_files_and_done_is_finished_without_retraining(finished, tmp_path):
    d = tmp_path / finished.run_dir.name
    shutil.copytree(finished.run_dir, d)
    (d / "DONE").unlink()
    r = execute(spec(), EX, tmp_path, EV)
    assert r.status == "done" and (d / "DONE").exists()
    assert r.metrics == json.loads((finished.run_dir / "metrics.json").read_text())
    assert len(json.loads((d / "executions.json").read_text())) == 1  # no new training session


def test_python_api_and_cli_give_one_run_id():
    from robustbench_ols.cli import build_parser
    from robustbench_ols.cli.commands import spec_from_args
    args = build_parser().parse_args(["run", "--dataset", "synthetic", "--method", "ols",
                                      "--noise", "symmetric:0.40", "--epochs", "300"])
    cli_spec, _ = spec_from_args(args)
    api_spec = RunSpec(dataset="synthetic", method="ols", noise="symmetric:0.4", epochs=300)
    assert cli_spec.run_id == api_spec.run_id
    assert api_spec.milestones == (150, 225) and api_spec.lr_at(149) == 0.1
    assert api_spec.lr_at(150) == pytest.approx(0.01) and api_spec.lr_at(299) == pytest.approx(0.001)
    assert api_spec.options == {"alpha": 0.5, "init": "uniform", "period": 0}
    assert RunSpec(noise="symmetric:0.123456789").run_id != RunSpec(noise="symmetric:0.123457").run_id
    assert RunSpec(schedule="cosine").milestones == ()


def test_cli_run_prints_the_run_directory(tmp_path, capsys):
    args = ["run", "--dataset", "synthetic", "--model", "resnet8", "--method", "ls:eps=0.2",
            "--noise", "symmetric:0.20", "--epochs", "1", "--train-subset", "300", "--device", "cpu",
            "--attack", "fgsm", "--attack-examples", "20", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    d = Path(out[-1])
    assert d.parent == tmp_path and (d / "DONE").exists()
    s = json.loads((d / "spec.json").read_text())["spec"]
    assert s["noise"] == "symmetric:0.2" and s["method_options"] == {"eps": 0.2, "gamma": None}
    assert s["noise_seed"] == s["seed"] == 0 and s["milestones"] == []
    assert main(args) == 0 and "already done" in capsys.readouterr().out


def _no_root(tmp_path):
    (tmp_path / "empty").mkdir(exist_ok=True)
    return str(tmp_path / "empty")


BAD = [
    (["--method", "nope"], "unknown method 'nope'; valid methods:"),
    (["--method", "ols:beta=1"], "unknown option(s) beta for method 'ols'; valid: alpha"),
    (["--method", "ols:alpha=abc"], "alpha='abc' is not a valid float"),
    (["--model", "resnet21"], "unknown model 'resnet21'; valid models:"),
    (["--noise", "symmetric:1.0"], "must be in [0, 1)"),
    (["--noise", "symmetric:-0.2"], "must be in [0, 1)"),
    (["--noise", "gaussian:0.2"], "unknown noise kind 'gaussian'"),
    (["--noise", "human:worst"], "synthetic has no human labels"),
    (["--dataset", "cifar10", "--noise", "human:best"], "unknown human label set 'best'"),
    (["--dataset", "mnist"], "unknown dataset 'mnist'; valid datasets: cifar10, cifar100, synthetic"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--schedule", "linear"], "unknown --schedule 'linear'"),
    (["--milestones", "a,b"], "--milestones 'a,b'"),
    (["--train-subset", "5"], "--train-subset 5 must be between"),
    (["--device", "tpu"], "--device"),
    (["--method", "ls:gamma=0.05"], "gamma must be in (1/K, 1]"),
    (["--method", "ls:gamma=1.5"], "gamma must be in (1/K, 1]"),
    (["--momentum", "0"], "pass --no-nesterov"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--noise-seed", "-3"], "--noise-seed must be >= 0"),
    (["--eval-batch-size", "0"], "--eval-batch-size must be >= 1"),
    (["--test-every", "0"], "--test-every must be >= 1"),
    (["--test-every", "-2"], "--test-every must be >= 1"),
    (["--test-subset", "-10"], "--test-subset must be >= 0"),
    (["--test-subset", "25"], "--test-subset 25 must be a multiple of the number of classes (10)"),
    (["--test-subset", "1000000"], "and at most the test set size"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--dataset", "cifar10", "--no-download", "--data-root", None], "RBOLS_DATA"),
]


@pytest.mark.parametrize("extra, fragment", BAD, ids=[" ".join(map(str, b[0])) for b in BAD])
def test_bad_input_gives_its_message_and_loses_nothing(finished, tmp_path, capsys, extra, fragment):
    out = tmp_path / "out"
    shutil.copytree(finished.run_dir, out / finished.run_dir.name)
    before = snapshot(out)
    extra = [_no_root(tmp_path) if a is None else a for a in extra]
    args = ["run", "--dataset", "synthetic", "--model", "resnet8", "--epochs", "2", "--device", "cpu",
            "--no-progress", "--out", str(out)] + extra
    assert main(args) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert snapshot(out) == before


def test_out_that_is_a_file_is_an_error(tmp_path, capsys):
    f = tmp_path / "results"
    f.write_text("precious")
    assert main(["run", "--dataset", "synthetic", "--device", "cpu", "--out", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err and f.read_text() == "precious"


def test_real_cifar10_tiny_run(tmp_path, real_data):
    root = str(real_data)
    s = RunSpec(dataset="cifar10", model="resnet8", method="ols",
                method_options=(("alpha", 0.5), ("init", "uniform"), ("period", 0)),
                noise="human:worst", epochs=1, train_subset=500)
    r = execute(s, ExecOptions(device="cpu", progress=False, data_root=root), tmp_path, EV)
    m = r.metrics
    assert m["num_train"] == 500 and 0.3 < m["noise_rate_realised"] < 0.5  # CIFAR-10N worst: ~40%
    assert 0 < m["test_err_last"] <= 0.95
    # CIFAR-10: the CIFAR-10H figures are there; the attack figures on the 20-image subset too.
    assert 0 < m["c10h_kl_all"] and 0 <= m["c10h_agree"] <= 1 and m["c10h_ce"] > m["c10h_kl_all"]
    assert m["attack_examples"] == 20 and m["pgd2_err"] >= m["fgsm_err"] - 0.1
    assert "binary layout" in json.loads((r.run_dir / "spec.json").read_text())["execution"]["data_source"]


def test_amp_and_memory_format_are_recorded(tmp_path):
    s = spec(method="hard", method_options=(), epochs=1, milestones=(), amp=True)
    assert s.run_id != spec(method="hard", method_options=(), epochs=1, milestones=()).run_id
    r = execute(s, ExecOptions(device="cpu", progress=False, channels_last=False), tmp_path, EV)
    rec = json.loads((r.run_dir / "spec.json").read_text())
    assert rec["spec"]["amp"] is True and rec["execution"]["amp"] is True
    assert rec["execution"]["channels_last"] is False
    assert np.isfinite(r.metrics["train_loss_last"]) and r.metrics["test_err_last"] < 0.9


def test_run_id_ignores_execution_details_but_not_the_spec():
    a = spec()
    assert a.run_id == RunSpec.from_dict(a.to_dict()).run_id
    assert a.run_id != spec(seed=1).run_id != spec(noise="symmetric:0.2").run_id
    assert a.run_id != spec(method_options=(("alpha", 0.4), ("init", "uniform"), ("period", 0))).run_id


@pytest.mark.parametrize("every, subset", [(2, 0), (1, 100), (3, 50)])
def test_test_every_and_test_subset_leave_training_and_final_scores_alone(finished, tmp_path, every, subset):
    """The per-epoch test pass every K epochs or on a class-balanced subset: the same training (every
    training column of epochs.csv), the same final scores, the last epoch tested on the whole test set;
    only the untested epochs are empty and the run_id and spec.json's reporting say which."""
    s = spec(test_every=every, test_subset=subset)
    r = execute(s, EX, tmp_path, EV)
    assert s.run_id != spec().run_id and r.run_dir.name == s.run_id
    full, sparse = rows(finished.run_dir), rows(r.run_dir)
    train_cols = ("epoch", "lr", "train_loss", "train_err", "noisy_err", "noisy_true_acc", "clean_subset_err")
    assert [[x[c] for c in train_cols] for x in sparse] == [[x[c] for c in train_cols] for x in full]
    for i, (a, b) in enumerate(zip(full, sparse)):
        tested = (i + 1) % every == 0 or i + 1 == len(full)
        if not tested:
            assert b["test_err"] == b["test_loss"] == ""
        elif subset and i + 1 < len(full):
            assert float(b["test_err"]) * subset == pytest.approx(round(float(b["test_err"]) * subset))
        else:  # tested on the whole test set: what the run without the option recorded
            assert (b["test_err"], b["test_loss"]) == (a["test_err"], a["test_loss"])
    m, m0 = r.metrics, finished.metrics
    for k in ("test_err_last", "clean_err", "fgsm_err", "pgd2_err", "ece", "nll", "noisy_err_last", "train_loss_last"):
        assert m[k] == m0[k], k
    rule = json.loads((r.run_dir / "spec.json").read_text())["reporting"]["epoch_test"]
    assert (f"every {every} epochs (epochs {every}, {2 * every}, ...)" in rule) == (every > 1) and (f"subset of {subset} test images" in rule) == bool(subset)


def test_test_subset_is_fixed_and_class_balanced():
    y = np.repeat(np.arange(10), 100)
    a, b = run_mod.epoch_test_subset(y, 200), run_mod.epoch_test_subset(y, 200)
    assert np.array_equal(a, b) and np.bincount(y[a]).tolist() == [20] * 10
    assert np.array_equal(run_mod.epoch_test_subset(y, 0), np.arange(1000))


def test_threads_are_set_and_recorded(tmp_path):
    before = torch.get_num_threads()
    try:
        args = ["run", "--dataset", "synthetic", "--model", "resnet8", "--epochs", "1", "--train-subset", "200",
                "--device", "cpu", "--no-progress", "--attack", "none", "--threads", "1", "--out", str(tmp_path)]
        assert main(args) == 0
        (d,) = [p.parent for p in tmp_path.glob("*/DONE")]
        assert json.loads((d / "executions.json").read_text())[0]["torch_threads"] == 1
        (rec,) = [json.loads(p.read_text()) for p in (d / "evals").glob("*.json")]
        assert rec["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)
