"""What each `rbols` command does, from its parsed arguments: the arguments turned into specs (once), then the
pipeline (run, matrix, report, audit, ...). Imported by cli.main only after the command line is parsed, so
that `rbols --help` does not wait for torch."""
from __future__ import annotations

import sys
from pathlib import Path

from robustbench_ols.attacks import AttackSpec
from robustbench_ols.audit.regime import fit_lines
from robustbench_ols.cli.options import EVAL_DEFAULTS, EVAL_FLAGS, EXEC_DEFAULTS, RUN_DEFAULTS
from robustbench_ols.common.errors import Interrupted, RbolsError, SpecError
from robustbench_ols.data import find_layout
from robustbench_ols.data.check import describe_root
from robustbench_ols.data.files import resolve_data_root
from robustbench_ols.executors import BACKENDS
from robustbench_ols.executors.cells import set_threads, tally
from robustbench_ols.executors.estimate import describe, estimate_line, print_summary
from robustbench_ols.methods import (
    list_methods,
    method_class,
    option_defaults,
    parse_method,
    plugin_names,
)
from robustbench_ols.models import list_models
from robustbench_ols.models.compiling import check_supported as check_compile
from robustbench_ols.report import write_report
from robustbench_ols.scoring.external import score_checkpoint
from robustbench_ols.scoring.rescoring import evaluate_run
from robustbench_ols.scoring.transfer_check import complete_transfers
from robustbench_ols.spec import DEFAULT_ATTACKS, EvalSpec, ExecOptions, RunSpec
from robustbench_ols.spec.grid import Grid, load_config, parse_sweeps, split_methods
from robustbench_ols.store import ensure_writable
from robustbench_ols.store.results import ResultSet
from robustbench_ols.trackers import require_installed
from robustbench_ols.trackers.export import export
from robustbench_ols.train.final_metrics import repair
from robustbench_ols.train.run import execute
from robustbench_ols.train.selection import check_selection


def _noisy_val(args) -> float | None:
    """--noisy-val's share, checked here: given, it must hold something out (the spec's 0 means no split)."""
    share = getattr(args, "noisy_val", None)
    if share is not None and not 0 < share <= 0.5:
        raise SpecError(f"--noisy-val {share:g}: the share of the noisy training set held out must lie in (0, 0.5] "
                        "(0.05 when the flag is given alone)")
    return share


def grid_from_args(args):
    """(Grid, cells, EvalSpec, ExecOptions) from `rbols matrix` arguments."""
    _noisy_val(args)
    run = {k: getattr(args, k) for k in RUN_DEFAULTS if k != "milestones" and getattr(args, k, None) is not None}
    if args.milestones is not None:
        run["milestones"] = _milestones(args.milestones)
    ev = {k: getattr(args, EVAL_FLAGS.get(k, k)) for k in EVAL_DEFAULTS
          if getattr(args, EVAL_FLAGS.get(k, k)) is not None}

    def split(text):
        return [x.strip() for x in text.split(",") if x.strip()] if text else None
    over = {"methods": split_methods(args.methods) if args.methods else None, "noise": split(args.noise),
            "seeds": [_int(x, "--seeds") for x in split(args.seeds)] if args.seeds else None,
            "models": split(args.models), "datasets": split(args.datasets), "run": run, "eval": ev,
            "sweep": parse_sweeps(args.sweep) or None}
    grid = Grid.build(args.preset, load_config(args.config) if args.config else None, **over)
    ex = exec_from_args(args)
    cells, ev = grid.cells(), grid.eval_spec()
    if ev.select == "noisy-val" and not all(c.has_noisy_val for c in cells):
        raise SpecError("--select noisy-val scores the epoch with the lowest error on each cell's noisy validation "
                        "split, and these cells hold none: add --noisy-val [SHARE] (or use --select last or oracle)")
    return grid, cells, ev, ex


def exec_from_args(args, progress: bool | None = None):
    """ExecOptions from the execution options (parser.py's `_exec_options`); `progress` overrides --progress."""
    kw = {k: getattr(args, k) for k in EXEC_DEFAULTS if hasattr(args, k)}  # rbols eval has no --progress
    require_installed(kw.get("log"))  # here, at the entry: a Ray or Slurm worker rebuilding ExecOptions needs none
    if kw.get("compile"):
        check_compile(kw["device"])  # and each run again, on its own machine
    return ExecOptions(**{**kw, "progress": getattr(args, "progress", True) if progress is None else progress})


def _int(text, flag):
    try:
        return int(text)
    except ValueError:
        raise SpecError(f"{flag}: {text!r} is not an integer") from None


