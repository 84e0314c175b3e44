"""Hourly partitions: their keys, their UTC bounds, and the same hour on earlier days.

A problem with ``partitioning.granularity: hourly`` lands, checks and ingests its daily
sources one local hour at a time. The keys are Dagster's own
(``dg.HourlyPartitionsDefinition`` in the spec's timezone): ``YYYY-MM-DD-HH:MM`` in local
time, and for the second of two hours with the same wall time (when summer time ends) the
same followed by its UTC offset, ``2013-11-03-01:00-0500``. A local day has 23, 24 or 25
of them. Computed here without Dagster (the library stays free of the orchestrator); a
test holds them equal to Dagster's keys.
"""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from mlplatform.lib.features.tables import local_midnight

HOUR = timedelta(hours=1)
KEY_FORMAT = "%Y-%m-%d-%H:%M"  # Dagster's hourly partition key format
_KEY_LENGTH = len("2013-01-01-00:00")


def is_hour_key(partition: date | str | None) -> bool:
    """True for an hourly partition key (not a day, not a snapshot)."""
    return isinstance(partition, str) and len(partition) >= _KEY_LENGTH


def hour_key(start: datetime, timezone: str) -> str:
    """The key of the hour starting at ``start`` (aware, on the hour) in ``timezone``."""
    local = start.astimezone(ZoneInfo(timezone))
    key = local.strftime(KEY_FORMAT)
    # the repeated wall hour when summer time ends: Dagster appends the offset
    return key + local.strftime("%z") if local.fold else key


def hour_start(key: str, timezone: str) -> datetime:
    """The UTC start of the hour a key names.

    Raises:
        ValueError: ``key`` is not an hourly key (``YYYY-MM-DD-HH:MM[+-HHMM]``).
    """
    wall = datetime.strptime(key[:_KEY_LENGTH], KEY_FORMAT)
    zone = ZoneInfo(timezone)
    if len(key) > _KEY_LENGTH:  # a repeated wall hour, named by its offset
        aware = datetime.strptime(key, KEY_FORMAT + "%z")
        return aware.astimezone(UTC)
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def hour_bounds(key: str, timezone: str) -> tuple[datetime, datetime]:
    """Start (inclusive) and end (exclusive) of an hourly partition, in UTC."""
    start = hour_start(key, timezone)
    return start, start + HOUR


def day_of(key: str) -> date:
    """The local day an hourly key belongs to."""
    return date.fromisoformat(key[:10])


def hour_keys(day: date, timezone: str) -> list[str]:
    """Keys of every local hour of ``day``, in order (23 or 25 when the clocks change)."""
    start = local_midnight(day, timezone)
    end = local_midnight(day + timedelta(days=1), timezone)
    keys = []
    while start < end:
        keys.append(hour_key(start, timezone))
        start += HOUR
    return keys


def same_hour_before(key: str, timezone: str, days: int) -> list[tuple[date, str]]:
    """(day, key) of the same local hour on each of the ``days`` days before, newest first.

    A wall hour that a day lacks (the hour skipped when summer time starts) is left out;
    where the wall hour repeats, its first occurrence stands for it.
    """
    day, wall = day_of(key), key[11:_KEY_LENGTH]
    out = []
    for back in range(1, days + 1):
        earlier = day - timedelta(days=back)
        candidate = f"{earlier.isoformat()}-{wall}"
        if candidate in hour_keys(earlier, timezone):
            out.append((earlier, candidate))
    return out
