"""The city-temperature exports, replayed from the ``vega_datasets`` package.

The package bundles ``seattle-temps.csv`` and ``sf-temps.csv``: one temperature (°F) per
hour of 2010 for each city, read locally (no network). They are NOAA's smoothed hourly
normals, written as wall-clock times without a zone; NOAA states its normals in local
standard time, so they are read as Pacific Standard Time (UTC-8) all year: every stamp is
then one instant, and the only hour missing is 2010-03-14 03:00 (PST) in both files.

Two exports, each partitioned by the local calendar day (America/Los_Angeles) of its
timestamp:
- ``observations``: every hourly observation of the day, ``city, time, temp``;
- ``forecasts``: the day's forecast requests, one per city and hour, with their outcome:
  ``city, issued_at, target_time, temp`` where ``temp`` is the temperature observed at
  ``target_time = issued_at + HORIZON`` (empty when that hour was not observed). Like
  the flights' arrivals, a day's outcomes come with its export (the export of day D is
  closed once D's last target hour, 06:00 on D+1, has been observed).
"""

from datetime import date, timedelta
from functools import cache
from importlib.resources import files

import pandas as pd

CITIES = {"seattle": "seattle-temps.csv", "san_francisco": "sf-temps.csv"}
RECORDED_IN = "Etc/GMT+8"  # POSIX sign: UTC-8, Pacific Standard Time without daylight saving
ZONE = "America/Los_Angeles"  # the partitions' days
HORIZON = timedelta(hours=6)  # how far ahead a forecast looks (spec: target)
REPORT_MINUTES = 55  # an hour's observation is reported at :55, like the airports' METARs


@cache
def hourly() -> pd.DataFrame:
    """Both cities' hourly temperatures: ``city`` (str), ``time`` (UTC), ``temp`` (°F).

    Read from the files the package bundles (``vega_datasets/_data``), sorted by city
    and time.
    """
    frames = []
    for city, name in CITIES.items():
        with (files("vega_datasets") / "_data" / name).open("rb") as fh:
            raw = pd.read_csv(fh)
        local = pd.to_datetime(raw["date"], format="mixed")
        frames.append(
            pd.DataFrame(
                {
                    "city": city,
                    "time": local.dt.tz_localize(RECORDED_IN).dt.tz_convert("UTC"),
                    "temp": raw["temp"].astype(float),
                }
            )
        )
    out = pd.concat(frames, ignore_index=True).sort_values(["city", "time"])
    out["time"] = out["time"].dt.as_unit("us")
    return out.reset_index(drop=True)


def _local_day(stamps: pd.Series) -> pd.Series:
    return stamps.dt.tz_convert(ZONE).dt.date


@cache
def _forecasts() -> pd.DataFrame:
    """One forecast request per city and observed hour, with its outcome (NaN if unseen)."""
    obs = hourly()
    hours = pd.date_range(obs["time"].min(), obs["time"].max(), freq="h", unit="us")
    grid = pd.MultiIndex.from_product([list(CITIES), hours], names=["city", "issued_at"])
    out = grid.to_frame(index=False)
    out["target_time"] = out["issued_at"] + HORIZON
    seen = obs.rename(columns={"time": "target_time"})
    return out.merge(seen, on=["city", "target_time"], how="left")


def export_day(source: str, day: date) -> pd.DataFrame:
    """The rows of ``source`` whose timestamp falls on ``day`` (local time); may be empty.

    Raises:
        KeyError: an unknown source (the message lists the known ones).
    """
    if source == "observations":
        table, column = hourly(), "time"
    elif source == "forecasts":
        table, column = _forecasts(), "issued_at"
    else:
        raise KeyError(
            f"city_temperature has no source {source!r} (known: forecasts, observations)"
        )
    return table[_local_day(table[column]) == day].reset_index(drop=True)


def export_reference(source: str) -> pd.DataFrame:
    """No reference source: the problem has none.

    Raises:
        KeyError: always (the spec declares no reference source).
    """
    raise KeyError(f"city_temperature has no reference source {source!r}")


def observation_events(observations: pd.DataFrame) -> pd.DataFrame:
    """Each hourly observation as reported: its columns plus ``reported_at`` (UTC).

    ``reported_at`` is the observation hour plus ``REPORT_MINUTES``; times as microsecond
    UTC timestamps.
    """
    hour = pd.to_datetime(observations["time"], utc=True)
    out = pd.DataFrame(
        {
            "city": observations["city"].astype(str),
            "time": hour.dt.as_unit("us"),
            "temp": pd.to_numeric(observations["temp"], errors="coerce").astype(float),
        }
    )
    out["reported_at"] = (hour + pd.Timedelta(minutes=REPORT_MINUTES)).dt.as_unit("us")
    return out.reset_index(drop=True)


def stream_events(source: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The events of the stream source carried by days of its export (or validated table).

    Raises:
        KeyError: ``source`` is not the problem's stream (``observations``).
    """
    if source != "observations":
        raise KeyError(f"city_temperature has no stream source {source!r} (streams: observations)")
    return observation_events(frame)


def export_events(source: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The feed: observations reported in ``[start, end)`` (UTC)."""
    first = (start - pd.Timedelta(days=1)).tz_convert(ZONE).date()
    last = end.tz_convert(ZONE).date()
    local = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    frame = pd.concat([export_day(source, d) for d in local], ignore_index=True)
    events = stream_events(source, frame)
    at = events["reported_at"]
    return events[(at >= start) & (at < end)].reset_index(drop=True)
