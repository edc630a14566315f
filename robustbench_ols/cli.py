"""`rbols run | eval | matrix | report | audit | methods | models | data check`.

Exit status: 0 success, 1 a run failed (its directory says why), 2 bad input (the message says what
is valid).
"""
from __future__ import annotations

import argparse
import sys


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="train one model under label noise, score it and record everything",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--dataset", default="cifar10", help="cifar10, cifar100 or synthetic (fast tests only)")
    a("--model", default="resnet20", help="a registered model (rbols models: see README)")
    a("--method", default="hard", help="NAME[:key=value,...], e.g. ols:alpha=0.5,init=zeros")
    a("--noise", default="none", help="none, symmetric:R, symmetric-all:R, pairflip:R, asymmetric:R, human:NAME")
    a("--noise-seed", type=int, default=None, help="seed of the noisy labels (default: --seed)")
    a("--seed", type=int, default=0, help="seed of the initialisation and the batch order")
    _training_options(p, RUN_DEFAULTS)
    _exec_options(p)
    a("--out", default="results", help="parent folder of the run directories")
    _eval_options(p, EVAL_DEFAULTS)


RUN_DEFAULTS = dict(epochs=30, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                    schedule="step", milestones=None, lr_decay=0.1, train_subset=0, subset_seed=0, augment=True,
                    amp=False, val_split=0, val_labels="noisy", test_every=1, test_subset=0)
EVAL_DEFAULTS = dict(attack_examples=0, attack_seed=0, attack_batch_size=256, bins=15, cifar10h=True,
                     attack_amp=False)


def _training_options(p, d) -> None:
    """Options that are part of the RunSpec (and so of the run_id). `d` holds their defaults; for
    `rbols matrix` it is empty, so only the options given on the command line override the grid."""
    a = p.add_argument
    a("--epochs", type=int, default=d.get("epochs"))
    a("--batch-size", type=int, default=d.get("batch_size"))
    a("--lr", type=float, default=d.get("lr"))
    a("--momentum", type=float, default=d.get("momentum"))
    a("--nesterov", action=argparse.BooleanOptionalAction, default=d.get("nesterov"))
    a("--weight-decay", type=float, default=d.get("weight_decay"))
    a("--schedule", default=d.get("schedule"), help="step (x lr-decay at the milestones) or cosine")
    a("--milestones", default=None, help="comma-separated 0-based epochs (default: 50%% and 75%% of --epochs)")
    a("--lr-decay", type=float, default=d.get("lr_decay"))
    a("--train-subset", type=int, default=d.get("train_subset"),
      help="class-balanced seeded subset of N training images (0: all)")
    a("--subset-seed", type=int, default=d.get("subset_seed"))
    a("--augment", action=argparse.BooleanOptionalAction, default=d.get("augment"),
      help="random crop 32 (pad 4) and horizontal flip")
    a("--amp", action=argparse.BooleanOptionalAction, default=d.get("amp"), help="bf16 autocast")
    a("--val-split", type=int, default=d.get("val_split"),
      help="hold N class-balanced images out of the training set (after the noise): the best epoch is "
           "chosen on them and temperature scaling is fitted on them (0: neither)")
    a("--val-labels", default=d.get("val_labels"), help="labels of the validation split: noisy (what a "
      "practitioner has) or clean")
    a("--test-every", type=int, default=d.get("test_every"),
      help="the per-epoch test pass (epochs.csv, Fig. 4, the best epoch) every K epochs and at the last one")
    a("--test-subset", type=int, default=d.get("test_subset"),
      help="that pass on a fixed class-balanced subset of N test images (0: all); the last epoch and the "
           "final scores always use the whole test set")


def _exec_options(p) -> None:
    a = p.add_argument
    a("--device", default="auto", help="auto, cpu, cuda or cuda:i")
    a("--channels-last", action=argparse.BooleanOptionalAction, default=True,
      help="channels_last memory format (faster ResNets on CPUs and recent GPUs)")
    a("--data-root", default=None, help="folder holding CIFAR (default: $RBOLS_DATA, else ~/.cache/robustbench_ols)")
    a("--download", action=argparse.BooleanOptionalAction, default=True,
      help="download CIFAR through torchvision when it is missing")
    a("--progress", action=argparse.BooleanOptionalAction, default=True)
    a("--eval-batch-size", type=int, default=256,
      help="images per evaluation forward pass (256: 1.7x faster than 1000 for resnet8 on one CPU thread, "
           "benchmarks/epoch_cost.py)")
    a("--threads", type=int, default=None, help="torch threads (default: torch's choice; `rbols matrix`: "
                                                "per worker, cores / workers)")


