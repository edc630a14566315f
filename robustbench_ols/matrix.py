"""Grids of runs (methods x noise x seeds x models x datasets): resumable, shareable, on one machine or
a Ray cluster.

A grid is a list of `RunSpec`s plus one `EvalSpec`; it never changes how one run works. Each cell is
one `execute()`: its directory is `<out>/<run_id>`, so the same grid always maps to the same folders.
A DONE cell is skipped (its scores for this grid's `EvalSpec` are added if missing); a cell with a
checkpoint resumes from it. Nothing here writes a run's files: kill safety is `execute()`'s.

Sharing: before running a cell a process takes its claim, `<out>/.claims/<run_id>.claim`, an
exclusive `flock` on a file that names the host and pid. The kernel drops the lock when the process
dies (even by SIGKILL), so a stale claim from a dead process is simply taken over; two `rbols matrix`
processes on one folder (or N local workers) never run one cell at once. Over a network file system
this needs working `flock` (NFSv4 and Lustre have it; check yours).

Failures: a cell that raises is recorded in `<out>/.failed/<run_id>.json` (error, traceback, host)
and skipped by later calls until `retry_failed`; the other cells go on.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RbolsError, SpecError
from .evaluation import EvalSpec
from .spec import ExecOptions, RunSpec
from .store import write_json

# --------------------------------------------------------------------------------------------------
# grids and presets

SYMMETRIC_0_80 = ["symmetric:0", "symmetric:0.2", "symmetric:0.4", "symmetric:0.6", "symmetric:0.8"]
# The OLS paper's Table VII rows that this suite implements (Ren et al.'s L2RW is not among them).
PAPER_METHODS = ["hard", "bootsoft", "boothard", "sce", "mwnet", "arazo", "pencil", "coteaching", "ls", "ols"]
# The comparison `quick` runs: the paper's methods, MW-Net last (its step costs 8x a hard-label step on a
# CPU; a quick cell about 3x: ~190 s against ~60 s; one seed of the ten methods takes about 67 min on 2 cores).
QUICK_METHODS = ["hard", "ls", "ols", "sce", "bootsoft", "boothard", "coteaching", "pencil", "arazo", "mwnet"]
# The cpu-regime tier: the core comparison, OLS's single-matrix variant and the four noisy-label baselines the
# project's mission names (bootstrapping and MW-Net stay in `quick`: the budget of 6 hours on 2 cores).
CPU_REGIME_METHODS = ["hard", "ls", "ols", "ols-single", "sce", "coteaching", "pencil", "arazo"]
PAPER_RUN = {"epochs": 300}  # batch 128, SGD 0.9 Nesterov, wd 5e-4, lr 0.1, x0.1 at 150/225: the defaults

PRESETS = {
    "smoke": dict(
        about="synthetic data, seconds: for tests and for trying the commands; says nothing about CIFAR",
        datasets=["synthetic"], models=["resnet8"], methods=["hard", "ls", "ols"],
        noise=["symmetric:0", "symmetric:0.4"], seeds=[0],
        run=dict(epochs=2, batch_size=100, train_subset=300, milestones=()),
        eval=dict(attacks=["fgsm", "pgd:steps=2"], attack_examples=50)),
    "quick": dict(
        about="CIFAR-10 at CPU scale: resnet8, 4,000 training images, 10 epochs (lr x0.1 at 5 and 8), "
              "FGSM and PGD-20 on 500 test images; hard, ls, ols, sce, bootsoft, boothard, coteaching, pencil, "
              "arazo and mwnet at five symmetric noise rates; seed 0 unless --seeds says otherwise",
        datasets=["cifar10"], models=["resnet8"], methods=QUICK_METHODS, noise=SYMMETRIC_0_80, seeds=[0],
        run=dict(epochs=10, train_subset=4000),
        eval=dict(attack_examples=500)),
    "cpu-regime": dict(
        about="CIFAR-10 in the memorisation regime on a 2-core CPU: resnet8, 4,000 training images without "
              "augmentation, 28 epochs (lr 0.1, x0.1 at 20 and 25), a test pass every 4 epochs, FGSM and PGD-20 at "
              "8/255 and 2/255 on 500 test images; hard, ls, ols, ols-single, sce, coteaching, pencil and arazo "
              "at five symmetric noise rates, seeds 0 and 1 (hard, ls and ols first)",
        datasets=["cifar10"], models=["resnet8"], methods=CPU_REGIME_METHODS, core=["hard", "ls", "ols"],
        noise=SYMMETRIC_0_80, seeds=[0, 1],
        run=dict(epochs=28, milestones=[20, 25], train_subset=4000, augment=False, test_every=4),
        # the paper's 8/255 drives these small models to ~100% robust error (a floor where every method
        # ties), so 2/255 is scored too (PGD step eps/4)
        eval=dict(attacks=["fgsm", "pgd", "fgsm:eps=2/255", "pgd:eps=2/255,alpha=1/510"], attack_examples=500)),
    "paper-table7": dict(
        about="OLS paper Table VII: CIFAR-100, ResNet-56 (bottleneck), 300 epochs, symmetric noise 0-80%, 3 seeds",
        datasets=["cifar100"], models=["resnet56b"], methods=PAPER_METHODS, noise=SYMMETRIC_0_80,
        seeds=[0, 1, 2], run=PAPER_RUN, eval={}),
    "paper-table8": dict(
        about="OLS paper Table VIII: CIFAR-10, ResNet-29 (bottleneck), clean labels, FGSM and PGD-20",
        datasets=["cifar10"], models=["resnet29b"], methods=["hard", "ls", "ols"], noise=["none"],
        seeds=[0, 1, 2], run=PAPER_RUN, eval={}),
    "paper-table11": dict(
        about="OLS paper Table XI: CIFAR-100, ResNet-56/74/110 (bottleneck), clean labels, error and ECE",
        datasets=["cifar100"], models=["resnet56b", "resnet74b", "resnet110b"], methods=["hard", "ls", "ols"],
        noise=["none"], seeds=[0, 1, 2], run=PAPER_RUN, eval={}),
    "paper-table12": dict(
        about="OLS paper Table XII: CIFAR-10, ResNet-29 (bottleneck), clean labels, CIFAR-10H KL "
              "(the same cells as paper-table8)",
        datasets=["cifar10"], models=["resnet29b"], methods=["hard", "ls", "ols"], noise=["none"],
        seeds=[0, 1, 2], run=PAPER_RUN, eval={}),
}

GRID_KEYS = ("datasets", "models", "methods", "noise", "seeds")
RUN_FIELDS = {f.name for f in dataclasses.fields(RunSpec)} - {"dataset", "model", "method", "method_options",
                                                               "noise", "seed"}
EVAL_FIELDS = {f.name for f in dataclasses.fields(EvalSpec)}


def split_methods(text: str) -> list[str]:
    """`hard,ols:alpha=0.5,init=zeros,ls` -> [hard, ols:alpha=0.5,init=zeros, ls]: a piece with `=`
    and no `:` is one more option of the method before it."""
    out = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if "=" in piece and ":" not in piece.split("=", 1)[0] and out:
            out[-1] += "," + piece
        else:
            out.append(piece)
    return out


@dataclass
class Grid:
    datasets: list
    models: list
    methods: list  # method texts, e.g. "ols:alpha=0.5"
    noise: list
    seeds: list
    run: dict = field(default_factory=dict)  # RunSpec fields shared by every cell
    eval: dict = field(default_factory=dict)  # EvalSpec fields
    name: str = "custom"
    about: str = ""
    # Methods whose cells run first, over every seed and noise rate, before the other methods' cells: a
    # partial grid then already holds the core comparison (empty: seed by seed, as below).
    core: list = field(default_factory=list)

    @classmethod
    def build(cls, preset: str | None = None, config: dict | None = None, **overrides) -> "Grid":
        """preset < config (a TOML document as a dict) < overrides; each may hold the grid keys, `run`
        and `eval` tables."""
        layers = []
        if preset is not None:
            if preset not in PRESETS:
                raise SpecError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
            layers.append(PRESETS[preset])
        if config:
            if "preset" in config and preset is None:
                return cls.build(config["preset"], {k: v for k, v in config.items() if k != "preset"}, **overrides)
            layers.append(config)
        layers.append(overrides)
        g = {"run": {}, "eval": {}, "name": preset or "custom", "about": ""}
        for layer in layers:
            for k, v in layer.items():
                if v is None:
                    continue
                if k in ("run", "eval"):
                    g[k] = {**g[k], **v}
                elif k in GRID_KEYS or k in ("about", "name", "core"):
                    g[k] = v
                else:
                    raise SpecError(f"unknown grid key {k!r}; valid: {', '.join(GRID_KEYS)}, run, eval, preset")
        if not isinstance(g.get("core", []), list):
            raise SpecError(f"grid key core must be a list of method texts, got {g['core']!r}")
        missing = [k for k in GRID_KEYS if not g.get(k)]
        if missing:
            raise SpecError(f"the grid has no {', '.join(missing)}: give --{missing[0]} (or a --preset, or "
                            f"--config with {missing[0]} = [...])")
        bad = sorted(set(g["run"]) - RUN_FIELDS) + sorted(set(g["eval"]) - EVAL_FIELDS)
        if bad:
            raise SpecError(f"unknown run/eval setting {bad[0]!r}; run settings: {', '.join(sorted(RUN_FIELDS))}; "
                            f"eval settings: {', '.join(sorted(EVAL_FIELDS))}")
        return cls(**g)

    def eval_spec(self) -> EvalSpec:
        kw = dict(self.eval)
        if "attacks" in kw:
            kw["attacks"] = tuple(a for a in kw["attacks"] if a != "none")
        return EvalSpec(**kw)

    def cells(self) -> list[RunSpec]:
        """Every cell's RunSpec, validated, in the order they run: dataset, model, seed, noise, method
        (so a whole seed is finished before the next begins), the `core` methods' cells before the others."""
        from .methods import parse_method
        out, seen = [], set()
        run = dict(self.run)
        if "milestones" in run and run["milestones"] is not None:
            run["milestones"] = tuple(run["milestones"])
        for dataset in self.datasets:
            for model in self.models:
                for seed in self.seeds:
                    for noise in self.noise:
                        for text in self.methods:
                            name, raw = parse_method(text)
                            kw = {"noise_seed": int(seed), **run}
                            try:
                                spec = RunSpec(dataset=dataset, model=model, method=name,
                                               method_options=tuple(raw.items()), noise=noise, seed=int(seed), **kw)
                            except RbolsError as e:
                                raise type(e)(f"grid cell {dataset}/{model}/{text}/{noise}/seed {seed}: {e}") from None
                            if spec.run_id not in seen:
                                seen.add(spec.run_id)
                                out.append((text not in self.core, spec))
        return [spec for _, spec in sorted(out, key=lambda c: c[0])]  # stable: the order above within each part


