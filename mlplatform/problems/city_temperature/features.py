"""City-temperature features: the feature tables' builders and the request → entity row.

A forecast issued at hour t (UTC) is for the temperature at t + 6 h. Every value is
stamped with the moment it became known, so Feast's point-in-time join at t can only
pick values from before the forecast:
- an observation of hour h is reported at h:55 (``source.REPORT_MINUTES``), so at t the
  newest known is hour t - 1, never the target hour t + 6 nor any hour after t - 1;
- the ``city_recent`` row serving t is stamped t and built from reports before t only;
- daily means of day D are stamped at the end of D (local midnight).
"""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from mlplatform.lib.features.build import FeatureInputs
from mlplatform.lib.features.tables import EVENT_TS

HORIZON = timedelta(hours=6)
# hours before t of the single observations kept: the newest (1), its change over 1 and
# 3 hours (2, 4), the target hour one and two days before (24 - 6 = 18, 48 - 6 = 42)
LAGS = [1, 2, 4, 18, 42]
DAY_HOURS = 24  # the trailing window of the mean, minimum and maximum
MEAN_DAYS = [1, 7]


def _lookup(events: pd.DataFrame, grid: pd.DataFrame, lag: int) -> pd.Series:
    """Temperature observed ``lag`` hours before each grid row's t, if reported before t."""
    wanted = grid.assign(time=grid[EVENT_TS] - pd.Timedelta(hours=lag))
    found = wanted.merge(events, on=["city", "time"], how="left")
    known = found["reported_at"] < found[EVENT_TS]
    return found["temp"].where(known).astype(float)


def lagged(events: pd.DataFrame, hours: list[pd.Timestamp]) -> pd.DataFrame:
    """Per city and hour t: its observations known at t (reported strictly before t).

    The one computation for both paths: offline over the events of validated days
    (``source.stream_events``), online over the reports pushed so far.

    Args:
        events: columns city (str), time (observation hour, UTC), temp (°F), reported_at
            (UTC).
        hours: the hours t (UTC) to compute rows for.

    Returns:
        Columns city, event_timestamp (t), ``temp_{L}h`` for each of ``LAGS`` (the
        observation of hour t - L, °F, NaN when not known at t), and ``temp_mean_24h``,
        ``temp_min_24h``, ``temp_max_24h`` over the observations of hours t-24 .. t-1
        known at t (NaN when none). One row per city with any event and hour.
    """
    columns = ["city", EVENT_TS, *[f"temp_{lag}h" for lag in LAGS]]
    columns += ["temp_mean_24h", "temp_min_24h", "temp_max_24h"]
    if events.empty or not hours:
        return pd.DataFrame(columns=columns)
    events = events[["city", "time", "temp", "reported_at"]].assign(
        time=pd.to_datetime(events["time"], utc=True).dt.as_unit("us"),
        reported_at=pd.to_datetime(events["reported_at"], utc=True).dt.as_unit("us"),
        city=events["city"].astype(str),
    )
    stamps = pd.DatetimeIndex(hours).tz_convert("UTC").as_unit("us")
    grid = pd.MultiIndex.from_product(
        [sorted(events["city"].unique()), stamps], names=["city", EVENT_TS]
    ).to_frame(index=False)
    day = pd.concat([_lookup(events, grid, h).rename(h) for h in range(1, DAY_HOURS + 1)], axis=1)
    out = grid.assign(
        **{
            f"temp_{lag}h": day[lag] if lag <= DAY_HOURS else _lookup(events, grid, lag)
            for lag in LAGS
        },
        temp_mean_24h=day.mean(axis=1),
        temp_min_24h=day.min(axis=1),
        temp_max_24h=day.max(axis=1),
    )
    return out[columns]


def city_recent(inputs: FeatureInputs) -> pd.DataFrame:
    """Each city's recent temperatures, every hour (a stream view)."""
    return lagged(inputs.events["observations"], inputs.hours)


def city_daily(inputs: FeatureInputs) -> pd.DataFrame:
    """Each city's mean temperature over the last 1 and 7 days, known from the day's end.

    Returns:
        Columns city, event_timestamp (local midnight ending the day, UTC),
        ``temp_mean_1d``, ``temp_mean_7d`` (°F) and ``hours_7d`` (observations averaged).
    """
    obs = inputs.daily["observations"]
    local_day = pd.to_datetime(obs["time"], utc=True).dt.tz_convert(inputs.timezone).dt.date
    frame = pd.DataFrame({"city": obs["city"].astype(str), "day": local_day, "temp": obs["temp"]})
    out = None
    for days in MEAN_DAYS:
        recent = frame[frame["day"] > inputs.day - timedelta(days=days)]
        stats = recent.groupby("city")["temp"].agg(["mean", "count"])
        stats.columns = [f"temp_mean_{days}d", f"hours_{days}d"]
        out = stats if out is None else out.join(stats, how="outer")
    assert out is not None, "at least one window"
    out = out.drop(columns=["hours_1d"]).astype({"hours_7d": "int64"})
    return out.reset_index().assign(**{EVENT_TS: inputs.day_start(1)})


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    stamp = value.to_pydatetime() if isinstance(value, pd.Timestamp) else value
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def entity_row(request: Mapping[Any, Any], timezone: str) -> dict[str, Any]:
    """One forecast request (or one historical forecast) → its entity key and request features.

    The lookup time is the issue hour; the calendar features describe the target hour
    (issue + 6 h) in local time: ``target_hour`` (0-23) and ``day_of_year`` (1-366).
    """
    issued = _utc(request["issued_at"])
    target = (issued + HORIZON).astimezone(ZoneInfo(timezone))
    return {
        EVENT_TS: issued,
        "city": str(request["city"]),
        "target_hour": float(target.hour),
        "day_of_year": float(target.timetuple().tm_yday),
    }
