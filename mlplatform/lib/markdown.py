"""Markdown for metadata, reports and cards: one table writer for every page."""

from collections.abc import Callable
from typing import Any


def table(rows: list[dict[str, Any]], cell: Callable[[Any], str] = str) -> str:
    """A markdown table of records: the first record's keys as columns, ``_none_`` if empty.

    ``cell`` turns a value into text (default ``str``; a missing key is ``None``); pipes
    and newlines in the text are escaped so a value cannot break the table.
    """
    if not rows:
        return "_none_"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = (cell(row.get(c)).replace("|", "\\|").replace("\n", " ") for c in cols)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
