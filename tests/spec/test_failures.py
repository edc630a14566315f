"""What is on disk, and what a person does while a command runs, never ends in a traceback: a corrupt
metrics.json (report, run, repair), a read-only --out, an empty folder to audit, a closed pipe, a log file
instead of a terminal; and the help, the notes and the cost estimate a newcomer reads."""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from robustbench_ols import cli
from robustbench_ols.cli import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = ["--dataset", "synthetic", "--model", "resnet8", "--train-subset", "300", "--batch-size", "100",
        "--epochs", "2", "--attack", "fgsm", "--attack-examples", "50", "--threads", "1", "--device", "cpu",
        "--no-progress"]


def rbols(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robustbench_ols", *args], env={**ENV, **(env or {})},
                          capture_output=True, text=True, timeout=600, **kw)


def digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Two finished runs (hard labels and LS) in one folder."""
    out = tmp_path_factory.mktemp("finished")
    for method in ("hard", "ls"):
        assert main(["run", *TINY, "--method", method, "--out", str(out)]) == 0
    return out


def test_corrupt_metrics_json(finished, tmp_path, capsys):
    out = tmp_path / "runs"
    shutil.copytree(finished, out)
    bad = next(p.parent for p in out.glob("*/spec.json")
               if json.loads(p.read_text())["spec"]["method"] == "hard")
    good_metrics = (bad / "metrics.json").read_text()
    (bad / "metrics.json").write_text(good_metrics[:40])
    before = digest(out)

    # the report is written from the readable run and lists the unreadable one with its reason
    assert main(["report", str(out), "--to", str(tmp_path / "report"), "--format", "png"]) == 0
    err = capsys.readouterr().err
    assert f"left out of the report: {bad}/metrics.json is unreadable" in err
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Unreadable runs" in md and bad.name in md and "1 finished runs" in md

    # `rbols run` on that cell names the file and the fix, exit 2, and changes nothing
    hard = [a if a != "ls" else "hard" for a in TINY]
    assert main(["run", *hard, "--method", "hard", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}/metrics.json is unreadable" in err and f"rbols repair {bad}" in err
    assert "Traceback" not in err
    assert digest(out) == before

    # `rbols matrix --dry-run` shows it; the repair rebuilds exactly what was there and keeps the bad file
    assert main(["repair", str(bad)]) == 0
    assert json.loads((bad / "metrics.json").read_text()) == json.loads(good_metrics)
    aside = list(bad.glob("metrics.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == good_metrics[:40]
    assert main(["repair", str(bad)]) == 0 and "nothing to repair" in capsys.readouterr().out


def test_unwritable_out_is_refused_before_any_work(tmp_path):
    """A folder without write permission. Root ignores permission bits, so as root the command runs as
    `nobody` (setpriv), in a folder outside pytest's private tmp (which nobody may not enter)."""
    as_root = os.geteuid() == 0
    prefix = []
    if as_root:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: a read-only folder cannot be made for this process")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    base = Path(tempfile.mkdtemp(prefix="rbols-readonly-"))
    try:
        locked = base / "locked"
        locked.mkdir()
        base.chmod(0o755)
        locked.chmod(0o555)  # r-x: readable, not writable
        for args in (["run", *TINY, "--out", str(locked)], ["run", *TINY, "--out", str(locked / "new" / "deeper")],
                     ["matrix", "--preset", "smoke", "--no-progress", "--out", str(locked / "grid")]):
            p = subprocess.run([*prefix, sys.executable, "-m", "robustbench_ols", *args],
                               env={**ENV, "HOME": str(base)}, capture_output=True, text=True, timeout=300)
            assert p.returncode == 2, (args, p.stderr)
            assert "Traceback" not in p.stderr
            assert f"--out {args[-1]} is not writable" in p.stderr and "Permission denied" in p.stderr
            assert list(locked.iterdir()) == []  # nothing created
    finally:
        locked.chmod(0o755)
        shutil.rmtree(base)


