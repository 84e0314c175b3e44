"""Monitoring assets, daily over the local day of the requests' prediction time.

- ``served_predictions``: the prediction log's requests of the day;
- ``online_outcomes``: those requests joined to the day's outcomes;
- ``online_performance``: per version that answered, the spec's metric, volume, p99 latency
  and error rate, with calibration (binary) or RMSE, MAE, R² and the mean predicted beside
  the mean observed value (regression); numeric metadata, so the UI plots them over time;
- ``drift_report``: feature and prediction drift of the day against the champion's
  training set, with the spec's statistical test (Evidently; HTML linked);
- ``serving_skew``: the day's served vectors against the training path's point-in-time
  rebuild of the same requests, feature by feature; its check (WARN/ERROR above the spec's
  shares) holds promotion in the rollout sensor.

Each of served_predictions, online_performance, drift_report and serving_skew also stores
its day as an Evidently snapshot in the problem's dashboard (``lib.monitoring.dashboard``).
"""

from datetime import date, timedelta
from typing import Any

import dagster as dg

from mlplatform.defs.partitions import daily_partitions
from mlplatform.lib.names import SERVING_SKEW, SKEW
from mlplatform.problems import Problem
from mlplatform.resources import DashboardResource, FeastResource, LakeResource, MlflowResource

GROUP = "monitoring"
REFERENCE_ROWS = 5000  # a seeded sample of the training set: Evidently's cost grows with rows
NAMES = (
    "served_predictions",
    "online_outcomes",
    "online_performance",
    "drift_report",
    SERVING_SKEW,
)


def monitoring_key(problem: Problem, name: str) -> dg.AssetKey:
    """Key of one monitoring asset."""
    return dg.AssetKey([problem.name, name])


def _table(name: str) -> str:
    return f"monitoring/{name}"


def _record(
    dashboard: DashboardResource, problem: Problem, kind: str, day: date, snapshot: Any
) -> dict[str, Any]:
    """Store the day's ``kind`` snapshot in the dashboard's workspace; metadata naming it."""
    from mlplatform.lib.monitoring.dashboard import record

    if snapshot is None:
        return {}
    where = dashboard.path()
    sid = record(where, problem.name, problem.spec, kind, day, snapshot)
    return {"evidently_snapshot": dg.MetadataValue.text(f"{where} {sid}")}


