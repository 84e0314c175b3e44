"""The flight-delay feature tables: entity, time-to-live and inputs of each.

Builders live in ``features.py``; this module stays import-light because the Dagster
definitions read it to lay out the feature assets.
"""

from datetime import timedelta

from mlplatform.lib.features.tables import FeatureTable

FEATURE_TABLES = [
    FeatureTable(
        "origin_weather",
        "Hourly weather at the departure airport, stamped when the hour ends.",
        "origin",
        "origin_weather",
        ttl=timedelta(hours=6),
        sources=("weather",),
        stream="weather",
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
    ),
    FeatureTable(
        "plane_ops",
        "The aircraft's previous departure of the day: its delay, or overdue, every hour.",
        "tailnum",
        "plane_ops",
        ttl=timedelta(minutes=30),
        sources=("flights",),
        stream="flights",
    ),
    FeatureTable(
        "carrier_delays",
        "Late-arrival and cancelled shares of the airline over the previous 1, 7, 28 days.",
        "carrier",
        "carrier_delays",
        ttl=timedelta(days=2),
        sources=("flights",),
        trailing_days=27,
    ),
    FeatureTable(
        "route_delays",
        "Late-arrival share of the route over the previous 1, 7, 28 days.",
        "route",
        "route_delays",
        ttl=timedelta(days=2),
        sources=("flights",),
        trailing_days=27,
    ),
    FeatureTable(
        "origin_delays",
        "Late-arrival share at the departure airport, previous 1, 7, 28 days.",
        "origin",
        "origin_delays",
        ttl=timedelta(days=2),
        sources=("flights",),
        trailing_days=27,
    ),
    FeatureTable(
        "plane",
        "Age, seats, engines and type of every registered aircraft.",
        "tailnum",
        "plane",
        ttl=timedelta(days=2),
        sources=("flights",),
        reference=("planes",),
    ),
]
