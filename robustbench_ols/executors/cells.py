"""Running a grid (grid.py) of runs: resumable, shareable, on one machine or a Ray cluster (Slurm: slurm.py).

Each cell is one `execute()`: its directory is `<out>/<run_id>`, so the same grid always maps to the same
folders. A DONE cell is skipped (its scores for this grid's `EvalSpec` are added if missing); a cell with a
checkpoint resumes from it. Nothing here writes a run's files: kill safety is `execute()`'s.

Processes and hosts share a grid through claims (claims.py). A cell that raises is recorded in
`<out>/.failed/<run_id>.json` (error, traceback, host) and skipped by later calls until `retry_failed`; the
other cells go on.
"""
from __future__ import annotations

import ctypes
import dataclasses
import json
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from robustbench_ols import store
from robustbench_ols.common import progress as progress_bars
from robustbench_ols.common.errors import SpecError
from robustbench_ols.methods import method_label
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


# --------------------------------------------------------------------------------------------------
# executors

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
            claim = Claim(out, spec.run_id)
            if not claim.acquire():
                continue
            try:
                state = cell_state(out, spec, ev)  # it may have finished while we looked elsewhere
                if state in ("done", "unreadable") or (state == "failed" and not retry_failed):
                    continue
                update_bar(bar, cells, out, ev)
                if retry_failed:
                    retried.add(spec.run_id)
                    failure_path(out, spec.run_id).unlink(missing_ok=True)
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


def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when the `rbols matrix` process that spawned it dies (even by
    SIGKILL), so no orphan keeps training and holding claims; its cell resumes from the checkpoint."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: Ctrl-C still reaches the whole process group
        return
    if os.getppid() == 1:  # the parent died before the call: adopted by init already
        os._exit(1)


def _worker_main(cells, out, ev, ex, retry_failed, threads, lock=None):
    _die_with_parent()
    set_threads(threads)
    if lock is not None:  # the parent's tqdm lock: the processes' bars don't write over each other
        tqdm.set_lock(lock)
    try:
        work_loop(cells, Path(out), ev, ex, retry_failed=retry_failed)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent says it once
        sys.exit(130)


def _devices(ex: ExecOptions, workers: int | None) -> list[str]:
    """One device per worker: with GPUs visible and device auto/cuda, one worker per GPU."""
    if ex.device in ("auto", "cuda") and torch.cuda.is_available():
        n = torch.cuda.device_count()
        return [f"cuda:{i % n}" for i in range(workers or n)]
    return [ex.device] * (workers or 1)


