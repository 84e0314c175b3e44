"""Flight-delay features: the daily feature tables and the request → entity-row mapping.

Prediction time is the scheduled departure hour (``time_hour``). Every value is stamped
with the moment it became known, so Feast's point-in-time join can only pick values
from before the flight:
- weather observed during hour h is stamped h + 1 hour (reports close at the hour's end);
- delay statistics of day D are stamped at the end of D (local midnight);
- plane facts of day D are stamped at the start of D.
"""

from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from mlplatform.lib.features.build import FeatureInputs, label, trailing_rates, utc
from mlplatform.lib.features.tables import EVENT_TS

WINDOWS = [1, 7, 28]
WEATHER = ["temp", "humid", "wind_speed", "precip", "visib", "pressure"]
UNKNOWN_PLANE = "UNKNOWN"
_ZONE = "America/New_York"


def _local_day(flights: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(flights[["year", "month", "day"]]).dt.date


def route(origin: pd.Series, dest: pd.Series) -> pd.Series:
    """The route entity key, e.g. ``EWR-IAH``."""
    return origin.astype(str) + "-" + dest.astype(str)


def origin_weather(inputs: FeatureInputs) -> pd.DataFrame:
    """Hourly weather per origin airport, stamped when the hour's report went out.

    A stream view: offline from the validated day's observations, online from the pushed
    reports (``source.weather_events`` stamps both).
    """
    weather = inputs.events["weather"]
    return pd.DataFrame(
        {
            "origin": weather["origin"],
            EVENT_TS: weather["reported_at"],
            **{c: weather[c].astype(float) for c in WEATHER},
        }
    )


def _delays(inputs: FeatureInputs, key: str, keys: pd.Series) -> pd.DataFrame:
    flights = inputs.daily["flights"]
    frame = pd.DataFrame({key: keys, "local_day": _local_day(flights)})
    stats = trailing_rates(
        frame,
        key,
        "local_day",
        label(flights, inputs.target),
        inputs.day,
        WINDOWS,
        (f"{key}_delay_rate_{{w}}d", f"{key}_flights_{{w}}d"),
    )
    # a cancelled flight never arrives: no label (the rates skip it), but its share is a rate
    cancelled = pd.to_numeric(flights["dep_delay"], errors="coerce").isna().astype(float)
    shares = trailing_rates(
        frame,
        key,
        "local_day",
        cancelled,
        inputs.day,
        WINDOWS,
        (f"{key}_cancel_rate_{{w}}d", f"{key}_scheduled_{{w}}d"),
    )
    stats = stats.merge(shares, on=key, how="outer")
    return stats.assign(**{EVENT_TS: inputs.day_start(1)})


def carrier_delays(inputs: FeatureInputs) -> pd.DataFrame:
    """Each carrier's share of late arrivals over the last 1, 7 and 28 days."""
    return _delays(inputs, "carrier", inputs.daily["flights"]["carrier"])


def route_delays(inputs: FeatureInputs) -> pd.DataFrame:
    """Each route's share of late arrivals over the last 1, 7 and 28 days."""
    flights = inputs.daily["flights"]
    return _delays(inputs, "route", route(flights["origin"], flights["dest"]))


def origin_delays(inputs: FeatureInputs) -> pd.DataFrame:
    """Each origin airport's share of late arrivals over the last 1, 7 and 28 days."""
    return _delays(inputs, "origin", inputs.daily["flights"]["origin"])


def plane(inputs: FeatureInputs) -> pd.DataFrame:
    """Age, seats, engines and type of every registered aircraft, known from the day's start.

    Every aircraft of the registry, not only those that flew: the day's table is built in
    its evening, so the next day is served from it (TTL 2 days) and must hold its planes.
    """
    planes = inputs.reference["planes"]
    return pd.DataFrame(
        {
            "tailnum": planes["tailnum"],
            EVENT_TS: inputs.day_start(0),
            "plane_age": inputs.day.year - planes["year"].astype(float),
            "seats": planes["seats"].astype(float),
            "engines": planes["engines"].astype(float),
            "plane_type": planes["type"].astype(str),
        }
    )


def entity_row(request: Mapping[Any, Any], timezone: str) -> dict[str, Any]:
    """One flight request (or one historical flight) → its entity keys and request features.

    The single mapping from a flight to its feature lookup: training applies it to every
    historical row, serving to each request.
    """
    scheduled = utc(request["time_hour"])
    local = scheduled.astimezone(ZoneInfo(timezone))
    tailnum = request.get("tailnum")
    origin, dest = str(request["origin"]), str(request["dest"])
    return {
        EVENT_TS: scheduled,
        "origin": origin,
        "carrier": str(request["carrier"]),
        "route": f"{origin}-{dest}",
        "tailnum": UNKNOWN_PLANE if tailnum is None or pd.isna(tailnum) else str(tailnum),
        "month": float(local.month),
        "day_of_week": float(local.weekday()),
        "dep_hour": float(local.hour),
        "dest": dest,
        "distance": float(request["distance"]),
        "days_to_holiday": days_to_holiday(scheduled, timezone),
    }


# -- real-time operational features (stream views) ------------------------------------------
OPS_WINDOW = timedelta(hours=3)
LATE_MINUTES = 15.0
_FLIGHT = ["carrier", "flight", "origin", "time_hour"]


def _status_at(events: pd.DataFrame, t: pd.Timestamp) -> pd.DataFrame:
    """Each flight scheduled before ``t`` as known strictly before ``t``: departed or not."""
    known = events[events["status_at"] < t]
    scheduled = known[known["status"] == "scheduled"].drop_duplicates(_FLIGHT, keep="last")
    departed = known[known["status"] == "departed"].drop_duplicates(_FLIGHT, keep="last")
    out = scheduled.drop(columns=["dep_delay"]).merge(
        departed[[*_FLIGHT, "dep_delay"]], on=_FLIGHT, how="left"
    )
    return out.assign(left=out["dep_delay"].notna())


def operational(events: pd.DataFrame, hours: list[pd.Timestamp], key: str) -> pd.DataFrame:
    """Per ``key`` and prediction hour t: how its flights scheduled in [t-3h, t) are going.

    The one computation for both paths: offline over the events derived from validated
    days (``source.stream_events``), online over the events pushed so far. Only events
    known strictly before t count, and only flights scheduled before t, so a flight's own
    departure is never a feature of itself.

    Returns:
        Columns ``key``, ``event_timestamp`` (t, UTC), ``{key}_ops_scheduled`` (int),
        ``{key}_ops_dep_delay`` (mean departure delay of those that left, minutes),
        ``{key}_ops_late_share`` (share of those that left more than 15 min late),
        ``{key}_ops_not_gone_share`` (share not yet departed); for ``origin`` also
        ``origin_sched_hour`` and ``origin_sched_day`` (departures scheduled at the origin
        in t's hour and local day). One row per key with a flight in the window.
    """
    rows = []
    for t in hours:
        status = _status_at(events, t)
        window = status[(status["time_hour"] >= t - OPS_WINDOW) & (status["time_hour"] < t)]
        if window.empty:
            continue
        left = window[window["left"]]
        grouped = window.groupby(key).agg(scheduled=("left", "size"), left=("left", "sum"))
        delays = left.groupby(key)["dep_delay"].agg(["mean", lambda d: (d > LATE_MINUTES).mean()])
        delays.columns = ["dep_delay", "late_share"]
        stats = grouped.join(delays, how="left")
        frame = pd.DataFrame(
            {
                f"{key}_ops_scheduled": stats["scheduled"].astype("int64"),
                f"{key}_ops_dep_delay": stats["dep_delay"].astype(float),
                f"{key}_ops_late_share": stats["late_share"].astype(float),
                f"{key}_ops_not_gone_share": 1.0 - stats["left"] / stats["scheduled"],
            }
        )
        if key == "origin":
            local = status["time_hour"].dt.tz_convert(_ZONE)
            today = status[local.dt.date == t.tz_convert(_ZONE).date()]
            counts = today.groupby("origin").size()
            hourly = today[today["time_hour"] == t].groupby("origin").size()
            frame = frame.reindex(frame.index.union(counts.index))
            frame["origin_ops_scheduled"] = frame["origin_ops_scheduled"].fillna(0).astype("int64")
            frame["origin_sched_day"] = counts.reindex(frame.index).fillna(0).astype("int64")
            frame["origin_sched_hour"] = hourly.reindex(frame.index).fillna(0).astype("int64")
        rows.append(frame.rename_axis(key).reset_index().assign(**{EVENT_TS: t}))
    if not rows:
        return pd.DataFrame(columns=[key, EVENT_TS])
    return pd.concat(rows, ignore_index=True)


def previous_departure(events: pd.DataFrame, hours: list[pd.Timestamp]) -> pd.DataFrame:
    """Per aircraft and prediction hour t: its last flight of the local day scheduled before t.

    Returns:
        Columns ``tailnum``, ``event_timestamp`` (t), ``prev_dep_delay`` (minutes, NaN if it
        has not left), ``prev_overdue`` (1.0 when its scheduled minute passed before t and it
        had not left; cancelled flights stay overdue).
    """
    rows = []
    for t in hours:
        status = _status_at(events[events["tailnum"].notna()], t)
        local_day = status["time_hour"].dt.tz_convert(_ZONE).dt.date
        earlier = status[(local_day == t.tz_convert(_ZONE).date()) & (status["time_hour"] < t)]
        if earlier.empty:
            continue
        last = earlier.sort_values("sched_at").groupby("tailnum").tail(1)
        rows.append(
            pd.DataFrame(
                {
                    "tailnum": last["tailnum"].astype(str),
                    EVENT_TS: t,
                    "prev_dep_delay": last["dep_delay"].astype(float),
                    "prev_overdue": ((~last["left"]) & (last["sched_at"] < t)).astype(float),
                }
            )
        )
    if not rows:
        return pd.DataFrame(columns=["tailnum", EVENT_TS, "prev_dep_delay", "prev_overdue"])
    return pd.concat(rows, ignore_index=True)


def origin_ops(inputs: FeatureInputs) -> pd.DataFrame:
    """Each origin's last three hours of departures, and its schedule density, every hour."""
    return operational(inputs.events["flights"], inputs.hours, "origin")


def carrier_ops(inputs: FeatureInputs) -> pd.DataFrame:
    """Each carrier's last three hours of departures from New York, every hour."""
    return operational(inputs.events["flights"], inputs.hours, "carrier")


def plane_ops(inputs: FeatureInputs) -> pd.DataFrame:
    """Each aircraft's previous departure of the day, every hour."""
    return previous_departure(inputs.events["flights"], inputs.hours)


def days_to_holiday(when: datetime, timezone: str) -> float:
    """Days from the local date of ``when`` to the nearest US federal holiday (either side).

    The holidays are pandas' ``USFederalHolidayCalendar``.
    """
    local = pd.Timestamp(when).tz_convert(timezone).tz_localize(None).normalize()
    near = _holidays(local.year)
    return float(min(abs((h - local).days) for h in near))


@cache
def _holidays(year: int) -> list[pd.Timestamp]:
    from pandas.tseries.holiday import USFederalHolidayCalendar

    days = USFederalHolidayCalendar().holidays(datetime(year - 1, 7, 1), datetime(year + 1, 6, 30))
    return list(days)
