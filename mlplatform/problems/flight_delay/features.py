"""Flight-delay features: the daily feature tables and the request → entity-row mapping.

Prediction time is the scheduled departure hour (``time_hour``). Every value is stamped
with the moment it became known, so Feast's point-in-time join can only pick values
from before the flight:
- weather observed during hour h is stamped h + 1 hour (reports close at the hour's end);
- delay statistics of day D are stamped at the end of D (local midnight);
- plane facts of day D are stamped at the start of D.
"""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from mlplatform.lib.features import FeatureInputs, label, trailing_rates
from mlplatform.lib.tables import EVENT_TS

WINDOWS = [1, 7, 28]
WEATHER = ["temp", "humid", "wind_speed", "precip", "visib", "pressure"]
UNKNOWN_PLANE = "UNKNOWN"


def _local_day(flights: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(flights[["year", "month", "day"]]).dt.date


def route(origin: pd.Series, dest: pd.Series) -> pd.Series:
    """The route entity key, e.g. ``EWR-IAH``."""
    return origin.astype(str) + "-" + dest.astype(str)


def origin_weather(inputs: FeatureInputs) -> pd.DataFrame:
    """Hourly weather per origin airport, stamped when the hour's report is complete."""
    weather = inputs.daily["weather"]
    stamped = pd.to_datetime(weather["time_hour"], utc=True) + timedelta(hours=1)
    return pd.DataFrame(
        {
            "origin": weather["origin"],
            EVENT_TS: stamped,
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
    """Age, seats, engines and type of each aircraft flying that day, known from its start."""
    flying = inputs.daily["flights"]["tailnum"].dropna().unique()
    planes = inputs.reference["planes"]
    planes = planes[planes["tailnum"].isin(flying)]
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


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    stamp = value.to_pydatetime() if isinstance(value, pd.Timestamp) else value
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def entity_row(request: Mapping[Any, Any], timezone: str) -> dict[str, Any]:
    """One flight request (or one historical flight) → its entity keys and request features.

    The single mapping from a flight to its feature lookup: training applies it to every
    historical row, serving to each request.
    """
    scheduled = _utc(request["time_hour"])
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
    }