def _eval_options(p, d) -> None:
    """How the final model is scored (not part of the run_id: `rbols eval` can add other settings)."""
    g = p.add_argument_group("scoring (not part of the run_id)")
    a = g.add_argument
    a("--attack", action="append", default=None, metavar="SPEC",
      help="fgsm[:eps=8/255] or pgd[:eps=8/255,alpha=2/255,steps=20,random_start=true]; repeat for "
           "several, 'none' for no attack (default: fgsm and pgd, i.e. PGD-20)")
    a("--attack-examples", type=int, default=d.get("attack_examples"),
      help="attack a class-balanced, seeded subset of N test images (0: the whole test set)")
    a("--attack-seed", type=int, default=d.get("attack_seed"), help="seed of that subset and of PGD's random start")
    a("--attack-batch-size", type=int, default=d.get("attack_batch_size"))
    a("--bins", type=int, default=d.get("bins"), help="calibration bins (ECE, MCE, reliability diagram)")
    a("--cifar10h", action=argparse.BooleanOptionalAction, default=d.get("cifar10h"),
      help="CIFAR-10 only: score agreement with the CIFAR-10H human labels")
    a("--attack-amp", action=argparse.BooleanOptionalAction, default=d.get("attack_amp"),
      help="run the attacks under bf16 autocast (faster on GPUs and CPUs with bf16 units, much slower on "
           "others; a scoring setting of its own, not the default for reported scores)")


def _matrix_parser(sub) -> None:
    p = sub.add_parser("matrix", help="run a grid of runs (methods x noise x seeds x models x datasets), "
                                      "resumably, on this machine or a Ray cluster")
    _grid_options(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print the cells and their state (done, partial, todo, ...); run nothing")


def _audit_parser(sub) -> None:
    p = sub.add_parser("audit", help="run (or reuse) a grid for a new method and its baselines, then write "
                                     "audit.md: paired tests over seeds and a verdict per metric")
    p.add_argument("--method", required=True, help="the method to audit, e.g. mypkg.mod:MyMethod[:key=value,...]")
    p.add_argument("--against", default="ls,ols", help="comma-separated baselines")
    p.add_argument("--to", default=None, help="folder for audit.md (default: <out>/audit)")
    p.add_argument("--no-run", action="store_true", help="only read the runs already in --out; train nothing")
    _grid_options(p)
    p.set_defaults(dry_run=False)


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help="tables and figures (the OLS paper's) from finished run directories")
    p.add_argument("results_dir")
    p.add_argument("--to", required=True, help="folder for report.md, the tables and the figures")
    p.add_argument("--paper", action="store_true", help="add the paper's numbers beside ours where it has them")
    p.add_argument("--eval-id", default=None, help="take the scores of this evaluation setting (evals/<id>.json); "
                                                   "default: each run's own")
    p.add_argument("--format", default="png,pdf",
                   help="comma-separated figure formats among png, pdf, svg (default png,pdf; report.md shows the first)")


def _grid_options(p) -> None:
    a = p.add_argument
    a("--preset", default=None, help="smoke, quick, paper-table7, paper-table8, paper-table11, paper-table12")
    a("--config", default=None, help="a TOML file: methods, noise, seeds, models, datasets lists, [run] and "
                                     "[eval] tables, optionally preset = NAME as the base")
    a("--methods", default=None, help="comma-separated method texts, e.g. hard,ls,ols:alpha=0.5,init=zeros")
    a("--noise", default=None, help="comma-separated noise texts, e.g. symmetric:0,symmetric:0.2")
    a("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2")
    a("--models", default=None, help="comma-separated models")
    a("--datasets", default=None, help="comma-separated datasets")
    _training_options(p, {})
    _exec_options(p)
    _eval_options(p, {})
    a("--out", default="results", help="the folder of the grid's run directories")
    a("--retry-failed", action="store_true", help="run the cells recorded as failed again")
    a("--backend", default="local", choices=("local", "ray"))
    a("--workers", type=int, default=None,
      help="local: processes sharing the grid (default 1; with GPUs one per visible GPU, each pinned to it)")
    a("--ray-address", default=None, help="an existing Ray cluster (default: start a local one)")
    a("--ray-cpus-per-task", type=int, default=1)


