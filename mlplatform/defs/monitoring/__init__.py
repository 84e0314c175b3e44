"""The monitoring stage: daily serving, outcomes, performance, drift and skew; the alerts."""

import dagster as dg

from mlplatform.defs.monitoring.alerts import build_alert_sensor
from mlplatform.defs.monitoring.assets import build_monitoring_assets
from mlplatform.problems import Problem


def build_defs(problem: Problem) -> dg.Definitions:
    """The monitoring stage of ``problem``."""
    return dg.Definitions(
        assets=build_monitoring_assets(problem), sensors=[build_alert_sensor(problem)]
    )
