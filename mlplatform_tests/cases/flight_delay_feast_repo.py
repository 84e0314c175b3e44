"""The flight-delay Feast repository as it was written by hand (until issue 17).

Kept as the reference the generated repository (``lib.features.feast_repo``) is compared
with in ``test_feast_generated.py``: same entities, sources, views and service.
"""

from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float64, Int64, String

from mlplatform.problems.flight_delay.feature_tables import FEATURE_TABLES

PROBLEM = "flight_delay"
SERVICE_VERSION = 2


TABLES = {t.name: t for t in FEATURE_TABLES}


def _source(data: Path, table: str) -> FileSource:
    return FileSource(
        name=f"{table}_source",
        path=str(data / "warehouse" / PROBLEM / "features" / table / "*.parquet"),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description=f"Daily Parquet files of the {table} feature asset.",
    )


def _view(data: Path, table: str, entity: Entity, schema: list[Field]) -> FeatureView:
    spec = TABLES[table]
    batch = _source(data, table)
    # a stream view: pushed hour by hour online; the evening's validated batch is its
    # offline history (and what materialize reads)
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


def _rates(key: str) -> list[Field]:
    fields = []
    for w in (1, 7, 28):
        fields += [
            Field(name=f"{key}_delay_rate_{w}d", dtype=Float64),
            Field(name=f"{key}_flights_{w}d", dtype=Int64),
            Field(name=f"{key}_cancel_rate_{w}d", dtype=Float64),
            Field(name=f"{key}_scheduled_{w}d", dtype=Int64),
        ]
    return fields


def _ops(key: str) -> list[Field]:
    return [
        Field(name=f"{key}_ops_scheduled", dtype=Int64),
        Field(name=f"{key}_ops_dep_delay", dtype=Float64),
        Field(name=f"{key}_ops_late_share", dtype=Float64),
        Field(name=f"{key}_ops_not_gone_share", dtype=Float64),
    ]


def definitions(data: Path) -> dict[str, object]:
    """Every Feast object of the problem, reading feature files under ``data``."""
    # The departure airport; weather and airport-wide delays are keyed by it.
    origin = Entity(
        name="origin",
        join_keys=["origin"],
        value_type=ValueType.STRING,
        description="Departure airport (FAA code).",
    )
    # The airline.
    carrier = Entity(
        name="carrier",
        join_keys=["carrier"],
        value_type=ValueType.STRING,
        description="Two-letter airline code.",
    )
    # An origin-destination pair.
    route = Entity(
        name="route",
        join_keys=["route"],
        value_type=ValueType.STRING,
        description='Route, as "EWR-IAH".',
    )
    # One aircraft.
    plane = Entity(
        name="plane",
        join_keys=["tailnum"],
        value_type=ValueType.STRING,
        description="Aircraft tail number.",
    )

    origin_weather_fv = _view(
        data,
        "origin_weather",
        origin,
        [
            Field(name=c, dtype=Float64)
            for c in ("temp", "humid", "wind_speed", "precip", "visib", "pressure")
        ],
    )
    carrier_delays_fv = _view(data, "carrier_delays", carrier, _rates("carrier"))
    route_delays_fv = _view(data, "route_delays", route, _rates("route"))
    origin_delays_fv = _view(data, "origin_delays", origin, _rates("origin"))
    plane_fv = _view(
        data,
        "plane",
        plane,
        [
            Field(name="plane_age", dtype=Float64),
            Field(name="seats", dtype=Float64),
            Field(name="engines", dtype=Float64),
            Field(name="plane_type", dtype=String),
        ],
    )
    origin_ops_fv = _view(
        data,
        "origin_ops",
        origin,
        [
            *_ops("origin"),
            Field(name="origin_sched_hour", dtype=Int64),
            Field(name="origin_sched_day", dtype=Int64),
        ],
    )
    carrier_ops_fv = _view(data, "carrier_ops", carrier, _ops("carrier"))
    plane_ops_fv = _view(
        data,
        "plane_ops",
        plane,
        [Field(name="prev_dep_delay", dtype=Float64), Field(name="prev_overdue", dtype=Float64)],
    )
    # What the delay model reads; a new model version with other inputs gets a new service.
    service = FeatureService(
        name=f"{PROBLEM}_v{SERVICE_VERSION}",
        features=[
            origin_weather_fv,
            carrier_delays_fv,
            route_delays_fv,
            origin_delays_fv,
            plane_fv,
            origin_ops_fv,
            carrier_ops_fv,
            plane_ops_fv,
        ],
        description=f"Inputs of the flight-delay model, version {SERVICE_VERSION}.",
    )
    return {
        "origin": origin,
        "carrier": carrier,
        "route": route,
        "plane": plane,
        "origin_weather_fv": origin_weather_fv,
        "carrier_delays_fv": carrier_delays_fv,
        "route_delays_fv": route_delays_fv,
        "origin_delays_fv": origin_delays_fv,
        "plane_fv": plane_fv,
        "origin_ops_fv": origin_ops_fv,
        "carrier_ops_fv": carrier_ops_fv,
        "plane_ops_fv": plane_ops_fv,
        "service": service,
    }
