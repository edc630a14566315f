"""`rbols matrix --backend slurm`: the cells left to train as one Slurm job array, submitted through
submitit (the library DomainBed's maintainers point Slurm users to: it writes the sbatch file, pickles each
task's call, and on a time-out or preemption checkpoints and requeues the job).

The semantics are the local backend's: each task takes its cell's claim (store/claims.py) inside the job, so the
driver, other drivers and local processes share the grid; a cell that raises is recorded in `.failed/`; a
task killed (scancel, node failure, time limit without requeue) leaves its cell's per-epoch checkpoint,
and the same command submits it again to resume. The driver waits for its jobs by `squeue`, which every
Slurm answers; submitit's own watcher reads `sacct`, which needs the accounting daemon (slurmdbd) that many
clusters, and a single-node test cluster, lack. Logs and submitit's pickles: `<out>/.slurm/<job id>_<task>_*`.
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from robustbench_ols.common.errors import SpecError
from robustbench_ols.executors.backends import Backend, register
from robustbench_ols.spec import EvalSpec, ExecOptions, RunSpec

# sbatch options of ours that submitit names itself; --slurm-extra KEY=VALUE may not set these (it would
# silently override them)
OWN = {"partition", "time", "gpus-per-task", "cpus-per-task", "array", "output", "error", "job-name", "signal"}


# A GPU cell's CPUs unless told: its main thread launches the kernels and autograd runs the backward pass on a
# thread of its own; with Slurm's default of one CPU the two share it.
GPU_TASK_CPUS = 2


@dataclass(frozen=True)
class SlurmOptions:
    """What each cell's Slurm task asks for; parsed once from the command line (`parse`)."""
    partition: str | None = None
    time_min: int = 60
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    array_parallelism: int = 256
    extra: dict = field(default_factory=dict)
    requeues: int = 3  # submitit's max_num_timeout: how often a timed-out or preempted task is requeued
    # --slurm-workers-per-device K: K cells per task and device, run at once by as many worker processes (the local
    # backend inside the task), the task's CPUs split among them
    per_device: int = 1

    @property
    def cells_per_task(self) -> int:
        return self.per_device * max(1, self.gpus_per_task)

    @classmethod
    def parse(cls, *, partition=None, time=None, gpus_per_task=None, cpus_per_task=None, array_parallelism=None,
              extra=(), per_device=1) -> SlurmOptions:
        if per_device < 1:
            raise SpecError(f"--slurm-workers-per-device must be >= 1, got {per_device}")
        kw = {"partition": partition or None, "extra": _extra(extra), "per_device": per_device}
        if time is not None:
            kw["time_min"] = _minutes(time)
        for name, value, least in (("gpus_per_task", gpus_per_task, 0), ("cpus_per_task", cpus_per_task, 1),
                                   ("array_parallelism", array_parallelism, 1)):
            if value is not None:
                if value < least:
                    raise SpecError(f"--slurm-{name.replace('_', '-')} must be >= {least}, got {value}")
                kw[name] = value
        if cpus_per_task is None:  # each packed cell's share as a single cell's
            gpus = kw.get("gpus_per_task", 0)
            kw["cpus_per_task"] = (GPU_TASK_CPUS if gpus else 1) * per_device * max(1, gpus)
        return cls(**kw)

    def parameters(self) -> dict:
        """submitit.SlurmExecutor.update_parameters arguments."""
        p = {"job_name": "rbols", "time": self.time_min, "cpus_per_task": self.cpus_per_task,
             "array_parallelism": self.array_parallelism, "additional_parameters": dict(self.extra)}
        if self.partition:
            p["partition"] = self.partition
        if self.gpus_per_task:
            p["gpus_per_task"] = self.gpus_per_task
        return p


