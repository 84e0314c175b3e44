"""What the platform holds, per problem: the data behind ``mlplatform status``.

Scripts and checks read these keys: add keys, never rename or remove one.
"""

from typing import Any

import dagster as dg

from mlplatform.lib.storage import DataLake
from mlplatform.problems import Problem


def problem_status(
    problem: Problem, lake: DataLake, instance: dg.DagsterInstance
) -> dict[str, Any]:
    """Counts of landed days, ingested partitions and quarantined batches."""
    daily = problem.spec.daily_sources()
    landed = [set(lake.landed_days(problem.name, s)) for s in daily]
    ingested = [instance.get_materialized_partitions(dg.AssetKey([problem.name, s])) for s in daily]
    return {
        "landed_days": len(set.intersection(*landed)) if landed else 0,
        "ingested_partitions": len(set.intersection(*ingested)) if ingested else 0,
        "quarantined": len(lake.quarantined(problem.name)),
    }


def status(
    problems: dict[str, Problem], lake: DataLake, instance: dg.DagsterInstance
) -> dict[str, Any]:
    """One object keyed by problem name."""
    return {name: problem_status(p, lake, instance) for name, p in sorted(problems.items())}
