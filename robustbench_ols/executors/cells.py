"""What every backend (backends.py) shares: a grid's cells run resumably and shared between processes and hosts.

Each cell is one `execute()`: its directory is `<out>/<run_id>`, so the same grid always maps to the same
folders. A DONE cell is skipped (its scores for this grid's `EvalSpec` are added if missing); a cell with a
checkpoint resumes from it. Nothing here writes a run's files: kill safety is `execute()`'s.

Processes and hosts share a grid through claims (store/claims.py): a backend takes a cell with `claim_next`,
runs it with `run_cell` and releases the claim. A cell that raises is recorded in `<out>/.failed/<run_id>.json`
(error, traceback, host) and skipped by later calls until `retry_failed`; the other cells go on.
"""
from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from robustbench_ols.common import progress as progress_bars
from robustbench_ols.common.errors import SpecError
from robustbench_ols.spec import EvalSpec, ExecOptions, RunSpec
from robustbench_ols.store.claims import Claim, cell_state, failure_path, record_failure
from robustbench_ols.train.run import execute


def run_cell(spec: RunSpec, ev: EvalSpec, ex: ExecOptions, out: Path) -> tuple[str, str]:
    """Execute one claimed cell here; ("done" | "failed", message). Never raises for a cell's error."""
    try:
        execute(spec, ex, out, ev)
    except Exception as e:  # noqa: BLE001 - a cell's failure must not stop the grid
        record_failure(out, spec, e, traceback.format_exc())
        return "failed", f"{type(e).__name__}: {e}"
    failure_path(out, spec.run_id).unlink(missing_ok=True)
    return "done", ""


def claim_next(spec: RunSpec, out: Path, ev: EvalSpec, retry_failed: bool) -> Claim | None:
    """The claim on a cell to run now, or None: held by another process, or (checked again once held) finished
    or failed meanwhile. With `retry_failed` its failure record is cleared. The one place every backend takes
    a cell; the caller runs it and releases the claim."""
    claim = Claim(out, spec.run_id)
    if not claim.acquire():
        return None
    state = cell_state(out, spec, ev)
    if state in ("done", "unreadable") or (state == "failed" and not retry_failed):
        claim.release()
        return None
    if retry_failed:
        failure_path(out, spec.run_id).unlink(missing_ok=True)
    return claim


@dataclass
class Summary:
    total: int
    done: int = 0
    failed: dict = field(default_factory=dict)  # run_id -> error
    unfinished: dict = field(default_factory=dict)  # run_id -> why (a Slurm task that ended early)
    trained_here: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and self.done == self.total


def to_take(cells, out, ev, retry_failed, skip=()):
    """Cells this process may take now (not in `skip`: run ids it already retried or has in flight),
    and how many are held by others."""
    take, held = [], 0
    for spec in cells:
        if spec.run_id in skip:
            continue
        state = cell_state(out, spec, ev)
        if state in ("done", "unreadable") or (state == "failed" and not retry_failed):
            continue
        if state == "running":
            held += 1
            continue
        take.append(spec)
    return take, held


def tally(cells, out, ev) -> Summary:
    s = Summary(total=len(cells))
    for spec in cells:
        state = cell_state(out, spec, ev)
        if state == "done":
            s.done += 1
        elif state == "failed":
            s.failed[spec.run_id] = json.loads(failure_path(out, spec.run_id).read_text())["error"]
        elif state == "unreadable":  # finished, but its metrics.json is not: never retrained, repaired
            s.failed[spec.run_id] = (f"finished, but {out / spec.run_id}/metrics.json is unreadable: "
                                     f"`rbols repair {out / spec.run_id}` rebuilds it")
    return s


def grid_bar(total, enabled, desc="grid"):
    return progress_bars.bar(total, desc, "cell", position=0, enabled=enabled)


def update_bar(bar, cells, out, ev):
    if bar is None:
        return
    states = [cell_state(out, s, ev) for s in cells]
    bar.n = states.count("done")
    bar.set_postfix(running=states.count("running"), failed=states.count("failed"), refresh=False)
    bar.refresh()


def work_loop(cells, out: Path, ev: EvalSpec, ex: ExecOptions, *, retry_failed: bool = False,
              bar=None, poll: float = 2.0) -> int:
    """Run cells in this process until every cell is done or failed; cells other processes hold are
    waited for (and taken over if their process dies). Returns the number of cells run here."""
    retried = set()
    ran = 0
    while True:
        take, held = to_take(cells, out, ev, retry_failed, skip=retried)
        if not take and not held:
            return ran
        progressed = False
        for spec in take:
            claim = claim_next(spec, out, ev, retry_failed)
            if claim is None:
                continue
            try:
                update_bar(bar, cells, out, ev)
                if retry_failed:
                    retried.add(spec.run_id)
                run_cell(spec, ev, ex, out)
                ran += 1
                progressed = True
            finally:
                claim.release()
            update_bar(bar, cells, out, ev)
        if not progressed:  # every cell left is held by another process: wait for it (or its death)
            time.sleep(poll)
            update_bar(bar, cells, out, ev)


def set_threads(threads: int | None) -> None:
    """torch's intra-op threads for this process (None: torch's choice). Every run and evaluation
    record says how many it ran with (executions.json, evals/<eval_id>.json: torch_threads)."""
    if threads is None:
        return
    if threads < 1:
        raise SpecError(f"--threads must be >= 1, got {threads}; leave it out for torch's choice")
    torch.set_num_threads(threads)
