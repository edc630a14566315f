"""`--compile` against eager training: the suite's training pass (`training.train_epoch`, method hard, batch 128,
the on-device augmentation, real CIFAR-10 images) with each model's forward eager and compiled
(models/compiling.py), in float32 and with bf16 autocast, side by side in one process.

Prints the seconds the first compiled steps took (compilation; later runs reuse inductor's on-disk cache), then
images/s of each variant (best of interleaved repeats: these machines are shared and noisy) and the ratio compiled /
eager. Nothing is asserted; docs/speed.md quotes the ratios with the machine they came from.

    python benchmarks/compile_speed.py --data-root ../shared/data [--models resnet8 resnet20] [--threads 1]
        [--steps 40] [--repeats 3] [--no-bf16] [--device cpu]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from robustbench_ols.common.provenance import device_name, git_info
from robustbench_ols.data import TrainLoader, load_dataset
from robustbench_ols.methods import FitInfo, build_method
from robustbench_ols.models import create_model
from robustbench_ols.models.compiling import MODE, compiled
from robustbench_ols.spec import RunSpec
from robustbench_ols.train.training import make_optimizer, train_epoch

BATCH = 128


class Variant:
    """One model, optimizer and method trained epoch after epoch over the same images (eager or compiled)."""

    def __init__(self, model_name: str, x, y, device, amp, compile_it: bool):
        torch.manual_seed(0)
        self.model = create_model(model_name, 10).to(device, memory_format=torch.channels_last)
        self.opt = make_optimizer(RunSpec(), [self.model])
        self.method, _ = build_method("hard")
        self.loader = TrainLoader(x, y, BATCH, seed=0, augment=True, channels_last=True)
        self.method.setup(FitInfo(10, len(y), y, 100, len(self.loader), device, "cifar10", 0, train_images=x,
                                  channels_last=True, amp=amp))
        self.amp, self.compile_it, self.epoch = amp, compile_it, 0
        self.stats = dict(is_noisy=torch.zeros(len(y), dtype=torch.bool, device=device), clean=y)

    def images_per_second(self) -> float:
        with compiled([self.model], self.compile_it):
            t = time.perf_counter()
            train_epoch([self.model], self.method, self.opt, self.loader, self.epoch, amp=self.amp, **self.stats)
            seconds = time.perf_counter() - t
        self.epoch += 1
        return len(self.stats["clean"]) / seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=None)
    p.add_argument("--models", nargs="+", default=["resnet8", "resnet20"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=40, help="training steps per measured epoch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-bf16", action="store_true", help="float32 only (CPUs without AVX-512 BF16: 10x slower)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = load_dataset("cifar10", args.data_root, download=False)
    n = args.steps * BATCH
    x, y = data.train_x[:n].to(device), torch.as_tensor(data.train_y[:n], device=device)
    print(f"# {device_name(device)}, {args.threads} thread(s), torch {torch.__version__}, git "
          f"{git_info()['commit'][:12]}, torch.compile mode {MODE}; {args.steps} steps of {BATCH} per epoch")
    precisions = [("fp32", False)] + ([] if args.no_bf16 else [("bf16", torch.bfloat16)])
    rows = []
    for model_name in args.models:
        for label, amp in precisions:
            eager, comp = (Variant(model_name, x, y, device, amp, c) for c in (False, True))
            t = time.perf_counter()
            comp.images_per_second()  # the first epoch compiles (and its images/s is not kept)
            first = time.perf_counter() - t
            eager.images_per_second()  # warm-up
            best = {"eager": 0.0, "compiled": 0.0}
            for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits both
                best["eager"] = max(best["eager"], eager.images_per_second())
                best["compiled"] = max(best["compiled"], comp.images_per_second())
            rows.append((model_name, label, first, best["eager"], best["compiled"]))
            print(f"  {model_name:9s} {label}: first compiled epoch {first:6.1f} s; eager {best['eager']:7.1f} img/s, "
                  f"compiled {best['compiled']:7.1f} img/s", flush=True)
    print("\nmodel      precision  first compiled epoch (s)  eager img/s  compiled img/s  compiled / eager")
    for model_name, label, first, e, c in rows:
        print(f"{model_name:10s} {label:9s}  {first:24.1f}  {e:11.1f}  {c:14.1f}  {c / e:16.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
