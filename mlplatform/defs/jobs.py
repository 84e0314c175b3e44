"""Jobs of a problem: the unit a user (or the CLI) launches, across stages."""

from typing import Any

import dagster as dg

from mlplatform.lib.names import raw_table
from mlplatform.problems import Problem


def daily_job_name(problem: Problem) -> str:
    """Name of the job that ingests one day of every daily source."""
    return f"{problem.name}_ingestion"


def typed_job_name(problem: Problem) -> str:
    """Name of the job that types one day of every daily source from its hourly batches.

    Defined only for ``partitioning.granularity: hourly``, where the ingestion job
    (``daily_job_name``) lands and checks one hour of the raw batches.
    """
    return f"{problem.name}_typed_tables"


def reference_job_name(problem: Problem) -> str:
    """Name of the job that ingests the reference snapshots."""
    return f"{problem.name}_reference"


def features_job_name(problem: Problem) -> str:
    """Name of the job that computes one day of every feature table."""
    return f"{problem.name}_features"


def feature_store_job_name(problem: Problem) -> str:
    """Name of the job that applies the registry, fills the online store, builds a training set."""
    return f"{problem.name}_feature_store"


def training_job_name(problem: Problem) -> str:
    """Name of the job that trains a candidate and takes it through the gates."""
    return f"{problem.name}_training"


def evaluation_job_name(problem: Problem) -> str:
    """Name of the job that (re-)evaluates a registered version and promotes it if it passes."""
    return f"{problem.name}_evaluation"


def monitoring_job_name(problem: Problem) -> str:
    """Name of the job that computes one day of monitoring."""
    return f"{problem.name}_monitoring"


def _source_keys(
    problem: Problem, kind: str, tables: tuple[bool, bool] = (True, True)
) -> list[dg.AssetKey]:
    """Keys of the sources of ``kind``: their raw and typed tables as ``tables`` says."""
    return [
        dg.AssetKey([problem.name, table])
        for source, spec in problem.spec.sources.items()
        if ("daily" if spec.is_daily else spec.kind) == kind
        for table, wanted in zip((raw_table(source), source), tables, strict=True)
        if wanted
    ]


def _ingestion_jobs(problem: Problem) -> list[Any]:
    """The ingestion job: one day of raw and typed tables, or one hour of raw batches."""
    if problem.spec.partitioning.granularity != "hourly":
        return [
            dg.define_asset_job(
                daily_job_name(problem),
                selection=dg.AssetSelection.assets(*_source_keys(problem, "daily")),
                description=f"Ingest one day of {problem.name}'s daily sources behind their "
                "checks.",
            )
        ]
    # hourly raw batches and daily typed tables have different partitions: two jobs
    return [
        dg.define_asset_job(
            daily_job_name(problem),
            selection=dg.AssetSelection.assets(*_source_keys(problem, "daily", (True, False))),
            description=f"Ingest one hour of {problem.name}'s daily sources behind their checks.",
        ),
        dg.define_asset_job(
            typed_job_name(problem),
            selection=dg.AssetSelection.assets(*_source_keys(problem, "daily", (False, True))),
            description=f"Type one day of {problem.name}'s daily sources from its accepted hours.",
        ),
    ]


def build_jobs(problem: Problem) -> list[Any]:  # the unresolved job type is private
    """Every job of a problem."""
    feature_keys = [dg.AssetKey([problem.name, t.name]) for t in problem.feature_tables()]
    store_keys = [
        dg.AssetKey([problem.name, name])
        for name in ("feature_registry", "online_features", "training_set", "holdout_set")
    ]
    gated = [dg.AssetKey([problem.name, name]) for name in ("evaluation_report", "promotion")]
    return [
        *_ingestion_jobs(problem),
        dg.define_asset_job(
            reference_job_name(problem),
            selection=dg.AssetSelection.assets(*_source_keys(problem, "reference")),
            description=f"Ingest {problem.name}'s reference snapshots behind their checks.",
        ),
        dg.define_asset_job(
            features_job_name(problem),
            selection=dg.AssetSelection.assets(*feature_keys),
            description=f"Compute one day of every {problem.name} feature table.",
        ),
        dg.define_asset_job(
            feature_store_job_name(problem),
            selection=dg.AssetSelection.assets(*store_keys),
            description=f"Apply {problem.name}'s Feast registry, materialize the online store "
            "and build the training and holdout sets.",
        ),
        dg.define_asset_job(
            training_job_name(problem),
            selection=dg.AssetSelection.assets(
                dg.AssetKey([problem.name, "model_candidate"]), *gated
            ),
            description=f"Tune, train, track and register a {problem.name} model candidate, "
            "evaluate it against the champion, and promote it if every gate passes.",
        ),
        dg.define_asset_job(
            monitoring_job_name(problem),
            selection=dg.AssetSelection.assets(
                *(
                    dg.AssetKey([problem.name, n])
                    for n in ("served_predictions", "online_outcomes", "online_performance")
                ),
                dg.AssetKey([problem.name, "drift_report"]),
                dg.AssetKey([problem.name, "serving_skew"]),
            ),
            description=f"One day of {problem.name} monitoring: served predictions, outcomes, "
            "online performance per version, feature and prediction drift.",
        ),
        dg.define_asset_job(
            evaluation_job_name(problem),
            selection=dg.AssetSelection.assets(*gated),
            description=f"Evaluate a registered {problem.name} version (config: version, "
            "override) and promote it if every gate passes.",
        ),
    ]
