"""What a problem declares about its feature tables (import-light: read at definitions load)."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

EVENT_TS = "event_timestamp"
# Feature value types a table may declare, and what Feast stores them as
# (``lib.features.feast_repo``): float -> Float64, int -> Int64, string -> String, bool -> Bool.
DTYPES = ("float", "int", "string", "bool")
# A table with no join key (one value for every request, e.g. a market-wide figure) is keyed
# by this constant column: its files and every entity row carry GLOBAL_KEY = GLOBAL_VALUE.
# (Feast 0.67's own entity-less views, on its dummy entity, fail to materialize from the
# DuckDB offline store, "Column __dummy_id not found in table", and cannot be read online
# alone: entity_rows=[{}] raises. Measured on the pinned version.)
GLOBAL_KEY = "global_key"
GLOBAL_VALUE = "all"


def local_midnight(day: date, timezone: str) -> datetime:
    """Midnight at the start of ``day`` in ``timezone``, in UTC: where partitions begin."""
    return datetime.combine(day, time(), tzinfo=ZoneInfo(timezone)).astimezone(UTC)


@dataclass(frozen=True)
class FeatureTable:
    """One feature view's data: the entity it describes and how one day of it is built.

    ``builder`` names a function in the problem's ``features`` module taking
    ``FeatureInputs`` and returning the day's rows: the join key(s), ``event_timestamp``
    (when the values became known) and the feature columns.

    ``join_key``: one key column, several (a composite key, e.g. ``("origin", "dest")``), or
    None for a table with one row per event time for everyone (keyed by ``GLOBAL_KEY``). Each
    key is the join key of an entity of the spec. ``features``: each feature column and its
    type (one of ``DTYPES``), in the order Feast lists them; the Feast repository is
    generated from them (``Problem.feast_objects``).

    A table with a ``stream`` (a stream source of the spec) is a stream view: its builder
    reads ``FeatureInputs.events[stream]`` and ``hours``, so the same function computes the
    evening's offline rows (every hour of the day, from the validated days) and the rows
    pushed online each hour (from the events pushed so far).
    """

    name: str
    description: str
    join_key: str | tuple[str, ...] | None
    builder: str
    ttl: timedelta
    sources: tuple[str, ...]
    reference: tuple[str, ...] = ()
    trailing_days: int = 0
    stream: str | None = None
    features: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def keyless(self) -> bool:
        """The table has no join key: one value per event time, for every request."""
        return not self.join_key

    @property
    def join_keys(self) -> tuple[str, ...]:
        """The key columns of the table's rows (``(GLOBAL_KEY,)`` for a keyless table)."""
        if not self.join_key:
            return (GLOBAL_KEY,)
        return (self.join_key,) if isinstance(self.join_key, str) else tuple(self.join_key)

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
