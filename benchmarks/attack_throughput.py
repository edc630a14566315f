"""PGD-20 throughput: the suite's evaluation against torchattacks called the usual way and the limit.

Side by side in one process, resnet20 (`--run-dir`: a trained run's weights; else random weights, timing only), one batch of 256 CIFAR-10 test
images, eps 8/255, alpha 2/255, 20 steps, random start:
  (a) the suite: `attacks.robust_error` (channels_last model and inputs, seeded, mode restored, the
      attack run on an eval-mode copy with the batch norms folded into the convolutions);
  (b) torchattacks as its README shows it: `torchattacks.PGD(model, ...)(images, labels)` on NCHW
      tensors, then a forward for the error;
  (c) the limit: 20 forward+backward passes (gradient w.r.t. the input only) and 1 forward of the same
      batch, bare, in the faster memory format, on the model as trained; and the same limit on the
      folded copy (the suite's own limit).
Also checks that (a) and (b) give the same robust error for the same seed and memory format (b on
channels_last input), and times the calibration and CIFAR-10H metrics on 10,000 x 100 probabilities.
Nothing is asserted; read the printed ratios.

    python benchmarks/attack_throughput.py --data-root ../shared/data [--run-dir results/RUN_ID]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from robustbench_ols.attacks import AttackSpec, fold_batchnorm, robust_error
from robustbench_ols.common.provenance import device_name, git_info
from robustbench_ols.data import load_dataset
from robustbench_ols.models import create_model

SEED = 0


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def torchattacks_usual(model, x, y, spec):
    import torchattacks
    atk = torchattacks.PGD(model, eps=spec.eps, alpha=spec.alpha, steps=spec.steps, random_start=True)
    torch.manual_seed(SEED)
    adv = atk(x, y)
    with torch.no_grad():
        return (model(adv).argmax(1) != y).float().mean().item()


def limit(model, x, y, steps):
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
        xa = (xa.detach() + 1e-3 * grad.sign()).clamp(0, 1)
    with torch.no_grad():
        model(xa)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=os.environ.get("RBOLS_DATA"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--run-dir", default=None, help="a finished resnet20 CIFAR-10 run whose model.pt to attack "
                   "(default: random weights, for which every image is misclassified anyway)")
    args = p.parse_args(argv)
    data = load_dataset("cifar10", args.data_root, download=False)
    images, labels = data.test_x[:256], torch.as_tensor(data.test_y[:256])
    spec = AttackSpec.parse("pgd")
    torch.manual_seed(0)
    nchw = create_model("resnet20", 10).eval()
    if args.run_dir:
        nchw.load_state_dict(torch.load(os.path.join(args.run_dir, "model.pt"), weights_only=False)["models"][0])
    cl = create_model("resnet20", 10).eval()
    cl.load_state_dict(nchw.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    x = images.float() / 255
    x_cl = x.contiguous(memory_format=torch.channels_last)
    print(f"git {git_info()['commit']}; torch {torch.__version__}; {device_name(torch.device('cpu'))}, "
          f"{torch.get_num_threads()} threads; resnet20 ({args.run_dir or 'random weights'}), 256 CIFAR-10 "
          "test images, PGD-20 eps 8/255; "
          f"best of {args.repeats}")
    # The suite seeds batch b with seed + b; one batch here, so both use SEED.
    t_suite, r_suite = timed(lambda: robust_error(cl, images, labels, spec, seed=SEED, batch_size=256,
                                                  channels_last=True)["pgd20_err"], args.repeats)
    t_usual, r_usual = timed(lambda: torchattacks_usual(nchw, x, labels, spec), args.repeats)
    _, r_usual_cl = timed(lambda: torchattacks_usual(cl, x_cl, labels, spec), 1)
    t_lim_nchw, _ = timed(lambda: limit(nchw, x, labels, 20), args.repeats)
    t_lim_cl, _ = timed(lambda: limit(cl, x_cl, labels, 20), args.repeats)
    folded = fold_batchnorm(cl, channels_last=True)
    t_lim_folded, _ = timed(lambda: limit(folded, x_cl, labels, 20), args.repeats)
    t_lim = min(t_lim_nchw, t_lim_cl)
    print(f"  suite (channels_last, BN folded)  {t_suite:6.3f} s   robust error {r_suite:.4f}")
    print(f"  torchattacks as usual (NCHW)      {t_usual:6.3f} s   robust error {r_usual:.4f}")
    print(f"  torchattacks, channels_last input               robust error {r_usual_cl:.4f} "
          f"({'identical to' if r_usual_cl == r_suite else 'DIFFERS from'} the suite's)")
    print(f"  limit NCHW / channels_last        {t_lim_nchw:6.3f} s / {t_lim_cl:6.3f} s")
    print(f"  limit channels_last, BN folded    {t_lim_folded:6.3f} s")
    print(f"ratios: suite speed / torchattacks usual {t_usual / t_suite:.3f} (target >= 1.2); "
          f"suite speed / limit {t_lim / t_suite:.3f} (target >= 0.9; above 1: folding removes work the "
          f"limit does); suite speed / folded limit {t_lim_folded / t_suite:.3f}; "
          f"torchattacks usual / NCHW limit {t_lim_nchw / t_usual:.3f}; channels_last limit speed-up "
          f"{t_lim_nchw / t_lim_cl:.3f}")
    metrics_timing()
    return 0


def metrics_timing():
    """Calibration and CIFAR-10H metrics on 10,000 x 100 probabilities (target: under 50 ms)."""
    try:
        from robustbench_ols.scoring import calibration, cifar10h
    except ImportError:
        return
    names = [n for n in ("ece", "mce", "adaptive_ece", "classwise_ece", "nll", "brier") if hasattr(calibration, n)]
    if not names or not hasattr(cifar10h, "cifar10h_metrics"):
        return
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(10000, 100, generator=g), 1)
    labels = torch.randint(0, 100, (10000,), generator=g)
    human = torch.softmax(3 * torch.randn(10000, 100, generator=g), 1)

    def all_metrics():
        for n in names:
            getattr(calibration, n)(probs, labels)
        cifar10h.cifar10h_metrics(probs, labels, human)
    all_metrics()
    t, _ = timed(all_metrics, 5)
    print(f"calibration ({', '.join(names)}) + CIFAR-10H metrics on 10,000 x 100: {t * 1000:.1f} ms "
          "(target < 50 ms)")


if __name__ == "__main__":
    sys.exit(main())