def grid_from_args(args):
    """(Grid, cells, EvalSpec, ExecOptions) from `rbols matrix` arguments."""
    from .matrix import Grid, load_config, split_methods
    run = {k: getattr(args, k) for k in RUN_DEFAULTS if k != "milestones" and getattr(args, k, None) is not None}
    if args.milestones is not None:
        run["milestones"] = _milestones(args.milestones)
    ev = {"attacks": args.attack} if args.attack is not None else {}
    for flag, key in (("attack_examples", "attack_examples"), ("attack_seed", "attack_seed"),
                      ("attack_batch_size", "attack_batch_size"), ("bins", "n_bins"), ("cifar10h", "cifar10h"),
                      ("attack_amp", "attack_amp")):
        if getattr(args, flag) is not None:
            ev[key] = getattr(args, flag)

    def split(text):
        return [x.strip() for x in text.split(",") if x.strip()] if text else None
    over = {"methods": split_methods(args.methods) if args.methods else None, "noise": split(args.noise),
            "seeds": [_int(x, "--seeds") for x in split(args.seeds)] if args.seeds else None,
            "models": split(args.models), "datasets": split(args.datasets), "run": run, "eval": ev}
    grid = Grid.build(args.preset, load_config(args.config) if args.config else None, **over)
    ex = exec_from_args(args)
    return grid, grid.cells(), grid.eval_spec(), ex


def exec_from_args(args, progress: bool | None = None):
    """ExecOptions from the execution options (`_exec_options`); `progress` overrides --progress."""
    from .spec import ExecOptions
    return ExecOptions(device=args.device, channels_last=args.channels_last, data_root=args.data_root,
                       download=args.download, progress=args.progress if progress is None else progress,
                       eval_batch_size=args.eval_batch_size)


def _int(text, flag):
    from .errors import SpecError
    try:
        return int(text)
    except ValueError:
        raise SpecError(f"{flag}: {text!r} is not an integer") from None


