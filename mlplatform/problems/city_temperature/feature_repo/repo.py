"""Feast definitions of the city-temperature features: the city, two views, the service.

The views read the daily Parquet files the feature assets write. ``definitions(data)``
builds every object for a given data folder (the platform calls it); the module-level
names below are what the ``feast`` CLI finds in this folder.
"""

from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float64, Int64

from mlplatform.problems.city_temperature.feature_tables import FEATURE_TABLES
from mlplatform.settings import data_dir

PROBLEM = "city_temperature"
SERVICE_VERSION = 1
TABLES = {t.name: t for t in FEATURE_TABLES}
RECENT = [
    "temp_1h",
    "temp_2h",
    "temp_4h",
    "temp_18h",
    "temp_42h",
    "temp_mean_24h",
    "temp_min_24h",
    "temp_max_24h",
]


def _view(data: Path, table: str, entity: Entity, schema: list[Field]) -> FeatureView:
    spec = TABLES[table]
    batch = FileSource(
        name=f"{table}_source",
        path=str(data / "warehouse" / PROBLEM / "features" / table / "*.parquet"),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description=f"Daily Parquet files of the {table} feature asset.",
    )
    source = (
        PushSource(
            name=spec.push_source,
            batch_source=batch,
            description=f"Hourly pushes of the {table} rows computed from the {spec.stream} feed.",
        )
        if spec.stream
        else batch
    )
    return FeatureView(
        name=spec.view,
        entities=[entity],
        ttl=spec.ttl,
        description=spec.description,
        schema=[*schema, Field(name=spec.ts_column, dtype=Int64)],
        source=source,
    )


def definitions(data: Path) -> dict[str, object]:
    """Every Feast object of the problem, reading feature files under ``data``."""
    # One of the two cities; every feature is kept per city.
    city = Entity(
        name="city",
        join_keys=["city"],
        value_type=ValueType.STRING,
        description="seattle or san_francisco.",
    )
    city_recent_fv = _view(
        data, "city_recent", city, [Field(name=c, dtype=Float64) for c in RECENT]
    )
    city_daily_fv = _view(
        data,
        "city_daily",
        city,
        [
            Field(name="temp_mean_1d", dtype=Float64),
            Field(name="temp_mean_7d", dtype=Float64),
            Field(name="hours_7d", dtype=Int64),
        ],
    )
    # What the temperature model reads; a model with other inputs gets a new service.
    service = FeatureService(
        name=f"{PROBLEM}_v{SERVICE_VERSION}",
        features=[city_recent_fv, city_daily_fv],
        description=f"Inputs of the city-temperature model, version {SERVICE_VERSION}.",
    )
    return {
        "city": city,
        "city_recent_fv": city_recent_fv,
        "city_daily_fv": city_daily_fv,
        "service": service,
    }


# The objects the feast CLI discovers in this folder.
_defs = definitions(data_dir())
city = _defs["city"]
city_recent_fv = _defs["city_recent_fv"]
city_daily_fv = _defs["city_daily_fv"]
city_temperature_v1 = _defs["service"]
