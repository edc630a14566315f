"""The two stages of a planned audit on run records: `--plan` (plan.md, plan.csv: the confirmation seeds each
claim needs, from the pilot seeds, and what training them costs) and `--confirm` (audit.md, audit.csv: every
claim decided on its confirmation seeds alone). The statistics: plan.py and confirm.py; the sentences:
verdicts.py."""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from robustbench_ols.audit.comparison import Settings
from robustbench_ols.audit.confirm import confirm_table
from robustbench_ols.audit.plan import plan_rows, rate_key, seeds_per_rate
from robustbench_ols.audit.staged_text import confirmed_markdown, plan_lines, plan_markdown
from robustbench_ols.audit.tables import paired_table, pooled_table
from robustbench_ols.common.errors import SpecError
from robustbench_ols.executors.estimate import cell_seconds, duration
from robustbench_ols.methods import method_label
from robustbench_ols.store.claims import cell_state


@dataclass(frozen=True)
class Design:
    """Which seeds plan (the pilot) and which decide (the confirmation; None until planned), the cap on the
    confirmation seeds, and, once planned, the plan itself and the seeds each noise rate needs."""
    pilot: list
    confirmation: list | None
    max_seeds: int
    per_rate: dict | None = None
    table: pd.DataFrame | None = dataclasses.field(default=None, compare=False)  # the plan, once made

    def plan(self, results, labels, ev, settings: Settings) -> pd.DataFrame:
        """plan_rows over the pilot seeds' records; SpecError when a compared method has fewer than 2 of them."""
        records = results.runs(eval_id=ev.eval_id)
        pilot = records[records.seed.isin(self.pilot)] if len(records) else records
        have = pilot.groupby("method_label").seed.nunique().to_dict() if len(pilot) else {}
        short = [f"{m} ({have.get(m, 0)})" for m in labels if have.get(m, 0) < 2]
        if short:
            raise SpecError(f"no pilot to plan from: the pilot seeds {','.join(map(str, self.pilot))} need at least "
                            f"2 finished runs of each compared method under {results}, scored with {ev.eval_id}; "
                            f"short: {', '.join(short)}. Train them first: the same command with --plan instead of "
                            "--confirm (or --pilot-seeds to name the seeds that were run)")
        df = pilot[pilot.method_label.isin(labels)]
        kw = dict(settings=settings, records=pilot, select=ev.select, exploratory=False)
        return plan_rows(paired_table(df, labels[0], labels[1:], **kw), pooled_table(df, labels[0], labels[1:], **kw),
                         settings, self.max_seeds)

    def planned(self, results, labels, ev, settings: Settings, plan: pd.DataFrame | None = None) -> "Design":
        """This design with its plan (`table`; `plan`: the plan, if made already), the seeds it needs per noise
        rate and, unless given, the confirmation seeds: the ones after the pilot's, as many as the most
        demanding rate needs. The plan reads the pilot seeds only, which a confirmation never trains, so it
        holds after the confirmation's cells are trained."""
        plan = self.plan(results, labels, ev, settings) if plan is None else plan
        need = seeds_per_rate(plan)
        seeds = self.confirmation
        if seeds is None:
            start = max(self.pilot) + 1
            seeds = list(range(start, start + max(need.values(), default=0)))
        return dataclasses.replace(self, confirmation=seeds, per_rate=need, table=plan)

    def confirmation_cells(self, grid) -> list:
        """The grid's cells at the confirmation seeds, at each noise rate only as many seeds as it needs."""
        cells = dataclasses.replace(grid, seeds=list(self.confirmation)).cells()
        rank = {s: i for i, s in enumerate(self.confirmation)}
        need = self.per_rate or {}
        return [c for c in cells if rank[c.seed] < need.get(_rate(c), 0)]


def _rate(cell) -> float | None:
    """A cell's noise rate as the records give it (none for human labels), as a key of Design.per_rate."""
    return None if cell.noise_spec.named else rate_key(cell.noise_spec.rate)


def write_plan(results, to, labels, design: Design, grid, ev, settings: Settings, about: str = "") -> Path:
    """plan.md and plan.csv in `to`; the summary and the cost printed."""
    plan = design.plan(results, labels, ev, settings)
    planned = design.planned(results, labels, ev, settings, plan)
    cost = _cost(planned, grid, results.root, ev)
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    plan.to_csv(to / "plan.csv", index=False)
    lines = plan_lines(plan, labels[0], planned, cost)
    (to / "plan.md").write_text(plan_markdown(plan, labels, planned, settings, cost, about, lines))
    print("\n".join(lines))
    return to / "plan.md"


def _cost(design: Design, grid, out: Path, ev) -> dict:
    """The confirmation cells: how many, how many still to train, and their estimated seconds."""
    cells = design.confirmation_cells(grid)
    todo = [c for c in cells if cell_state(out, c, ev) not in ("done", "needs-eval")]
    seconds = cell_seconds(grid, grid.cells() + cells, out, ev)  # the pilot's finished cells measure the cost
    known = [seconds[c.run_id][0] for c in todo if seconds[c.run_id][0] is not None]
    by_method = dict(Counter(method_label(c.method, c.options) for c in todo))
    return dict(cells=len(cells), todo=len(todo), seconds=sum(known), unknown=len(todo) - len(known),
                by_method=by_method, text=duration(sum(known)) if known else "")


def write_confirmed(results, to, labels, design: Design, grid, ev, settings: Settings, about: str = "") -> Path:
    """audit.md and audit.csv in `to`: the confirmatory audit; its one-screen summary printed."""
    plan = design.plan(results, labels, ev, settings) if design.table is None else design.table
    records = results.runs(eval_id=ev.eval_id)
    df = records[records.method_label.isin(labels)]
    table = confirm_table(df, records, labels[0], labels[1:], plan, design.pilot, design.confirmation, settings,
                          design.max_seeds, select=ev.select)
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    table.to_csv(to / "audit.csv", index=False)
    text, summary = confirmed_markdown(table, labels, design, settings, about, str(results))
    (to / "audit.md").write_text(text)
    print("\n".join(summary))
    return to / "audit.md"