def build_monitoring_assets(problem: Problem) -> list[dg.AssetsDefinition]:
    """The monitoring assets of ``problem``."""
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
        description=f"The prediction log's requests for the day's {spec.target.source} rows: "
        "versions, routes, features, predictions, latency and errors. Runs when the day's "
        "data lands.",
        kinds={"parquet"},
        **common,
    )
    def _served(
        context: dg.AssetExecutionContext, lake: LakeResource, dashboard: DashboardResource
    ) -> dg.MaterializeResult:
        import numpy as np

        from mlplatform.lib.deployment.prediction_log import read_predictions
        from mlplatform.lib.deployment.scoring import degraded
        from mlplatform.lib.monitoring.dashboard import serving_snapshot
        from mlplatform.lib.monitoring.outcomes import of_day

        store, day = lake.lake(), _day(context)
        served = of_day(read_predictions(store.root, problem.name), day, spec.partitioning.timezone)
        store.write_table(problem.name, _table("served_predictions"), day, served)
        ok = served[served["status"] == "ok"] if len(served) else served
        snapshot = serving_snapshot(served, spec, problem.name, day) if len(served) else None
        return dg.MaterializeResult(
            metadata={
                **_record(dashboard, problem, "serving", day, snapshot),
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
        from mlplatform.lib.monitoring.outcomes import with_outcomes

        store, day = lake.lake(), _day(context)
        served = store.read_days(problem.name, _table("served_predictions"), [day])
        if not store.table_path(problem.name, spec.target.source, day).exists():
            raise dg.Failure(f"{problem.name}: no {spec.target.source} for {day} yet")
        outcomes = store.read_days(problem.name, spec.target.source, [day])
        joined = with_outcomes(served, outcomes, spec)
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
        description=f"Online {spec.metric.name}, "
        + (
            f"RMSE, MAE, R² and mean predicted vs observed {spec.target.name}, "
            if spec.is_regression
            else "calibration, "
        )
        + "volume, p99 latency and error rate per model version that answered that day.",
        kinds={"pandas"},
        **common,
    )
    def _performance(
        context: dg.AssetExecutionContext, lake: LakeResource, dashboard: DashboardResource
    ) -> dg.MaterializeResult:
        from mlplatform.defs.metadata import table
        from mlplatform.lib.monitoring.dashboard import performance_frame, performance_snapshot
        from mlplatform.lib.monitoring.outcomes import REGRESSION_METRICS, performance

        store, day = lake.lake(), _day(context)
        served = store.read_days(problem.name, _table("served_predictions"), [day])
        joined = store.read_days(problem.name, _table("online_outcomes"), [day])
        rows = performance(joined, served, spec.metric.name) if len(served) else []
        everyone = [r for r in rows if r["labelled"]]
        headline = max(everyone, key=lambda r: r["requests"]) if everyone else None
        frame = performance_frame(joined, spec, problem.slices)
        snapshot = performance_snapshot(frame, spec, problem.name, day)
        meta = {
            "versions": table(rows),
            "requests": sum(r["requests"] for r in rows),
            **_record(dashboard, problem, "performance", day, snapshot),
        }
        if headline:
            companions = (
                (*REGRESSION_METRICS, "mean_prediction", "mean_observed")
                if spec.is_regression
                else ("calibration_error",)
            )
            meta |= {
                f"online_{spec.metric.name}": headline[spec.metric.name],
                **{name: headline[name] for name in companions},
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
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        mlflow: MlflowResource,
        dashboard: DashboardResource,
    ) -> dg.MaterializeResult:
        import pandas as pd

        from mlplatform.lib.deployment import registry as reg
        from mlplatform.lib.features.feature_store import feature_matrix
        from mlplatform.lib.monitoring.dashboard import stamp
        from mlplatform.lib.monitoring.outcomes import drift, served_features

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
            timestamp=stamp(day),
            metadata={"problem": problem.name, "kind": "drift", "day": day.isoformat()},
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
                "drifted_count": result["drifted_count"],
                "drifted": dg.MetadataValue.bool(result["drifted"] and judged),
                "window_days_served": served_days,
                "drifted_features": dg.MetadataValue.json(result["drifted_features"]),
                "feature_scores": dg.MetadataValue.json(result["scores"]),
                "not_evaluated": dg.MetadataValue.json(result["not_evaluated"]),
                "prediction_drift_score": result["prediction_drift_score"],
                "prediction_drifted": dg.MetadataValue.bool(result["prediction_drifted"]),
                "reference": f"champion {champion}, training set {version}",
                "evidently_report": dg.MetadataValue.path(str(html)),
                **_record(dashboard, problem, "drift", day, result["snapshot"]),
            }
        )

    return [  # pyright: ignore[reportReturnType]
        _served,
        _outcomes,
        _performance,
        _drift,
        build_skew_asset(problem, key[SERVING_SKEW], key["served_predictions"], common),
    ]


