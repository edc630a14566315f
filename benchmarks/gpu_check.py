"""The second half of gpu_check.sh: are the two runs' records complete, and how fast did they train
against a bare loop of the same model on the same device? Exit 1 when a record is missing or wrong."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from robustbench_ols.models import create_model
from robustbench_ols.models.compiling import compiled
from robustbench_ols.models.precision import set_float32
from robustbench_ols.store import EPOCH_COLUMNS, run_dirs

FILES = ("spec.json", "noise.json", "noise.npz", "epochs.csv", "metrics.json", "model.pt", "status.json",
         "executions.json", "reliability.csv", "DONE")
METRICS = ("test_err_last", "clean_err", "pgd20_err", "ece", "nll", "c10h_kl_correct", "attack_examples")


def problems(d: Path, epochs: int, device: str) -> list[str]:
    """What is missing or wrong in run directory `d`."""
    bad = [f"{d.name}: no {f}" for f in FILES if not (d / f).exists()]
    if bad:
        return bad
    e = pd.read_csv(d / "epochs.csv")
    m = json.loads((d / "metrics.json").read_text())
    ex = json.loads((d / "executions.json").read_text())
    if list(e.columns) != list(EPOCH_COLUMNS) or len(e) != epochs:
        bad.append(f"{d.name}: epochs.csv has {len(e)} rows / columns {list(e.columns)}")
    bad += [f"{d.name}: metrics.json has no {k}" for k in METRICS if m.get(k) is None]
    if any(x["device"].split(":")[0] != device.split(":")[0] for x in ex):
        bad.append(f"{d.name}: trained on {[x['device'] for x in ex]}, not {device}")
    return bad


def bare_images_per_s(model_name: str, device: str, precision: str, steps: int, batch: int,
                      channels_last: bool = True, ready=None) -> float:
    """Forward/backward/step of the same model on random tensors already on the device. `precision`: fp32 (IEEE),
    tf32 or bf16 (autocast), each optionally `+compile` (the model's forward through torch.compile, as --compile
    does; the warm-up steps compile); `ready()`, when given, is called between the warm-up and the timed steps."""
    torch.manual_seed(0)
    dev = torch.device(device)
    precision, _, compile_it = precision.partition("+")
    set_float32(precision == "tf32")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(model_name, 10).to(dev).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.rand(batch, 3, 32, 32, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=dev)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with compiled([model], bool(compile_it)):
        for _ in range(3):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if ready is not None:
            ready()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return steps * batch / (time.perf_counter() - t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="resnet56b")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--bare-steps", type=int, default=50)
    args = p.parse_args(argv)
    dirs = run_dirs(args.out)
    bad = [] if len(dirs) >= 2 else [f"{args.out}: {len(dirs)} finished runs, expected 2 (fp32 and --amp)"]
    for d in dirs:
        bad += problems(d, args.epochs, args.device)
    print(f"torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name(torch.device(args.device))})" if args.device.startswith("cuda") else ""))
    for d in dirs:
        if (d / "DONE").exists() and not problems(d, args.epochs, args.device):
            spec = json.loads((d / "spec.json").read_text())
            s, m = spec["spec"], json.loads((d / "metrics.json").read_text())
            e = pd.read_csv(d / "epochs.csv")
            suite = m["num_train"] / e.seconds.iloc[0]  # epoch 1 has no test pass (--test-every = epochs)
            cl = spec["execution"]["channels_last"]
            limit = bare_images_per_s(s["model"], args.device, "bf16" if s["amp"] else "fp32", args.bare_steps,
                                      s["batch_size"], cl)
            print(f"{d.name}: {s['model']} {'bf16 autocast' if s['amp'] else 'fp32'}: {suite:,.0f} training images/s "
                  f"(epoch 1, warm-up included) = {suite / limit:.2f} x a bare loop ({limit:,.0f}/s); test error "
                  f"{m['test_err_last']:.4f}, PGD-20 error {m['pgd20_err']:.4f} on {m['attack_examples']} images, "
                  f"eval {m['eval_seconds']:.1f} s")
    for b in bad:
        print(f"INCOMPLETE: {b}", file=sys.stderr)
    print("gpu_check: records complete" if not bad else f"gpu_check: {len(bad)} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
