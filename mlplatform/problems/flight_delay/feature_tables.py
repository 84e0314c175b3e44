"""The flight-delay feature tables: entity, time-to-live, inputs and columns of each.

Builders live in ``features.py``; this module stays import-light because the Dagster
definitions read it to lay out the feature assets. The Feast repository (entities, sources,
views, the feature service) is generated from these tables and the spec.
"""

from datetime import timedelta

from mlplatform.lib.features.tables import FeatureTable

# The feature service the model reads is flight_delay_v2 (a model with other inputs gets a
# new number); without this the spec's version numbers it.
SERVICE_VERSION = 2
WEATHER = {c: "float" for c in ("temp", "humid", "wind_speed", "precip", "visib", "pressure")}


def _rates(key: str) -> dict[str, str]:
    """Late and cancelled shares, with their counts, over the previous 1, 7 and 28 days."""
    columns: dict[str, str] = {}
    for w in (1, 7, 28):
        columns |= {
            f"{key}_delay_rate_{w}d": "float",
            f"{key}_flights_{w}d": "int",
            f"{key}_cancel_rate_{w}d": "float",
            f"{key}_scheduled_{w}d": "int",
        }
    return columns


def _ops(key: str) -> dict[str, str]:
    """The last three hours of departures (``features.operational``)."""
    return {
        f"{key}_ops_scheduled": "int",
        f"{key}_ops_dep_delay": "float",
        f"{key}_ops_late_share": "float",
        f"{key}_ops_not_gone_share": "float",
    }


# in the order the feature service lists its views
FEATURE_TABLES = [
    FeatureTable(
        "origin_weather",
        "Hourly weather at the departure airport, stamped when the hour ends.",
        "origin",
        "origin_weather",
        ttl=timedelta(hours=6),
        sources=("weather",),
        stream="weather",
        features=WEATHER,
    ),
    FeatureTable(
        "carrier_delays",
        "Late-arrival and cancelled shares of the airline over the previous 1, 7, 28 days.",
        "carrier",
        "carrier_delays",
        ttl=timedelta(days=2),
        sources=("flights",),
        trailing_days=27,
        features=_rates("carrier"),
    ),
    FeatureTable(
        "route_delays",
        "Late-arrival share of the route over the previous 1, 7, 28 days.",
        "route",
        "route_delays",
        ttl=timedelta(days=2),
        sources=("flights",),
        trailing_days=27,
        features=_rates("route"),
    ),
    FeatureTable(
        "origin_delays",
        "Late-arrival share at the departure airport, previous 1, 7, 28 days.",
        "origin",
        "origin_delays",
        ttl=timedelta(days=2),
        sources=("flights",),
        trailing_days=27,
        features=_rates("origin"),
    ),
    FeatureTable(
        "plane",
        "Age, seats, engines and type of every registered aircraft.",
        "tailnum",
        "plane",
        ttl=timedelta(days=2),
        sources=("flights",),
        reference=("planes",),
        features={
            "plane_age": "float",
            "seats": "float",
            "engines": "float",
            "plane_type": "string",
        },
    ),
    FeatureTable(
        "origin_ops",
        "The departure airport's last three hours (flights scheduled, gone, late, delay) and "
        "its schedule density, every hour.",
        "origin",
        "origin_ops",
        ttl=timedelta(minutes=30),
        sources=("flights",),
        trailing_days=1,
        stream="flights",
        features={**_ops("origin"), "origin_sched_hour": "int", "origin_sched_day": "int"},
    ),
    FeatureTable(
        "carrier_ops",
        "The airline's last three hours of departures from New York, every hour.",
        "carrier",
        "carrier_ops",
        ttl=timedelta(minutes=30),
        sources=("flights",),
        trailing_days=1,
        stream="flights",
        features=_ops("carrier"),
    ),
    FeatureTable(
        "plane_ops",
        "The aircraft's previous departure of the day: its delay, or overdue, every hour.",
        "tailnum",
        "plane_ops",
        ttl=timedelta(minutes=30),
        sources=("flights",),
        stream="flights",
        features={"prev_dep_delay": "float", "prev_overdue": "float"},
    ),
]
