"""`rbols run | eval | methods | models | data check`.

Exit status: 0 success, 1 a run failed (its directory says why), 2 bad input (the message says what
is valid).
"""
from __future__ import annotations

import argparse
import sys


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="train one model under label noise and record its curves",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--dataset", default="cifar10", help="cifar10, cifar100 or synthetic (fast tests only)")
    a("--model", default="resnet20", help="a registered model (rbols models: see README)")
    a("--method", default="hard", help="NAME[:key=value,...], e.g. ols:alpha=0.5,init=zeros")
    a("--noise", default="none", help="none, symmetric:R, symmetric-all:R, pairflip:R, asymmetric:R, human:NAME")
    a("--noise-seed", type=int, default=None, help="seed of the noisy labels (default: --seed)")
    a("--seed", type=int, default=0, help="seed of the initialisation and the batch order")
    a("--epochs", type=int, default=30)
    a("--batch-size", type=int, default=128)
    a("--lr", type=float, default=0.1)
    a("--momentum", type=float, default=0.9)
    a("--nesterov", action=argparse.BooleanOptionalAction, default=True)
    a("--weight-decay", type=float, default=5e-4)
    a("--schedule", default="step", help="step (x lr-decay at the milestones) or cosine")
    a("--milestones", default=None, help="comma-separated 0-based epochs (default: 50%% and 75%% of --epochs)")
    a("--lr-decay", type=float, default=0.1)
    a("--train-subset", type=int, default=0, help="class-balanced seeded subset of N training images (0: all)")
    a("--subset-seed", type=int, default=0)
    a("--augment", action=argparse.BooleanOptionalAction, default=True,
      help="random crop 32 (pad 4) and horizontal flip")
    a("--amp", action="store_true", help="bf16 autocast")
    a("--val-split", type=int, default=0,
      help="hold N class-balanced images out of the training set (after the noise): the best epoch is "
           "chosen on them and temperature scaling is fitted on them (0: neither)")
    a("--val-labels", default="noisy", help="labels of the validation split: noisy (what a practitioner "
      "has) or clean")
    a("--device", default="auto", help="auto, cpu, cuda or cuda:i")
    a("--channels-last", action=argparse.BooleanOptionalAction, default=True,
      help="channels_last memory format (faster ResNets on CPUs and recent GPUs)")
    a("--data-root", default=None, help="folder holding CIFAR (default: $RBOLS_DATA, else ~/.cache/robustbench_ols)")
    a("--download", action=argparse.BooleanOptionalAction, default=True,
      help="download CIFAR through torchvision when it is missing")
    a("--out", default="results", help="parent folder of the run directories")
    a("--progress", action=argparse.BooleanOptionalAction, default=True)
    a("--eval-batch-size", type=int, default=1000)
    _eval_options(p)


