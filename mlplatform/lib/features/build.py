"""Feature tables: what a problem declares, and the shared pieces to compute them.

A problem's ``feature_tables.py`` lists its ``FeatureTable``s. Each is computed one day at a
time from the validated tables of that day and a trailing window, and stored as one
Parquet file per day, which a Feast ``FileSource`` reads. Every table carries its
``event_timestamp`` (when the values became known) and a copy of it as ``<name>_ts``
(epoch seconds), so the timestamps Feast picked can be audited in the training set.
"""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import pandas as pd

from mlplatform.errors import PlatformError
from mlplatform.lib.features.tables import (
    EVENT_TS,
    GLOBAL_KEY,
    GLOBAL_VALUE,
    FeatureTable,
    local_midnight,
)
from mlplatform.lib.names import features_table
from mlplatform.lib.storage import DataLake
from mlplatform.spec import TargetSpec

if TYPE_CHECKING:  # problems use this module; it only calls what a problem passes in
    from mlplatform.problems import Problem


class MissingInputError(PlatformError, FileNotFoundError):
    """A feature table's own day of a validated source is not there."""


@dataclass(frozen=True)
class FeatureInputs:
    """What a builder may read for one day: typed daily tables over the window, references."""

    day: date
    timezone: str
    target: TargetSpec
    daily: dict[str, pd.DataFrame]
    reference: dict[str, pd.DataFrame]
    events: dict[str, pd.DataFrame] = field(default_factory=dict)
    hours: list[pd.Timestamp] = field(default_factory=list)

    def day_start(self, offset_days: int = 0) -> pd.Timestamp:
        """Local midnight starting ``day + offset_days``, in UTC."""
        return pd.Timestamp(local_midnight(self.day + timedelta(days=offset_days), self.timezone))


def day_hours(day: date, timezone: str) -> list[pd.Timestamp]:
    """The UTC starts of every hour of a local day (23 or 25 when the clocks change)."""
    start, end = local_midnight(day, timezone), local_midnight(day + timedelta(days=1), timezone)
    return list(pd.date_range(start, end, freq="h", inclusive="left", unit="us"))


def window(day: date, days: int) -> list[date]:
    """``day`` and the ``days`` before it, oldest first."""
    return [day - timedelta(days=back) for back in range(days, -1, -1)]


def label(frame: pd.DataFrame, target: TargetSpec) -> pd.Series:
    """The target as floats, NaN where the outcome is not (yet) known.

    0/1 for a comparison (``task: binary``), the outcome's own value for ``regression``.
    """
    values = pd.to_numeric(frame[target.column], errors="coerce").astype(float)
    if target.operator is None or target.value is None:
        return values
    ops = {
        ">": values.gt,
        ">=": values.ge,
        "<": values.lt,
        "<=": values.le,
        "==": values.eq,
    }
    return ops[target.operator](target.value).astype(float).where(values.notna())


def trailing_rates(
    frame: pd.DataFrame,
    key: str,
    day_column: str,
    target: pd.Series,
    day: date,
    windows: list[int],
    names: tuple[str, str],
) -> pd.DataFrame:
    """Per ``key``: mean of ``target`` and count of its known values over each trailing window.

    A rate for 0/1 values (the share of positive labels), a trailing mean for any number
    (e.g. a city's mean temperature over the last 7 days). ``names`` are the column name
    patterns of the mean and the count, with ``{w}`` for the window length, e.g.
    ``("carrier_delay_rate_{w}d", "carrier_flights_{w}d")``.

    ``frame`` holds rows of ``day`` and earlier days; a window of ``w`` days covers
    ``day - w + 1`` through ``day``. Rows with an unknown (NaN) value are ignored.

    Returns:
        One row per key: ``key``, then per window the mean (float) and the count (int64).
    """
    data = pd.DataFrame({key: frame[key], "day": frame[day_column], "y": target}).dropna()
    out: pd.DataFrame | None = None
    for w in windows:
        recent = data[data["day"] > day - timedelta(days=w)]
        grouped = recent.groupby(key)["y"].agg(["mean", "count"])
        grouped.columns = [names[0].format(w=w), names[1].format(w=w)]
        out = grouped if out is None else out.join(grouped, how="outer")
    assert out is not None, "at least one window"
    counts = [names[1].format(w=w) for w in windows]
    out[counts] = out[counts].fillna(0).astype("int64")
    return out.reset_index()


