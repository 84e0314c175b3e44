"""Every problem's Dagster objects, built by the stage factories from its spec.

A problem (``mlplatform/problems/<name>/``) is a plug-in that yields some thirty assets with
their checks, ten jobs, its sensors and its retraining schedule. ``dg`` loads ``defs`` below
through the defs folder (every problem found); tests and benchmarks call
``build_problem_defs`` on a problem whose spec they changed, so both paths build the same
objects.
"""

from typing import Any

import dagster as dg

from mlplatform.defs import (
    automation,
    deployment,
    evaluation,
    features,
    ingestion,
    monitoring,
    training,
)
from mlplatform.defs.jobs import build_jobs
from mlplatform.problems import Problem, problems

STAGES = (ingestion, features, training, evaluation, deployment, monitoring)


def build_problem_defs(problem: Problem) -> dg.Definitions:
    """All stages, jobs, sensors and schedules of ``problem``, without resources or policy.

    The global policy (automation conditions, freshness, the automation sensor, resources,
    executor) is applied once to the merged definitions, in ``mlplatform.definitions``.
    """
    triggers: list[Any] = automation.build_retraining(problem)
    schedules = [t for t in triggers if isinstance(t, dg.ScheduleDefinition)]
    sensors = [t for t in triggers if isinstance(t, dg.SensorDefinition)]
    jobs = [t for t in triggers if not isinstance(t, dg.ScheduleDefinition | dg.SensorDefinition)]
    return dg.Definitions.merge(
        *(stage.build_defs(problem) for stage in STAGES),
        dg.Definitions(
            jobs=[*build_jobs(problem), *jobs],
            schedules=schedules,
            sensors=[automation.build_landing_sensor(problem), *sensors],
        ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Every stage, job, sensor and schedule of every problem in ``mlplatform/problems/``."""
    return dg.Definitions.merge(*(build_problem_defs(p) for p in problems().values()))
