"""The code location: every problem's assets, stage by stage, and the active profile's resources.

Kept thin and light: heavy libraries are imported inside the assets that use them, since
every run's step process imports this module again.
"""

from collections.abc import Iterable
from typing import Any

import dagster as dg

from mlplatform.defs import evaluation, features, ingestion, training
from mlplatform.defs.jobs import build_jobs
from mlplatform.problems import Problem, problems
from mlplatform.resources import DaskResource, build_executor, build_resources

STAGES = (ingestion, features, training, evaluation)


def build_definitions(
    selected: Iterable[Problem], resources: dict[str, Any], executor: Any = None
) -> dg.Definitions:
    """All stages and jobs of the given problems, bound to ``resources`` and ``executor``.

    Without a ``dask`` resource, training runs on one machine.
    """
    selected = list(selected)
    stages = [stage.build_defs(problem) for problem in selected for stage in STAGES]
    jobs = [job for problem in selected for job in build_jobs(problem)]
    resources = {"dask": DaskResource(), **resources}
    return dg.Definitions.merge(
        *stages, dg.Definitions(jobs=jobs, resources=resources, executor=executor)
    )


@dg.definitions
def defs() -> dg.Definitions:
    """All stages of all problems, with the resources and executor of ``MLPLATFORM_ENV``."""
    return build_definitions(problems().values(), build_resources(), build_executor())