def utc(value: "str | datetime | pd.Timestamp") -> datetime:
    """An instant as a UTC ``datetime``: ISO text, a ``datetime`` or a ``pd.Timestamp``.

    A value without an offset is read as UTC (the platform stores UTC); one with an offset is
    converted. Raises ``ValueError`` for text that is not ISO 8601.
    """
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    stamp = value.to_pydatetime() if isinstance(value, pd.Timestamp) else value
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


# Hours of the (local) day by band, [start, end): the usual slices of a time-of-day effect.
DAY_BANDS = {"night": (0, 6), "morning": (6, 12), "afternoon": (12, 18), "evening": (18, 24)}


def hour_band(hours: pd.Series, bands: "dict[str, tuple[int, int]] | None" = None) -> pd.Series:
    """Each hour (0-23, or 0-167 for an hour of the week) named by the band it falls in.

    ``bands``: name -> ``[start, end)`` hours, ``DAY_BANDS`` by default; an hour in no band
    (or NaN) is ``"unknown"``. Returns an object Series with the index of ``hours``.
    """
    values = pd.to_numeric(hours, errors="coerce").astype(float)
    band = pd.Series("unknown", index=hours.index, dtype=object)
    for name, (start, end) in (bands or DAY_BANDS).items():
        band[(values >= start) & (values < end)] = name
    return band


def with_timestamps(table: FeatureTable, frame: pd.DataFrame) -> pd.DataFrame:
    """Add the ``<name>_ts`` audit column and check keys are unique per event time.

    A keyless table gets its constant key column (``GLOBAL_KEY``) here too.

    Raises:
        ValueError: a declared key, ``event_timestamp`` or feature column is missing, or two
            rows share a key and event time.
    """
    declared = [*(() if table.keyless else table.join_keys), EVENT_TS, *table.features]
    missing = [c for c in declared if c not in frame.columns]
    if missing and not frame.empty:  # an hour with no rows may come back without columns
        raise ValueError(
            f"feature table {table.name}: its builder {table.builder}() returned no column(s) "
            f"{missing} that feature_tables.py declares (join keys, {EVENT_TS}, features=)"
        )
    # Microseconds: what Feast's DuckDB offline store reads reliably.
    stamps = pd.to_datetime(frame[EVENT_TS], utc=True).dt.as_unit("us")
    seconds = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    frame = frame.assign(**{EVENT_TS: stamps, table.ts_column: seconds.astype("int64")})
    if table.keyless:
        frame = frame.assign(**{GLOBAL_KEY: GLOBAL_VALUE})
    keys = [*table.join_keys, EVENT_TS]
    dup = frame.duplicated(keys)
    if dup.any():
        examples = frame.loc[dup, keys].head(3).to_dict("records")
        raise ValueError(
            f"feature table {table.name}: {int(dup.sum())} duplicate ({', '.join(keys)}) "
            f"rows, e.g. {examples}"
        )
    return frame.reset_index(drop=True)


def build_day(lake: DataLake, problem: "Problem", table: FeatureTable, day: date) -> pd.DataFrame:
    """Compute and store one day of ``table`` from that day and its trailing window only.

    Days of the window whose newest landing was rejected are left out by the lake (as if
    missing); ``DataLake.blocked_days`` names them.

    Raises:
        MissingInputError: the day's own validated table of a source is missing, or not
            readable because its newest landing was rejected (the message names the
            quarantine folder).
    """
    # the lake refuses a day whose newest landing was rejected: say which, and where it is
    rejected = [r for s in table.sources if (r := lake.blocking(problem.name, s, day))]
    if rejected:
        raise MissingInputError(f"{table.name} {day}: " + " ".join(r.message() for r in rejected))
    missing = [s for s in table.sources if not lake.table_path(problem.name, s, day).exists()]
    if missing:
        raise MissingInputError(
            f"{table.name} {day}: the validated {', '.join(missing)} of that day is missing; "
            "materialize the ingestion assets for the day first"
        )
    days = window(day, table.trailing_days)
    tz = problem.spec.partitioning.timezone
    daily = {s: lake.read_days(problem.name, s, days) for s in table.sources}
    inputs = FeatureInputs(
        day=day,
        timezone=tz,
        target=problem.spec.target,
        daily=daily,
        reference={r: lake.read_table(problem.name, r, None) for r in table.reference},
        # a stream view offline: the events the validated days carry, every hour of the day
        events={table.stream: problem.stream_events(table.stream, daily[table.stream])}
        if table.stream
        else {},
        hours=day_hours(day, tz) if table.stream else [],
    )
    frame = with_timestamps(table, problem.build_features(table, inputs))
    lake.write_table(problem.name, features_table(table), day, frame)
    return frame
