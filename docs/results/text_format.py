"""The number and table formats the generated results sections share (build_readme.py, added_sections.py)."""
from __future__ import annotations

from robustbench_ols.common.markdown import markdown_table


def signed(v: float, digits: int) -> str:
    """+1.2, −0.4 (a true minus sign), 0.0 without a sign when it rounds to zero."""
    s = f"{v:.{digits}f}"
    if float(s) == 0:
        return f"{0:.{digits}f}"
    return s.replace("-", "−") if v < 0 else "+" + s


def table(header, rows) -> str:
    return markdown_table(header, rows).rstrip("\n")  # the report's tables, without their closing newline
