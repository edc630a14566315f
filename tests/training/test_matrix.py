"""`rbols matrix`: grids, presets and configs; kill -9 and resume; two processes sharing one folder;
failing cells; claims; the Ray backend. Real subprocesses, real files, the `smoke` preset."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robustbench_ols.cli import main
from robustbench_ols.common.errors import SpecError
from robustbench_ols.executors.local import cpu_layout
from robustbench_ols.spec.grid import Grid, split_methods
from robustbench_ols.spec.presets import PRESETS
from robustbench_ols.store.claims import Claim, cell_state

from .grid_helpers import ENV, SMOKE, files, rbols, results, training_pids


# ------------------------------------------------------------------------------------------ grids
def test_presets_build_valid_cells():
    sizes = {"smoke": 6, "quick": 10 * 5, "cpu-regime": 8 * 5 * 2, "paper-table7": 10 * 5 * 3, "paper-table8": 9,
             "paper-table11": 27, "paper-table12": 9}
    for name, n in sizes.items():
        cells = Grid.build(name).cells()
        assert len(cells) == n, name
    t7 = Grid.build("paper-table7").cells()
    assert {c.dataset for c in t7} == {"cifar100"} and {c.model for c in t7} == {"resnet56b"}
    assert {c.epochs for c in t7} == {300} and {c.milestones for c in t7} == {(150, 225)}
    assert sorted({c.noise for c in t7}) == ["symmetric:0.0", "symmetric:0.2", "symmetric:0.4", "symmetric:0.6",
                                            "symmetric:0.8"]
    assert Grid.build("paper-table8").cells() == Grid.build("paper-table12").cells()  # the same runs
    # cpu-regime: hard, ls and ols over both seeds and every rate first, then the others seed by seed
    tier = Grid.build("cpu-regime").cells()
    assert [c.method for c in tier[:30]] == ["hard", "ls", "ols"] * 10
    assert [(c.seed, c.noise) for c in tier[:3]] == [(0, "symmetric:0.0")] * 3 and tier[29].seed == 1
    assert {c.method for c in tier[30:]} == {"ols-single", "sce", "coteaching", "pencil", "arazo"}
    assert {(c.augment, c.train_subset, c.epochs, c.milestones, c.test_every) for c in tier} == {
        (False, 4000, 28, (20, 25), 4)}
    assert set(PRESETS) == set(sizes)


def test_flags_override_config_which_overrides_the_preset(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('preset = "smoke"\nseeds = [0, 1]\n[run]\nepochs = 3\n[eval]\nattack_examples = 30\n')
    args = ["matrix", "--config", str(cfg), "--methods", "hard,ols:alpha=0.3,init=zeros", "--epochs", "4",
            "--out", str(tmp_path / "o")]
    from robustbench_ols.cli import build_parser
    from robustbench_ols.cli.commands import grid_from_args
    grid, cells, ev, _ = grid_from_args(build_parser().parse_args(args))
    assert grid.name == "smoke" and grid.seeds == [0, 1] and len(cells) == 2 * 2 * 2
    assert {c.epochs for c in cells} == {4} and {c.train_subset for c in cells} == {300}  # flag, preset
    assert ev.attack_examples == 30 and ev.attacks[1].startswith("pgd:") and "steps=2" in ev.attacks[1]
    ols = [c for c in cells if c.method == "ols"]
    assert ols[0].options == {"alpha": 0.3, "init": "zeros", "period": 0}
    assert {c.noise_seed for c in cells} == {0, 1} and all(c.noise_seed == c.seed for c in cells)


def test_split_methods_keeps_options_together():
    assert split_methods("hard,ols:alpha=0.5,init=zeros,ls") == ["hard", "ols:alpha=0.5,init=zeros", "ls"]
    assert split_methods("mypkg.mod:Cls:eps=0.3,gamma=2, hard") == ["mypkg.mod:Cls:eps=0.3,gamma=2", "hard"]


@pytest.mark.parametrize("kw, fragment", [
    (dict(preset="nope"), "unknown preset"),
    (dict(methods=["hard"], noise=["none"], seeds=[0], models=["resnet8"]), "no datasets"),
    (dict(preset="smoke", methods=["nosuchmethod"]), "nosuchmethod"),
    (dict(preset="smoke", run={"epochz": 3}), "epochz"),
    (dict(preset="smoke", noise=["symmetric:1.5"]), "grid cell"),
])
def test_bad_grids_are_errors(kw, fragment):
    with pytest.raises(SpecError, match=fragment):
        preset = kw.pop("preset", None)
        Grid.build(preset, None, **kw).cells()


def test_bad_config_file_is_an_error(tmp_path, capsys):
    cfg = tmp_path / "m.toml"
    cfg.write_text("methods = [hard\n")
    assert main(["matrix", "--config", str(cfg), "--dry-run"]) == 2
    assert "not valid TOML" in capsys.readouterr().err


# ------------------------------------------------------------------------------- runs and states
def test_dry_run_lists_cells_and_their_state(reference, capsys):
    assert main([*SMOKE, "--out", str(reference), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "grid smoke: 6 cells" in out and "done 6" in out
    assert len(re.findall(r"^done +[0-9a-f]{12} ", out, re.M)) == 6
    assert main([*SMOKE, "--out", str(reference), "--dry-run", "--attack", "fgsm"]) == 0
    assert "needs-eval 6" in capsys.readouterr().out  # another scoring setting is not recorded yet


def test_kill_9_mid_cell_then_rerun_finishes_with_the_same_results(reference, tmp_path):
    out = tmp_path / "killed"
    p = rbols([*SMOKE, "--threads", "1", "--out", str(out)])
    deadline = time.time() + 240
    victim = None
    while time.time() < deadline and p.poll() is None:  # wait for: one cell DONE, another mid-training
        done = list(out.glob("*/DONE"))
        mid = [c.parent for c in out.glob("*/checkpoint.pt") if not (c.parent / "DONE").exists()]
        if done and mid:
            os.kill(p.pid, signal.SIGKILL)
            victim = mid[0].name
            break
        time.sleep(0.02)
    p.wait(timeout=30)
    assert victim is not None, "the grid finished before it could be killed mid-cell"
    before = {d.parent.name: files(d.parent) for d in out.glob("*/DONE")}
    assert victim not in before
    again = rbols([*SMOKE, "--threads", "1", "--out", str(out)])
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    for run_id, snap in before.items():  # DONE directories are not touched
        assert files(out / run_id) == snap, run_id
    assert results(out) == results(reference)  # the same numbers as an uninterrupted grid
    sessions = json.loads((out / victim / "executions.json").read_text())
    assert len(sessions) == 2 and sessions[1]["first_epoch"] >= 2  # resumed, not retrained
    for d in out.glob("*/DONE"):
        assert not list(d.parent.glob("*.tmp")) and not (d.parent / "checkpoint.pt").exists()
    assert not list((out / ".claims").glob("*.claim"))


def test_two_processes_share_the_grid_and_run_each_cell_once(reference, tmp_path):
    out = tmp_path / "shared"
    a = rbols([*SMOKE, "--threads", "1", "--out", str(out)])
    b = rbols([*SMOKE, "--threads", "1", "--out", str(out)])
    for p in (a, b):
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        assert "6 of 6 cells done" in stdout
    assert len(list(out.glob("*/DONE"))) == 6
    assert training_pids(out) == {a.pid, b.pid}  # both did work
    assert results(out) == results(reference)


def test_workers_die_with_their_matrix_process(tmp_path):
    """kill -9 of `rbols matrix --workers 2` takes its workers with it (no orphan keeps training and holding
    claims), and the same command again finishes the grid."""
    out = tmp_path / "orphans"
    p = rbols(["matrix", "--preset", "smoke", "--device", "cpu", "--workers", "2", "--threads", "1",
               "--no-progress", "--out", str(out)])
    deadline, workers = time.time() + 240, set()
    while time.time() < deadline and p.poll() is None and not workers:
        for f in out.glob("*/executions.json"):
            try:
                workers |= {s["pid"] for s in json.loads(f.read_text())}
            except ValueError:  # being written
                pass
        time.sleep(0.05)
    assert workers, "no worker started a cell"
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    deadline = time.time() + 3  # an orphan would go on with the grid's cells for ~20 s
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers)
    again = rbols([*SMOKE, "--threads", "1", "--out", str(out)])
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0 and "6 of 6 cells done" in stdout, stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f"/proc/{pid}/stat").read().split()[2] == "Z"  # a zombie has died


def test_cpu_layout_picks_one_single_thread_worker_per_core():
    assert cpu_layout(None, None, pending=80, cores=2) == (2, 1)
    assert cpu_layout(None, None, pending=1, cores=2) == (1, 2)  # one cell left: one process, both cores
    assert cpu_layout(None, 1, pending=80, cores=2) == (1, 1)  # --threads alone: one process, as asked
    assert cpu_layout(3, None, pending=80, cores=6) == (3, 2)
    assert cpu_layout(2, 4, pending=80, cores=2) == (2, 4)


def test_workers_share_the_grid_each_with_its_own_cell_bar(reference, tmp_path):
    """`--workers 2`: two spawned processes run the grid, each cell once, with the reference's results;
    with progress on, the grid bar and each worker's cell bars are drawn (cell bars on their own lines)."""
    out = tmp_path / "workers"
    p = rbols(["matrix", "--preset", "smoke", "--device", "cpu", "--workers", "2", "--threads", "1",
               "--out", str(out)])
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr
    assert "6 of 6 cells done" in stdout
    pids = training_pids(out)
    assert len(pids) == 2 and p.pid not in pids  # both workers trained, the parent did not
    assert results(out) == results(reference)
    assert "grid" in stderr and "cell" in stderr  # the grid bar
    for method in ("hard", "ls", "ols"):  # the workers' cell bars
        assert re.search(rf"{method} symmetric:0\.\d seed 0", stderr), method


