"""Markdown tables, for the report, the regime account and the audit."""


def markdown_table(header, rows) -> str:
    """A Markdown table: a header row, the separator, one row per list of cells."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"
