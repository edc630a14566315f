"""`--backend local`: the grid on this machine, in this process or in worker processes that share it through the
cells' claims."""
from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from robustbench_ols.common.errors import SpecError
from robustbench_ols.executors.backends import Backend, register
from robustbench_ols.spec import EvalSpec, ExecOptions

if TYPE_CHECKING:  # the module imports torch: only inside the functions that run cells
    from robustbench_ols.executors.cells import Summary


@register("local")
class Local(Backend):
    """This machine: worker processes sharing the grid (one per core on a CPU, one per visible GPU)."""
    help = "this machine"

    def __init__(self, workers: int | None = None, threads: int | None = None, per_device: int = 1):
        self.workers, self.threads, self.per_device = workers, threads, per_device

    @classmethod
    def add_arguments(cls, group) -> None:
        group.add_argument("--workers", type=int, default=None,
                           help="local: processes sharing the grid (default: one single-threaded worker per core on "
                                "a CPU; with GPUs --workers-per-device per visible GPU, each pinned to it)")
        group.add_argument("--workers-per-device", type=int, default=1,
                           help="local, GPUs: workers packed on each GPU (default 1; 2-4 keep a GPU busy with the "
                                "small ResNets, whose steps are bound by kernel launches; see the README on MPS)")

    @classmethod
    def from_args(cls, args) -> "Local":
        if args.workers is not None and args.workers < 1:
            raise SpecError(f"--workers must be >= 1, got {args.workers}")
        if args.workers_per_device < 1:
            raise SpecError(f"--workers-per-device must be >= 1, got {args.workers_per_device}")
        return cls(args.workers, args.threads, args.workers_per_device)

    def parallel(self, pending: int) -> int:
        return self.workers or cpu_layout(None, None, pending)[0]

    def run(self, cells, out, ev, ex, *, retry_failed, progress):
        return run_local(cells, out, ev, ex, workers=self.workers, retry_failed=retry_failed, threads=self.threads,
                         progress=progress, per_device=self.per_device)


def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when the `rbols matrix` process that spawned it dies (even by
    SIGKILL), so no orphan keeps training and holding claims; its cell resumes from the checkpoint."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: Ctrl-C still reaches the whole process group
        return
    if os.getppid() == 1:  # the parent died before the call: adopted by init already
        os._exit(1)


def usable_cores() -> int:
    """The CPUs this process may run on: a container's, Slurm's or taskset's share, not the host's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_layout(workers: int | None, threads: int | None, pending: int, cores: int | None = None) -> tuple[int, int]:
    """(worker processes, torch threads each) for a grid on the CPU. Unless told otherwise, one single-threaded
    worker per core (at most one per pending cell): small CIFAR models use two threads poorly, and on
    the 2-core machine two one-thread workers trained 1.11x the images per second of one two-thread
    process (benchmarks/epoch_cost.py, docs/results/epoch_cost.json)."""
    if cores is None:
        cores = usable_cores()
    if workers is None and threads is None:
        workers = max(1, min(cores, pending))
        return workers, max(1, cores // workers)
    if workers is None:  # threads given: one process with them, as asked
        return 1, threads
    return workers, threads or max(1, cores // workers)


def pinned(device: str, visible: str | None) -> tuple[str, str | None]:
    """(the device a worker uses, its CUDA_VISIBLE_DEVICES) for `device`: a worker on GPU i sees that GPU alone,
    as cuda:0, so that no library it calls starts a context on GPU 0. `visible`: the parent's own
    CUDA_VISIBLE_DEVICES (GPU i is its i-th entry), None when unset."""
    if not device.startswith("cuda:"):
        return device, None
    i = int(device.split(":", 1)[1])
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else None
    return "cuda:0", ids[i] if ids else str(i)


def _worker_main(cells, out, ev, ex, retry_failed, threads, lock=None):
    device, visible = pinned(ex.device, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if visible is not None:  # before anything starts CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
        ex = dataclasses.replace(ex, device=device)
    from tqdm.auto import tqdm

    from robustbench_ols.executors.cells import set_threads, work_loop
    _die_with_parent()
    set_threads(threads)
    if lock is not None:  # the parent's tqdm lock: the processes' bars don't write over each other
        tqdm.set_lock(lock)
    try:
        work_loop(cells, Path(out), ev, ex, retry_failed=retry_failed)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent says it once
        sys.exit(130)


def _devices(ex: ExecOptions, workers: int | None, per_device: int = 1) -> list[str]:
    """One device per worker: with GPUs visible and device auto/cuda, `per_device` workers per GPU (or
    `workers` dealt over the GPUs in turn)."""
    import torch
    if ex.device in ("auto", "cuda") and torch.cuda.is_available():
        n = torch.cuda.device_count()
        return [f"cuda:{i % n}" for i in range(workers or n * per_device)]
    return [ex.device] * (workers or 1)


def run_local(cells, out: Path, ev: EvalSpec, ex: ExecOptions, *, workers: int | None = None,
              retry_failed: bool = False, threads: int | None = None, progress: bool = True,
              per_device: int = 1) -> Summary:
    from tqdm.auto import tqdm

    from robustbench_ols.executors.cells import grid_bar, set_threads, tally, to_take, update_bar, work_loop
    t0 = time.perf_counter()
    if _devices(ex, None)[0] in ("cpu", "auto"):  # no GPU: processes x threads for this machine's cores
        workers, threads = cpu_layout(workers, threads, len(to_take(cells, out, ev, retry_failed)[0]))
    devices = _devices(ex, workers, per_device)
    bar = grid_bar(len(cells), progress)
    try:
        if len(devices) == 1:
            set_threads(threads)
            ran = work_loop(cells, out, ev, dataclasses.replace(ex, device=devices[0], progress=progress),
                            retry_failed=retry_failed, bar=bar)
        else:
            ctx = mp.get_context("spawn")  # never fork a process that holds torch threads
            per = threads or max(1, usable_cores() // len(devices))
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
