"""The deployment stage: the rollout asset and the sensor that drives it."""

import dagster as dg

from mlplatform.defs.deployment.assets import build_deployment_asset, build_deployment_job
from mlplatform.defs.deployment.sensors import build_rollout_sensor
from mlplatform.problems import Problem


def build_defs(problem: Problem) -> dg.Definitions:
    """The deployment stage of ``problem``."""
    return dg.Definitions(
        assets=[build_deployment_asset(problem)],
        jobs=[build_deployment_job(problem)],
        sensors=[build_rollout_sensor(problem)],
    )
