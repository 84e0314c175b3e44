"""Monitoring assets, daily over the local day of the requests' prediction time.

- ``served_predictions``: the prediction log's requests of the day;
- ``online_outcomes``: those requests joined to the day's outcomes;
- ``online_performance``: per version that answered, the spec's metric, calibration,
  volume, p99 latency and error rate (numeric metadata, so the UI plots them over time);
- ``drift_report``: feature and prediction drift of the day against the champion's
  training set, with the spec's statistical test (Evidently; HTML linked).
"""

from datetime import date, timedelta

import dagster as dg

from mlplatform.defs.partitions import daily_partitions
from mlplatform.problems import Problem
from mlplatform.resources import LakeResource, MlflowResource

GROUP = "monitoring"
REFERENCE_ROWS = 5000  # a seeded sample of the training set: Evidently's cost grows with rows
NAMES = ("served_predictions", "online_outcomes", "online_performance", "drift_report")


def monitoring_key(problem: Problem, name: str) -> dg.AssetKey:
    """Key of one monitoring asset."""
    return dg.AssetKey([problem.name, name])


def _table(name: str) -> str:
    return f"monitoring/{name}"


def build_monitoring_assets(problem: Problem) -> list[dg.AssetsDefinition]:
    """The four monitoring assets of ``problem``."""
    spec = problem.spec
    common = {
        "partitions_def": daily_partitions(spec),
        "group_name": GROUP,
        "owners": [spec.owner],
        "tags": {"mlplatform/problem": problem.name},
    }
    key = {n: monitoring_key(problem, n) for n in NAMES}

    target = dg.AssetKey([problem.name, spec.target.source])

    @dg.asset(
        key=key["served_predictions"],
        # the day's data landing closes the day: its requests are all in the log by then
        deps=[target],
        description="The prediction log's requests for the day's flights: versions, routes, "
        "features, predictions, latency and errors. Runs when the day's data lands.",
        kinds={"parquet"},
        **common,
    )
    def _served(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        import numpy as np

        from mlplatform.lib.monitoring import of_day
        from mlplatform.lib.prediction_log import read_predictions
        from mlplatform.lib.scoring import degraded

        store, day = lake.lake(), _day(context)
        served = of_day(read_predictions(store.root, problem.name), day, spec.partitioning.timezone)
        store.write_table(problem.name, _table("served_predictions"), day, served)
        ok = served[served["status"] == "ok"] if len(served) else served
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(served),
                "error_rate": float((served["status"] == "error").mean()) if len(served) else 0.0,
                "p99_latency_ms": float(np.percentile(ok["latency_ms"], 99)) if len(ok) else 0.0,
                # answered with missing inputs or categories the model never saw
                "degraded_answers": int(degraded(ok).sum()) if len(ok) else 0,
                "versions": dg.MetadataValue.json(
                    {str(k): int(v) for k, v in ok["served_version"].value_counts().items()}
                    if len(ok)
                    else {}
                ),
            }
        )

    @dg.asset(
        key=key["online_outcomes"],
        deps=[key["served_predictions"], target],
        description=f"The day's answered requests with their {spec.target.name} outcome, "
        f"joined on the {spec.target.source} natural key.",
        kinds={"parquet"},
        **common,
    )
    def _outcomes(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        from mlplatform.lib.monitoring import with_outcomes

        store, day = lake.lake(), _day(context)
        served = store.read_days(problem.name, _table("served_predictions"), [day])
        if not store.table_path(problem.name, spec.target.source, day).exists():
            raise dg.Failure(f"{problem.name}: no {spec.target.source} for {day} yet")
        flights = store.read_days(problem.name, spec.target.source, [day])
        joined = with_outcomes(served, flights, spec)
        store.write_table(problem.name, _table("online_outcomes"), day, joined)
        labelled = int(joined["label"].notna().sum())
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(joined),
                "labelled": labelled,
                "labelled_share": labelled / len(joined) if len(joined) else 0.0,
            }
        )

    @dg.asset(
        key=key["online_performance"],
        deps=[key["online_outcomes"]],
        description=f"Online {spec.metric.name}, calibration, volume, p99 latency and error "
        "rate per model version that answered that day.",
        kinds={"pandas"},
        **common,
    )
    def _performance(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        from mlplatform.defs.metadata import md_table
        from mlplatform.lib.monitoring import performance

        store, day = lake.lake(), _day(context)
        served = store.read_days(problem.name, _table("served_predictions"), [day])
        joined = store.read_days(problem.name, _table("online_outcomes"), [day])
        rows = performance(joined, served, spec.metric.name) if len(served) else []
        everyone = [r for r in rows if r["labelled"]]
        headline = max(everyone, key=lambda r: r["requests"]) if everyone else None
        meta = {
            "versions": dg.MetadataValue.md(md_table(rows)),
            "requests": sum(r["requests"] for r in rows),
        }
        if headline:
            meta |= {
                f"online_{spec.metric.name}": headline[spec.metric.name],
                "calibration_error": headline["calibration_error"],
                "error_rate": headline["error_rate"],
                "p99_latency_ms": headline["p99_latency_ms"],
                "main_version": headline["version"],
            }
        return dg.MaterializeResult(metadata=meta)

    @dg.asset(
        key=key["drift_report"],
        # the reference is the champion's own training set, found through the registry
        deps=[key["served_predictions"]],
        description=f"Feature and prediction drift of the requests of the "
        f"{spec.monitoring.window_days} day(s) ending on the day against the "
        f"champion's training set ({spec.monitoring.stattest}, threshold "
        f"{spec.monitoring.threshold}); Evidently HTML linked.",
        kinds={"evidently"},
        **common,
    )
    def _drift(
        context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource
    ) -> dg.MaterializeResult:
        import pandas as pd

        from mlplatform.lib import registry as reg
        from mlplatform.lib.feature_store import feature_matrix
        from mlplatform.lib.monitoring import drift, served_features

        store, day, tracking = lake.lake(), _day(context), mlflow.tracking()
        window = [day - timedelta(days=n) for n in range(spec.monitoring.window_days)]
        served = store.read_days(problem.name, _table("served_predictions"), sorted(window))
        champion = reg.aliases(tracking, problem.name).get(reg.CHAMPION)
        current = served_features(served, spec) if len(served) else pd.DataFrame()
        if champion is None or current.empty:
            why = "no champion yet" if champion is None else "no answered request that day"
            return dg.MaterializeResult(metadata={"drift_share": float("nan"), "skipped": why})
        version = reg.version_tags(tracking, problem.name, champion).get("data_version", "")
        path = store.root / "warehouse" / problem.name / "training_set" / f"{version}.parquet"
        if not path.exists():
            raise dg.Failure(f"{problem.name}: champion {champion}'s training set {path} is gone")
        reference = pd.read_parquet(path)
        reference = reference.sample(n=min(REFERENCE_ROWS, len(reference)), random_state=0)
        model = reg.load_version(tracking, problem.name, champion)
        ref_matrix = feature_matrix(reference, spec)
        ok = served[(served["status"] == "ok") & served["features"].notna()]
        html = store.reports_dir(problem.name, "monitoring_drift") / f"{day.isoformat()}.html"
        result = drift(
            current,
            ref_matrix,
            ok["prediction"].to_numpy(dtype=float),
            model.predict_matrix(model.encoding.matrix(ref_matrix)),
            spec,
            html,
        )
        # a window not yet full of served days is as narrow as one day: scored, not judged
        served_days = sum(
            store.table_path(problem.name, _table("served_predictions"), d).exists() for d in window
        )
        judged = served_days >= spec.monitoring.window_days
        context.log.info(
            f"{problem.name} {day}: drift share {result['drift_share']:.2f} over "
            f"{served_days} served day(s)" + ("" if judged else " (window not full: not judged)")
        )
        return dg.MaterializeResult(
            metadata={
                "drift_share": result["drift_share"],
                "drifted": dg.MetadataValue.bool(result["drifted"] and judged),
                "window_days_served": served_days,
                "drifted_features": dg.MetadataValue.json(result["drifted_features"]),
                "feature_scores": dg.MetadataValue.json(result["scores"]),
                "not_evaluated": dg.MetadataValue.json(result["not_evaluated"]),
                "prediction_drift_score": result["prediction_drift_score"],
                "prediction_drifted": dg.MetadataValue.bool(result["prediction_drifted"]),
                "reference": f"champion {champion}, training set {version}",
                "evidently_report": dg.MetadataValue.path(str(html)),
            }
        )

    return [_served, _outcomes, _performance, _drift]  # pyright: ignore[reportReturnType]


def _day(context: dg.AssetExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)
