"""Landing a problem's exports: one file per source per day, plus reference snapshots."""

from collections.abc import Iterator
from datetime import date, timedelta

from mlplatform.lib.storage import DataLake
from mlplatform.problems import Problem


def days(start: date, end: date) -> Iterator[date]:
    """Every day from ``start`` to ``end``, both included."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    for offset in range((end - start).days + 1):
        yield start + timedelta(days=offset)


def land(lake: DataLake, problem: Problem, start: date, end: date) -> dict[str, int]:
    """Write the daily exports of ``start``..``end`` and the reference snapshots.

    Returns the number of rows landed per source. Landing a day again replaces its files.
    """
    spec = problem.spec
    first, last = spec.partitioning.start, spec.partitioning.end - timedelta(days=1)
    if start < first or end > last:
        raise ValueError(f"{problem.name} has data for {first}..{last}, not {start}..{end}")
    rows: dict[str, int] = {}
    for source, source_spec in spec.sources.items():
        if source_spec.kind == "reference":
            frame = problem.export_reference(source)
            lake.land(problem.name, source, None, frame, source_spec.format)
            rows[source] = len(frame)
            continue
        rows[source] = 0
        for day in days(start, end):
            frame = problem.export_day(source, day)
            lake.land(problem.name, source, day, frame, source_spec.format)
            rows[source] += len(frame)
    return rows