def load_config(path) -> dict:
    import tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise SpecError(f"--config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"--config {path} is not valid TOML: {e}") from None


# --------------------------------------------------------------------------------------------------
# claims and cell states

class Claim:
    """An exclusive, process-lifetime claim on one cell: flock on `<out>/.claims/<run_id>.claim`."""

    def __init__(self, out: Path, run_id: str):
        self.path = Path(out) / ".claims" / f"{run_id}.claim"
        self.fd = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:  # the holder before us may have released (unlinked) it while we waited: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # before unlocking: a waiter then sees a new inode
            os.close(self.fd)
            self.fd = None

    def holder(self) -> dict | None:
        """Who holds it now (host, pid), or None when nobody does."""
        if not self.path.exists():
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    return json.loads(Path(self.path).read_text() or "{}")
                except (OSError, ValueError):
                    return {}
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None  # a file from a dead process: free
        finally:
            os.close(fd)


def _failure_path(out: Path, run_id: str) -> Path:
    return out / ".failed" / f"{run_id}.json"


def cell_state(out: Path, spec: RunSpec, ev: EvalSpec) -> str:
    """done | needs-eval | failed | running | partial | todo."""
    d = out / spec.run_id
    if (d / "DONE").exists():
        m = json.loads((d / "metrics.json").read_text())
        scored = m.get("eval_id") == ev.eval_id or (d / "evals" / f"{ev.eval_id}.json").exists()
        return "done" if scored else "needs-eval"
    if _failure_path(out, spec.run_id).exists():
        return "failed"
    if Claim(out, spec.run_id).holder() is not None:
        return "running"
    if (d / "checkpoint.pt").exists() or (d / "metrics.json").exists():
        return "partial"
    return "todo"


def _record_failure(out: Path, spec: RunSpec, error: BaseException | str, tb: str = "") -> None:
    path = _failure_path(out, spec.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"run_id": spec.run_id, "spec": spec.to_dict(), "error": str(error),
                      "type": type(error).__name__ if not isinstance(error, str) else "error", "traceback": tb,
                      "host": socket.gethostname(), "pid": os.getpid(), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def run_cell(spec: RunSpec, ev: EvalSpec, ex: ExecOptions, out: Path) -> tuple[str, str]:
    """Execute one claimed cell here; ("done" | "failed", message). Never raises for a cell's error."""
    from .run import execute
    try:
        execute(spec, ex, out, ev)
    except Exception as e:  # noqa: BLE001 - a cell's failure must not stop the grid
        _record_failure(out, spec, e, traceback.format_exc())
        return "failed", f"{type(e).__name__}: {e}"
    _failure_path(out, spec.run_id).unlink(missing_ok=True)
    return "done", ""


# --------------------------------------------------------------------------------------------------
# executors

@dataclass
class Summary:
    total: int
    done: int = 0
    failed: dict = field(default_factory=dict)  # run_id -> error
    trained_here: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and self.done == self.total


def _todo(cells, out, ev, retry_failed, skip=()):
    """Cells this process may take now (not in `skip`: run ids it already retried or has in flight),
    and how many are held by others."""
    take, held = [], 0
    for spec in cells:
        if spec.run_id in skip:
            continue
        state = cell_state(out, spec, ev)
        if state == "done" or (state == "failed" and not retry_failed):
            continue
        if state == "running":
            held += 1
            continue
        take.append(spec)
    return take, held


def _tally(cells, out, ev) -> Summary:
    s = Summary(total=len(cells))
    for spec in cells:
        state = cell_state(out, spec, ev)
        if state == "done":
            s.done += 1
        elif state == "failed":
            s.failed[spec.run_id] = json.loads(_failure_path(out, spec.run_id).read_text())["error"]
    return s


def _bar(total, enabled, desc="grid"):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, position=0, unit="cell", desc=desc, dynamic_ncols=True, leave=True)


def _update_bar(bar, cells, out, ev):
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
        take, held = _todo(cells, out, ev, retry_failed, skip=retried)
        if not take and not held:
            return ran
        progressed = False
        for spec in take:
            claim = Claim(out, spec.run_id)
            if not claim.acquire():
                continue
            try:
                state = cell_state(out, spec, ev)  # it may have finished while we looked elsewhere
                if state == "done" or (state == "failed" and not retry_failed):
                    continue
                _update_bar(bar, cells, out, ev)
                if retry_failed:
                    retried.add(spec.run_id)
                    _failure_path(out, spec.run_id).unlink(missing_ok=True)
                run_cell(spec, ev, ex, out)
                ran += 1
                progressed = True
            finally:
                claim.release()
            _update_bar(bar, cells, out, ev)
        if not progressed:  # every cell left is held by another process: wait for it (or its death)
            time.sleep(poll)
            _update_bar(bar, cells, out, ev)


def set_threads(threads: int | None) -> None:
    """torch's intra-op threads for this process (None: torch's choice). Every run and evaluation
    record says how many it ran with (executions.json, evals/<eval_id>.json: torch_threads)."""
    if threads is None:
        return
    if threads < 1:
        raise SpecError(f"--threads must be >= 1, got {threads}; leave it out for torch's choice")
    import torch
    torch.set_num_threads(threads)


def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when the `rbols matrix` process that spawned it dies (even by
    SIGKILL), so no orphan keeps training and holding claims; its cell resumes from the checkpoint."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: Ctrl-C still reaches the whole process group
        return
    if os.getppid() == 1:  # the parent died before the call: adopted by init already
        os._exit(1)


def _worker_main(cells, out, ev, ex, retry_failed, threads, lock=None):
    _die_with_parent()
    set_threads(threads)
    if lock is not None:  # the parent's tqdm lock: the processes' bars don't write over each other
        from tqdm.auto import tqdm
        tqdm.set_lock(lock)
    work_loop(cells, Path(out), ev, ex, retry_failed=retry_failed)


def _devices(ex: ExecOptions, workers: int | None) -> list[str]:
    """One device per worker: with GPUs visible and device auto/cuda, one worker per GPU."""
    import torch
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
        workers, threads = cpu_layout(workers, threads, len(_todo(cells, out, ev, retry_failed)[0]))
    devices = _devices(ex, workers)
    bar = _bar(len(cells), progress)
    try:
        if len(devices) == 1:
            set_threads(threads)
            ran = work_loop(cells, out, ev, dataclasses.replace(ex, device=devices[0], progress=progress),
                            retry_failed=retry_failed, bar=bar)
        else:
            import multiprocessing as mp
            ctx = mp.get_context("spawn")  # never fork a process that holds torch threads
            per = threads or max(1, (os.cpu_count() or 1) // len(devices))
            lock = None
            if bar is not None:  # worker i draws its cell's bar on line i + 1, under the grid bar
                from tqdm.auto import tqdm
                lock = ctx.RLock()
                tqdm.set_lock(lock)
            procs = [ctx.Process(target=_worker_main, args=(
                cells, str(out), ev, dataclasses.replace(ex, device=d, progress=bar is not None,
                                                         progress_position=i + 1),
                retry_failed, per, lock)) for i, d in enumerate(devices)]
            for p in procs:
                p.start()
            while any(p.is_alive() for p in procs):
                _update_bar(bar, cells, out, ev)
                time.sleep(1.0)
            ran = None
    finally:
        if bar is not None:
            _update_bar(bar, cells, out, ev)
            bar.close()
    s = _tally(cells, out, ev)
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
        import ray
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
        bar = _bar(len(cells), progress)
        inflight, retried = {}, set()
        out_abs = str(Path(out).resolve())
        while True:
            take, held = _todo(cells, out, ev, retry_failed,
                               skip=retried | {c[0].run_id for c in inflight.values()})
            for spec in take:
                if len(inflight) >= slots:
                    break
                claim = Claim(out, spec.run_id)
                if not claim.acquire():
                    continue
                if retry_failed:
                    retried.add(spec.run_id)
                    _failure_path(out, spec.run_id).unlink(missing_ok=True)
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
                    _record_failure(out, spec, e, traceback.format_exc())
                finally:
                    claim.release()
            _update_bar(bar, cells, out, ev)
        if bar is not None:
            bar.close()
    finally:
        if started_here:
            ray.shutdown()
    s = _tally(cells, out, ev)
    s.seconds = time.perf_counter() - t0
    return s


def describe(cells, out: Path, ev: EvalSpec) -> list[str]:
    """One line per cell for --dry-run: state, run_id, dataset, model, method, noise, seed."""
    from .results import method_label
    lines = []
    for s in cells:
        state = cell_state(out, s, ev)
        lines.append(f"{state:10s} {s.run_id}  {s.dataset:9s} {s.model:11s} "
                     f"{method_label(s.method, s.options):14s} {s.noise:14s} seed {s.seed}")
    return lines


def print_summary(s: Summary, out: Path, file=sys.stdout) -> None:
    print(f"grid: {s.done} of {s.total} cells done, {len(s.failed)} failed "
          f"({s.seconds:.0f} s); results in {out}", file=file)
    for run_id, err in s.failed.items():
        print(f"  failed {run_id}: {err.splitlines()[0] if err else ''} (see {out}/.failed/{run_id}.json; "
              "--retry-failed runs it again)", file=file)
