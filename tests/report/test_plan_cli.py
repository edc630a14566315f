"""`rbols audit --plan` and `--confirm` on the smoke grid: the plan from the pilot seeds, the confirmation trained
and decided on its own seeds (figures recomputed from the run records), and the bad inputs refused with exit 2
before anything is written."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from robustbench_ols.cli import main

GRID = ["--method", "ols", "--against", "hard", "--preset", "smoke", "--noise", "symmetric:0,symmetric:0.4",
        "--attack", "fgsm", "--attack-examples", "30", "--device", "cpu", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("staged")
    out = str(tmp / "runs")
    cap = ["--max-seeds", "6"]  # the smoke FGSM claims have no spread: the sign test needs 6 seeds (2/2^6 <= 0.05)
    assert main(["audit", *GRID, *cap, "--seeds", "0,1", "--plan", "--out", out, "--to", str(tmp / "plan")]) == 0
    assert main(["audit", *GRID, *cap, "--pilot-seeds", "0,1", "--confirm", "--out", out,
                 "--to", str(tmp / "confirm")]) == 0
    return tmp


def test_the_plan_names_seeds_and_cost(staged, capsys):
    plan = pd.read_csv(staged / "plan" / "plan.csv")
    assert {"status", "seeds", "plan_for", "needs", "plan_alpha", "plan_sd"} <= set(plan.columns)
    planned = plan[plan.status == "planned"]
    assert len(planned) and planned.seeds.between(2, 6).all()
    assert (plan.status == "not decidable").any()  # the smoke grid's test error: two epochs decide nothing
    text = (staged / "plan" / "plan.md").read_text()
    assert "pilot seeds 0, 1" in text and "Cost:" in text and "not decidable within 6 seeds" in text


def _metric(runs, method, noise, seeds, metric):
    out = {}
    for done in runs.glob("*/DONE"):
        spec = json.loads((done.parent / "spec.json").read_text())["spec"]
        if spec["method"] == method and spec["noise"] == noise and spec["seed"] in seeds:
            evals = json.loads((done.parent / "metrics.json").read_text())
            out[spec["seed"]] = evals[metric]
    return out


def test_the_confirmation_decides_on_its_own_seeds_only(staged):
    table = pd.read_csv(staged / "confirm" / "audit.csv")
    planned = table[table.status == "planned"]
    assert len(planned) and not planned.outcome.str.startswith("waiting").any()
    for used in planned.seeds_used.astype(str):
        assert not {"0", "1"} & set(used.replace(",", " ").split())
    text = (staged / "confirm" / "audit.md").read_text()
    assert "Planned on the pilot seeds 0, 1 (they decide nothing)" in text
    # one per-rate claim recomputed from the run records, on its confirmation seeds
    r = planned[(planned.kind == "per-rate") & planned.metric.isin(["fgsm_err", "ece", "test_err_last"])].iloc[0]
    used = str(r.seeds_used)
    first, _, last = used.partition("-")
    seeds = list(range(int(first), int(last) + 1)) if last else [int(x) for x in used.split(",")]
    new, old = (_metric(staged / "runs", m, f"symmetric:{float(r.noise_rate)}", seeds, r.metric)
                for m in ("ols", "hard"))
    d = np.array([new[s] - old[s] for s in seeds])
    assert len(d) == int(r.n) == int(r.seeds)
    assert r.mean_diff == pytest.approx(d.mean(), abs=1e-12)  # audit.csv keeps the records' own unit
    if d.std() > 0:
        assert r.p == pytest.approx(stats.ttest_1samp(d, 0).pvalue, rel=1e-9)


def test_an_exploratory_audit_reads_the_seeds_it_names_only(staged, capsys):
    """After the confirmation, the folder holds more seeds than the pilot's: the exploratory audit of --seeds 0,1
    (the pilot's, as publish_tier.sh writes it) tests those two seeds and no other, as its header says."""
    to = staged / "pilot-audit"
    assert main(["audit", *GRID, "--seeds", "0,1", "--no-run", "--out", str(staged / "runs"), "--to", str(to)]) == 0
    assert "seeds per method: hard 2, ols 2" in capsys.readouterr().out
    text = (to / "audit.md").read_text()
    assert "Seeds [0, 1]" in text and "seeds per method: hard 2, ols 2." in text
    assert set(pd.read_csv(to / "audit.csv").n.dropna().astype(int)) <= {2}


@pytest.mark.parametrize("extra, words", [
    (["--confirm", "--pilot-seeds", "0,1", "--seeds", "1,2"], "overlaps the pilot seeds 0,1"),
    (["--confirm", "--max-seeds", "1"], "--max-seeds 1"),
    (["--plan", "--confirm"], "--plan and --confirm are two steps"),
    (["--plan"], "the pilot has 1 seed (0): a plan needs the spread of at least 2"),
    (["--confirm", "--pilot-seeds", "0,1"], "no pilot to plan from"),
    (["--plan", "--seeds", "0,1", "--test", "wilcoxon"], "the plan and the confirmation use the paired t-test"),
])
def test_bad_staged_inputs_are_exit_2_and_write_nothing(tmp_path, capsys, extra, words):
    assert main(["audit", *GRID, *extra, "--out", str(tmp_path / "runs"), "--to", str(tmp_path / "to")]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "to").exists() and not (tmp_path / "runs").exists()


def test_cells_of_another_setting_in_the_folder_change_no_audit(staged, tmp_path):
    """A folder may hold other cells of the compared methods (the CIFAR-10N cells beside the cpu-regime grid): the
    plan and the exploratory audit read the grid's own settings only, so they come out the same with them there."""
    import shutil
    runs = tmp_path / "runs"
    shutil.copytree(staged / "runs", runs)
    before, after = tmp_path / "before", tmp_path / "after"
    assert main(["audit", *GRID, "--seeds", "0,1", "--no-run", "--out", str(runs), "--to", str(before / "a")]) == 0
    assert main(["audit", *GRID, "--seeds", "0,1", "--plan", "--no-run", "--out", str(runs),
                 "--to", str(before / "p")]) == 0
    assert main(["matrix", "--preset", "smoke", "--methods", "ols,hard", "--noise", "pairflip:0.4", "--seeds", "0,1",
                 *GRID[8:], "--out", str(runs)]) == 0
    assert main(["audit", *GRID, "--seeds", "0,1", "--no-run", "--out", str(runs), "--to", str(after / "a")]) == 0
    assert main(["audit", *GRID, "--seeds", "0,1", "--plan", "--no-run", "--out", str(runs),
                 "--to", str(after / "p")]) == 0
    assert len(list(runs.glob("*/DONE"))) > len(list((staged / "runs").glob("*/DONE")))
    for name in ("a/audit.csv", "a/audit_pooled.csv", "p/plan.csv"):
        assert (before / name).read_bytes() == (after / name).read_bytes(), name
