"""The code location: the defs folder, the global policy applied once, the profile's resources.

``defs`` loads ``mlplatform/defs/`` the way every ``dg`` project does
(``dg.load_from_defs_folder``): whatever a module there declares is in the code location, so
``dg list defs``, ``dg check defs`` and ``dg scaffold defs`` work here as on any Dagster project.
Each problem's assets, checks, jobs and triggers come from one factory
(``mlplatform.defs.by_problem``); the policy below is applied once to the merged result.

Kept thin and light: heavy libraries are imported inside the assets that use them, since
every run's step process imports this module again.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dagster as dg

from mlplatform.defs import automation
from mlplatform.defs.by_problem import build_problem_defs
from mlplatform.errors import BrokenProblemError
from mlplatform.problems import Problem, problems
from mlplatform.resources import (
    DashboardResource,
    DaskResource,
    OptunaResource,
    build_executor,
    build_resources,
)


def with_policy(
    loaded: dg.Definitions,
    selected: Iterable[Problem],
    resources: dict[str, Any],
    executor: Any = None,
) -> dg.Definitions:
    """``loaded`` with the global policy, applied once: conditions, freshness, resources.

    Adds the automation sensor, each problem's automation conditions and freshness policies
    (``mlplatform.defs.automation``), ``resources`` and ``executor``.

    Without a ``dask`` resource, training runs on one machine; without a ``dashboard``
    resource, the monitoring snapshots go to ``evidently/`` under the lake's root; without an
    ``optuna`` resource, studies are SQLite files under ``optuna/`` there.
    """
    resources = {"dask": DaskResource(), **resources}
    if "lake" in resources:
        resources.setdefault("dashboard", DashboardResource(lake=resources["lake"]))
        resources.setdefault("optuna", OptunaResource(lake=resources["lake"]))
    merged = dg.Definitions.merge(
        loaded,
        dg.Definitions(
            sensors=[automation.automation_sensor()], resources=resources, executor=executor
        ),
    )
    return automation.apply(merged, list(selected))


def build_definitions(
    selected: Iterable[Problem], resources: dict[str, Any], executor: Any = None
) -> dg.Definitions:
    """All stages and jobs of the given problems, bound to ``resources`` and ``executor``.

    For tests and benchmarks (a problem whose spec they changed, resources in a temporary
    folder): the same factory and policy as ``defs``, without the defs folder.
    """
    selected = list(selected)
    loaded = dg.Definitions.merge(*(build_problem_defs(problem) for problem in selected))
    return with_policy(loaded, selected, resources, executor)


@dg.definitions
def defs() -> dg.Definitions:
    """The defs folder with the resources and executor of ``MLPLATFORM_ENV``."""
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    return with_policy(loaded, problems().values(), build_resources(), build_executor())


def __getattr__(name: str) -> dg.Definitions:
    """``mlplatform.definitions.<problem>``: one problem's definitions, its own code location.

    For a workspace that runs each problem in its own process: one ``python_module``
    location per problem with ``attribute: <problem>``. A problem that cannot load is then
    a failed location, named with its error, while the others load and run.

    Raises:
        BrokenProblemError: the problem cannot load (spec, module or contract).
        AttributeError: no problem of that name.
    """
    if not name.startswith("_"):
        catalog = problems()
        if name in catalog.broken:
            raise BrokenProblemError(catalog.broken[name].message())
        if name in catalog:
            return build_definitions([catalog[name]], build_resources(), build_executor())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