def cpu_layout(workers: int | None, threads: int | None, pending: int, cores: int | None = None) -> tuple[int, int]:
    """(worker processes, torch threads each) for a grid on the CPU. Unless told otherwise, one single-threaded
    worker per core (at most one per pending cell): small CIFAR models use two threads poorly, and on
    the 2-core machine two one-thread workers trained 1.11x the images per second of one two-thread
    process (benchmarks/epoch_cost.py, docs/results/epoch_cost.json)."""
    if cores is None:  # the CPUs this process may run on (a container's or taskset's share, not the host's)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers is None and threads is None:
        workers = max(1, min(cores, pending))
        return workers, max(1, cores // workers)
    if workers is None:  # threads given: one process with them, as asked
        return 1, threads
    return workers, threads or max(1, cores // workers)


def run_local(cells, out: Path, ev: EvalSpec, ex: ExecOptions, *, workers: int | None = None,
              retry_failed: bool = False, threads: int | None = None, progress: bool = True) -> Summary:
    t0 = time.perf_counter()
    if _devices(ex, None)[0] in ("cpu", "auto"):  # no GPU: processes x threads for this machine's cores
        workers, threads = cpu_layout(workers, threads, len(to_take(cells, out, ev, retry_failed)[0]))
    devices = _devices(ex, workers)
    bar = grid_bar(len(cells), progress)
    try:
        if len(devices) == 1:
            set_threads(threads)
            ran = work_loop(cells, out, ev, dataclasses.replace(ex, device=devices[0], progress=progress),
                            retry_failed=retry_failed, bar=bar)
        else:
            ctx = mp.get_context("spawn")  # never fork a process that holds torch threads
            per = threads or max(1, (os.cpu_count() or 1) // len(devices))
            lock = None
            if bar is not None:  # worker i draws its cell's bar on line i + 1, under the grid bar
                lock = ctx.RLock()
                tqdm.set_lock(lock)
            procs = [ctx.Process(target=_worker_main, args=(
                cells, str(out), ev, dataclasses.replace(ex, device=d, progress=bar is not None,
                                                         progress_position=i + 1),
                retry_failed, per, lock)) for i, d in enumerate(devices)]
            for p in procs:
                p.start()
            try:
                while any(p.is_alive() for p in procs):
                    update_bar(bar, cells, out, ev)
                    time.sleep(1.0)
            except KeyboardInterrupt:  # the workers got it too: let them record `interrupted` first
                for p in procs:
                    p.join(timeout=60)
                raise
            ran = None
    finally:
        if bar is not None:
            update_bar(bar, cells, out, ev)
            bar.close()
    s = tally(cells, out, ev)
    s.trained_here = ran if ran is not None else -1
    s.seconds = time.perf_counter() - t0
    return s


def _ray_task(spec_dict, ev_dict, ex_dict, out, threads):
    set_threads(threads)
    spec = RunSpec.from_dict(spec_dict)
    return run_cell(spec, EvalSpec.from_dict(ev_dict), ExecOptions(**ex_dict), Path(out))


def run_ray(cells, out: Path, ev: EvalSpec, ex: ExecOptions, *, address: str | None = None,
            retry_failed: bool = False, cpus_per_task: int = 1, progress: bool = True,
            init_kwargs: dict | None = None) -> Summary:
    """Each cell a Ray task (a GPU each when the cluster has GPUs). This process claims the cells it
    submits, so local processes and other drivers share the grid the same way. The output folder must
    be on a file system every Ray node sees at the same path."""
    try:
        import ray  # an optional extra: pip install 'robustbench_ols[ray]'
    except ImportError:
        raise SpecError("--backend ray needs Ray: pip install 'robustbench_ols[ray]'") from None
    t0 = time.perf_counter()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, **(init_kwargs or {}))
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        opts = {"num_gpus": 1, "num_cpus": cpus_per_task} if gpus else {"num_cpus": cpus_per_task}
        slots = max(1, gpus if gpus else int(resources.get("CPU", 1)) // cpus_per_task)
        task = ray.remote(max_retries=0)(_ray_task).options(**opts)
        device = "cuda" if gpus else "cpu"
        ex_dict = {**dataclasses.asdict(dataclasses.replace(ex, device=device, progress=False))}
        bar = grid_bar(len(cells), progress)
        inflight, retried = {}, set()
        out_abs = str(Path(out).resolve())
        while True:
            take, held = to_take(cells, out, ev, retry_failed,
                               skip=retried | {c[0].run_id for c in inflight.values()})
            for spec in take:
                if len(inflight) >= slots:
                    break
                claim = Claim(out, spec.run_id)
                if not claim.acquire():
                    continue
                if retry_failed:
                    retried.add(spec.run_id)
                    failure_path(out, spec.run_id).unlink(missing_ok=True)
                ref = task.remote(spec.to_dict(), ev.to_dict(), ex_dict, out_abs, cpus_per_task)
                inflight[ref] = (spec, claim)
            if not inflight:
                if not take and not held:
                    break
                time.sleep(2.0)
                continue
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=2.0)
            for ref in ready:
                spec, claim = inflight.pop(ref)
                try:
                    ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the task itself died (node lost, OOM)
                    record_failure(out, spec, e, traceback.format_exc())
                finally:
                    claim.release()
            update_bar(bar, cells, out, ev)
        if bar is not None:
            bar.close()
    finally:
        if started_here:
            ray.shutdown()
    s = tally(cells, out, ev)
    s.seconds = time.perf_counter() - t0
    return s


def describe(cells, out: Path, ev: EvalSpec, swept=()) -> list[str]:
    """One line per cell for --dry-run: state, run_id, dataset, model, method, noise, seed, swept settings."""
    lines = []
    for s in cells:
        state = cell_state(out, s, ev)
        lines.append(f"{state:10s} {s.run_id}  {s.dataset:9s} {s.model:11s} "
                     f"{method_label(s.method, s.options):14s} {s.noise:14s} seed {s.seed}"
                     + "".join(f"  {k}={getattr(s, k)}" for k in swept))
    return lines


def estimate_line(grid, cells, out: Path, ev: EvalSpec, workers: int | None) -> str:
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
    n = workers or cpu_layout(None, None, len(todo))[0]
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


def print_summary(s: Summary, out: Path, file=None) -> None:
    file = sys.stdout if file is None else file  # looked up per call: pytest and redirects swap sys.stdout
    print(f"grid: {s.done} of {s.total} cells done, {len(s.failed)} failed "
          f"({s.seconds:.0f} s); results in {out}", file=file)
    for run_id, err in s.failed.items():
        hint = (f" (see {out}/.failed/{run_id}.json; --retry-failed runs it again)"
                if failure_path(out, run_id).exists() else "")
        print(f"  failed {run_id}: {err.splitlines()[0] if err else ''}{hint}", file=file)
    for run_id, why in s.unfinished.items():
        print(f"  unfinished {run_id}: {why}", file=file)