def test_audit_of_an_empty_folder_and_its_dry_run(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["audit", "--method", "ols", "--preset", "smoke", "--out", str(empty), "--no-run"]) == 2
    err = capsys.readouterr().err
    assert "no finished run of ols, ls, hard" in err and str(empty) in err
    assert list(empty.iterdir()) == []  # no audit.md saying nothing

    assert main(["audit", "--method", "ols", "--preset", "smoke", "--out", str(empty), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("grid smoke: 6 cells") and out.count("\ntodo  ") == 6
    assert "estimate: 6 of 6 cells to train" in out
    assert list(empty.iterdir()) == []


def test_estimate_before_a_grid(finished, tmp_path, capsys):
    assert main(["matrix", "--preset", "quick", "--out", str(tmp_path / "q"), "--dry-run"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("estimate: 50 of 50 cells to train, about ") and "quick preset measured" in line
    # an override makes the preset's measurement wrong: no number is made up
    assert main(["matrix", "--preset", "quick", "--epochs", "3", "--out", str(tmp_path / "q"), "--dry-run"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "50 cells without an estimate" in line and "about" not in line


def test_estimate_from_the_cells_finished_in_the_folder(finished, capsys):
    grid = ["matrix", "--datasets", "synthetic", "--models", "resnet8", "--methods", "hard,ls", "--noise", "none",
            "--train-subset", "300", "--batch-size", "100", "--out", str(finished), "--dry-run"]
    assert main([*grid, "--seeds", "0,1", "--epochs", "2"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("estimate: 2 of 4 cells to train, about ") and f"from finished cells in {finished}" in line
    # another number of epochs costs something else: no estimate from those cells
    assert main([*grid, "--seeds", "0", "--epochs", "3"]) == 0
    assert "2 cells without an estimate" in capsys.readouterr().out.strip().splitlines()[-1]


def test_closed_pipe_is_a_quiet_exit():
    p = subprocess.run(f"{sys.executable} -m robustbench_ols methods | head -n 1", shell=True, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.count("\n") == 1
    assert p.stderr == ""


def test_every_grid_option_has_help_and_its_default():
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in ("run", "matrix", "audit", "eval", "score", "report"):
        help_text = subs[name].format_help()
        for action in subs[name]._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, (name, action.option_strings)
        assert "(default: None)" not in help_text
    matrix = subs["matrix"].format_help()
    assert "training epochs (default: the grid's; 30 when it sets none)" in " ".join(matrix.split())
    audit = " ".join(subs["audit"].format_help().split())
    assert "(without either: the quick preset" in audit and "--dry-run" in audit


def test_a_log_file_gets_plain_lines(tmp_path):
    """stderr to a file (a batch job): no carriage returns or cursor codes, and lines for every stage."""
    p = rbols("run", *[a for a in TINY if a != "--no-progress"], "--out", str(tmp_path),
              env={"RBOLS_PROGRESS_SECONDS": "0"})
    assert p.returncode == 0, p.stderr
    assert "\r" not in p.stderr and "\x1b" not in p.stderr
    lines = p.stderr.splitlines()
    assert any(ln.startswith("hard none seed 0: 1/6 step") for ln in lines)  # moves every step
    assert any(ln.startswith("scoring: clean pass: ") for ln in lines)
    assert any(ln.startswith("scoring: FGSM") for ln in lines)


def test_an_uneven_subset_says_how_it_was_spread(tmp_path, capsys):
    args = [a if a != "300" else "305" for a in TINY]
    assert main(["run", *args, "--attack", "none", "--out", str(tmp_path)]) == 0
    assert ("--train-subset 305 is not a multiple of the 10 classes: 5 classes drawn with --subset-seed 0 get 31 "
            "images, the other 5 get 30") in capsys.readouterr().err


def test_data_check_says_each_file(real_data, capsys):
    assert main(["data", "check", "--data-root", str(real_data)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for f in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        assert f"  cifar-10-batches-bin/{f} md5 ok" in lines
    assert any(ln.startswith("  CIFAR-10H: cifar-10h/cifar10h-probs.npy md5 ok; 10000 test images") for ln in lines)
    assert any("CIFAR-10_human.pt md5 ok" in ln for ln in lines)


def test_preset_cell_seconds_are_the_published_measurements():
    """CELL_SECONDS, the estimate's fallback, is each method's mean seconds per cell in the committed cost.csv
    of that preset's report (rounded), not a typed-in guess."""
    import csv

    from robustbench_ols.spec.presets import CELL_SECONDS
    root = Path(__file__).resolve().parents[2] / "docs" / "results"
    for preset, seconds in CELL_SECONDS.items():
        with open(root / preset / "cost.csv") as f:
            published = {r["method_label"]: round(float(r["mean_s"])) for r in csv.DictReader(f)}
        assert {k: v for k, v in published.items() if k in seconds} == seconds, preset
