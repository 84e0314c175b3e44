"""The city-temperature feature tables: entity, time-to-live, inputs and columns of each.

Builders live in ``features.py``; this module stays import-light because the Dagster
definitions read it to lay out the feature assets. The Feast repository (the city entity,
sources, views and the ``city_temperature_v1`` service) is generated from these tables and
the spec.
"""

from datetime import timedelta

from mlplatform.lib.features.tables import FeatureTable

FEATURE_TABLES = [
    FeatureTable(
        "city_recent",
        "Each city's temperatures of the last two days as known at each hour: the newest "
        "observations, the target hour one and two days before, and the last 24 hours' "
        "mean, minimum and maximum.",
        "city",
        "city_recent",
        # rows are stamped on the hour they serve; a lookup at that hour picks its own row
        ttl=timedelta(minutes=30),
        sources=("observations",),
        trailing_days=2,  # the target hour two days before is 42 h back
        stream="observations",
        features={
            **{f"temp_{lag}h": "float" for lag in (1, 2, 4, 18, 42)},  # features.LAGS
            "temp_mean_24h": "float",
            "temp_min_24h": "float",
            "temp_max_24h": "float",
        },
    ),
    FeatureTable(
        "city_daily",
        "Each city's mean temperature over the previous day and the previous 7 days.",
        "city",
        "city_daily",
        ttl=timedelta(days=2),
        sources=("observations",),
        trailing_days=6,
        features={"temp_mean_1d": "float", "temp_mean_7d": "float", "hours_7d": "int"},
    ),
]
