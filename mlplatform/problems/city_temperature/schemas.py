# pyright: reportIncompatibleVariableOverride=false
# (a nested `Config` class is how pandera models take options)
"""Pandera schemas of the city-temperature sources, as the daily exports deliver them.

``coerce`` turns the exported text into types; ``strict`` rejects a column nobody
declared. Temperatures are °F; 2010's hourly normals of both cities lie within 37.5-75.9,
so the bounds (-40, 130) only refuse what cannot be a temperature there (a Kelvin value,
a sentinel such as -9999).
"""

from typing import Annotated

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

UtcTimestamp = Annotated[pd.DatetimeTZDtype, "ns", "UTC"]
CITIES = ["seattle", "san_francisco"]


class ObservationsSchema(pa.DataFrameModel):
    """One temperature observation per city and hour."""

    city: Series[str] = pa.Field(isin=CITIES)
    time: Series[UtcTimestamp]
    temp: Series[float] = pa.Field(ge=-40, le=130)

    class Config:  # noqa: D106 - pandera's options
        coerce = True
        strict = True


class ObservationReportSchema(ObservationsSchema):
    """One pushed observation (``source.observation_events``): when it was reported."""

    reported_at: Series[UtcTimestamp]


class ForecastsSchema(pa.DataFrameModel):
    """One forecast request per city and hour; ``temp`` is its outcome, null if unobserved."""

    city: Series[str] = pa.Field(isin=CITIES)
    issued_at: Series[UtcTimestamp]
    target_time: Series[UtcTimestamp]
    temp: Series[float] = pa.Field(nullable=True, ge=-40, le=130)

    class Config:  # noqa: D106 - pandera's options
        coerce = True
        strict = True

    @pa.dataframe_check
    @classmethod
    def six_hours_ahead(cls, frame: pd.DataFrame) -> Series[bool]:
        """The target hour is the issue hour plus the 6-hour horizon."""
        gap = pd.to_datetime(frame["target_time"], utc=True) - pd.to_datetime(
            frame["issued_at"], utc=True
        )
        return Series(gap == pd.Timedelta(hours=6))
