"""PGD-20 at 2/255 and 1/255 with the old fixed step (2/255, the step of 8/255) against the budget-scaled step
(eps/4, the rule since issue 24), run by run, from the two evaluation records each run keeps:

    python docs/results/step_rule.py RESULTS_DIR NEW_EVAL_ID OLD_EVAL_ID_2 OLD_EVAL_ID_1 > step_rule.csv

NEW_EVAL_ID scored PGD-20 and AutoAttack at both budgets with the scaled step; OLD_EVAL_ID_2 scored PGD-20 at
2/255 and OLD_EVAL_ID_1 at 1/255 with the fixed one, on the same 100 images with the same seeds. One row per
run and budget: the two PGD-20 errors and AutoAttack's, from the records alone.
"""
from __future__ import annotations

import sys

import pandas as pd

from robustbench_ols.store.results import collect


def main(argv: list[str]) -> int:
    root, new, old2, old1 = argv
    keep = ["run_id", "method_label", "noise_rate", "seed"]
    fresh = collect(root, eval_id=new)
    rows = []
    for budget, old_id in ((2, old2), (1, old1)):
        old = collect(root, eval_id=old_id)
        col = f"pgd20_eps{budget}_err"
        if col not in old:
            continue
        old = old[old[col].notna()][["run_id", col]].rename(columns={col: "pgd20_step_2_255"})
        m = fresh[[*keep, col, f"aa_eps{budget}_err"]].rename(
            columns={col: "pgd20_step_eps_4", f"aa_eps{budget}_err": "aa"}).merge(old, on="run_id")
        rows.append(m.assign(budget=budget))
    out = pd.concat(rows, ignore_index=True)[[*keep, "budget", "pgd20_step_2_255", "pgd20_step_eps_4", "aa"]]
    out.sort_values(["budget", "method_label", "noise_rate", "seed"]).to_csv(sys.stdout, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