@register("slurm")
class Slurm(Backend):
    """A Slurm job array through submitit (`pip install 'robustbench_ols[slurm]'`): one task per cell, or per
    `--slurm-workers-per-device` cells on each of the task's devices."""
    help = "a Slurm job array (submitit)"

    def __init__(self, options: SlurmOptions):
        self.options = options

    @classmethod
    def add_arguments(cls, group) -> None:
        a = group.add_argument
        a("--slurm-partition", default=None, help="the partition (default: the cluster's)")
        a("--slurm-time", default=None, help="each task's time limit: minutes or [D-]HH:MM[:SS] (default 60 minutes; "
                                              "a task that runs out is requeued and resumes)")
        a("--slurm-gpus-per-task", type=int, default=None, help="GPUs per cell (default 0: on the CPU)")
        a("--slurm-cpus-per-task", type=int, default=None,
          help=f"CPUs per task, split among its cells as their torch threads (default 1 per cell; {GPU_TASK_CPUS} per "
               "cell with --slurm-gpus-per-task)")
        a("--slurm-workers-per-device", type=int, default=1,
          help="cells packed on each of a task's devices (each GPU, or the CPUs of a CPU task), run at once by as many "
               "worker processes, as --workers-per-device does on this machine (default 1: a task per cell)")
        a("--slurm-array-parallelism", type=int, default=None, help="cells running at once (default 256)")
        a("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
          help="any other sbatch option, without its dashes (repeat), e.g. account=myproj, qos=high")

    @classmethod
    def from_args(cls, args) -> "Slurm":
        return cls(SlurmOptions.parse(partition=args.slurm_partition, time=args.slurm_time,
                                      gpus_per_task=args.slurm_gpus_per_task, cpus_per_task=args.slurm_cpus_per_task,
                                      array_parallelism=args.slurm_array_parallelism, extra=args.slurm_extra,
                                      per_device=args.slurm_workers_per_device))

    def run(self, cells, out, ev, ex, *, retry_failed, progress):
        return run_slurm(cells, out, ev, ex, self.options, retry_failed=retry_failed, progress=progress)

    def preview(self, cells, out, ev, *, retry_failed) -> str:
        from robustbench_ols.executors.cells import to_take
        n = len(to_take(cells, out, ev, retry_failed)[0])
        k = self.options.cells_per_task
        tasks = -(-n // k)
        each = "one array task each" if k == 1 else f"{k} cells per array task, run at once: {tasks} tasks"
        return f"sbatch file for the {n} cell{'s' * (n != 1)} to submit ({each}):\n" + sbatch_preview(out, self.options,
                                                                                                      tasks)


def _minutes(text) -> int:
    """--slurm-time: minutes, or [D-]HH:MM[:SS] as sbatch --time takes it."""
    s = str(text).strip()
    try:
        if ":" not in s:
            minutes = int(s)
        else:
            days, _, clock = s.rpartition("-")
            parts = [int(x) for x in clock.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            h, m, sec = (parts + [0])[:3]
            minutes = int(days or 0) * 1440 + h * 60 + m + (sec > 0)
    except ValueError:
        raise SpecError(f"--slurm-time {text!r}: give minutes (e.g. 90) or [D-]HH:MM[:SS] (e.g. 1-12:00:00)") from None
    if minutes < 1:
        raise SpecError(f"--slurm-time {text!r}: must be at least one minute")
    return minutes


def _extra(items) -> dict:
    out = {}
    for item in items or ():
        key, eq, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not eq or not key:
            raise SpecError(f"--slurm-extra {item!r}: give KEY=VALUE, an sbatch option without its dashes, "
                            "e.g. --slurm-extra account=myproj --slurm-extra qos=high")
        if key in OWN:
            raise SpecError(f"--slurm-extra {key}: set by rbols itself; use its own option "
                            f"(--slurm-partition, --slurm-time, --slurm-gpus-per-task, --slurm-cpus-per-task, "
                            "--slurm-array-parallelism) or leave it to submitit")
        out[key.replace("-", "_")] = value.strip()
    return out


class CellTask:
    """One Slurm task: the cell's claim (`cells.claim_next`), then `cells.run_cell`. submitit pickles it with its
    arguments; having `checkpoint`, it is requeued on a time-out or preemption (submitit's signal handler), and the
    requeued task resumes the cell from its last finished epoch."""

    def __call__(self, spec: dict, ev: dict, ex: dict, out: str, threads: int) -> str:
        from robustbench_ols.executors.cells import claim_next, run_cell, set_threads
        from robustbench_ols.store.claims import cell_state
        set_threads(threads)
        spec_, ev_, out_ = RunSpec.from_dict(spec), EvalSpec.from_dict(ev), Path(out)
        claim = claim_next(spec_, out_, ev_, retry_failed=False)  # the driver cleared the failures to retry
        if claim is None:
            return f"not run: held by another process, or {cell_state(out_, spec_, ev_)}"
        try:
            status, message = run_cell(spec_, ev_, ExecOptions(**ex), out_)
            return f"{status}: {message}" if message else status
        finally:
            claim.release()

    def checkpoint(self, *args, **kwargs):
        import submitit
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class PackedTask(CellTask):
    """One Slurm task running several cells at once: the local backend inside the task, a worker process per cell
    (each claims a cell; on GPUs the workers are dealt over the task's GPUs, each pinned to one), the task's CPUs
    split among them. Requeued like CellTask; the requeued task resumes whatever its cells left."""

    def __call__(self, specs: list, ev: dict, ex: dict, out: str, threads: int) -> str:
        from robustbench_ols.executors.local import run_local
        cells = [RunSpec.from_dict(s) for s in specs]
        s = run_local(cells, Path(out), EvalSpec.from_dict(ev), ExecOptions(**ex), workers=len(cells),
                      threads=max(1, threads // len(cells)), progress=False)
        return f"{s.done} of {len(cells)} cells done, {len(s.failed)} failed"


def _executor(out: Path, opts: SlurmOptions):
    try:
        import submitit  # an optional extra: pip install 'robustbench_ols[slurm]'
    except ImportError:
        raise SpecError("--backend slurm needs submitit: pip install 'robustbench_ols[slurm]'") from None
    try:
        ex = submitit.SlurmExecutor(folder=out / ".slurm" / "%j", max_num_timeout=opts.requeues)
    except RuntimeError as e:  # no srun on this machine
        raise SpecError(f"--backend slurm: {e} (run rbols matrix on a login node of the cluster)") from None
    ex.update_parameters(**opts.parameters())
    return ex


def sbatch_preview(out: Path, opts: SlurmOptions, n_cells: int) -> str:
    """The sbatch file submitit would submit for `n_cells` cells (`--dry-run`), written by the function
    submitit itself writes it with (a private one: pinned to submitit 1.5 in pyproject)."""
    try:
        from submitit.slurm.slurm import _make_sbatch_string
    except ImportError:
        raise SpecError("--backend slurm needs submitit: pip install 'robustbench_ols[slurm]'") from None
    command = "<python> -u -m submitit.core._submit " + str(out / ".slurm" / "%j")
    params = opts.parameters()
    return _make_sbatch_string(command=command, folder=out / ".slurm" / "%j", map_count=n_cells if n_cells > 1 else None,
                               **params)


def _queued(job_ids: list[str]) -> dict[str, str] | None:
    """{job id as squeue prints it (array tasks: <job>_<task>): state} of the jobs Slurm still knows,
    finished ones included while it keeps them (MinJobAge); None when squeue could not answer this time
    (a busy controller): the caller asks again rather than take its jobs for ended."""
    cmd = ["squeue", "--noheader", "--states=all", "--array", "--format=%i %T", "--jobs", ",".join(job_ids)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return {} if "Invalid job id" in p.stderr else None  # the former: every job has left Slurm's memory
    return dict(line.split(None, 1) for line in p.stdout.splitlines() if line.strip())


ALIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
         "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED"}


def run_slurm(cells, out: Path, ev: EvalSpec, ex: ExecOptions, opts: SlurmOptions, *, retry_failed=False,
              progress=True, poll: float = 5.0):
    """Submit the cells left to train as one job array and wait for it; the Summary of `matrix.tally`,
    with `unfinished` naming the cells whose task ended without finishing them (and how they ended)."""
    from robustbench_ols.executors.cells import grid_bar, tally, to_take, update_bar
    from robustbench_ols.store.claims import cell_state, failure_path
    t0 = time.perf_counter()
    take, _ = to_take(cells, out, ev, retry_failed)
    jobs = []
    if take:
        executor = _executor(out, opts)
        if retry_failed:
            for spec in take:
                failure_path(out, spec.run_id).unlink(missing_ok=True)
        device = "cuda" if opts.gpus_per_task else "cpu" if ex.device == "auto" else ex.device
        ex_dict = asdict(replace(ex, device=device, progress=False))
        k = opts.cells_per_task
        groups = [take[i:i + k] for i in range(0, len(take), k)]
        n = len(groups)
        task, specs = (CellTask(), [g[0].to_dict() for g in groups]) if k == 1 else \
            (PackedTask(), [[s.to_dict() for s in g] for g in groups])
        jobs = executor.map_array(task, specs, [ev.to_dict()] * n, [ex_dict] * n, [str(out.resolve())] * n,
                                  [opts.cpus_per_task] * n)
        jobs = [job for g, job in zip(groups, jobs) for _ in g]  # each cell's task
        _log_jobs(out, take, jobs)
        packed = "" if k == 1 else f", {k} per task"
        print(f"slurm: {len(take)} cell{'s' * (len(take) > 1)} submitted as job {jobs[0].job_id.split('_')[0]}{packed} "
              f"(logs in {out / '.slurm'}); Ctrl-C stops waiting, not the jobs (scancel them)", flush=True)
    bar = grid_bar(len(cells), progress)
    last: dict[str, str] = {}
    ids = sorted({j.job_id for j in jobs})
    while ids:
        seen = _queued(sorted({i.split("_")[0] for i in ids}))
        if seen is not None:
            last.update({i: seen[i] for i in ids if i in seen})
            ids = [i for i in ids if seen.get(i) in ALIVE]  # a job no longer listed has ended
        update_bar(bar, cells, out, ev)
        if ids:
            time.sleep(poll)
    if bar is not None:
        update_bar(bar, cells, out, ev)
        bar.close()
    s = tally(cells, out, ev)
    for spec, job in zip(take, jobs):
        if cell_state(out, spec, ev) in ("partial", "todo"):
            ended = last.get(job.job_id, "no longer in squeue")
            s.unfinished[spec.run_id] = (f"Slurm task {job.job_id} ended ({ended}) before the cell finished; run the "
                                         f"same command to submit it again (it resumes from its checkpoint; log: "
                                         f"{job.paths.stderr})")
    s.seconds = time.perf_counter() - t0
    return s


def _log_jobs(out: Path, specs, jobs) -> None:
    """<out>/.slurm/jobs.jsonl: which job array task took which cell, one line per submission."""
    path = out / ".slurm" / "jobs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for spec, job in zip(specs, jobs):
            f.write(json.dumps({"run_id": spec.run_id, "job_id": job.job_id,
                                "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