NAN_PLUGIN = '''
import torch.nn.functional as F
from robustbench_ols.methods import Method

class NaNLoss(Method):
    """Cross-entropy that turns NaN in the second epoch (a test plugin)."""
    citation = "test only"

    def loss(self, logits, batch, epoch):
        return F.cross_entropy(logits, batch.y) * (float("nan") if epoch >= 1 else 1.0)
'''


def test_a_failing_cell_is_recorded_and_the_others_complete(tmp_path):
    (tmp_path / "nanplug.py").write_text(NAN_PLUGIN)
    env = {**ENV, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ENV.get('PYTHONPATH', '')}"}
    out = tmp_path / "out"
    args = [*SMOKE, "--methods", "hard,nanplug:NaNLoss", "--noise", "symmetric:0.4", "--threads", "1",
            "--out", str(out)]
    p = rbols(args, env=env)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 1
    assert "1 of 2 cells done, 1 failed" in stdout and "--retry-failed" in stdout
    (rec,) = (out / ".failed").iterdir()
    failure = json.loads(rec.read_text())
    assert "non-finite train_loss" in failure["error"] and failure["spec"]["method"] == "nanplug:NaNLoss"
    assert len(list(out.glob("*/DONE"))) == 1
    # Without --retry-failed the failed cell is skipped; with it, it runs again (and fails again).
    p = rbols(args, env=env)
    stdout, _ = p.communicate(timeout=300)
    assert p.returncode == 1 and "1 failed" in stdout
    sessions = out / rec.stem / "executions.json"
    assert len(json.loads(sessions.read_text())) == 1
    p = rbols([*args, "--retry-failed"], env=env)
    stdout, _ = p.communicate(timeout=300)
    assert p.returncode == 1 and "1 failed" in stdout
    assert len(json.loads(sessions.read_text())) == 2


