"""Re-decide a published audit whose run records were not kept (the `quick` grid's), from its own CSV files:

    python docs/results/redecide_audit.py docs/results/quick/claims ols
    python docs/results/redecide_audit.py docs/results/audit-example PriorSmoothing

Every comparison's statistics (n, mean, spread, p-values) stay as the audit computed them from the runs; what
the current code decides from them is computed again: the family of each comparison, the corrected p-values,
the outcome and the seeds an inconclusive one would need (issue 24 made that power exact). audit.csv,
audit_pooled.csv and audit.md's verdict, statistics and outcome sections are rewritten; the rest of audit.md
(the runs read, the regime, the figures) was computed from the runs and is kept as it is.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from robustbench_ols.audit.comparison import Settings
from robustbench_ols.audit.tables import _family, decide
from robustbench_ols.audit.write import outcome_section, statistics_section, verdict_section

SECTIONS = ("## Verdict", "## How a comparison is decided", "## Regime", "## Outcomes", "## Figures")


def redecide(table: pd.DataFrame, family: list[str], s: Settings) -> pd.DataFrame:
    t = table.drop(columns=[c for c in ("family", "budget", "p_adj", "p_equiv_adj", "family_size", "test_outcome",
                                        "outcome", "seeds_needed", "seeds_for") if c in table])
    t = t.assign(**pd.DataFrame([_family(m) for m in t.metric], index=t.index))
    t["masking"] = t["masking"].astype(object).fillna("") if "masking" in t else ""
    t["reason"] = t["reason"].astype(object).fillna("")
    return decide(t, s, family)


def main(argv: list[str]) -> int:
    folder, method = Path(argv[0]), argv[1]
    s = Settings()
    md = (folder / "audit.md").read_text()
    if f"Statistics: {s.describe()};" not in md:
        raise SystemExit(f"{folder}/audit.md was not made with the default settings ({s.describe()})")
    table = redecide(pd.read_csv(folder / "audit.csv"), ["family"], s)
    pooled = redecide(pd.read_csv(folder / "audit_pooled.csv"), ["family", "scope"], s)
    table.to_csv(folder / "audit.csv", index=False)
    pooled.to_csv(folder / "audit_pooled.csv", index=False)
    parts = {name: md.index(name + "\n") for name in SECTIONS}
    new = {"## Verdict": verdict_section(table, pooled, method, s),
           "## How a comparison is decided": statistics_section(s), "## Outcomes": outcome_section(table, pooled)}
    out = md[:parts["## Verdict"]]
    for name, nxt in zip(SECTIONS, SECTIONS[1:]):
        out += "\n".join(new[name]) + "\n" if name in new else md[parts[name]:parts[nxt]]
    out += md[parts["## Figures"]:]
    (folder / "audit.md").write_text(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
