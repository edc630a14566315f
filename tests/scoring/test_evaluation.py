"""Scoring wired into runs: metrics.json, evals/ records, reliability.csv, the validation split (best
epoch and temperature scaling), `rbols eval` on finished runs, and the inputs it rejects."""
import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_ols.attacks import AttackSpec, robust_error
from robustbench_ols.cli import main
from robustbench_ols.common.errors import SpecError
from robustbench_ols.data import load_dataset
from robustbench_ols.models import create_model
from robustbench_ols.scoring.calibration import calibration_metrics, fit_temperature, reliability_table
from robustbench_ols.scoring.evaluation import EvalSpec, attack_subset, score
from robustbench_ols.scoring.rescoring import evaluate_run
from robustbench_ols.spec import ExecOptions, RunSpec
from robustbench_ols.store import EPOCH_COLUMNS
from robustbench_ols.train.run import execute

EX = ExecOptions(device="cpu", progress=False)
EV = EvalSpec(attacks=("fgsm", "pgd:steps=3"), attack_examples=40, attack_seed=5)
SCORE_KEYS = {"clean_err", "ece", "mce", "aece", "cw_ece", "nll", "brier", "temperature", "ece_ts", "nll_ts",
              "fgsm_err", "pgd3_err", "attack_examples", "eval_seconds"}


def spec(**kw):
    base = dict(dataset="synthetic", model="resnet8", method="ls", noise="symmetric:0.4", epochs=3,
                batch_size=100, milestones=(2,), train_subset=600, val_split=100)
    base.update(kw)
    return RunSpec(**base)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def load_model(run_dir: Path):
    m = create_model("resnet8", 10)
    m.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True)["models"][0])
    return m.eval()


@pytest.fixture(scope="module")
def val_run(tmp_path_factory):
    return execute(spec(), EX, tmp_path_factory.mktemp("val"), EV)


def test_metrics_json_holds_every_score(val_run):
    m = json.loads((val_run.run_dir / "metrics.json").read_text())
    assert SCORE_KEYS <= set(m) and m["eval_id"] == EV.eval_id
    assert not any(k.startswith("c10h") for k in m)  # CIFAR-10 only: absent, not an error
    for k in ("clean_err", "ece", "mce", "aece", "cw_ece", "brier", "ece_ts", "fgsm_err", "pgd3_err"):
        assert isinstance(m[k], float) and 0 <= m[k] <= 1, k
    assert m["nll"] > 0 and m["nll_ts"] > 0 and m["temperature"] > 0
    assert m["attack_examples"] == 40 and m["num_val"] == 100 and m["num_train"] == 500
    assert m["clean_err"] == pytest.approx(m["test_err_last"], abs=1e-9)  # fp32 run: the same model


