"""`--backend ray`: each cell a Ray task, on a running cluster or one started here."""
from __future__ import annotations

import dataclasses
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from robustbench_ols.common.errors import SpecError
from robustbench_ols.executors.backends import Backend, register
from robustbench_ols.spec import EvalSpec, ExecOptions, RunSpec

if TYPE_CHECKING:  # the module imports torch: only inside the functions that run cells
    from robustbench_ols.executors.cells import Summary


@register("ray")
class Ray(Backend):
    """A Ray cluster (`pip install 'robustbench_ols[ray]'`)."""
    help = "a Ray cluster"

    def __init__(self, address: str | None = None, cpus_per_task: int = 1, gpus_per_task: float = 1.0):
        self.address, self.cpus_per_task, self.gpus_per_task = address, cpus_per_task, gpus_per_task

    @classmethod
    def add_arguments(cls, group) -> None:
        group.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start a local one)")
        group.add_argument("--ray-cpus-per-task", type=int, default=1,
                           help="CPUs Ray reserves for each cell")
        group.add_argument("--ray-gpus-per-task", type=float, default=1.0,
                           help="GPU clusters: the share of a GPU each cell reserves (0.25: four cells packed per "
                                "GPU; default 1)")

    @classmethod
    def from_args(cls, args) -> "Ray":
        if args.ray_cpus_per_task < 1:
            raise SpecError(f"--ray-cpus-per-task must be >= 1, got {args.ray_cpus_per_task}")
        if not 0 < args.ray_gpus_per_task <= 1:
            raise SpecError(f"--ray-gpus-per-task must be in (0, 1] (a share of one GPU), got {args.ray_gpus_per_task}")
        return cls(args.ray_address, args.ray_cpus_per_task, args.ray_gpus_per_task)

    def run(self, cells, out, ev, ex, *, retry_failed, progress):
        return run_ray(cells, out, ev, ex, address=self.address, retry_failed=retry_failed,
                       cpus_per_task=self.cpus_per_task, gpus_per_task=self.gpus_per_task, progress=progress)


def _ray_task(spec_dict, ev_dict, ex_dict, out, threads):
    from robustbench_ols.executors.cells import run_cell, set_threads
    set_threads(threads)
    spec = RunSpec.from_dict(spec_dict)
    return run_cell(spec, EvalSpec.from_dict(ev_dict), ExecOptions(**ex_dict), Path(out))


def run_ray(cells, out: Path, ev: EvalSpec, ex: ExecOptions, *, address: str | None = None,
            retry_failed: bool = False, cpus_per_task: int = 1, progress: bool = True,
            init_kwargs: dict | None = None, gpus_per_task: float = 1.0) -> Summary:
    """Each cell a Ray task (`gpus_per_task` of a GPU each when the cluster has GPUs: Ray pins each task to its
    GPU through CUDA_VISIBLE_DEVICES, and a fraction packs several on one). This process claims the cells it
    submits, so local processes and other drivers share the grid the same way. The output folder must
    be on a file system every Ray node sees at the same path."""
    from robustbench_ols.executors.cells import claim_next, grid_bar, tally, to_take, update_bar
    from robustbench_ols.store.claims import record_failure
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
        opts = {"num_gpus": gpus_per_task, "num_cpus": cpus_per_task} if gpus else {"num_cpus": cpus_per_task}
        slots = max(1, int(gpus / gpus_per_task) if gpus else int(resources.get("CPU", 1)) // cpus_per_task)
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
                claim = claim_next(spec, out, ev, retry_failed)
                if claim is None:
                    continue
                if retry_failed:
                    retried.add(spec.run_id)
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
