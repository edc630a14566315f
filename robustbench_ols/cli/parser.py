"""The command line's parser: every subcommand and option, each defined once, the defaults read from the spec
dataclasses (options.py) and the backends' options from their registry. Light: no torch."""
from __future__ import annotations

import argparse

from robustbench_ols import __version__
from robustbench_ols.audit.comparison import MARGINS  # numpy only
from robustbench_ols.cli.options import EVAL_DEFAULTS, EVAL_FLAGS, EXEC_DEFAULTS, RUN, RUN_DEFAULTS
from robustbench_ols.spec import NOISY_VAL_DEFAULT
from robustbench_ols.spec.presets import AUDIT_PRESET, PRESET_NAMES  # plain data

DESCRIPTION = "rbols run | eval | score | matrix | report | audit | export | repair | methods | models | data check"


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, unless the help already says it or there is none (None, a flag)."""

    def _get_help_string(self, action):
        text = action.help or ""
        plain_flag = action.default is False and not isinstance(action, argparse.BooleanOptionalAction)
        if action.default is None or plain_flag or action.default == argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="train one model under label noise, score it and record everything",
                       formatter_class=_Help)
    a = p.add_argument
    a("--dataset", default=RUN["dataset"], help="cifar10, cifar100 or synthetic (fast tests only)")
    a("--model", default=RUN["model"], help="a registered model (rbols models)")
    a("--method", default=RUN["method"], help="NAME[:key=value,...], e.g. ols:alpha=0.5,init=zeros")
    a("--noise", default=RUN["noise"],
      help="none, symmetric:R, symmetric-all:R, pairflip:R, asymmetric:R, human:NAME, cifar10n-synthetic:NAME")
    a("--noise-seed", type=int, default=None, help="seed of the noisy labels (default: --seed)")
    a("--seed", type=int, default=RUN["seed"], help="seed of the initialisation and the batch order")
    _training_options(p, RUN_DEFAULTS)
    _exec_options(p)
    a("--out", default="results", help="parent folder of the run directories")
    _eval_options(p, EVAL_DEFAULTS)
    _transfer_option(p)


TRANSFER_HELP = ("the transfer check's hard-label surrogate: a finished run of the same model and dataset (default: "
                 "the hard-label run of the same setting beside this one in its results folder, when it has finished)")


def _transfer_option(p) -> None:
    p.add_argument("--transfer-from", default=None, metavar="RUN_DIR", help=TRANSFER_HELP)


def _training_options(p, d) -> None:
    """Options that are part of the RunSpec (and so of the run_id). `d` holds their defaults; for
    `rbols matrix` it is empty, so only the options given on the command line override the grid."""
    a = _adder(p, d, RUN_DEFAULTS)
    a("--epochs", type=int, help="training epochs")
    a("--batch-size", type=int, help="training images per SGD step")
    a("--lr", type=float, help="initial learning rate of SGD")
    a("--momentum", type=float, help="SGD momentum")
    a("--nesterov", action=argparse.BooleanOptionalAction, help="Nesterov momentum")
    a("--weight-decay", type=float, help="L2 weight decay of SGD")
    a("--schedule", help="step (x lr-decay at the milestones) or cosine")
    p.add_argument("--milestones", default=None, help="comma-separated 0-based epochs of the step schedule "
                                                      "(default: 50%% and 75%% of --epochs)")
    a("--lr-decay", type=float, help="factor of the learning rate at each milestone")
    a("--train-subset", type=int, help="class-balanced seeded subset of N training images (0: all)")
    a("--subset-seed", type=int, help="seed of that subset (and of the held-out splits)")
    a("--augment", action=argparse.BooleanOptionalAction, help="random crop 32 (pad 4) and horizontal flip")
    a("--amp", action=argparse.BooleanOptionalAction, help="bf16 autocast")
    a("--val-split", type=int, help="hold N class-balanced images out of the training set (after the noise): the "
      "best epoch is chosen on them and temperature scaling is fitted on them (0: neither)")
    a("--val-labels", help="labels of the validation split: noisy (what a practitioner has) or clean")
    p.add_argument("--noisy-val", type=float, nargs="?", const=NOISY_VAL_DEFAULT, default=None, metavar="SHARE",
      help=f"hold a class-balanced share of the noisy training set out, with its noisy labels ({NOISY_VAL_DEFAULT:g} "
           "when given alone; at most 0.5): the epoch with the lowest error on it is --select noisy-val's, and "
           "temperature scaling is fitted on it (default: none)")
    a("--test-every", type=int,
      help="the per-epoch test pass (epochs.csv, Fig. 4, the best epoch) every K epochs and at the last one")
    a("--test-subset", type=int, help="that pass on a fixed class-balanced subset of N test images (0: all); the "
      "last epoch and the final scores always use the whole test set")


def _adder(p, d: dict, fallback: dict):
    """p.add_argument with the default from `d` (the option's dest). With `d` empty (`rbols matrix`, `rbols
    audit`: the grid decides), the default is None and the help says so, naming the value used when the grid
    sets none; with `d` given, ArgumentDefaultsHelpFormatter prints it."""
    def add(flag, **kw):
        dest = flag.lstrip("-").replace("-", "_")
        key = {flag: field for field, flag in EVAL_FLAGS.items()}.get(dest, dest)  # --bins is n_bins
        kw["default"] = d.get(key)
        if not d and key in fallback:
            value = fallback[key]
            shown = ",".join(value) if isinstance(value, tuple) and all(isinstance(v, str) for v in value) else value
            kw["help"] = f"{kw.get('help', '')} (default: the grid's; {shown} when it sets none)".lstrip()
        p.add_argument(flag, **kw)
    return add


def _exec_options(p, names=None) -> None:
    """The ExecOptions flags (all, or those of `names`): `rbols run` and `rbols matrix` take all, `rbols eval` and
    `rbols score` the ones scoring uses. Each is defined here once."""
    d = EXEC_DEFAULTS
    flags = {
        "device": dict(default=d["device"], help="auto, cpu, cuda or cuda:i"),
        "channels_last": dict(action=argparse.BooleanOptionalAction, default=d["channels_last"],
                              help="channels_last memory format (faster ResNets on CPUs and recent GPUs)"),
        "data_root": dict(default=d["data_root"],
                          help="folder holding CIFAR (default: $RBOLS_DATA, else ~/.cache/robustbench_ols)"),
        "download": dict(action=argparse.BooleanOptionalAction, default=d["download"],
                         help="download CIFAR through torchvision when it is missing"),
        "progress": dict(action=argparse.BooleanOptionalAction, default=d["progress"],
                         help="progress bars (training steps, scoring); plain periodic lines when stderr is not a "
                              "terminal"),
        "eval_batch_size": dict(type=int, default=d["eval_batch_size"],
                                help="images per evaluation forward pass (256: 1.7x faster than 1000 for resnet8 on "
                                     "one CPU thread, benchmarks/epoch_cost.py)"),
        "threads": dict(type=int, default=None, help="torch threads (default: torch's choice; `rbols matrix`: per "
                                                     "worker, the cores this process may use / workers)"),
        "tf32": dict(action=argparse.BooleanOptionalAction, default=d["tf32"],
                     help="GPUs: float32 products and convolutions in TF32 (default: IEEE float32; recorded)"),
        "amp_dtype": dict(default=d["amp_dtype"], choices=("auto", "bfloat16", "float16"),
                          help="--amp's dtype (auto: bfloat16 where the device computes it, else float16 with a "
                               "gradient scaler; recorded)"),
        "deterministic": dict(action=argparse.BooleanOptionalAction, default=d["deterministic"],
                              help="deterministic algorithms and cuDNN kernels: a resumed GPU run gives the same "
                                   "weights bit for bit (an op without a deterministic kernel is refused)"),
        "compile": dict(action=argparse.BooleanOptionalAction, default=d["compile"],
                        help="train through torch.compile (equal to eager within float rounding; scoring stays eager; "
                             "recorded): benchmarks/compile_speed.py measures it"),
        "log": dict(default=d["log"], metavar="TRACKERS",
                    help="stream each epoch, the spec, the final scores and the learning curves to experiment "
                         "trackers: any of tensorboard, mlflow, wandb, comma-separated (pip install "
                         "'robustbench_ols[trackers]'; W&B offline unless logged in; default: none)"),
        "log_dir": dict(default=d["log_dir"], help="folder of the trackers' logs: tensorboard/, mlruns/ (unless "
                                                   "MLFLOW_TRACKING_URI is set), wandb/ (default: <out>/tracking)"),
    }
    for name, kw in flags.items():
        if names is None or name in names:
            p.add_argument("--" + name.replace("_", "-"), **kw)


def _eval_options(p, d) -> None:
    """How the final model is scored (not part of the run_id: `rbols eval` can add other settings)."""
    g = p.add_argument_group("scoring (not part of the run_id)")
    a = _adder(g, d, EVAL_DEFAULTS)
    g.add_argument("--attack", action="append", default=None, metavar="SPEC",
                   help="fgsm[:eps=8/255], pgd[:eps=8/255,alpha=eps/4,steps=20,random_start=true], "
                        "autoattack[:version=standard,eps=8/255] (the official ensemble), or one of its attacks: "
                        "apgd-ce, apgd-dlr [:steps=100,restarts=1], apgd-t, fab-t [:steps=100,targets=9], "
                        "square[:queries=5000]; repeat for several, 'none' for no attack (default: fgsm and pgd, "
                        "i.e. PGD-20" + ("" if d else ", unless the grid sets others") + ")")
    a("--attack-examples", type=int,
      help="attack a class-balanced, seeded subset of N test images (0: the whole test set)")
    a("--attack-seed", type=int, help="seed of that subset and of PGD's random start")
    a("--attack-batch-size", type=int, help="images per attacked batch (PGD's numbers do not depend on it)")
    a("--attack-starts", choices=("per-image", "per-batch"),
      help="PGD's random starts: one stream over the images (per-image, the same for any batch size and device) "
           "or batch b seeded attack-seed + b (per-batch: how records made before per-image starts were scored)")
    a("--bins", type=int, help="calibration bins (ECE, MCE, reliability diagram)")
    a("--cifar10h", action=argparse.BooleanOptionalAction,
      help="CIFAR-10 only: score agreement with the CIFAR-10H human labels")
    a("--checks", action=argparse.BooleanOptionalAction,
      help="with any attack: the gradient-masking checks (eps 0, the eps sweep, a large eps, PGD-100 with restarts, "
           "Square, zero gradients) and the masking_suspected flag")
    a("--check-examples", type=int, help="images of the checks: a class-balanced subset of the attacked ones (0: all)")
    a("--eps-sweep", type=_budgets, help="the checks' PGD-20 budgets in /255 units: robust error against eps")
    a("--select", help="which epoch's model is scored: last, noisy-val (the lowest error on the run's noisy "
                       "validation split, --noisy-val) or oracle (the lowest test error: optimistic)")
    a("--attack-amp", action=argparse.BooleanOptionalAction,
      help="run the attacks under bf16 autocast (faster on GPUs and CPUs with bf16 units, much slower on "
           "others; a scoring setting of its own, not the default for reported scores)")
    a("--shift", choices=("none", "corruptions"),
      help="corruptions: also score error and calibration under the 15 CIFAR-10-C corruptions x 5 severities, "
           "generated (not the official release) with imagecorruptions-imaug on a cached class-balanced test subset")
    a("--corruptions", type=lambda t: tuple(filter(None, t.split(","))), help="with --shift corruptions: "
      "these corruptions only, comma-separated (default: all 15)")
    a("--severities", type=_budgets, help="with --shift corruptions: these severities (1-5), comma-separated")
    a("--shift-examples", type=int, help="with --shift corruptions: the size of the corrupted test subset")


def _budgets(text: str) -> tuple:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: need numbers in /255 units separated by commas, such as "
                                         "0,1,2,4,8,16,64") from None


def _matrix_parser(sub, backends) -> None:
    p = sub.add_parser("matrix", help="run a grid of runs (methods x noise x seeds x models x datasets), "
                                      "resumably, on this machine, a Ray cluster or Slurm",
                       formatter_class=_Help)
    _grid_options(p, backends)
    p.add_argument("--dry-run", action="store_true",
                   help="print the cells and their state (done, partial, todo, ...) and, with --backend slurm, "
                        "the sbatch file; run nothing")


def _audit_parser(sub, backends) -> None:
    p = sub.add_parser("audit", help="run (or reuse) a grid for a new method and its baselines, then write "
                                     "audit.md: paired tests over seeds and a verdict per metric",
                       description=f"Trains the grid of --preset or --config (without either: the {AUDIT_PRESET} "
                                   "preset, real CIFAR-10, 5 noise rates x 1 seed per method: about a minute per "
                                   "cell on a 2-core CPU, 20 cells with the default baselines) for --method, the "
                                   "--against baselines and hard labels, unless --no-run; then writes audit.md. "
                                   "--dry-run lists the cells and what they would cost first.",
                       formatter_class=_Help)
    p.add_argument("--method", required=True, help="the method to audit, e.g. mypkg.mod:MyMethod[:key=value,...]")
    p.add_argument("--against", default="ls,ols", help="comma-separated baselines")
    p.add_argument("--to", default=None, help="folder for audit.md (default: <out>/audit)")
    p.add_argument("--no-run", action="store_true", help="only read the runs already in --out; train nothing")
    p.add_argument("--test", default="t", help="the difference and equivalence tests: t (paired t-test, TOST) or "
                                               "wilcoxon (signed-rank, two one-sided signed-rank tests)")
    p.add_argument("--correction", default="holm", help="multiple-testing correction within each metric's "
                                                        "comparisons: holm (Holm-Bonferroni), bh "
                                                        "(Benjamini-Hochberg) or none")
    p.add_argument("--margin", action="append", default=[], metavar="METRIC=VALUE",
                   help="equivalence margin of a metric in its own units (repeat for several), e.g. "
                        "test_err_last=0.01; defaults: " + ", ".join(f"{k}={v:g}" for k, v in MARGINS.items()))
    p.add_argument("--dry-run", action="store_true", help="print the cells, their state and the cost estimate; "
                                                          "run and write nothing")
    p.add_argument("--plan", action="store_true",
                   help="pilot stage: train (unless --no-run) the grid's seeds as the pilot, then print and write "
                        "plan.md: the confirmation seeds each claim needs (power 0.8 at the family's corrected alpha) "
                        "and what training them costs")
    p.add_argument("--confirm", action="store_true",
                   help="confirmation stage: plan from the pilot seeds, train the confirmation seeds the plan asks "
                        "for (unless --no-run), then decide every claim on them alone (audit.md)")
    p.add_argument("--pilot-seeds", default=None, help="with --confirm: the seeds that were the pilot (default: the "
                                                       "preset's or config's seeds); --seeds then names the "
                                                       "confirmation seeds (default: the ones after the pilot's)")
    p.add_argument("--max-seeds", type=int, default=None, help="with --plan or --confirm: the most confirmation "
                                                               "seeds a claim may ask for (default 10, at least 2)")
    _grid_options(p, backends, f"(default: {AUDIT_PRESET} when --config is not given either)")


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help="tables and figures (the OLS paper's) from finished run directories",
                       formatter_class=_Help)
    p.add_argument("results_dir")
    p.add_argument("--to", required=True, help="folder for report.md, the tables and the figures")
    p.add_argument("--paper", action="store_true", help="add the paper's numbers beside ours where it has them")
    p.add_argument("--eval-id", default=None, help="take the scores of this evaluation setting (evals/<id>.json); "
                                                   "default: each run's own")
    p.add_argument("--select", default="last", help="checkpoint selection of Table VII and the scores: last, "
                   "noisy-val (the epoch with the lowest noisy-validation error) or oracle (the lowest test error: "
                   "optimistic); without --eval-id the scores are each run's own setting at that epoch")
    p.add_argument("--format", default="png,pdf",
                   help="comma-separated figure formats among png, pdf, svg (default png,pdf; report.md shows the first)")
    p.add_argument("--html", action="store_true",
                   help="also write report.html: one self-contained page (sortable tables, every figure, Fig. 4/5 "
                        "with methods to show or hide, the audits, the provenance); needs the html extra")
    p.add_argument("--audit", action="append", default=[], metavar="DIR",
                   help="with --html: a folder of `rbols audit` output (audit.csv searched for in it); repeatable. "
                        "RESULTS_DIR/audit is always looked in")


def _grid_options(p, backends, preset_default: str = "") -> None:
    a = p.add_argument
    a("--preset", default=None, help=f"one of {', '.join(PRESET_NAMES)} {preset_default}".rstrip())
    a("--config", default=None, help="a TOML file: methods, noise, seeds, models, datasets lists, [run] and "
                                     "[eval] tables, optionally preset = NAME as the base")
    a("--methods", default=None, help="comma-separated method texts, e.g. hard,ls,ols:alpha=0.5,init=zeros")
    a("--noise", default=None, help="comma-separated noise texts, e.g. symmetric:0,symmetric:0.2")
    a("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2")
    a("--models", default=None, help="comma-separated models")
    a("--datasets", default=None, help="comma-separated datasets")
    a("--sweep", action="append", default=None, metavar="KEY=V1,V2",
      help="sweep a run setting: every value is a cell (repeat for several: every combination), e.g. --sweep "
           "lr=0.05,0.1 --sweep epochs=100,200; a --config file takes a [sweep] table")
    _training_options(p, {})
    _exec_options(p)
    _eval_options(p, {})
    a("--out", default="results", help="the folder of the grid's run directories")
    a("--retry-failed", action="store_true", help="run the cells recorded as failed again")
    _backend_options(p, backends)


def _backend_options(p, backends) -> None:
    """--backend and each backend's own options, from the BACKENDS registry (executors/backends.py): the built-in
    backends and `backends`, a plugin asked for by name or import path."""
    from robustbench_ols.executors import BACKENDS
    names = list(dict.fromkeys([*BACKENDS.names(), *backends]))
    p.add_argument("--backend", default="local", metavar="NAME",
                   help="where the cells run: " + "; ".join(f"{n}: {BACKENDS.get(n).help}" for n in names)
                   + "; or a plugin (entry point robustbench_ols.backends, or package.module:Class)")
    owned = {}
    for name in names:
        cls = BACKENDS.get(name)
        g = p.add_argument_group(f"--backend {name}")
        cls.add_arguments(g)
        owned[name] = {act.dest: act.default for act in g._group_actions}
    p.set_defaults(backend_options=owned)


def _scoring_options(p) -> None:
    """`rbols eval` and `rbols score`: where and how the scoring runs, then what it scores."""
    _exec_options(p, ("device", "channels_last", "data_root", "download", "eval_batch_size", "threads", "progress",
                      "tf32", "deterministic"))
    _eval_options(p, EVAL_DEFAULTS)


def build_parser(backends=()) -> argparse.ArgumentParser:
    """The command line; `backends`: plugin backends whose options it takes too (see `main`)."""
    parser = argparse.ArgumentParser(prog="rbols", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"robustbench_ols {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    _matrix_parser(sub, backends)
    _report_parser(sub)
    _audit_parser(sub, backends)
    ev = sub.add_parser("eval", help="score a finished run again with other settings (no retraining)",
                        formatter_class=_Help)
    ev.add_argument("run_dir", help="a run directory (<out>/<run_id>)")
    _scoring_options(ev)
    _transfer_option(ev)
    sc = sub.add_parser("score", help="score a model trained outside the suite (a checkpoint) like a run",
                        formatter_class=_Help)
    sc.add_argument("--checkpoint", required=True, help="a file saved with torch.save(model.state_dict(), FILE) "
                                                        "(or holding one under 'state_dict', 'model' or 'models')")
    sc.add_argument("--model", required=True, help="the registered architecture of those weights (rbols models); "
                                                   "it takes images in [0, 1] and normalises them itself")
    sc.add_argument("--dataset", default=RUN["dataset"], help="whose test set scores it")
    sc.add_argument("--out", default="scores", help="parent folder of the record folder <out>/<score_id>/")
    _scoring_options(sc)
    exp = sub.add_parser("export", help="replay finished runs into experiment trackers (TensorBoard, MLflow, W&B)")
    exp.add_argument("results_dir", help="the --out folder of `rbols run` or `rbols matrix`")
    exp.add_argument("--to", required=True, help="tensorboard, mlflow and/or wandb, comma-separated")
    exp.add_argument("--log-dir", default=None,
                     help="folder of the trackers' logs (default: RESULTS_DIR/tracking, where --log puts them)")
    rep = sub.add_parser("repair", help="rebuild a finished run's unreadable metrics.json from its other records")
    rep.add_argument("run_dir", help="a run directory (<out>/<run_id>)")
    sub.add_parser("methods", help="list the training methods with their paper and defaults")
    sub.add_parser("models", help="list the registered models")
    data = sub.add_parser("data", help="data utilities")
    dsub = data.add_subparsers(dest="data_command", required=True)
    check = dsub.add_parser("check", help="verify a data root (md5 sums, counts) and print what it holds")
    check.add_argument("--data-root", default=None)
    return parser