def test_scores_equal_an_independent_computation(val_run):
    """Recompute every figure from model.pt, noise.npz and the library functions, by hand."""
    d = val_run.run_dir
    m = json.loads((d / "metrics.json").read_text())
    model = load_model(d)
    data = load_dataset("synthetic")
    with torch.no_grad():
        logits = model(data.test_x.float() / 255)
    y = torch.as_tensor(data.test_y)
    probs = logits.double().softmax(1)
    assert m["clean_err"] == pytest.approx((logits.argmax(1) != y).double().mean().item())
    for k, v in calibration_metrics(probs, y).items():
        assert m[k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
    z = np.load(d / "noise.npz")
    with torch.no_grad():
        val_logits = model(data.train_x[z["val_indices"]].float() / 255)
    t = fit_temperature(val_logits, torch.as_tensor(z["val_labels"]))
    assert m["temperature"] == pytest.approx(t, rel=1e-4)
    ts = calibration_metrics((logits.double() / t).softmax(1), y)
    assert m["ece_ts"] == pytest.approx(ts["ece"], rel=1e-3, abs=1e-6)
    assert m["nll_ts"] == pytest.approx(ts["nll"], rel=1e-4)
    sub = attack_subset(data.test_y, EV)
    r = robust_error(model, data.test_x[sub], y[sub], AttackSpec.parse("pgd:steps=3"), seed=5)
    assert m["pgd3_err"] == r["pgd3_err"]
    with open(d / "reliability.csv") as f:
        rows = list(csv.DictReader(f))
    table = reliability_table(probs, y).rows()
    assert [int(r["count"]) for r in rows] == [r["count"] for r in table]
    for got, want in zip(rows, table):
        if want["count"]:
            assert float(got["accuracy"]) == pytest.approx(want["accuracy"])
            assert float(got["confidence"]) == pytest.approx(want["confidence"], rel=1e-5)
        else:
            assert got["accuracy"] == got["confidence"] == ""  # empty bin: no value, not 0


def test_validation_split_is_held_out_after_the_noise_and_picks_the_best_epoch(val_run, tmp_path):
    d = val_run.run_dir
    z = np.load(d / "noise.npz")
    val = z["val_indices"]
    assert len(val) == 100 and np.bincount(z["clean_labels"][np.isin(z["train_indices"], val)]).tolist() == [10] * 10
    pos = np.searchsorted(z["train_indices"], val)
    assert np.array_equal(z["val_labels"], z["noisy_labels"][pos])  # noisy labels: what a practitioner has
    assert z["val_labels"].tolist() != z["clean_labels"][pos].tolist()
    # The same subset without a validation split draws exactly the same noisy labels.
    plain = execute(spec(val_split=0, epochs=1, milestones=()), EX, tmp_path, EvalSpec(attacks=()))
    z0 = np.load(plain.run_dir / "noise.npz")
    assert np.array_equal(z0["noisy_labels"], z["noisy_labels"]) and len(z0["val_indices"]) == 0
    with open(d / "epochs.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == EPOCH_COLUMNS and all(r["val_err"] for r in rows)
    errs = [float(r["val_err"]) for r in rows]
    best = errs.index(min(errs))
    m = val_run.metrics
    assert m["best_epoch"] == best + 1 and m["test_err_best"] == float(rows[best]["test_err"])
    assert m["val_err_best"] == min(errs)
    rule = json.loads((d / "spec.json").read_text())["reporting"]["test_err_best"]
    assert "lowest val_err" in rule and "noisy labels" in rule
    # Without one: temperature scaling is skipped and said so; the OLS code's rule, said so too.
    m0 = plain.metrics
    assert m0["temperature"] is None and m0["ece_ts"] is None and m0["num_val"] == 0
    assert "no validation split" in json.loads((plain.run_dir / "spec.json").read_text())["reporting"]["test_err_best"]
    rec = json.loads((plain.run_dir / "evals" / f"{EvalSpec(attacks=()).eval_id}.json").read_text())
    assert rec["notes"]["temperature_scaling"].startswith("skipped")
    with open(plain.run_dir / "epochs.csv") as f:
        assert next(csv.DictReader(f))["val_err"] == ""


def test_clean_validation_labels_are_recorded(tmp_path):
    r = execute(spec(val_labels="clean", epochs=1, milestones=()), EX, tmp_path, EvalSpec(attacks=()))
    z = np.load(r.run_dir / "noise.npz")
    assert np.array_equal(z["val_labels"], z["clean_labels"][np.searchsorted(z["train_indices"], z["val_indices"])])
    rec = json.loads((r.run_dir / "spec.json").read_text())
    assert "validation split" in rec["method"]["clean_labels_seen"]
    assert spec(val_labels="clean").run_id != spec().run_id != spec(val_split=0).run_id
    assert spec(val_split=0, val_labels="clean").run_id == spec(val_split=0).run_id


def test_runs_made_before_the_validation_split_existed_keep_their_run_id():
    # The README's run, made before val_split and val_labels were fields of the spec.
    s = RunSpec(dataset="cifar10", model="resnet20", method="ols", noise="symmetric:0.4", epochs=10,
                train_subset=5000)
    assert s.run_id == "44acd636059d"
    assert "val_split" not in s.identity() and RunSpec(val_split=10).identity()["val_split"] == 10


def test_test_every_and_subset_keep_the_run_ids_made_before_them():
    s = RunSpec(dataset="cifar10", model="resnet20", method="ols", noise="symmetric:0.4", epochs=10,
                train_subset=5000)
    assert s.run_id == "44acd636059d" and "test_every" not in s.identity() and "test_subset" not in s.identity()
    assert RunSpec(test_every=5).identity()["test_every"] == 5 and RunSpec(test_subset=100).run_id != RunSpec().run_id


def test_attack_amp_is_a_scoring_setting_of_its_own(val_run, tmp_path):
    """--attack-amp: the attacks under bf16 autocast. Settings made before it keep their eval_id; with it
    the record says so, and the robust errors stay close to float32's (bf16 rounds the gradients)."""
    from robustbench_ols.spec.grid import Grid
    # the committed quick results' setting, from before the gradient-masking checks and per-image PGD starts
    assert dataclasses.replace(Grid.build("quick").eval_spec(), checks=False,
                               attack_starts="per-batch").eval_id == "8b34dde76a61"
    assert "attack_amp" not in EV.to_dict()
    amp = EvalSpec(attacks=EV.attacks, attack_examples=EV.attack_examples, attack_seed=EV.attack_seed, attack_amp=True)
    assert amp.eval_id != EV.eval_id and amp.to_dict()["attack_amp"] is True
    run = tmp_path / val_run.run_dir.name
    shutil.copytree(val_run.run_dir, run)
    rec = evaluate_run(run, amp, EX)
    assert "bf16 autocast" in rec["notes"]["precision"]
    m, m0 = rec["metrics"], val_run.metrics
    assert m["clean_err"] == m0["clean_err"] and m["ece"] == m0["ece"]  # clean and calibration stay float32
    for k in ("fgsm_err", "pgd3_err"):
        assert abs(m[k] - m0[k]) <= 0.1, (k, m[k], m0[k])


def test_rbols_eval_adds_a_record_and_never_touches_the_old_ones(val_run, tmp_path, capsys):
    d = tmp_path / val_run.run_dir.name
    shutil.copytree(val_run.run_dir, d)
    before = snapshot(d)
    args = ["eval", str(d), "--device", "cpu", "--attack", "pgd:eps=2/255,steps=3", "--attack", "fgsm:eps=2/255",
            "--attack-examples", "30"]
    assert main(args) == 0
    out = capsys.readouterr().out
    new = EvalSpec(attacks=("pgd:eps=2/255,steps=3", "fgsm:eps=2/255"), attack_examples=30)
    assert f"evals/{new.eval_id}.json" in out and "pgd3_eps2_err" in out
    after = snapshot(d)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing old changed
    assert set(after) - set(before) == {f"evals/{new.eval_id}.json", f"evals/{new.eval_id}.reliability.csv",
                                        f"evals/{new.eval_id}.robust.npz", f"evals/{new.eval_id}.predictions.npz"}
    rec = json.loads((d / "evals" / f"{new.eval_id}.json").read_text())
    # PGD's step, not given, follows the budget (eps/4) and the record spells it
    assert rec["eval"]["attacks"] == ["pgd:eps=2/255,alpha=1/510,steps=3,random_start=true", "fgsm:eps=2/255"]
    m = rec["metrics"]
    assert m["fgsm_eps2_err"] <= json.loads((d / "metrics.json").read_text())["fgsm_err"] + 0.1
    assert m["clean_err"] == val_run.metrics["clean_err"]  # the same model
    # The same setting again: "already evaluated", the record kept byte for byte.
    assert main(args) == 0 and "already evaluated" in capsys.readouterr().out
    assert snapshot(d) == after


def test_evaluation_is_seeded_and_reproducible(val_run, tmp_path):
    """Scoring a copy again with the run's own setting (record removed) gives the same figures."""
    d = tmp_path / "copy"
    shutil.copytree(val_run.run_dir, d)
    (d / "evals" / f"{EV.eval_id}.json").unlink()
    rec = evaluate_run(d, EV, EX)
    assert rec["status"] == "evaluated"
    again = {k: v for k, v in rec["metrics"].items() if k != "eval_seconds"}
    first = {k: v for k, v in val_run.metrics.items() if k in again}
    assert again == first
    other_seed = evaluate_run(d, EvalSpec(attacks=EV.attacks, attack_examples=40, attack_seed=6), EX)
    assert other_seed["eval_id"] != EV.eval_id


def test_execute_on_a_finished_run_adds_only_the_missing_setting(val_run, tmp_path):
    d = tmp_path / val_run.run_dir.name
    shutil.copytree(val_run.run_dir, d)
    before = snapshot(d)
    r = execute(spec(), EX, tmp_path, EV)
    assert r.status == "already done" and snapshot(d) == before
    other = EvalSpec(attacks=("fgsm",), attack_examples=20)
    r = execute(spec(), EX, tmp_path, other)
    assert "fgsm_err" in r.metrics and "pgd3_err" not in r.metrics  # this setting's figures only
    assert r.metrics["test_err_last"] == val_run.metrics["test_err_last"]
    assert (d / "evals" / f"{other.eval_id}.json").exists()
    assert {k: v for k, v in snapshot(d).items() if k in before} == before


def test_attack_subset_is_class_balanced_and_seeded():
    y = np.arange(500) % 10
    a = attack_subset(y, EvalSpec(attack_examples=50, attack_seed=1))
    assert np.bincount(y[a]).tolist() == [5] * 10
    assert np.array_equal(a, attack_subset(y, EvalSpec(attack_examples=50, attack_seed=1)))
    assert not np.array_equal(a, attack_subset(y, EvalSpec(attack_examples=50, attack_seed=2)))
    assert np.array_equal(attack_subset(y, EvalSpec()), np.arange(500))


def test_top5_figures_for_more_than_ten_classes():
    torch.manual_seed(0)
    model = create_model("resnet8", 20).eval()
    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(40) % 20
    s = score(model, test_x=x, test_y=y, ev=EvalSpec(attacks=("fgsm",), checks=False))
    m, rel, notes = s.metrics, s.reliability, s.notes
    assert {"clean_err_top5", "fgsm_err_top5"} <= set(m)
    assert m["clean_err_top5"] <= m["clean_err"] and m["fgsm_err_top5"] <= m["fgsm_err"]
    assert len(rel) == 15 and "whole test set (40 images)" in notes["attacks"]
    assert "batch norms folded" in notes["attack_model"]


@pytest.mark.parametrize("ev_kw, fragment", [
    (dict(attacks=("pgd:steps=0",)), "steps >= 1"),
    (dict(attacks=("cw",)), "unknown attack"),
    (dict(attacks=("pgd", "pgd:alpha=1/255")), "same figure"),
    (dict(attack_examples=-1), "--attack-examples"),
    (dict(n_bins=0), "--bins"),
])
def test_bad_evaluation_settings_are_errors(ev_kw, fragment):
    with pytest.raises(SpecError, match=fragment):
        EvalSpec(**ev_kw)


@pytest.mark.parametrize("extra, fragment", [
    (["--attack-examples", "501"], "--attack-examples 501"),
    (["--val-split", "5"], "--val-split asks for 5"),
    (["--val-split", "300"], "--val-split asks for 300"),
    (["--val-labels", "gold"], "--val-labels"),
    (["--attack", "pgd:eps=9"], "0 <= eps <= 1"),
])
def test_bad_inputs_write_nothing(tmp_path, capsys, extra, fragment):
    args = ["run", "--dataset", "synthetic", "--model", "resnet8", "--epochs", "1", "--train-subset", "300",
            "--device", "cpu", "--no-progress", "--out", str(tmp_path / "out")] + extra
    assert main(args) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_eval_of_an_unfinished_or_foreign_folder_is_an_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--device", "cpu"]) == 2
    assert "not a finished run" in capsys.readouterr().err


def _cifar10_only_root(tmp_path, root):
    bare = tmp_path / "root"
    bare.mkdir()
    (bare / "cifar-10-batches-bin").symlink_to(Path(root).resolve() / "cifar-10-batches-bin")
    return bare


def test_missing_cifar10h_fails_before_training_and_names_the_way_out(tmp_path, capsys, real_data):
    bare = _cifar10_only_root(tmp_path, real_data)
    args = ["run", "--dataset", "cifar10", "--model", "resnet8", "--epochs", "1", "--train-subset", "100",
            "--device", "cpu", "--no-progress", "--no-download", "--data-root", str(bare),
            "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "CIFAR-10H file not found" in err and "--no-cifar10h" in err
    assert not (tmp_path / "out").exists()
    assert main(args + ["--no-cifar10h", "--attack", "none"]) == 0
    (d,) = (tmp_path / "out").iterdir()
    m = json.loads((d / "metrics.json").read_text())
    assert "clean_err" in m and not any(k.startswith("c10h") for k in m)


def test_the_attack_batch_size_changes_neither_the_eval_id_nor_any_outcome(val_run, tmp_path):
    """Two scorings of one run that differ only in the attack batch size (issue 27) share the eval_id, and every
    attacked image's outcome under PGD (per-image starts) and FGSM is the same."""
    from robustbench_ols.store.evals import eval_record_path
    settings = [dataclasses.replace(EV, attacks=("fgsm", "pgd:steps=3"), attack_examples=48, checks=False,
                                    attack_batch_size=b) for b in (16, 48)]
    assert settings[0].eval_id == settings[1].eval_id
    outcomes = []
    for ev in settings:
        run = tmp_path / str(ev.attack_batch_size) / val_run.run_dir.name
        shutil.copytree(val_run.run_dir, run)
        rec = evaluate_run(run, ev, EX)
        assert rec["eval"]["attack_batch_size"] == ev.attack_batch_size  # the record says what was run
        with np.load(eval_record_path(run, ev.eval_id, "robust.npz")) as z:
            outcomes.append({k: z[k] for k in z.files})
    assert outcomes[0].keys() == outcomes[1].keys() and {"pgd3", "fgsm"} <= set(outcomes[0])
    assert all(np.array_equal(outcomes[0][k], outcomes[1][k]) for k in outcomes[0])
