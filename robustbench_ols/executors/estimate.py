"""What `rbols matrix` prints about a grid: each cell's state (`--dry-run`), what the cells left will cost, and the
summary once it ran."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from robustbench_ols import store
from robustbench_ols.methods import method_label
from robustbench_ols.spec import EvalSpec, RunSpec
from robustbench_ols.store.claims import cell_state, failure_path


def describe(cells, out: Path, ev: EvalSpec, swept=()) -> list[str]:
    """One line per cell for --dry-run: state, run_id, dataset, model, method, noise, seed, swept settings."""
    lines = []
    for s in cells:
        state = cell_state(out, s, ev)
        lines.append(f"{state:10s} {s.run_id}  {s.dataset:9s} {s.model:11s} "
                     f"{method_label(s.method, s.options):14s} {s.noise:14s} seed {s.seed}"
                     + "".join(f"  {k}={getattr(s, k)}" for k in swept))
    return lines


def cell_seconds(grid, cells, out: Path, ev: EvalSpec) -> dict:
    """Seconds each cell of `cells` is expected to take (training + scoring), by run_id, with where the figure
    came from: the mean of the finished cells in `out` that differ from it only in noise and seeds (their
    metrics.json), else the preset's measurement on the 2-core development machine (presets.CELL_SECONDS),
    else, for a method measured nowhere (a new method), the hard-label cells of its setting, whose step costs
    about the same as a smoothing method's (ls, ols: within 4% of hard in CELL_SECONDS); None where none of these
    exists. Returns {run_id: (seconds or None, source)}."""
    here: dict = {}
    for s in cells:
        if cell_state(out, s, ev) in ("done", "needs-eval"):
            m = store.read_metrics(out / s.run_id)
            here.setdefault(_cost_key(s), []).append((m.get("train_seconds") or 0) + (m.get("eval_seconds") or 0))
    preset = grid.measured_cell_seconds()
    found = f"finished cells in {out}"
    measured = f"the {grid.name} preset measured on a 2-core CPU (two one-thread workers)"

    def one(s) -> tuple:
        label = method_label(s.method, s.options)
        done, hard = here.get(_cost_key(s)), here.get(_cost_key(s, as_hard=True))
        if done:
            return sum(done) / len(done), found
        if label in preset:
            return preset[label], measured
        if hard:
            return sum(hard) / len(hard), f"the hard-label cells in {out} (no cell of the method yet)"
        if "hard" in preset:
            return preset["hard"], f"{measured}, hard labels' (no cell of the method yet)"
        return None, ""
    return {s.run_id: one(s) for s in cells}


def estimate_line(grid, cells, out: Path, ev: EvalSpec, backend) -> str:
    """What the cells still to train will cost (cell_seconds: this folder's finished cells, else the preset's
    measurement, else the hard-label cells'), or that nothing is left."""
    states = {s.run_id: cell_state(out, s, ev) for s in cells}
    todo = [s for s in cells if states[s.run_id] in ("todo", "partial", "running", "failed")]
    if not todo:
        return f"estimate: nothing to train ({len(cells)} cells, {sum(v == 'needs-eval' for v in states.values())} "\
               "to score)"
    cost = cell_seconds(grid, cells, out, ev)
    known = [cost[s.run_id] for s in todo if cost[s.run_id][0] is not None]
    total, unknown, sources = sum(c for c, _ in known), len(todo) - len(known), sorted({w for _, w in known})
    n = backend.parallel(len(todo))
    text = f"estimate: {len(todo)} of {len(cells)} cells to train"
    if total:
        text += (f", about {duration(total)} of cell time ({n} worker{'s' * (n > 1)}: about {duration(total / n)}"
                 f" on this machine if it is as fast), from {' and '.join(sources)}")
    if unknown:
        text += (f"; {unknown} cell{'s' * (unknown > 1)} without an estimate (no finished cell of their setting yet: "
                 "the first one gives it)")
    return text


def _cost_key(spec: RunSpec, as_hard: bool = False) -> str:
    """Everything that sets a cell's cost: its spec without the noise and the seeds (`as_hard`: and with hard labels
    in place of its method)."""
    d = {k: v for k, v in spec.to_dict().items() if k not in ("noise", "noise_seed", "seed")}
    if as_hard:
        d.update(method="hard", method_options={})
    return json.dumps(d, sort_keys=True)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def print_summary(s, out: Path, file=None) -> None:
    file = sys.stdout if file is None else file  # looked up per call: pytest and redirects swap sys.stdout
    print(f"grid: {s.done} of {s.total} cells done, {len(s.failed)} failed "
          f"({s.seconds:.0f} s); results in {out}", file=file)
    for run_id, err in s.failed.items():
        hint = (f" (see {out}/.failed/{run_id}.json; --retry-failed runs it again)"
                if failure_path(out, run_id).exists() else "")
        print(f"  failed {run_id}: {err.splitlines()[0] if err else ''}{hint}", file=file)
    for run_id, why in s.unfinished.items():
        print(f"  unfinished {run_id}: {why}", file=file)
