"""Every problem's Dagster objects, built by the stage factories from its spec.

A problem (``mlplatform/problems/<name>/``) is a plug-in that yields some thirty assets with
their checks, ten jobs, its sensors and its retraining schedule. ``dg`` loads ``defs`` below
through the defs folder (every problem found); tests and benchmarks call
``build_problem_defs`` on a problem whose spec they changed, so both paths build the same
objects.
"""

import re
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
from mlplatform.errors import BrokenProblemError
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


def broken_problem_defs(name: str, message: str) -> dg.Definitions:
    """A sensor ``<name>_cannot_load`` whose every tick fails with ``message``.

    How the UI shows a problem that cannot load (its spec, a module or a contract) by name,
    on the Automation page, while every other problem loads and runs.
    """
    sensor_name = re.sub(r"\W", "_", name) + "_cannot_load"

    @dg.sensor(
        name=sensor_name,
        description=message,
        minimum_interval_seconds=3600,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _cannot_load(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        raise BrokenProblemError(message)

    return dg.Definitions(sensors=[_cannot_load])


@dg.definitions
def defs() -> dg.Definitions:
    """Every stage, job, sensor and schedule of every problem in ``mlplatform/problems/``.

    A problem that cannot load (``problems().broken``) is a failing sensor named after it.
    """
    catalog = problems()
    return dg.Definitions.merge(
        *(build_problem_defs(p) for p in catalog.values()),
        *(broken_problem_defs(b.name, b.message()) for b in catalog.broken.values()),
    )