def build_skew_asset(
    problem: Problem, key: dg.AssetKey, served_key: dg.AssetKey, common: dict
) -> dg.AssetsDefinition:
    """``serving_skew``: served vectors against their point-in-time rebuild, and its check."""
    spec = problem.spec
    rule = spec.monitoring.skew
    # the rebuild joins the day's feature rows: the day's feature tables must exist
    tables = [dg.AssetKey([problem.name, t.name]) for t in problem.feature_tables()]

    @dg.asset(
        key=key,
        deps=[served_key, *tables],
        description="Train/serve skew of the day: each served request's logged model inputs "
        "against the training path's point-in-time vector at its prediction time (up to "
        f"{rule.sample} requests, seeded); categoricals exactly, numbers within "
        f"{rule.abs_tolerance:g} + {rule.rel_tolerance:g} x |value|.",
        kinds={"feast", "pandas"},
        check_specs=[
            dg.AssetCheckSpec(
                SKEW,
                asset=key,
                description=f"Share of requests with any mismatching feature: WARN above "
                f"{rule.warn_share:g}, ERROR above {rule.error_share:g} (holds promotion).",
            )
        ],
        **common,
    )
    def _skew(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        feast: FeastResource,
        dashboard: DashboardResource,
    ) -> dg.MaterializeResult:
        from mlplatform.defs.metadata import table
        from mlplatform.lib.monitoring.dashboard import skew_snapshot
        from mlplatform.lib.monitoring.skew import (
            Tolerance,
            comparable,
            compare,
            offline_matrix,
            requests_of,
            sample,
            served_matrix,
            severity,
        )

        store, day = lake.lake(), _day(context)
        served = store.read_days(problem.name, _table("served_predictions"), [day])
        answered = int((served["status"] == "ok").sum()) if len(served) else 0
        rows = comparable(served, spec)
        picked = sample(rows, rule.sample, rule.seed)
        if picked.empty:
            why = "no answered request with a logged vector that day"
            return dg.MaterializeResult(
                metadata={"rows_compared": 0, "skipped": why},
                check_results=[
                    dg.AssetCheckResult(
                        check_name=SKEW,
                        passed=True,
                        metadata={"day": day.isoformat(), "skipped": why, "severity": "ok"},
                    )
                ],
            )
        fstore = feast.store(problem)
        offline = offline_matrix(
            problem, fstore, feast.service(problem, fstore), requests_of(picked)
        )
        result = compare(
            served_matrix(picked, spec),
            offline,
            picked["key"],
            spec.features,
            Tolerance(rule.abs_tolerance, rule.rel_tolerance),
            not_comparable=answered - len(rows),
        )
        level = severity(result.mismatch_share, rule.warn_share, rule.error_share)
        challengers = sorted({str(v) for v in picked["challenger_version"].dropna()})
        context.log.info(
            f"{problem.name} {day}: {result.mismatch_share:.3f} of {result.rows} requests "
            f"skewed ({level}); worst feature {result.worst_feature}"
        )
        figures = {
            "day": day.isoformat(),
            "skew_share": result.mismatch_share,
            "rows_compared": result.rows,
            "worst_feature": result.worst_feature or "",
            "severity": level,
            "challenger_versions": dg.MetadataValue.json(challengers),
        }
        rates = {k: round(v, 6) for k, v in result.mismatch_rate.items()}
        return dg.MaterializeResult(
            metadata={
                **figures,
                **_record(
                    dashboard,
                    problem,
                    "skew",
                    day,
                    skew_snapshot(result.flags, problem.name, day)
                    if result.flags is not None
                    else None,
                ),
                "dagster/row_count": result.rows,
                "not_comparable": result.not_comparable,
                "mismatch_rate": dg.MetadataValue.json(rates),
                "skewed_features": table(
                    [
                        {"feature": k, "mismatch_rate": v}
                        for k, v in sorted(rates.items(), key=lambda kv: -kv[1])
                        if v > 0
                    ]
                ),
                "worst_examples": dg.MetadataValue.json(result.worst),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=SKEW,
                    passed=level == "ok",
                    severity=(
                        dg.AssetCheckSeverity.ERROR
                        if level == "error"
                        else dg.AssetCheckSeverity.WARN
                    ),
                    metadata={
                        **figures,
                        "warn_share": rule.warn_share,
                        "error_share": rule.error_share,
                    },
                )
            ],
        )

    return _skew  # pyright: ignore[reportReturnType]


def _day(context: dg.AssetExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def skew_check_key(problem: Problem) -> dg.AssetCheckKey:
    """Key of the skew check on ``serving_skew``."""
    return dg.AssetCheckKey(monitoring_key(problem, SERVING_SKEW), SKEW)


def skew_by_day(
    instance: dg.DagsterInstance, problem: Problem, limit: int = 400
) -> dict[str, dict[str, Any]]:
    """The newest evaluation of the skew check per day, from the instance's event log.

    Args:
        instance: The Dagster instance whose event log holds the check's evaluations.
        problem: The problem whose ``serving_skew`` check is read.
        limit: Evaluations read at most, newest first (one per day and re-run).

    Returns:
        ``{day: {severity, passed, skew_share, worst_feature, rows_compared,
        challenger_versions}}``; ``severity`` is ``ok`` when the check passed, else its
        Dagster severity (``warn`` or ``error``).
    """
    records = instance.event_log_storage.get_asset_check_execution_history(
        skew_check_key(problem), limit=limit
    )
    out: dict[str, dict[str, Any]] = {}
    for record in records:  # newest first: the first evaluation seen per day wins
        evaluation = record.event.asset_check_evaluation if record.event else None
        if evaluation is None:
            continue  # planned, never evaluated (a failed run)
        meta = {k: v.value for k, v in evaluation.metadata.items()}
        day = record.partition or evaluation.partition or meta.get("day")
        if not day or str(day) in out:
            continue
        failed = evaluation.severity.value.lower() if not evaluation.passed else "ok"
        out[str(day)] = {
            "severity": failed,
            "passed": evaluation.passed,
            "skew_share": meta.get("skew_share"),
            "worst_feature": meta.get("worst_feature") or None,
            "rows_compared": meta.get("rows_compared"),
            "challenger_versions": meta.get("challenger_versions") or [],
        }
    return out
