"""Flight-delay evaluation: derived slices and the behavioural cases the gates replay.

A case perturbs one holdout flight (its request fields and looked-up feature values) and
states how the prediction may move; the evaluation scores both through the serving path.
"""

from typing import Any

import pandas as pd

from mlplatform.lib.evaluation.metrics import BehaviouralCase
from mlplatform.lib.features.build import hour_band


def departure_band(frame: pd.DataFrame) -> pd.Series:
    """Scheduled local departure hour, banded: night, morning, afternoon, evening."""
    return hour_band(frame["dep_hour"])


SLICES = {"hour_band": departure_band}


def _number(value: Any, default: float) -> float:
    return default if value is None or pd.isna(value) else float(value)


def severe_weather(record: dict[str, Any]) -> dict[str, Any]:
    """The same flight in a storm: heavy rain, half a mile of visibility, 35 mph wind."""
    return {
        **record,
        "precip": max(_number(record.get("precip"), 0.0), 0.5),
        "visib": min(_number(record.get("visib"), 10.0), 0.5),
        "wind_speed": max(_number(record.get("wind_speed"), 0.0), 35.0),
    }


def renumbered(record: dict[str, Any]) -> dict[str, Any]:
    """The same flight under another flight number."""
    return {**record, "flight": int(record["flight"]) + 7000}


CASES = [
    BehaviouralCase(
        name="severe_weather_raises_risk",
        description="The same flight in severe weather must not get a lower delay risk.",
        perturb=severe_weather,
        expect="not_lower",
    ),
    BehaviouralCase(
        name="flight_number_invariance",
        description="Changing the flight number alone must not change the prediction.",
        perturb=renumbered,
        expect="same",
    ),
]