HOLDER = '''
import sys, time
from pathlib import Path
from robustbench_ols.store.claims import Claim
c = Claim(Path(sys.argv[1]), "abc123")
assert c.acquire()
print("held", flush=True)
time.sleep(60)
'''


def test_claims_are_exclusive_and_a_dead_holders_claim_is_taken_over(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    c = Claim(tmp_path, "abc123")
    holder = c.holder()
    assert holder["pid"] == p.pid and "host" in holder
    assert not c.acquire()
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (tmp_path / ".claims" / "abc123.claim").exists()  # the dead process's file is still there
    assert c.holder() is None  # ... but nobody holds it
    assert c.acquire() and json.loads((tmp_path / ".claims" / "abc123.claim").read_text())["pid"] == os.getpid()
    c.release()
    assert not (tmp_path / ".claims" / "abc123.claim").exists()


def test_cell_states(reference, tmp_path):
    grid = Grid.build("smoke")
    ev = grid.eval_spec()
    cells = grid.cells()
    assert {cell_state(reference, c, ev) for c in cells} == {"done"}
    assert {cell_state(tmp_path, c, ev) for c in cells} == {"todo"}


# ------------------------------------------------------------------------------------------- Ray
def test_ray_backend_gives_the_local_results(reference, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    out = tmp_path / "ray"
    code = f"""
import ray, sys
from pathlib import Path
from robustbench_ols.spec.grid import Grid
from robustbench_ols.executors.ray import run_ray
from robustbench_ols.spec import ExecOptions
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
g = Grid.build("smoke")
s = run_ray(g.cells(), Path({str(out)!r}), g.eval_spec(), ExecOptions(device="cpu", progress=False), progress=False)
import os
print("done", s.done, "failed", len(s.failed), "driver", os.getpid())
"""
    p = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "done 6 failed 0" in p.stdout
    assert results(out) == results(reference)
    driver = int(p.stdout.split("driver")[1])
    pids = {json.loads((d.parent / "executions.json").read_text())[0]["pid"] for d in out.glob("*/DONE")}
    assert driver not in pids  # trained in Ray worker processes, not in the driver


def test_rbols_report_on_the_grid(reference, tmp_path, capsys):
    assert main(["report", str(reference), "--to", str(tmp_path / "rep")]) == 0
    *fits, last = capsys.readouterr().out.strip().splitlines()
    assert Path(last) == tmp_path / "rep" / "report.md"  # the path last, after the regime lines
    from robustbench_ols.store.results import collect
    runs = collect(reference)
    hard = runs[(runs.method_label == "hard") & (runs.noise_rate == 0.4)].noisy_err_last.iloc[0]
    assert fits == [f"synthetic resnet8 2 epochs subset 300 symmetric 0.4: hard labels fit {1 - hard:.1%} of the "
                    "wrong labels (1 seed): outside the regime (< 60% on some seed)"]
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "6 finished runs" in text and (tmp_path / "rep" / "fig4.png").exists()
    assert main(["report", str(tmp_path / "nothing"), "--to", str(tmp_path / "rep2")]) == 2
    assert "no finished run directory" in capsys.readouterr().err


def test_cpu_regime_scoring_setting_is_the_one_publish_tier_reports():
    """docs/results/publish_tier.sh reports the tier with the preset's own scoring setting, the one the published
    verdicts were scored with (publish_autoattack.sh's), so a new method's audit re-scores no baseline."""
    root = Path(__file__).resolve().parents[2]
    tier = (root / "docs/results/publish_tier.sh").read_text()
    verdicts = (root / "docs/results/publish_autoattack.sh").read_text()
    eval_id = Grid.build("cpu-regime").eval_spec().eval_id
    assert f"EVAL_ID={eval_id}" in tier and f"EVAL_ID={eval_id}" in verdicts
    assert "--plan" in tier and "--confirm" in tier
