"""Partitions shared by every stage of a problem."""

from functools import cache

import dagster as dg

from mlplatform.spec import ProblemSpec


@cache
def _daily(start: str, end: str, timezone: str) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=start, end_date=end, timezone=timezone)


@cache
def _hourly(start: str, end: str, timezone: str) -> dg.HourlyPartitionsDefinition:
    return dg.HourlyPartitionsDefinition(
        start_date=f"{start}-00:00", end_date=f"{end}-00:00", timezone=timezone
    )


def daily_partitions(spec: ProblemSpec) -> dg.DailyPartitionsDefinition:
    """One partition per local calendar day of the problem's data."""
    p = spec.partitioning
    return _daily(p.start.isoformat(), p.end.isoformat(), p.timezone)


def hourly_partitions(spec: ProblemSpec) -> dg.HourlyPartitionsDefinition:
    """One partition per local hour of the problem's data (23 or 25 on clock-change days)."""
    p = spec.partitioning
    return _hourly(p.start.isoformat(), p.end.isoformat(), p.timezone)


def is_hourly(spec: ProblemSpec) -> bool:
    """True when the spec lands and ingests its daily sources hour by hour."""
    return spec.partitioning.granularity == "hourly"


def landing_partitions(
    spec: ProblemSpec,
) -> dg.DailyPartitionsDefinition | dg.HourlyPartitionsDefinition:
    """Partitions of the raw (landed, checked) batches: the spec's granularity."""
    return hourly_partitions(spec) if is_hourly(spec) else daily_partitions(spec)
