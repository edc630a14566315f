"""AutoAttack's cost: the suite's call against the reference implementation called the way its README shows.

Side by side in one process, alternating, on a trained run's model (`--run-dir`; its spec.json names the
model) and a class-balanced subset of CIFAR-10 test images, standard AutoAttack at 8/255:
  (a) the suite: `attacks.robust.attack_outcomes` with `autoattack` (the official code from the
      `pyautoattack` package, seeded, on an eval-mode copy with the batch norms folded into the
      convolutions, channels_last inside the model, NCHW at the attack's interface);
  (b) the reference as users call it: `AutoAttack(model, norm="Linf", eps=8/255, version="standard")`
      then `run_standard_evaluation(x, y, batch_size=250)` on the model as trained (NCHW), then a
      forward for the error. Its seed is left to the reference (the time) unless `--seed-reference`.
Prints seconds per 1,000 images for both, the ratio (suite speed / reference speed; the target is at
least 1.0), both robust errors and the clean error (AutoAttack's cost grows with the images that survive
APGD-CE: those go on to APGD-T, FAB-T and Square). Nothing is asserted; read the printed figures.

    python benchmarks/autoattack_cost.py --run-dir results/RUN_ID --data-root ../shared/data [--images 200]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from robustbench_ols.attacks import AttackSpec
from robustbench_ols.attacks.robust import attack_outcomes
from robustbench_ols.common.provenance import device_name, git_info
from robustbench_ols.data import class_balanced_subset, load_dataset
from robustbench_ols.models import create_model

EPS = 8 / 255


def reference(model, x, y, seed):
    from pyautoattack import AutoAttack
    adversary = AutoAttack(model, norm="Linf", eps=EPS, version="standard", device="cpu", seed=seed)
    adv, _ = adversary.run_standard_evaluation(x, y, batch_size=250)
    with torch.no_grad():
        return (model(adv).argmax(1) != y).double().mean().item()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True, help="a finished CIFAR-10 run whose model.pt to attack")
    p.add_argument("--data-root", default=os.environ.get("RBOLS_DATA"))
    p.add_argument("--images", type=int, default=200, help="class-balanced test images (seed 0)")
    p.add_argument("--repeats", type=int, default=2, help="alternating timings of each; the best is kept")
    p.add_argument("--seed-reference", action="store_true", help="give the reference the suite's seed (0)")
    args = p.parse_args(argv)
    run = Path(args.run_dir)
    name = json.loads((run / "spec.json").read_text())["spec"]["model"]
    model = create_model(name, 10)
    model.load_state_dict(torch.load(run / "model.pt", weights_only=True)["models"][0])
    model.eval()
    data = load_dataset("cifar10", args.data_root, download=False)
    idx = class_balanced_subset(data.test_y, args.images, 0)
    images, labels = data.test_x[idx], torch.as_tensor(data.test_y[idx]).long()
    x = images.float() / 255
    with torch.no_grad():
        clean = (model(x).argmax(1) != labels).double().mean().item()
    spec = AttackSpec.parse("autoattack")
    cl = create_model(name, 10).eval()
    cl.load_state_dict(model.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    print(f"git {git_info()['commit']}; torch {torch.__version__}; {device_name(torch.device('cpu'))}, "
          f"{torch.get_num_threads()} threads; {name} from {run} (clean error {clean:.3f} on these images), "
          f"{len(idx)} CIFAR-10 test images, AutoAttack standard, eps 8/255; best of {args.repeats}, alternating")
    suite_t, ref_t, suite_err, ref_err = [], [], None, None
    for _ in range(args.repeats):
        t = time.perf_counter()
        out = attack_outcomes(cl, images, labels, spec, seed=0, batch_size=len(images), channels_last=True)
        suite_t.append(time.perf_counter() - t)
        suite_err = out.fooled.double().mean().item()
        t = time.perf_counter()
        ref_err = reference(model, x, labels, 0 if args.seed_reference else None)
        ref_t.append(time.perf_counter() - t)
    per_k = 1000 / len(idx)
    print(f"  suite      {min(suite_t) * per_k:7.1f} s per 1,000 images   robust error {suite_err:.4f}")
    print(f"  reference  {min(ref_t) * per_k:7.1f} s per 1,000 images   robust error {ref_err:.4f}")
    print(f"ratio: suite speed / reference speed {min(ref_t) / min(suite_t):.3f} (target >= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
