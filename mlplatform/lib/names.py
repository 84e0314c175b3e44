"""Check names, shared by the pure checks and the Dagster definitions (kept import-light)."""

SCHEMA = "schema"
DUPLICATES = "no_duplicate_keys"
TIMESTAMPS = "timestamps_in_partition"
NULL_RATES = "null_rates"
VOLUME = "volume"
INGESTION_DRIFT = "ingestion_drift"
POINT_IN_TIME = "point_in_time"
NO_LEAKAGE = "no_leakage"
ONLINE_PARITY = "online_parity"


def raw_table(source: str) -> str:
    """Asset and warehouse table holding the batches of ``source`` as landed."""
    return f"raw_{source}"
