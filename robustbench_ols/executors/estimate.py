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


def estimate_line(grid, cells, out: Path, ev: EvalSpec, backend) -> str:
    """What the cells still to train will cost: seconds per cell from the finished cells in `out` that differ
    from it only in noise and seeds (training + scoring, from their metrics.json), else the preset's
    measurement on the 2-core development machine (presets.CELL_SECONDS), else unknown."""
    states = {s.run_id: cell_state(out, s, ev) for s in cells}
    todo = [s for s in cells if states[s.run_id] in ("todo", "partial", "running", "failed")]
    if not todo:
        return f"estimate: nothing to train ({len(cells)} cells, {sum(v == 'needs-eval' for v in states.values())} "\
               "to score)"
    here: dict = {}
    for s in cells:
        if states[s.run_id] in ("done", "needs-eval"):
            m = store.read_metrics(out / s.run_id)
            here.setdefault(_cost_key(s), []).append((m.get("train_seconds") or 0) + (m.get("eval_seconds") or 0))
    preset = grid.measured_cell_seconds()
    total, unknown, sources = 0.0, 0, set()
    for s in todo:
        label = method_label(s.method, s.options)
        done = here.get(_cost_key(s))
        if done:
            total += sum(done) / len(done)
            sources.add(f"finished cells in {out}")
        elif label in preset:
            total += preset[label]
            sources.add(f"the {grid.name} preset measured on a 2-core CPU (two one-thread workers)")
        else:
            unknown += 1
    n = backend.parallel(len(todo))
    text = f"estimate: {len(todo)} of {len(cells)} cells to train"
    if total:
        text += (f", about {_duration(total)} of cell time ({n} worker{'s' * (n > 1)}: about {_duration(total / n)}"
                 f" on this machine if it is as fast), from {' and '.join(sorted(sources))}")
    if unknown:
        text += (f"; {unknown} cell{'s' * (unknown > 1)} without an estimate (no finished cell of their method and "
                 "setting yet: the first one gives it)")
    return text


def _cost_key(spec: RunSpec) -> str:
    """Everything that sets a cell's cost: its spec without the noise and the seeds."""
    return json.dumps({k: v for k, v in spec.to_dict().items() if k not in ("noise", "noise_seed", "seed")},
                      sort_keys=True)


def _duration(seconds: float) -> str:
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
