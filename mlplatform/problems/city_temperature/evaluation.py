"""City-temperature evaluation: derived slices and the behavioural case the gates replay.

A case perturbs one holdout forecast (its request fields and looked-up feature values)
and states how the prediction may move; the evaluation scores both through the serving
path.
"""

from typing import Any

import pandas as pd

from mlplatform.lib.evaluation.metrics import BehaviouralCase

# the local target hour, banded where the daily cycle turns: the night's cooling, the
# morning's rise, the afternoon's peak, the evening's fall
HOUR_BANDS = {"night": (0, 6), "morning": (6, 12), "afternoon": (12, 18), "evening": (18, 24)}
OBSERVED = [
    "temp_1h",
    "temp_2h",
    "temp_4h",
    "temp_18h",
    "temp_42h",
    "temp_mean_24h",
    "temp_min_24h",
    "temp_max_24h",
    "temp_mean_1d",
    "temp_mean_7d",
]
WARMER_F = 5.0


def hour_band(frame: pd.DataFrame) -> pd.Series:
    """Local target hour, banded: night, morning, afternoon, evening."""
    hours = frame["target_hour"].astype(float)
    band = pd.Series("unknown", index=frame.index, dtype=object)
    for name, (start, end) in HOUR_BANDS.items():
        band[(hours >= start) & (hours < end)] = name
    return band


SLICES = {"hour_band": hour_band}


def warmer(record: dict[str, Any]) -> dict[str, Any]:
    """The same forecast after two days 5 F warmer: every observed temperature + 5 F."""
    return {
        **record,
        **{
            c: record[c] + WARMER_F
            for c in OBSERVED
            if record.get(c) is not None and not pd.isna(record[c])
        },
    }


CASES = [
    BehaviouralCase(
        name="warmer_yesterday_not_colder",
        description="A city 5 F warmer over the last two days must not get a colder forecast.",
        perturb=warmer,
        expect="not_lower",
    ),
]
