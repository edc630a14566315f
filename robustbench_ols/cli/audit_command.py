"""`rbols audit`: train (or reuse) the grid of a new method and its baselines, then write the audit; with
`--plan`, the seeds a confirmatory experiment needs from the grid's pilot seeds; with `--confirm`, train
those confirmation seeds and decide every claim on them alone (audit/plan.py, audit/confirm.py)."""
from __future__ import annotations

from pathlib import Path

from robustbench_ols.audit.comparison import Settings
from robustbench_ols.audit.plan import MAX_SEEDS
from robustbench_ols.audit.regime import REFERENCE
from robustbench_ols.audit.staged import Design, write_confirmed, write_plan
from robustbench_ols.audit.write import write_audit
from robustbench_ols.cli.commands import _dry_run, _int, _run_grid, backend_from_args, grid_from_args
from robustbench_ols.common.errors import SpecError
from robustbench_ols.methods import label_of
from robustbench_ols.spec.grid import Grid, load_config, split_methods
from robustbench_ols.spec.presets import AUDIT_PRESET
from robustbench_ols.store.results import ResultSet


def _design(args, grid) -> Design | None:
    """The pilot-then-confirm design of --plan / --confirm (None without either), its bad inputs refused
    before anything runs: both flags, --max-seeds < 2, confirmation seeds that overlap the pilot's."""
    if not (args.plan or args.confirm):
        if args.pilot_seeds or args.max_seeds is not None:
            raise SpecError("--pilot-seeds and --max-seeds belong to --plan or --confirm; add one of them")
        return None
    if args.plan and args.confirm:
        raise SpecError("--plan and --confirm are two steps: --plan reads the pilot and prints the seeds the "
                        "confirmation needs; --confirm trains and tests them. Give one")
    if args.test != "t":
        raise SpecError(f"--test {args.test}: the plan and the confirmation use the paired t-test (its exact power "
                        "plans the seeds; the signed-rank test cannot reach a corrected alpha with a few seeds: its "
                        "smallest two-sided p-value with n seeds is 2/2^n); drop --test")
    cap = MAX_SEEDS if args.max_seeds is None else args.max_seeds
    if cap < 2:
        raise SpecError(f"--max-seeds {cap}: a confirmatory test needs at least 2 seeds; give 2 or more "
                        f"(default {MAX_SEEDS})")
    if args.plan:
        if args.pilot_seeds:
            raise SpecError("--plan plans from the grid's seeds (--seeds, or the preset's): drop --pilot-seeds")
        pilot = list(grid.seeds)
    else:
        own = Grid.build(args.preset, load_config(args.config) if args.config else None).seeds
        pilot = [_int(x, "--pilot-seeds") for x in args.pilot_seeds.split(",") if x.strip()] if args.pilot_seeds \
            else list(own)
    if len(set(pilot)) < 2:
        raise SpecError(f"the pilot has {len(set(pilot))} seed ({','.join(map(str, pilot))}): a plan needs the spread "
                        "of at least 2; give the pilot seeds with " + ("--seeds 0,1" if args.plan else "--pilot-seeds"))
    if args.plan:
        return Design(pilot=pilot, confirmation=None, max_seeds=cap)
    confirmation = list(grid.seeds) if args.seeds else None
    if confirmation is not None and set(confirmation) & set(pilot):
        raise SpecError(f"--seeds {args.seeds} overlaps the pilot seeds {','.join(map(str, pilot))}: the seeds "
                        "that planned must not decide; give confirmation seeds outside them (or leave --seeds out: "
                        "the seeds after the pilot's)")
    return Design(pilot=pilot, confirmation=confirmation, max_seeds=cap)


def cmd_audit(args) -> int:
    settings = Settings.parse(test=args.test, correction=args.correction, margins=args.margin)
    backend = backend_from_args(args)
    against = split_methods(args.against)
    labels = [label_of(t) for t in [args.method, *against]]
    # hard labels are the regime's reference (regime.py): run them too, or no noise claim can be checked
    reference = [] if REFERENCE in labels else [REFERENCE]
    args.methods = ",".join([args.method, *against, *reference])
    if args.preset is None and args.config is None:
        args.preset = AUDIT_PRESET
    grid, cells, ev, ex = grid_from_args(args)
    design = _design(args, grid)
    out = Path(args.out)
    to = Path(args.to) if args.to else out / "audit"
    about = f"Grid: {grid.name} ({grid.about or 'custom'}); noise {grid.noise}."
    # only the grid's own settings: a folder may hold other cells of the same methods (another noise, model, ...)
    cells_of = grid.cells()
    where = {"dataset": {c.dataset for c in cells_of}, "model": {c.model for c in cells_of},
             "noise": {c.noise for c in cells_of}}
    if design is not None and not args.plan:  # the seeds the pilot asks for, at each noise rate
        design = design.planned(ResultSet(out, where), labels, ev, settings)
        cells = design.confirmation_cells(grid)
    if args.dry_run:
        return _dry_run(grid, cells, ev, out, backend, args.retry_failed)
    ok = True
    if not args.no_run and cells:
        ok = _run_grid(args, backend, grid, cells, ev, ex, out).ok
    results = ResultSet(out, where)  # read after training: the checks below and the audit share its reads
    _check_found(results, ev, labels, reference, out, args.no_run)
    if design is None:
        path = write_audit(results, to, labels[0], labels[1:], eval_id=ev.eval_id, settings=settings,
                           select=ev.select, about=about + f" Seeds {grid.seeds}.", echo=True, seeds=grid.seeds)
    elif args.plan:
        path = write_plan(results, to, labels, design, grid, ev, settings, about=about)
    else:
        path = write_confirmed(results, to, labels, design, grid, ev, settings, about=about)
    print(path)
    return 0 if ok else 1


def _check_found(results, ev, labels, reference, out, no_run) -> None:
    """--no-run: some run of the compared methods must be there, or the audit would be empty."""
    if not no_run:
        return
    found = set(results.runs(eval_id=ev.eval_id).get("method_label", ()))
    wanted = list(dict.fromkeys([*labels, *reference]))
    if not found & set(wanted):
        raise SpecError(f"--no-run: no finished run of {', '.join(wanted)} under {out} (looked for run "
                        f"directories with DONE{'; found only ' + ', '.join(sorted(found)) if found else ''}); "
                        "give the --out of the grid that trained them, or drop --no-run to train them")