def _milestones(text):
    try:
        return tuple(int(m) for m in text.split(",") if m.strip())
    except ValueError:
        raise SpecError(f"--milestones {text!r}: give comma-separated epochs, e.g. 150,225") from None


def spec_from_args(args):
    """A validated (RunSpec, ExecOptions) from `rbols run` arguments."""
    name, raw = parse_method(args.method)
    run = {k: getattr(args, k) for k in RUN_DEFAULTS}
    run["milestones"] = None if args.milestones is None else _milestones(args.milestones)
    run["noisy_val"] = _noisy_val(args) or 0.0
    spec = RunSpec(dataset=args.dataset, model=args.model, method=name, method_options=tuple(raw.items()),
                   noise=args.noise, noise_seed=args.seed if args.noise_seed is None else args.noise_seed,
                   seed=args.seed, **run)
    ex = exec_from_args(args)
    return spec, ex


def eval_spec_from_args(args):
    kw = {k: getattr(args, EVAL_FLAGS.get(k, k)) for k in EVAL_DEFAULTS}
    kw["attacks"] = DEFAULT_ATTACKS if args.attack is None else tuple(a for a in args.attack if a != "none")
    return EvalSpec(**kw)


# The figures `rbols run` and `rbols eval` print, in this order, when present.
SCORE_KEYS = ("clean_err", "clean_err_top5", "ece", "aece", "ece_debiased", "smece", "aurc", "augrc", "cov_at_5risk",
              "risk_at_80cov", "aurc_ln", "nll", "brier", "temperature", "ece_ts", "smece_ts", "nll_ts",
              "c10h_kl_correct", "c10h_ce", "c10h_agree")


def _print_scores(m: dict) -> None:
    keys = [k for k in SCORE_KEYS if m.get(k) is not None]
    keys += sorted(k for k in m if AttackSpec.from_key(k.replace("_top5", "")) is not None)
    if keys:
        print("  ".join(f"{k} {m[k]:.4f}" for k in keys))
    if m.get("masking_suspected") is not None:
        print(f"gradient-masking checks ({m['check_examples']} images): " +
              (f"masking suspected, failed: {m['masking_checks']}" if m["masking_suspected"] else "all passed"))
    transfer = sorted(k for k in m if k.startswith("transfer_") and k.endswith("_err") and m[k] is not None)
    if transfer:
        print(f"transfer from the hard-label run {m['transfer_surrogate']}: "
              + "  ".join(f"{k} {m[k]:.4f}" for k in transfer))
    elif m.get("transfer_surrogate") == "self":
        print("transfer check: none (a hard-label run is its own surrogate)")
    elif m.get("masking_suspected") is not None:
        print("transfer check: waiting for the hard-label run of this setting (run it in the same --out, or pass "
              "--transfer-from RUN_DIR)")


def cmd_run(args) -> int:
    spec, ex = spec_from_args(args)
    set_threads(args.threads)
    if spec.dataset == "synthetic":
        print("note: the synthetic dataset is for fast tests only; its numbers say nothing about CIFAR",
              file=sys.stderr)
    result = execute(spec, ex, args.out, eval_spec_from_args(args), transfer_from=args.transfer_from)
    m = result.metrics
    if result.status == "already done":
        print(f"already done (not retrained): {result.run_dir}")
    print(f"test_err last {m['test_err_last']:.4f}, best {m['test_err_best']:.4f} (epoch {m['best_epoch']}); "
          f"realised noise rate {m['noise_rate_realised']:.4f}")
    _print_scores(m)
    print(result.run_dir)
    return 0


def cmd_eval(args) -> int:
    ev = eval_spec_from_args(args)
    ex = exec_from_args(args)
    set_threads(args.threads)
    record = evaluate_run(args.run_dir, ev, ex, transfer_from=args.transfer_from)
    if record["status"].startswith("already evaluated"):
        added = "; the transfer check added beside it" if record["status"].endswith("added") else ""
        print(f"already evaluated with these settings (record kept as it is): {record['when']}{added}")
    _print_scores(record["metrics"])
    print(f"{args.run_dir.rstrip('/')}/evals/{record['eval_id']}.json")
    return 0


def cmd_score(args) -> int:
    ev = eval_spec_from_args(args)
    ex = exec_from_args(args)
    set_threads(args.threads)
    record = score_checkpoint(args.checkpoint, args.model, args.dataset, ev, ex, args.out)
    if record["status"] == "already evaluated":
        print(f"already scored with these settings (record kept as it is): {record['when']}")
    _print_scores(record["metrics"])
    print(record["path"])
    return 0


