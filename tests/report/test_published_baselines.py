"""The published cpu-regime runs as a new method's baselines: restored with docs/results/restore.sh, they are done
and scored with the preset's own setting, so an audit of a plugin trains only the plugin's cells, and the plan for
OLS reads them in seconds."""
import subprocess
import sys
from pathlib import Path

import pytest

from robustbench_ols.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def restored(tmp_path_factory):
    dest = tmp_path_factory.mktemp("published") / "cpu-regime"
    done = subprocess.run(["bash", str(ROOT / "docs/results/restore.sh"), "cpu-regime", str(dest)],
                          capture_output=True, text=True, check=True)
    restored = int(done.stdout.split("restored ")[1].split()[0])
    assert restored >= 80  # the 80 pilot runs, and the confirmation seeds published so far
    return dest


def test_a_plugin_audit_trains_only_its_own_cells(restored, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    try:
        assert main(["audit", "--method", "prior_smoothing:PriorSmoothing", "--preset", "cpu-regime",
                     "--out", str(restored), "--dry-run"]) == 0
    finally:
        sys.modules.pop("prior_smoothing", None)
    lines = capsys.readouterr().out.splitlines()
    cells = [ln.split() for ln in lines if ln.split()[:1] and ln.split()[0] in ("done", "todo", "needs-eval")
             and "seed" in ln]
    assert len(cells) == 40
    assert all(c[0] == "done" for c in cells if c[4] in ("hard", "ls", "ols"))  # no baseline trained or re-scored
    assert all(c[0] == "todo" for c in cells if c[4].startswith("prior_smoothing"))
    assert "done 30; todo 10" in lines
    assert any("10 of 40 cells to train" in ln and "from the hard-label cells" in ln for ln in lines)


def test_the_plan_reads_the_published_pilot(restored, capsys):
    assert main(["audit", "--method", "ols", "--against", "hard,ls", "--preset", "cpu-regime", "--plan", "--no-run",
                 "--out", str(restored), "--to", str(restored.parent / "plan")]) == 0
    out = capsys.readouterr().out
    assert "Plan for ols from the pilot seeds 0, 1" in out and "Confirmation seeds per noise rate" in out
    assert "Cost: 105 confirmation cells" in out
    # the plan committed before the confirmation seeds were trained is the one the published pilot gives
    made = (restored.parent / "plan" / "plan.csv").read_text()
    assert made == (ROOT / "docs/results/cpu-regime/plan/plan.csv").read_text()
