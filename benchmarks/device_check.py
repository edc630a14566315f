"""The device half of gpu_check.sh (issue 27): on one device, (1) the first batches and PGD's random starts equal the
CPU's, (2) a --deterministic run killed after its first epoch and resumed ends with the same weights, bit for bit,
as an uninterrupted one, and (3) training images/s, and the GPU's busy fraction, of 1, 2 and 4 workers packed on it
for each model in float32 (IEEE), TF32 and bfloat16 autocast, and of 1 worker in bfloat16 with the model compiled
(--compile): bare steps of the suite's model on resident tensors, one process per worker, started together. Writes
device_check.json and device_check.md; exit 1 when (1) or (2) fails. The CPU path (tiny sizes) runs in the test
suite; `Table VII` costs follow from the images/s printed.

    python benchmarks/device_check.py --device cuda --out gpu_check_runs
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from gpu_check import bare_images_per_s  # benchmarks/, this script's folder

from robustbench_ols.attacks import AttackSpec
from robustbench_ols.attacks.robust import StartsFrom, start_stream
from robustbench_ols.data import TrainLoader

PRECISIONS = ("fp32", "tf32", "bf16")


def same_batches(device: str) -> bool:
    """The first epoch's batches (indices and augmented images) and a PGD start on `device` equal the CPU's."""
    x = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(512) % 10
    ok = all(torch.equal(a.index, b.index.cpu()) and torch.equal(a.x, b.x.cpu()) for a, b in zip(
        TrainLoader(x, y, 128, seed=1).epoch(0), TrainLoader(x.to(device), y.to(device), 128, seed=1).epoch(0)))
    spec, starts = AttackSpec.parse("pgd"), []
    for d in ("cpu", device):
        with StartsFrom(start_stream(spec, 0)):
            starts.append(torch.empty(1000, 3, 32, 32, device=d).uniform_(-spec.eps, spec.eps).cpu())
    return ok and torch.equal(*starts)


def resume_is_exact(device: str, out: Path, model: str, subset: int, epochs: int) -> bool:
    """`rbols run --deterministic` uninterrupted, and killed (SIGINT) after its first epoch then run again: the
    final weights equal bit for bit."""
    args = [sys.executable, "-m", "robustbench_ols", "run", "--dataset", "cifar10", "--model", model,
            "--train-subset", str(subset), "--epochs", str(epochs), "--attack", "none", "--no-cifar10h",
            "--device", device, "--deterministic", "--no-progress"]
    if os.environ.get("RBOLS_DATA"):
        args += ["--data-root", os.environ["RBOLS_DATA"]]
    whole, cut = out / "resume-whole", out / "resume-cut"
    subprocess.run([*args, "--out", str(whole)], check=True, capture_output=True)
    # SIGINT at its default in the child: a process inherits an ignored SIGINT (a test runner's, a nohup), and Python
    # then installs no KeyboardInterrupt handler, so the run would finish instead of stopping
    proc = subprocess.Popen([*args, "--out", str(cut)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while not list(cut.glob("*/epochs.csv")) and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=600)
    subprocess.run([*args, "--out", str(cut)], check=True, capture_output=True)
    (a,), (b,) = (list(o.glob("*/model.pt")) for o in (whole, cut))
    wa, wb = (torch.load(p, weights_only=True)["models"][0] for p in (a, b))
    resumed = len(json.loads((b.parent / "executions.json").read_text())) == 2
    if not resumed:
        print("device_check: the run was not interrupted before it finished; the resume is not checked", file=sys.stderr)
    return resumed and all(torch.equal(wa[k], wb[k]) for k in wa)


def _worker(model_name, device, precision, steps, batch, start, out):
    """One packed worker: bare training steps (gpu_check.py's), timed after `start` (a barrier)."""
    torch.set_num_threads(1)
    out.put(bare_images_per_s(model_name, device, precision, steps, batch, ready=start.wait))


def packed(model_name: str, device: str, precision: str, workers: int, steps: int, batch: int) -> dict:
    """Images/s of `workers` processes training together on `device`, and the GPU's mean busy fraction meanwhile
    (NVML through torch.cuda.utilization; None on a CPU or without it)."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(workers + 1), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(model_name, device, precision, steps, batch, start, out))
             for _ in range(workers)]
    for p in procs:
        p.start()
    start.wait()
    busy = []
    while any(p.is_alive() for p in procs) and out.qsize() < workers:
        if device.startswith("cuda"):
            try:
                busy.append(torch.cuda.utilization(torch.device(device)) / 100)
            except Exception:  # no NVML (pip install nvidia-ml-py)
                pass
        time.sleep(0.1)
    rates = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return {"model": model_name, "precision": precision, "workers": workers, "images_per_s": sum(rates),
            "gpu_busy": sum(busy) / len(busy) if busy else None}


def table(rows: list) -> str:
    lines = ["| model | precision | workers | training images/s | x one worker | GPU busy |", "|---|---|---|---|---|---|"]
    one = {(r["model"], r["precision"]): r["images_per_s"] for r in rows if r["workers"] == 1}
    for r in rows:
        busy = "n/a" if r["gpu_busy"] is None else f"{r['gpu_busy']:.0%}"
        base = one.get((r["model"], r["precision"]))
        lines.append(f"| {r['model']} | {r['precision']} | {r['workers']} | {r['images_per_s']:,.0f} | "
                     f"{'n/a' if base is None else format(r['images_per_s'] / base, '.2f')} | {busy} |")
    compiled = [f"{m}: {c / one[(m, 'bf16')]:.2f}" for (m, p), c in one.items() if p == "bf16+compile"
                and (m, "bf16") in one]
    if compiled:
        lines.append(f"\nOne worker, bf16+compile / bf16 (--compile's gain): {'; '.join(compiled)}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", required=True)
    p.add_argument("--models", default="resnet20,resnet56b")
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--compiled-workers", default="1", help="worker counts measured in bf16+compile ('' for none)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--resume-model", default="resnet20")
    p.add_argument("--resume-subset", type=int, default=5000)
    p.add_argument("--resume-epochs", type=int, default=3)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "CPU"
    result = {"device": args.device, "device_name": name, "torch": torch.__version__,
              "same_batches_as_cpu": same_batches(args.device),
              "deterministic_resume_exact": resume_is_exact(args.device, out, args.resume_model, args.resume_subset,
                                                            args.resume_epochs),
              "packing": [packed(m, args.device, prec, int(k), args.steps, args.batch)
                          for m in args.models.split(",") for prec in args.precisions.split(",")
                          for k in args.workers.split(",")]
                         + [packed(m, args.device, "bf16+compile", int(k), args.steps, args.batch)
                            for m in args.models.split(",") for k in args.compiled_workers.split(",") if k]}
    (out / "device_check.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "device_check.md").write_text(f"device_check on {name} (torch {torch.__version__}): same batches and PGD "
                                         f"starts as the CPU: {result['same_batches_as_cpu']}; deterministic "
                                         f"kill-and-resume bit for bit: {result['deterministic_resume_exact']}\n\n"
                                         + table(result["packing"]))
    print((out / "device_check.md").read_text())
    return 0 if result["same_batches_as_cpu"] and result["deterministic_resume_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
