"""The deployment stage: the rollout asset and the sensor that drives it; batch scoring."""

import dagster as dg

from mlplatform.defs.deployment.assets import build_deployment_asset, build_deployment_job
from mlplatform.defs.deployment.batch import build_batch_asset, build_batch_job
from mlplatform.defs.deployment.sensors import build_rollout_sensor
from mlplatform.problems import Problem


def build_defs(problem: Problem) -> dg.Definitions:
    """The deployment stage of ``problem``."""
    return dg.Definitions(
        assets=[build_deployment_asset(problem), build_batch_asset(problem)],
        jobs=[build_deployment_job(problem), build_batch_job(problem)],
        sensors=[build_rollout_sensor(problem)],
    )
