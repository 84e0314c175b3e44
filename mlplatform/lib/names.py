"""Names shared by the pure logic and the Dagster definitions (kept import-light)."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlplatform.lib.features.tables import FeatureTable

SCHEMA = "schema"
DUPLICATES = "no_duplicate_keys"
TIMESTAMPS = "timestamps_in_partition"
TIMESTAMP_PARTS = "timestamp_parts_agree"
NULL_RATES = "null_rates"
VOLUME = "volume"
INGESTION_DRIFT = "ingestion_drift"
POINT_IN_TIME = "point_in_time"
NO_LEAKAGE = "no_leakage"
ONLINE_PARITY = "online_parity"
SKEW = "skew_within_threshold"  # serving_skew: served vectors vs point-in-time
SERVING_SKEW = "serving_skew"  # the monitoring asset the rollout sensor reads


def raw_table(source: str) -> str:
    """Asset and warehouse table holding the batches of ``source`` as landed."""
    return f"raw_{source}"


def features_table(table: "FeatureTable") -> str:
    """Warehouse folder of a feature table's daily files."""
    return f"features/{table.name}"


# promotion gates: one blocking check each on the evaluation report
MIN_METRIC = "min_metric"
NO_REGRESSION = "no_regression"
NO_SLICE_REGRESSION = "no_slice_regression"
BEHAVIOURAL_CASES = "behavioural_cases"
P99_LATENCY = "p99_latency"
TRAINING_SET_CHECKS = "training_set_checks"
GATES = (
    MIN_METRIC,
    NO_REGRESSION,
    NO_SLICE_REGRESSION,
    BEHAVIOURAL_CASES,
    P99_LATENCY,
    TRAINING_SET_CHECKS,
)
