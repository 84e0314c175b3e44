"""What a problem declares about its feature tables (import-light: read at definitions load)."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

EVENT_TS = "event_timestamp"


def local_midnight(day: date, timezone: str) -> datetime:
    """Midnight at the start of ``day`` in ``timezone``, in UTC: where partitions begin."""
    return datetime.combine(day, time(), tzinfo=ZoneInfo(timezone)).astimezone(UTC)


@dataclass(frozen=True)
class FeatureTable:
    """One feature view's data: the entity it describes and how one day of it is built.

    ``builder`` names a function in the problem's ``features`` module taking
    ``FeatureInputs`` and returning the day's rows: the join key, ``event_timestamp``
    (when the values became known) and the feature columns.

    A table with a ``stream`` (a stream source of the spec) is a stream view: its builder
    reads ``FeatureInputs.events[stream]`` and ``hours``, so the same function computes the
    evening's offline rows (every hour of the day, from the validated days) and the rows
    pushed online each hour (from the events pushed so far).
    """

    name: str
    description: str
    join_key: str
    builder: str
    ttl: timedelta
    sources: tuple[str, ...]
    reference: tuple[str, ...] = ()
    trailing_days: int = 0
    stream: str | None = None

    @property
    def push_source(self) -> str:
        """Name of the Feast push source of a stream view."""
        return f"{self.name}_push"

    @property
    def ts_column(self) -> str:
        """Column holding each row's event time in epoch seconds, auditable after a join."""
        return f"{self.name}_ts"

    @property
    def view(self) -> str:
        """Name of the Feast feature view serving this table."""
        return f"{self.name}_fv"
