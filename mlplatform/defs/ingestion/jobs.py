"""Jobs that materialize a problem's ingestion assets: daily partitions and reference data."""

from typing import Any

import dagster as dg

from mlplatform.lib.names import raw_table
from mlplatform.problems import Problem


def daily_job_name(problem: Problem) -> str:
    """Name of the job that ingests one day of every daily source."""
    return f"{problem.name}_ingestion"


def reference_job_name(problem: Problem) -> str:
    """Name of the job that ingests the reference snapshots."""
    return f"{problem.name}_reference"


def _keys(problem: Problem, kind: str) -> list[dg.AssetKey]:
    return [
        dg.AssetKey([problem.name, table])
        for source, spec in problem.spec.sources.items()
        if spec.kind == kind
        for table in (raw_table(source), source)
    ]


def build_jobs(problem: Problem) -> list[Any]:  # the unresolved job type is private
    """The daily ingestion job and the reference job of a problem."""
    return [
        dg.define_asset_job(
            daily_job_name(problem),
            selection=dg.AssetSelection.assets(*_keys(problem, "daily")),
            description=f"Ingest one day of {problem.name}'s daily sources behind their checks.",
        ),
        dg.define_asset_job(
            reference_job_name(problem),
            selection=dg.AssetSelection.assets(*_keys(problem, "reference")),
            description=f"Ingest {problem.name}'s reference snapshots behind their checks.",
        ),
    ]
