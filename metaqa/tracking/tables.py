"""Metric tables for the terminal and for Markdown files."""
from __future__ import annotations

from typing import Sequence

HEADLINE = ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "total")


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    def cell(v) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def metrics_table(overall: dict, per_theme: dict[str, dict]) -> str:
    """One row per theme plus an 'all' row, SQuAD v2 headline columns present in the metrics."""
    columns = ["theme"] + [c for c in HEADLINE if c in overall]
    rows = [{"theme": t, **m} for t, m in sorted(per_theme.items())]
    rows.append({"theme": "**all**", **overall})
    return markdown_table(rows, columns)
