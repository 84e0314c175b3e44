"""The code location: every problem's assets, stage by stage, and the active profile's resources.

Kept thin and light: heavy libraries are imported inside the assets that use them, since
every run's step process imports this module again.
"""

from collections.abc import Iterable
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
from mlplatform.resources import (
    DashboardResource,
    DaskResource,
    build_executor,
    build_resources,
)

STAGES = (ingestion, features, training, evaluation, deployment, monitoring)


def build_definitions(
    selected: Iterable[Problem], resources: dict[str, Any], executor: Any = None
) -> dg.Definitions:
    """All stages and jobs of the given problems, bound to ``resources`` and ``executor``.

    Without a ``dask`` resource, training runs on one machine; without a ``dashboard``
    resource, the monitoring snapshots go to ``evidently/`` under the lake's root.
    """
    selected = list(selected)
    stages = [stage.build_defs(problem) for problem in selected for stage in STAGES]
    jobs = [job for problem in selected for job in build_jobs(problem)]
    resources = {"dask": DaskResource(), **resources}
    if "lake" in resources:
        resources.setdefault("dashboard", DashboardResource(lake=resources["lake"]))
    triggers = [t for problem in selected for t in automation.build_retraining(problem)]
    sensors = [automation.build_landing_sensor(problem) for problem in selected]
    merged = dg.Definitions.merge(
        *stages,
        dg.Definitions(
            jobs=[
                *jobs,
                *(
                    t
                    for t in triggers
                    if not isinstance(t, dg.SensorDefinition | dg.ScheduleDefinition)
                ),
            ],
            schedules=[t for t in triggers if isinstance(t, dg.ScheduleDefinition)],
            sensors=[
                *sensors,
                *(t for t in triggers if isinstance(t, dg.SensorDefinition)),
                automation.automation_sensor(),
            ],
            resources=resources,
            executor=executor,
        ),
    )
    return automation.apply(merged, selected)


@dg.definitions
def defs() -> dg.Definitions:
    """All stages of all problems, with the resources and executor of ``MLPLATFORM_ENV``."""
    return build_definitions(problems().values(), build_resources(), build_executor())
