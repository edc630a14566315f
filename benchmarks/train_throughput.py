"""Training throughput of the suite's loop against a bare loop and the OLS authors' script style.

Side by side in one process, on the same model (resnet20, or --model), batch 128 and real CIFAR-10 images:
  (a) the suite: `training.train_epoch` with the on-device batch augmentation, the per-epoch
      statistics and the method's hooks, for `hard`, `ls` and `ols`;
  (b) the limit: a bare forward/backward/step loop over tensors already in memory (no augmentation,
      no statistics), in whichever memory format is faster (both are measured);
  (c) the style of the OLS authors' script: a torchvision DataLoader (2 workers) with PIL transforms
      (RandomCrop 32 pad 4, RandomHorizontalFlip, ToTensor, Normalize) and per-sample Python OLS loops;
  (d) every registered method through the suite's loop, as images/s and step time relative to hard.
Prints images/s and the ratios. Each measurement is repeated and the best repeat kept, because these
machines are shared and noisy. Nothing here is asserted: targets are read off the printed ratios.

    python benchmarks/train_throughput.py --data-root ../shared/data [--methods core|all|both]
        [--model resnet8 --threads 1 --no-augment]   (the cpu-regime tier's loop at one thread)
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from robustbench_ols import __version__
from robustbench_ols.common.provenance import device_name, git_info
from robustbench_ols.data import TrainLoader, load_dataset
from robustbench_ols.methods import FitInfo, build_method, list_methods
from robustbench_ols.models import create_model
from robustbench_ols.spec import RunSpec
from robustbench_ols.train.training import make_optimizer, train_epoch

BATCH = 128
MODEL = "resnet20"  # --model
AUGMENT = True  # --no-augment: the suite's loop without its batch augmentation (the bare loop has none)
AUTHORS = "authors' style (ols)"


def fresh(channels_last: bool, seed: int = 0):
    torch.manual_seed(seed)
    model = create_model(MODEL, 10)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, make_optimizer(RunSpec(), [model])


def suite(images, labels, method_name: str, steps: int, amp: bool = False, meta: int = 1000) -> float:
    """images/s of one epoch of train_epoch (augmentation, statistics, every method hook, and
    per-epoch work such as Arazo's scan of the training set, included)."""
    n = steps * BATCH
    x, y = images[:n], torch.as_tensor(labels[:n])
    method, _ = build_method(method_name)
    torch.manual_seed(0)
    models = [create_model(MODEL, 10).to(memory_format=torch.channels_last)
              for _ in range(method.num_models)]
    opt = make_optimizer(RunSpec(), models)
    loader = TrainLoader(x, y, BATCH, seed=0, augment=AUGMENT, channels_last=True)
    m = method.clean_meta_size()
    spec = RunSpec(epochs=2)  # epoch 1 is past every method's warm-up (Arazo: 105/300 of the run)
    method.setup(FitInfo(10, n, y, 2, len(loader), torch.device("cpu"), "cifar10", 0, train_images=x,
                         channels_last=True, amp=amp, noise_rate=0.4, lr_at=spec.lr_at,
                         meta_images=images[n:n + m] if m else None,
                         meta_labels=torch.as_tensor(labels[n:n + m]) if m else None))
    noisy, clean = torch.zeros(n, dtype=torch.bool), y
    train_epoch(models, method, opt, _Short(loader, 2), 0, is_noisy=noisy, clean=clean, amp=amp)  # warm-up
    t = time.perf_counter()
    train_epoch(models, method, opt, loader, 1, is_noisy=noisy, clean=clean, amp=amp)
    return n / (time.perf_counter() - t)


class _Short:
    """The first `n` batches of a loader (for warm-up)."""
    def __init__(self, loader, n):
        self.loader, self.n = loader, n

    def __len__(self):
        return self.n

    def epoch(self, e):
        for i, b in enumerate(self.loader.epoch(e)):
            if i == self.n:
                return
            yield b


def bare(images, labels, steps: int, channels_last: bool, amp: bool = False) -> float:
    """images/s of forward/backward/step over float tensors already in memory (bf16 autocast with amp)."""
    model, opt = fresh(channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xs = [images[i * BATCH:(i + 1) * BATCH].float().div(255).contiguous(memory_format=fmt)
          for i in range(steps)]
    ys = [torch.as_tensor(labels[i * BATCH:(i + 1) * BATCH]) for i in range(steps)]

    def step(x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for x, y in zip(xs[:2], ys[:2]):
        step(x, y)
    t = time.perf_counter()
    for x, y in zip(xs, ys):
        step(x, y)
    return steps * BATCH / (time.perf_counter() - t)


class _PILSet(torch.utils.data.Dataset):
    """A torchvision-style dataset: one PIL image per __getitem__, transformed in Python."""
    def __init__(self, hwc: np.ndarray, labels: np.ndarray):
        from torchvision import transforms

        from robustbench_ols.models import CIFAR_MEAN, CIFAR_STD
        self.hwc, self.labels = hwc, labels
        self.tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                      transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image
        return self.tf(Image.fromarray(self.hwc[i])), int(self.labels[i])


def authors_style(images, labels, steps: int) -> float:
    """What one step of the OLS authors' CIFAR script does, written here from reading it:
    DataLoader (2 workers) with PIL transforms and Normalize, an NCHW model fed an input that
    requires grad, the soft targets gathered sample by sample, the OLS accumulation sample by sample
    after an argsort, top-1/top-5 error and loss read back with .item() every step."""
    n = steps * BATCH
    hwc = images[:n].permute(0, 2, 3, 1).contiguous().numpy()
    loader = torch.utils.data.DataLoader(_PILSet(hwc, labels[:n]), batch_size=BATCH, shuffle=True,
                                         num_workers=2, persistent_workers=True)
    model, opt = fresh(channels_last=False)
    model.normalize = torch.nn.Identity()  # the transforms normalise instead
    k = 10
    soft = torch.full((k, k), 1.0 / k)
    acc, cnt = torch.zeros(k, k), torch.zeros(k)

    def step(x, y):
        x.requires_grad_(True)
        out = model(x)
        with torch.no_grad():  # per-sample OLS accumulation
            prob = torch.softmax(out, 1)
            order = torch.argsort(prob, 1, descending=True)
            for i in range(len(y)):
                if y[i] != order[i, 0]:
                    continue
                acc[y[i]] += prob[i]
                cnt[y[i]] += 1
        target = torch.zeros_like(out)
        for i in range(len(y)):  # per-sample soft-label gather
            target[i] = soft[y[i]]
        loss = 0.5 * F.cross_entropy(out, y) + 0.5 * torch.sum(-F.log_softmax(out, 1) * target) / len(y)
        top = out.topk(5, 1).indices
        err1 = 100 - 100 * (top[:, 0] == y).float().mean()
        err5 = 100 - 100 * (top == y[:, None]).any(1).float().mean()
        _ = loss.item(), err1.item(), err5.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    it = iter(loader)  # warm-up: start the workers, run two steps
    for _ in range(2):
        step(*next(it))
    for _ in it:
        pass
    t = time.perf_counter()
    for x, y in loader:
        step(x, y)
    return n / (time.perf_counter() - t)


# The expected step cost relative to `hard` (loss-only methods and OLS: within 5%).
EXPECTED = {"coteaching": "~2x (two networks)", "arazo": "1.x + one scan of the training set per epoch",
            "mwnet": "~3x (look-ahead + meta step)"}


def every_method(images, labels, steps: int, repeats: int) -> None:
    """images/s of every registered method and its step-time ratio to hard (interleaved repeats)."""
    names = list_methods()
    best = {m: 0.0 for m in names}
    for r in range(repeats):
        for m in names:
            best[m] = max(best[m], suite(images, labels, m, steps))
            print(f"  repeat {r + 1}: {m:14s} {best[m]:8.1f} img/s (best so far)", flush=True)
    print(f"\nevery method ({MODEL}, batch {BATCH}, {steps} steps, best of {repeats}): images/s and "
          "step time relative to hard")
    for m in names:
        ratio = best["hard"] / best[m]
        print(f"  {m:14s} {best[m]:8.1f} img/s   step time x{ratio:5.2f}   expected "
              f"{EXPECTED.get(m, 'within 5% of hard')}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=os.environ.get("RBOLS_DATA"))
    p.add_argument("--steps", type=int, default=24, help="measured steps of batch 128 per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", choices=("core", "all", "both"), default="both",
                   help="core: hard/ls/ols against bare and the authors' style; all: every method vs hard")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-augment", action="store_true", help="the suite's loop without augmentation")
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 variants (~10x slower on CPUs "
                                                          "without bf16 units, e.g. AVX2-only ones)")
    args = p.parse_args(argv)
    global MODEL, AUGMENT
    MODEL, AUGMENT = args.model, not args.no_augment
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset("cifar10", args.data_root, download=False)
    images, labels = data.train_x, data.train_y
    if args.methods in ("all", "both"):
        every_method(images, labels, args.steps, max(1, args.repeats - 1))
        if args.methods == "all":
            return 0
    print(f"robustbench_ols {__version__} git {git_info()['commit']}; torch {torch.__version__}; "
          f"{device_name(torch.device('cpu'))}, {torch.get_num_threads()} threads; {MODEL}, "
          f"batch {BATCH}, {args.steps} steps x {args.repeats} repeats (best kept), CIFAR-10, suite augmentation "
          f"{'on' if AUGMENT else 'off'}")
    runs = {"bare NCHW": lambda: bare(images, labels, args.steps, False),
            "bare channels_last": lambda: bare(images, labels, args.steps, True),
            **{f"suite {m}": (lambda m=m: suite(images, labels, m, args.steps)) for m in ("hard", "ls", "ols")},
            AUTHORS: lambda: authors_style(images, labels, args.steps)}
    if not args.no_bf16:
        runs.update({"bare channels_last bf16": lambda: bare(images, labels, args.steps, True, amp=True),
                     "suite hard --amp (bf16)": lambda: suite(images, labels, "hard", args.steps, amp=True),
                     "suite ols --amp (bf16)": lambda: suite(images, labels, "ols", args.steps, amp=True)})
    best = {name: 0.0 for name in runs}
    for r in range(args.repeats):  # interleaved, so a slow spell of the machine hits every variant
        for name, fn in runs.items():
            best[name] = max(best[name], fn())
            print(f"  repeat {r + 1}: {name:22s} {best[name]:8.1f} img/s (best so far)", flush=True)
    limit = max(best["bare NCHW"], best["bare channels_last"])
    print("\nimages/s (best of repeats):")
    for name, v in best.items():
        print(f"  {name:22s} {v:8.1f}")
    print("\nratios:")
    print(f"  bare channels_last / bare NCHW      {best['bare channels_last'] / best['bare NCHW']:.3f}")
    for m in ("hard", "ls", "ols"):
        print(f"  suite {m:4s} / bare (faster format)  {best[f'suite {m}'] / limit:.3f}   (target >= 0.95)")
    print(f"  suite ols / suite hard              {best['suite ols'] / best['suite hard']:.3f}   (target >= 0.95)")
    print(f"  suite ols / authors' style          {best['suite ols'] / best[AUTHORS]:.3f}   (target >= 2.0)")
    print(f"  bare NCHW / authors' style          {best['bare NCHW'] / best[AUTHORS]:.3f}")
    if args.no_bf16:
        return 0
    same = best["suite hard --amp (bf16)"] / best["bare channels_last bf16"]
    print(f"  suite hard bf16 / bare bf16         {same:.3f}   (target >= 0.95, same precision)")
    amp = best["suite ols --amp (bf16)"]
    print(f"  suite ols --amp / authors' style    {amp / best[AUTHORS]:.3f}   (bf16 autocast; fp32 above)")
    print(f"  suite ols --amp / suite ols (fp32)  {amp / best['suite ols']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