def _milestones(text):
    from .errors import SpecError
    try:
        return tuple(int(m) for m in text.split(",") if m.strip())
    except ValueError:
        raise SpecError(f"--milestones {text!r}: give comma-separated epochs, e.g. 150,225") from None


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="rbols", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"robustbench_ols {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    _matrix_parser(sub)
    _report_parser(sub)
    _audit_parser(sub)
    ev = sub.add_parser("eval", help="score a finished run again with other settings (no retraining)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ev.add_argument("run_dir", help="a run directory (<out>/<run_id>)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ev.add_argument("--data-root", default=None)
    ev.add_argument("--download", action=argparse.BooleanOptionalAction, default=True)
    ev.add_argument("--eval-batch-size", type=int, default=256)
    ev.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    _eval_options(ev, EVAL_DEFAULTS)
    sub.add_parser("methods", help="list the training methods with their paper and defaults")
    sub.add_parser("models", help="list the registered models")
    data = sub.add_parser("data", help="data utilities")
    dsub = data.add_subparsers(dest="data_command", required=True)
    check = dsub.add_parser("check", help="verify a data root (md5 sums, counts) and print what it holds")
    check.add_argument("--data-root", default=None)
    return parser


def spec_from_args(args):
    """A validated (RunSpec, ExecOptions) from `rbols run` arguments."""
    from .methods import parse_method
    from .spec import RunSpec
    name, raw = parse_method(args.method)
    milestones = None if args.milestones is None else _milestones(args.milestones)
    spec = RunSpec(dataset=args.dataset, model=args.model, method=name, method_options=tuple(raw.items()),
                   noise=args.noise, noise_seed=args.seed if args.noise_seed is None else args.noise_seed,
                   seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                   momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay,
                   schedule=args.schedule, milestones=milestones, lr_decay=args.lr_decay,
                   train_subset=args.train_subset, subset_seed=args.subset_seed, augment=args.augment,
                   amp=args.amp, val_split=args.val_split, val_labels=args.val_labels,
                   test_every=args.test_every, test_subset=args.test_subset)
    ex = exec_from_args(args)
    return spec, ex


def eval_spec_from_args(args):
    from .evaluation import DEFAULT_ATTACKS, EvalSpec
    attacks = DEFAULT_ATTACKS if args.attack is None else tuple(a for a in args.attack if a != "none")
    return EvalSpec(attacks=attacks, attack_examples=args.attack_examples, attack_seed=args.attack_seed,
                    attack_batch_size=args.attack_batch_size, n_bins=args.bins, cifar10h=args.cifar10h,
                    attack_amp=args.attack_amp)


# The figures `rbols run` and `rbols eval` print, in this order, when present.
SCORE_KEYS = ("clean_err", "clean_err_top5", "ece", "aece", "nll", "brier", "temperature", "ece_ts", "nll_ts",
              "c10h_kl_correct", "c10h_ce", "c10h_agree")


def _print_scores(m: dict) -> None:
    keys = [k for k in SCORE_KEYS if m.get(k) is not None]
    keys += sorted(k for k in m if (k.startswith("fgsm") or k.startswith("pgd")) and "_err" in k)
    if keys:
        print("  ".join(f"{k} {m[k]:.4f}" for k in keys))


def cmd_run(args) -> int:
    from .matrix import set_threads
    from .run import execute
    spec, ex = spec_from_args(args)
    set_threads(args.threads)
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
    from .matrix import set_threads
    ev = eval_spec_from_args(args)
    ex = exec_from_args(args, progress=False)
    set_threads(args.threads)
    record = evaluate_run(args.run_dir, ev, ex)
    if record["status"] == "already evaluated":
        print(f"already evaluated with these settings (record kept as it is): {record['when']}")
    _print_scores(record["metrics"])
    print(f"{args.run_dir.rstrip('/')}/evals/{record['eval_id']}.json")
    return 0


def cmd_matrix(args) -> int:
    from pathlib import Path

    from .errors import SpecError
    from .matrix import describe
    grid, cells, ev, ex = grid_from_args(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {out} is a file; give a directory for the grid's run directories")
    if args.dry_run:
        lines = describe(cells, out, ev)
        print(f"grid {grid.name}: {len(cells)} cells ({grid.about or 'custom'}); scoring {ev.eval_id}: "
              f"{', '.join(ev.attacks) or 'no attack'}, attack examples {ev.attack_examples or 'all'}")
        print("\n".join(lines))
        states = [ln.split()[0] for ln in lines]
        print("; ".join(f"{k} {states.count(k)}" for k in ("done", "needs-eval", "partial", "running", "failed",
                                                           "todo") if states.count(k)))
        return 0
    summary = _run_grid(args, cells, ev, ex, out)
    return 0 if summary.ok else 1


def _run_grid(args, cells, ev, ex, out):
    from .matrix import print_summary, run_local, run_ray
    out.mkdir(parents=True, exist_ok=True)
    if args.backend == "ray":
        summary = run_ray(cells, out, ev, ex, address=args.ray_address, retry_failed=args.retry_failed,
                          cpus_per_task=args.ray_cpus_per_task, progress=args.progress)
    else:
        summary = run_local(cells, out, ev, ex, workers=args.workers, retry_failed=args.retry_failed,
                            threads=args.threads, progress=args.progress)
    print_summary(summary, out)
    return summary


def cmd_report(args) -> int:
    from pathlib import Path

    from .errors import SpecError
    from .report import write_report
    from .store import run_dirs
    if not run_dirs(args.results_dir):
        raise SpecError(f"{args.results_dir} holds no finished run directory (<run_id>/DONE); give the --out "
                        "folder of `rbols run` or `rbols matrix`")
    formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("png", "pdf", "svg")]
    if bad or not formats:
        raise SpecError(f"--format {args.format!r}: {'unknown ' + ', '.join(bad) if bad else 'no format'}; "
                        "give one or more of png, pdf, svg, e.g. --format png")
    path = write_report(args.results_dir, Path(args.to), paper=args.paper, eval_id=args.eval_id, formats=formats)
    from .regime import fit_lines
    from .results import collect
    print("\n".join(fit_lines(collect(args.results_dir, eval_id=args.eval_id))
                    or ["no hard-label run with label noise: the regime (memorising) cannot be read"]))
    print(path)
    return 0


def cmd_audit(args) -> int:
    from pathlib import Path

    from .audit import write_audit
    from .matrix import split_methods
    from .regime import REFERENCE
    from .results import label_of
    against = split_methods(args.against)
    labels = [label_of(t) for t in [args.method, *against]]
    # hard labels are the regime's reference (regime.py): run them too, or no noise claim can be checked
    reference = [] if REFERENCE in labels else [REFERENCE]
    args.methods = ",".join([args.method, *against, *reference])
    if args.preset is None and args.config is None:
        args.preset = "quick"
    grid, cells, ev, ex = grid_from_args(args)
    out = Path(args.out)
    ok = True
    if not args.no_run:
        ok = _run_grid(args, cells, ev, ex, out).ok
    to = Path(args.to) if args.to else out / "audit"
    path = write_audit(out, to, labels[0], labels[1:], eval_id=ev.eval_id,
                       about=f"Grid: {grid.name} ({grid.about or 'custom'}); seeds {grid.seeds}; noise {grid.noise}.")
    print(path)
    return 0 if ok else 1


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
    handler = {"run": cmd_run, "eval": cmd_eval, "matrix": cmd_matrix, "report": cmd_report, "audit": cmd_audit, "methods": cmd_methods, "models": cmd_models, "data": cmd_data}[args.command]
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
