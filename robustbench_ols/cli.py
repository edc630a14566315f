"""`rbols run | eval | matrix | report | audit | methods | models | data check`.

Exit status: 0 success, 1 a run failed (its directory says why), 2 bad input (the message says what
is valid).
"""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import RbolsError, RunFailed
from .options import (  # light: no torch (see attacks/spec.py)
    EVAL_DEFAULTS,
    EXEC_DEFAULTS,
    RUN,
    RUN_DEFAULTS,
)


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="train one model under label noise, score it and record everything",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--dataset", default=RUN["dataset"], help="cifar10, cifar100 or synthetic (fast tests only)")
    a("--model", default=RUN["model"], help="a registered model (rbols models: see README)")
    a("--method", default=RUN["method"], help="NAME[:key=value,...], e.g. ols:alpha=0.5,init=zeros")
    a("--noise", default=RUN["noise"], help="none, symmetric:R, symmetric-all:R, pairflip:R, asymmetric:R, human:NAME")
    a("--noise-seed", type=int, default=None, help="seed of the noisy labels (default: --seed)")
    a("--seed", type=int, default=RUN["seed"], help="seed of the initialisation and the batch order")
    _training_options(p, RUN_DEFAULTS)
    _exec_options(p)
    a("--out", default="results", help="parent folder of the run directories")
    _eval_options(p, EVAL_DEFAULTS)


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
    d = EXEC_DEFAULTS
    a("--device", default=d["device"], help="auto, cpu, cuda or cuda:i")
    a("--channels-last", action=argparse.BooleanOptionalAction, default=d["channels_last"],
      help="channels_last memory format (faster ResNets on CPUs and recent GPUs)")
    a("--data-root", default=d["data_root"],
      help="folder holding CIFAR (default: $RBOLS_DATA, else ~/.cache/robustbench_ols)")
    a("--download", action=argparse.BooleanOptionalAction, default=d["download"],
      help="download CIFAR through torchvision when it is missing")
    a("--progress", action=argparse.BooleanOptionalAction, default=d["progress"])
    a("--eval-batch-size", type=int, default=d["eval_batch_size"],
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
    a("--bins", type=int, default=d.get("n_bins"), help="calibration bins (ECE, MCE, reliability diagram)")
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


def build_parser() -> argparse.ArgumentParser:
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
    d = EXEC_DEFAULTS
    ev.add_argument("--device", default=d["device"])
    ev.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=d["channels_last"])
    ev.add_argument("--data-root", default=d["data_root"])
    ev.add_argument("--download", action=argparse.BooleanOptionalAction, default=d["download"])
    ev.add_argument("--eval-batch-size", type=int, default=d["eval_batch_size"])
    ev.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    _eval_options(ev, EVAL_DEFAULTS)
    sub.add_parser("methods", help="list the training methods with their paper and defaults")
    sub.add_parser("models", help="list the registered models")
    data = sub.add_parser("data", help="data utilities")
    dsub = data.add_subparsers(dest="data_command", required=True)
    check = dsub.add_parser("check", help="verify a data root (md5 sums, counts) and print what it holds")
    check.add_argument("--data-root", default=None)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # imported once the command line is parsed: commands.py imports torch (seconds), which --help never needs
    from . import commands
    try:
        return getattr(commands, f"cmd_{args.command}")(args)
    except RunFailed as e:
        print(f"rbols: {e}", file=sys.stderr)
        return 1
    except RbolsError as e:
        print(f"rbols: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
