"""The flight-delay feature tables: entity, time-to-live and inputs of each.

Builders live in ``features.py``; this module stays import-light because the Dagster
definitions read it to lay out the feature assets.
"""

from datetime import timedelta

from mlplatform.lib.tables import FeatureTable

FEATURE_TABLES = [
    FeatureTable(
        "origin_weather",
        "Hourly weather at the departure airport, stamped when the hour ends.",
        "origin",
        "origin_weather",
        ttl=timedelta(hours=6),
        sources=("weather",),
    ),
    FeatureTable(
        "carrier_delays",
        "Late-arrival share of the airline over the previous 1, 7, 28 days.",
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
        "Age, seats, engines and type of each aircraft flying that day.",
        "tailnum",
        "plane",
        ttl=timedelta(days=1),
        sources=("flights",),
        reference=("planes",),
    ),
]
