"""Batch scoring: ``batch_predictions``, a day's requests scored by the champion, and its job.

The model deployed in batch: what a downstream consumer reads instead of calling the HTTP
service. The table's columns and dtypes are documented in ``mlplatform.lib.deployment.batch``.

No automation condition: the day's features are complete only once its data lands, after
the day was served online, so a batch of a past day restates (point-in-time) what the
service answered; it runs when asked (``mlplatform score``, the launchpad, a backfill), not
in every replayed evening.
"""

from typing import Any

import dagster as dg

from mlplatform.defs.partitions import daily_partitions
from mlplatform.problems import Problem
from mlplatform.resources import FeastResource, LakeResource, MlflowResource

GROUP = "deployment"


def batch_key(problem: Problem) -> dg.AssetKey:
    """Key of the problem's ``batch_predictions`` asset."""
    return dg.AssetKey([problem.name, "batch_predictions"])


def batch_job_name(problem: Problem) -> str:
    """Name of the job that scores one day in batch."""
    return f"{problem.name}_scoring"


def _description(problem: Problem) -> str:
    spec = problem.spec
    source = spec.sources[spec.target.source]
    output = (
        f"predicted value of {spec.target.name}"
        if spec.is_regression
        else f"probability of {spec.target.name}"
    )
    return (
        f"The day's scheduled {spec.target.source} (every row of the day's table, as a "
        f"request) scored by the champion, each with its features as the online path saw "
        f"them at its prediction time ({spec.prediction_time}; the training path's "
        "point-in-time join, the one serving_skew holds to the served vectors). One Parquet "
        "file per day, one row per request: key (string, the prediction log's key), "
        f"{', '.join(source.natural_key)} (the natural key), prediction_time "
        f"(timestamp[us, UTC]), model_version (string), prediction (float64, {output}), "
        "then feature_<name> per spec feature in spec order "
        "(float64 for numeric, string for categorical; the spec's defaults filled)."
    )


def build_batch_asset(problem: Problem) -> dg.AssetsDefinition:
    """``batch_predictions`` of ``problem``: daily, in the deployment group."""
    spec = problem.spec
    target = dg.AssetKey([problem.name, spec.target.source])
    # the point-in-time join reads the day's feature rows (within-day views included)
    tables = [dg.AssetKey([problem.name, t.name]) for t in problem.feature_tables()]

    @dg.asset(
        key=batch_key(problem),
        deps=[target, *tables],
        partitions_def=daily_partitions(spec),
        group_name=GROUP,
        description=_description(problem),
        kinds={"feast", "lightgbm", "parquet"},
        owners=[spec.owner],
        tags={"mlplatform/problem": problem.name},
    )
    def _batch(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        feast: FeastResource,
        mlflow: MlflowResource,
    ) -> dg.MaterializeResult:
        from datetime import date

        from mlplatform.defs.metadata import frame_metadata
        from mlplatform.lib.deployment import registry as reg
        from mlplatform.lib.deployment.batch import PREDICTION, TABLE, score_requests
        from mlplatform.lib.names import features_table
        from mlplatform.serving.client import as_requests

        store, day = lake.lake(), date.fromisoformat(context.partition_key)
        tracking = mlflow.tracking()
        source = spec.target.source
        if not store.has_partition(problem.name, source, day):
            raise dg.Failure(
                f"{problem.name}: no accepted {source} table for {day}; land and ingest it "
                f"first ('mlplatform ingest --problem {problem.name} --start {day} --end {day}')"
            )
        # a day without its feature rows would be joined to older ones (or none: the
        # spec's defaults) and scored without a word: refuse it
        unbuilt = [
            t.name
            for t in problem.feature_tables()
            if not store.has_partition(problem.name, features_table(t), day)
        ]
        if unbuilt:
            raise dg.Failure(
                f"{problem.name}: the features of {day} are not built ({', '.join(unbuilt)}); "
                f"run 'mlplatform features --problem {problem.name} --start {day} --end {day}'"
            )
        champion = reg.aliases(tracking, problem.name).get(reg.CHAMPION)
        if champion is None:
            raise dg.Failure(f"{problem.name}: no champion to score with ('mlplatform train')")
        model = reg.load_version(tracking, problem.name, champion)
        fstore = feast.store(problem)
        requests = as_requests(problem, store.read_table(problem.name, source, day))
        scored = score_requests(problem, model, fstore, feast.service(problem, fstore), requests)
        path = store.write_table(problem.name, TABLE, day, scored)
        context.log.info(f"{problem.name} {day}: {len(scored)} requests scored by {champion}")
        meta = {
            **frame_metadata(scored, preview_rows=5),
            "model_version": champion,
            "path": dg.MetadataValue.path(str(path)),
        }
        if len(scored):  # plotted over days on the asset page; a day with no request has none
            meta["mean_prediction"] = float(scored[PREDICTION].mean())
        return dg.MaterializeResult(metadata=meta)

    return _batch


def build_batch_job(problem: Problem) -> Any:  # the unresolved job type is private
    """The job ``mlplatform score`` runs for one day."""
    return dg.define_asset_job(
        batch_job_name(problem),
        selection=dg.AssetSelection.assets(batch_key(problem)),
        description=f"Score one day of {problem.name}'s scheduled requests with the champion "
        "(point-in-time features) into batch_predictions.",
    )