def _eval_options(p) -> None:
    """How the final model is scored (not part of the run_id: `rbols eval` can add other settings)."""
    g = p.add_argument_group("scoring (not part of the run_id)")
    a = g.add_argument
    a("--attack", action="append", default=None, metavar="SPEC",
      help="fgsm[:eps=8/255] or pgd[:eps=8/255,alpha=2/255,steps=20,random_start=true]; repeat for "
           "several, 'none' for no attack (default: fgsm and pgd, i.e. PGD-20)")
    a("--attack-examples", type=int, default=0,
      help="attack a class-balanced, seeded subset of N test images (0: the whole test set)")
    a("--attack-seed", type=int, default=0, help="seed of that subset and of PGD's random start")
    a("--attack-batch-size", type=int, default=256)
    a("--bins", type=int, default=15, help="calibration bins (ECE, MCE, reliability diagram)")
    a("--cifar10h", action=argparse.BooleanOptionalAction, default=True,
      help="CIFAR-10 only: score agreement with the CIFAR-10H human labels")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="rbols", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"robustbench_ols {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    ev = sub.add_parser("eval", help="score a finished run again with other settings (no retraining)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ev.add_argument("run_dir", help="a run directory (<out>/<run_id>)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ev.add_argument("--data-root", default=None)
    ev.add_argument("--download", action=argparse.BooleanOptionalAction, default=True)
    ev.add_argument("--eval-batch-size", type=int, default=1000)
    _eval_options(ev)
    sub.add_parser("methods", help="list the training methods with their paper and defaults")
    sub.add_parser("models", help="list the registered models")
    data = sub.add_parser("data", help="data utilities")
    dsub = data.add_subparsers(dest="data_command", required=True)
    check = dsub.add_parser("check", help="verify a data root (md5 sums, counts) and print what it holds")
    check.add_argument("--data-root", default=None)
    return parser


def spec_from_args(args):
    """A validated (RunSpec, ExecOptions) from `rbols run` arguments."""
    from .errors import SpecError
    from .methods import parse_method
    from .spec import ExecOptions, RunSpec
    name, raw = parse_method(args.method)
    milestones = None
    if args.milestones is not None:
        try:
            milestones = tuple(int(m) for m in args.milestones.split(",") if m.strip())
        except ValueError:
            raise SpecError(f"--milestones {args.milestones!r}: give comma-separated epochs, e.g. 150,225") from None
    spec = RunSpec(dataset=args.dataset, model=args.model, method=name, method_options=tuple(raw.items()),
                   noise=args.noise, noise_seed=args.seed if args.noise_seed is None else args.noise_seed,
                   seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                   momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay,
                   schedule=args.schedule, milestones=milestones, lr_decay=args.lr_decay,
                   train_subset=args.train_subset, subset_seed=args.subset_seed, augment=args.augment,
                   amp=args.amp, val_split=args.val_split, val_labels=args.val_labels)
    ex = ExecOptions(device=args.device, channels_last=args.channels_last, data_root=args.data_root,
                     download=args.download, progress=args.progress, eval_batch_size=args.eval_batch_size)
    return spec, ex


def eval_spec_from_args(args):
    from .evaluation import DEFAULT_ATTACKS, EvalSpec
    attacks = DEFAULT_ATTACKS if args.attack is None else tuple(a for a in args.attack if a != "none")
    return EvalSpec(attacks=attacks, attack_examples=args.attack_examples, attack_seed=args.attack_seed,
                    attack_batch_size=args.attack_batch_size, n_bins=args.bins, cifar10h=args.cifar10h)


# The figures `rbols run` and `rbols eval` print, in this order, when present.
SCORE_KEYS = ("clean_err", "clean_err_top5", "ece", "aece", "nll", "brier", "temperature", "ece_ts", "nll_ts",
              "c10h_kl_correct", "c10h_ce", "c10h_agree")


def _print_scores(m: dict) -> None:
    keys = [k for k in SCORE_KEYS if m.get(k) is not None]
    keys += sorted(k for k in m if (k.startswith("fgsm") or k.startswith("pgd")) and "_err" in k)
    if keys:
        print("  ".join(f"{k} {m[k]:.4f}" for k in keys))


def cmd_run(args) -> int:
    from .run import execute
    spec, ex = spec_from_args(args)
    if spec.dataset == "synthetic":
        print("note: the synthetic dataset is for fast tests only; its numbers say nothing about CIFAR",
              file=sys.stderr)
    result = execute(spec, ex, args.out, eval_spec_from_args(args))
    m = result.metrics
    if result.status == "already done":
        print(f"already done (not retrained): {result.run_dir}")
    print(f"test_err last {m['test_err_last']:.4f}, best {m['test_err_best']:.4f} (epoch {m['best_epoch']}); "
          f"realised noise rate {m['noise_rate_realised']:.4f}")
    _print_scores(m)
    print(result.run_dir)
    return 0


def cmd_eval(args) -> int:
    from .run import evaluate_run
    from .spec import ExecOptions
    ev = eval_spec_from_args(args)
    ex = ExecOptions(device=args.device, channels_last=args.channels_last, data_root=args.data_root,
                     download=args.download, progress=False, eval_batch_size=args.eval_batch_size)
    record = evaluate_run(args.run_dir, ev, ex)
    if record["status"] == "already evaluated":
        print(f"already evaluated with these settings (record kept as it is): {record['when']}")
    _print_scores(record["metrics"])
    print(f"{args.run_dir.rstrip('/')}/evals/{record['eval_id']}.json")
    return 0


def cmd_methods(args) -> int:
    from .errors import RbolsError
    from .methods import list_methods, method_class, option_defaults, plugin_names
    rows = [(n, "built-in") for n in list_methods()] + [(n, "plugin") for n in plugin_names()]
    for name, kind in rows:
        try:
            cls = method_class(name)
        except RbolsError as e:  # a broken plugin is listed with its error, the rest still shown
            print(f"{name:14s} [{kind}] cannot be loaded: {e}")
            continue
        opts = ", ".join(f"{k}={v!r}" for k, v in option_defaults(cls).items()) or "(no options)"
        print(f"{name:14s} [{kind}] {opts}\n{'':14s} {cls.citation or '(no citation given)'}")
    print("\nAny Method subclass also runs by import path: --method package.module:ClassName[:key=value,...]")
    return 0


def cmd_models(args) -> int:
    from .models import list_models
    print("\n".join(list_models()))
    return 0


def cmd_data(args) -> int:
    from .data import describe_root, find_layout, resolve_data_root
    print("\n".join(describe_root(args.data_root)))
    root = resolve_data_root(args.data_root)
    if not any(find_layout(name, root) for name in ("cifar10", "cifar100")):
        print("no CIFAR data found: set --data-root or RBOLS_DATA to a folder holding it", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    from .errors import RbolsError, RunFailed
    args = build_parser().parse_args(argv)
    handler = {"run": cmd_run, "eval": cmd_eval, "methods": cmd_methods, "models": cmd_models, "data": cmd_data}[args.command]
    try:
        return handler(args)
    except RunFailed as e:
        print(f"rbols: {e}", file=sys.stderr)
        return 1
    except RbolsError as e:
        print(f"rbols: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