def backend_from_args(args):
    """The grid's backend (executors/backends.py) configured from its options; an option of another backend is an
    error that names the backend it belongs to."""
    backend = BACKENDS.get(args.backend)
    for name, options in args.backend_options.items():
        if name == backend.name:
            continue
        given = [f"--{k.replace('_', '-')}" for k, default in options.items() if getattr(args, k) != default]
        if given:
            raise SpecError(f"{', '.join(given)}: for --backend {name} only (the backend is {args.backend})")
    return backend.from_args(args)


def cmd_matrix(args) -> int:
    backend = backend_from_args(args)
    grid, cells, ev, ex = grid_from_args(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {out} is a file; give a directory for the grid's run directories")
    if args.dry_run:
        return _dry_run(grid, cells, ev, out, backend, args.retry_failed)
    summary = _run_grid(args, backend, grid, cells, ev, ex, out)
    return 0 if summary.ok else 1


def _dry_run(grid, cells, ev, out, backend, retry_failed=False) -> int:
    """`--dry-run`: the cells, their state, what the grid would cost and what the backend would submit (Slurm: the
    sbatch file); nothing is run or written."""
    lines = describe(cells, out, ev, swept=list(grid.sweep))
    print(f"grid {grid.name}: {len(cells)} cells ({grid.about or 'custom'}); scoring {ev.eval_id}: "
          f"{', '.join(ev.attacks) or 'no attack'}, attack examples {ev.attack_examples or 'all'}")
    print("\n".join(lines))
    states = [ln.split()[0] for ln in lines]
    print("; ".join(f"{k} {states.count(k)}" for k in ("done", "needs-eval", "unreadable", "partial", "running",
                                                       "failed", "todo") if states.count(k)))
    print(estimate_line(grid, cells, out, ev, backend))
    preview = backend.preview(cells, out, ev, retry_failed=retry_failed)
    if preview:
        print(preview)
    return 0


def _run_grid(args, backend, grid, cells, ev, ex, out):
    """Train the grid's cells (`rbols matrix`, `rbols audit`): --out checked first, the estimate printed."""
    ensure_writable(out)
    print(estimate_line(grid, cells, out, ev, backend), file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    try:
        summary = backend.run(cells, out, ev, ex, retry_failed=args.retry_failed, progress=args.progress)
        # a cell scored before its hard-label cell had finished gets its transfer check now (transfer_check.py)
        added = complete_transfers(out, cells, ev, ex)
    except KeyboardInterrupt:
        s = tally(cells, out, ev)
        raise Interrupted(f"grid interrupted with {s.done} of {s.total} cells done; the cells in training keep "
                          "their checkpoints: run the same command to resume") from None
    if added:
        print(f"transfer check added to {added} finished cell(s) whose hard-label cell finished after them",
              file=sys.stderr)
    print_summary(summary, out)
    return summary


def cmd_report(args) -> int:
    results = ResultSet(args.results_dir)  # each run folder's files read once, whatever the report asks
    if not results.run_dirs():
        raise SpecError(f"{args.results_dir} holds no finished run directory (<run_id>/DONE); give the --out "
                        "folder of `rbols run` or `rbols matrix`")
    formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("png", "pdf", "svg")]
    if bad or not formats:
        raise SpecError(f"--format {args.format!r}: {'unknown ' + ', '.join(bad) if bad else 'no format'}; "
                        "give one or more of png, pdf, svg, e.g. --format png")
    select = check_selection(args.select)
    results.check_readable_at(select, args.eval_id)
    path = write_report(results, Path(args.to), paper=args.paper, eval_id=args.eval_id, formats=formats,
                        html=args.html, audit_dirs=args.audit, select=select)
    for b in results.unreadable(eval_id=args.eval_id, select=select):
        print(f"warning: left out of the report: {b['reason']}", file=sys.stderr)
    print("\n".join(fit_lines(results.runs(eval_id=args.eval_id))
                    or ["no hard-label run with label noise: the regime (memorising) cannot be read"]))
    print(path)
    if args.html:
        print(Path(args.to) / "report.html")
    return 0


def cmd_export(args) -> int:
    n = export(args.results_dir, args.to, args.log_dir)
    print(f"{n} finished run(s) exported to {args.to}; logs under {args.log_dir or Path(args.results_dir) / 'tracking'}")
    return 0


def cmd_repair(args) -> int:
    print(repair(args.run_dir))
    return 0


def cmd_methods(args) -> int:
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
    print("\n".join(list_models()))
    return 0


def cmd_data(args) -> int:
    for line in describe_root(args.data_root):
        print(line, flush=True)
    root = resolve_data_root(args.data_root)
    if not any(find_layout(name, root) for name in ("cifar10", "cifar100")):
        print("no CIFAR data found: set --data-root or RBOLS_DATA to a folder holding it", file=sys.stderr)
        return 1
    return 0
