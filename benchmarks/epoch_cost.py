"""What one epoch of a CPU tier costs, and what each speed option saves, as ratios measured side by side.

On a small training subset the per-epoch test pass over the 10,000 test images costs more than the
training itself. This measures, interleaved in one process (so a slow spell of a shared machine hits
every variant), on real CIFAR-10 and the tier's model and subset:

  - one training epoch through the suite's loop (`training.train_epoch`), fp32 and bf16 autocast (bf16
    timed on 512 images and scaled: on a CPU without bf16 units it is ~10x slower);
  - one test pass over the whole test set at evaluation batch 1000 and 256, fp32 and bf16 (bf16 timed
    on 1,000 images and scaled);
  - one test pass over a class-balanced subset of the test set (`--test-subset`);
  - from those, the epoch with a test pass every epoch, every K epochs, or on the subset.

Then, unless --no-threads: training images/s with one process of two threads against two processes of
one thread each running at once (their images/s added up), which is what `rbols matrix` chooses between
on a two-core machine; run this on an otherwise quiet machine for that part.

Prints the figures and ratios, and with --json writes them with their provenance (code version, torch,
CPU, threads) for the README. Nothing is asserted.

    python benchmarks/epoch_cost.py --data-root ../shared/data --preset cpu-regime --json docs/results/epoch_cost.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time

import torch

from robustbench_ols import __version__
from robustbench_ols.common.provenance import device_name, git_info
from robustbench_ols.data import TrainLoader, class_balanced_subset, load_dataset
from robustbench_ols.methods import FitInfo, build_method
from robustbench_ols.models import create_model
from robustbench_ols.models.inference import evaluate
from robustbench_ols.spec import RunSpec
from robustbench_ols.spec.presets import PRESETS
from robustbench_ols.train.training import make_optimizer, train_epoch


def tier_spec(preset: str) -> RunSpec:
    p = PRESETS[preset]
    return RunSpec(dataset=p["datasets"][0], model=p["models"][0], **p["run"])


def train_seconds(data, spec: RunSpec, amp: bool, n: int | None = None) -> float:
    """Seconds of one training epoch (hard labels) over the tier's subset after a warm-up epoch; timed on
    `n` of its images and scaled up when `n` is given (bf16 is ~10x slower on CPUs without bf16 units)."""
    idx = class_balanced_subset(data.train_y, n or spec.train_subset, 0)
    x, y = data.train_x[idx], torch.as_tensor(data.train_y[idx])
    torch.manual_seed(0)
    model = create_model(spec.model, 10).to(memory_format=torch.channels_last)
    opt = make_optimizer(spec, [model])
    loader = TrainLoader(x, y, spec.batch_size, seed=0, augment=spec.augment, channels_last=True)
    method, _ = build_method("hard")
    method.setup(FitInfo(10, len(y), y, 2, len(loader), torch.device("cpu"), "cifar10", 0, train_images=x,
                         channels_last=True, amp=amp))
    noisy = torch.zeros(len(y), dtype=torch.bool)
    train_epoch([model], method, opt, loader, 0, is_noisy=noisy, clean=y, amp=amp)  # warm-up
    t = time.perf_counter()
    train_epoch([model], method, opt, loader, 1, is_noisy=noisy, clean=y, amp=amp)
    return (time.perf_counter() - t) * spec.train_subset / len(idx)


def test_seconds(data, spec: RunSpec, *, n: int, batch: int, amp: bool, timed: int | None = None) -> float:
    """Seconds of a test pass over `n` test images (timed on `timed` of them and scaled up when given)."""
    m = timed or n
    idx = class_balanced_subset(data.test_y, m, 0) if m < len(data.test_y) else slice(None)
    x, y = data.test_x[idx], torch.as_tensor(data.test_y[idx])
    torch.manual_seed(0)
    model = create_model(spec.model, 10).to(memory_format=torch.channels_last)
    evaluate(model, x[:batch], y[:batch], batch_size=batch, channels_last=True, amp=amp)  # warm-up
    t = time.perf_counter()
    evaluate(model, x, y, batch_size=batch, channels_last=True, amp=amp)
    return (time.perf_counter() - t) * n / m


def _worker(preset, data_root, threads, steps_out):
    torch.set_num_threads(threads)
    data = load_dataset("cifar10", data_root, download=False)
    spec = tier_spec(preset)
    steps_out.put(spec.train_subset / train_seconds(data, spec, amp=False))


def threads_layouts(preset: str, data_root: str, repeats: int) -> dict:
    """Training images/s: 1 process x 2 threads, and 2 processes x 1 thread at once (summed)."""
    ctx = mp.get_context("spawn")
    best = {"1x2": 0.0, "2x1": 0.0}
    for _ in range(repeats):
        for layout, (procs, threads) in (("1x2", (1, 2)), ("2x1", (2, 1))):
            q = ctx.Queue()
            ps = [ctx.Process(target=_worker, args=(preset, data_root, threads, q)) for _ in range(procs)]
            for p in ps:
                p.start()
            total = sum(q.get() for _ in ps)
            for p in ps:
                p.join()
            best[layout] = max(best[layout], total)
            print(f"  {layout}: {total:.0f} training images/s (best so far {best[layout]:.0f})", flush=True)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=os.environ.get("RBOLS_DATA"))
    p.add_argument("--preset", default="cpu-regime", help="the grid preset whose model and subset are measured")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads for the single-process part")
    p.add_argument("--no-threads", action="store_true", help="skip the 1x2 against 2x1 measurement")
    p.add_argument("--json", default=None, help="write the figures and their provenance here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset("cifar10", args.data_root, download=False)
    spec = tier_spec(args.preset)
    sub = spec.test_subset or 1000
    every = spec.test_every if spec.test_every > 1 else 10
    runs = {"train fp32": lambda: train_seconds(data, spec, amp=False),
            "train bf16": lambda: train_seconds(data, spec, amp=True, n=512),
            "test fp32 batch 1000": lambda: test_seconds(data, spec, n=10_000, batch=1000, amp=False),
            "test fp32 batch 256": lambda: test_seconds(data, spec, n=10_000, batch=256, amp=False),
            "test bf16 batch 256": lambda: test_seconds(data, spec, n=10_000, batch=256, amp=True, timed=1000),
            f"test fp32 subset {sub}": lambda: test_seconds(data, spec, n=sub, batch=256, amp=False)}
    best = {k: float("inf") for k in runs}
    for r in range(args.repeats):  # interleaved; the fastest repeat is kept
        for name, fn in runs.items():
            best[name] = min(best[name], fn())
            print(f"  repeat {r + 1}: {name:24s} {best[name]:7.2f} s (best so far)", flush=True)
    train, test = best["train fp32"], min(best["test fp32 batch 1000"], best["test fp32 batch 256"])
    epoch = {"test every epoch (batch 1000)": train + best["test fp32 batch 1000"],
             "test every epoch (batch 256)": train + best["test fp32 batch 256"],
             f"test every {every} epochs": train + test / every,
             f"test on {sub} images every epoch": train + best[f"test fp32 subset {sub}"]}
    base = epoch["test every epoch (batch 1000)"]
    prov = {"code": __version__, "git": git_info(), "torch": torch.__version__,
            "cpu": device_name(torch.device("cpu")), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "preset": args.preset, "model": spec.model,
            "train_subset": spec.train_subset, "augment": spec.augment, "batch_size": spec.batch_size,
            "repeats": args.repeats, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(f"\n{prov}\nseconds (fastest of {args.repeats}):")
    for k, v in best.items():
        print(f"  {k:32s} {v:7.2f}")
    print("one epoch, seconds and speed-up against a test pass every epoch at batch 1000:")
    for k, v in epoch.items():
        print(f"  {k:32s} {v:7.2f}   x{base / v:4.2f}")
    print(f"bf16 / fp32 training time {best['train bf16'] / train:.2f}; bf16 / fp32 test pass "
          f"{best['test bf16 batch 256'] / best['test fp32 batch 256']:.2f} (above 1: bf16 is slower on this CPU)")
    out = {"provenance": prov, "seconds": best, "epoch_seconds": epoch}
    if not args.no_threads:
        print("training throughput by process layout (run on a quiet machine):")
        out["threads_images_per_s"] = threads_layouts(args.preset, args.data_root, args.repeats)
        t = out["threads_images_per_s"]
        print(f"  2 processes x 1 thread / 1 process x 2 threads: {t['2x1'] / t['1x2']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
