# pyright: reportIncompatibleVariableOverride=false
# (a nested `Config` class is how pandera models take options)
"""Pandera schemas of the flight-delay sources, as the daily exports deliver them.

``coerce`` turns the exported text into types; ``strict`` rejects a column nobody
declared, so an upstream schema change stops ingestion instead of slipping through.
"""

from typing import Annotated

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

UtcTimestamp = Annotated[pd.DatetimeTZDtype, "ns", "UTC"]
NYC_ORIGINS = ["EWR", "JFK", "LGA"]
# Every 2013 tail number: 2-6 capitals or digits, at least one digit. Spelled-out nulls
# ("NULL", "None", "N/A", "nan") are not tail numbers, and only the empty field is null.
TAILNUM = r"^(?=.*[0-9])[A-Z0-9]{2,6}$"


class FlightsSchema(pa.DataFrameModel):
    """One row per scheduled departure; outcome columns are null for cancelled flights."""

    year: Series[int] = pa.Field(ge=2000, le=2100)
    month: Series[int] = pa.Field(ge=1, le=12)
    day: Series[int] = pa.Field(ge=1, le=31)
    dep_time: Series[float] = pa.Field(nullable=True, ge=0, le=2400)
    sched_dep_time: Series[int] = pa.Field(ge=0, le=2359)
    dep_delay: Series[float] = pa.Field(nullable=True)
    arr_time: Series[float] = pa.Field(nullable=True, ge=0, le=2400)
    sched_arr_time: Series[int] = pa.Field(ge=0, le=2359)
    arr_delay: Series[float] = pa.Field(nullable=True)
    carrier: Series[str] = pa.Field(str_matches=r"^[A-Z0-9]{2}$")
    flight: Series[int] = pa.Field(ge=1)
    tailnum: Series[str] = pa.Field(nullable=True, str_matches=TAILNUM)
    origin: Series[str] = pa.Field(isin=NYC_ORIGINS)
    dest: Series[str] = pa.Field(str_matches=r"^[A-Z0-9]{3}$")
    air_time: Series[float] = pa.Field(nullable=True, ge=0)
    distance: Series[int] = pa.Field(gt=0)
    hour: Series[int] = pa.Field(ge=0, le=23)
    minute: Series[int] = pa.Field(ge=0, le=59)
    time_hour: Series[UtcTimestamp]

    class Config:  # noqa: D106 - pandera's options
        coerce = True
        strict = True


class WeatherSchema(pa.DataFrameModel):
    """One hourly observation per origin airport."""

    origin: Series[str] = pa.Field(isin=NYC_ORIGINS)
    year: Series[int] = pa.Field(ge=2000, le=2100)
    month: Series[int] = pa.Field(ge=1, le=12)
    day: Series[int] = pa.Field(ge=1, le=31)
    hour: Series[int] = pa.Field(ge=0, le=23)
    temp: Series[float] = pa.Field(nullable=True, ge=-60, le=130)
    dewp: Series[float] = pa.Field(nullable=True, ge=-80, le=100)
    humid: Series[float] = pa.Field(nullable=True, ge=0, le=100)
    wind_dir: Series[float] = pa.Field(nullable=True, ge=0, le=360)
    wind_speed: Series[float] = pa.Field(nullable=True, ge=0, le=1100)
    wind_gust: Series[float] = pa.Field(nullable=True, ge=0, le=1300)
    precip: Series[float] = pa.Field(nullable=True, ge=0)
    pressure: Series[float] = pa.Field(nullable=True, ge=900, le=1100)
    visib: Series[float] = pa.Field(nullable=True, ge=0)
    time_hour: Series[UtcTimestamp]

    class Config:  # noqa: D106 - pandera's options
        coerce = True
        strict = True


class PlanesSchema(pa.DataFrameModel):
    """Aircraft registry; manufacture year and speed are often unknown."""

    tailnum: Series[str] = pa.Field(str_matches=TAILNUM)
    year: Series[float] = pa.Field(nullable=True, ge=1900, le=2100)
    type: Series[str]
    manufacturer: Series[str]
    model: Series[str]
    engines: Series[int] = pa.Field(ge=1, le=8)
    seats: Series[int] = pa.Field(ge=1, le=1000)
    speed: Series[float] = pa.Field(nullable=True, ge=0)
    engine: Series[str]

    class Config:  # noqa: D106 - pandera's options
        coerce = True
        strict = True


class AirportsSchema(pa.DataFrameModel):
    """Airports by FAA code."""

    faa: Series[str]
    name: Series[str]
    lat: Series[float] = pa.Field(ge=-90, le=90)
    lon: Series[float] = pa.Field(ge=-180, le=180)
    alt: Series[int]
    tz: Series[int] = pa.Field(ge=-12, le=14)
    dst: Series[str]
    tzone: Series[str] = pa.Field(nullable=True)

    class Config:  # noqa: D106 - pandera's options
        coerce = True
        strict = True


class FlightEventSchema(pa.DataFrameModel):
    """One pushed flight status event (``source.flight_events``)."""

    carrier: Series[str] = pa.Field(str_matches=r"^[A-Z0-9]{2}$")
    flight: Series[int] = pa.Field(ge=1)
    origin: Series[str] = pa.Field(isin=NYC_ORIGINS)
    dest: Series[str] = pa.Field(str_matches=r"^[A-Z0-9]{3}$")
    tailnum: Series[str] = pa.Field(nullable=True, str_matches=TAILNUM)
    time_hour: Series[UtcTimestamp]
    sched_at: Series[UtcTimestamp]
    status: Series[str] = pa.Field(isin=["scheduled", "departed"])
    dep_delay: Series[float] = pa.Field(nullable=True, ge=-120, le=2000)
    status_at: Series[UtcTimestamp]

    class Config:  # noqa: D106 - pandera's options
        coerce = True
        strict = True


class WeatherReportSchema(WeatherSchema):
    """One pushed hourly weather report (``source.weather_events``)."""

    reported_at: Series[UtcTimestamp]
