"""Partitions shared by every stage of a problem."""

from functools import cache

import dagster as dg

from mlplatform.spec import ProblemSpec


@cache
def _daily(start: str, end: str, timezone: str) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=start, end_date=end, timezone=timezone)


def daily_partitions(spec: ProblemSpec) -> dg.DailyPartitionsDefinition:
    """One partition per local calendar day of the problem's data."""
    p = spec.partitioning
    return _daily(p.start.isoformat(), p.end.isoformat(), p.timezone)
