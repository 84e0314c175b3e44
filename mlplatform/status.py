"""What the platform holds, per problem: the data behind ``mlplatform status``.

Scripts and checks read these keys: add keys, never rename or remove one.
"""

from datetime import date
from typing import Any

import dagster as dg

from mlplatform.lib.deployment.log import DeploymentLog, is_rollback
from mlplatform.lib.deployment.log import status as deployment_status
from mlplatform.lib.deployment.registry import RegistryError, aliases, last_verdict
from mlplatform.lib.ingestion.landing import Pending, pending, reference_changes
from mlplatform.lib.monitoring.alerts import AlertLog
from mlplatform.lib.monitoring.dashboard import workspace_status
from mlplatform.lib.monitoring.timeline import latest_timeline
from mlplatform.lib.names import raw_table
from mlplatform.lib.storage import DataLake
from mlplatform.lib.tracking import Tracking, local_tracking, registered_versions
from mlplatform.problems import Problem
from mlplatform.serving.server import service_status


def problem_status(
    problem: Problem,
    lake: DataLake,
    instance: dg.DagsterInstance,
    tracking: "Tracking | None" = None,
    dashboard: str | None = None,
) -> dict[str, Any]:
    """Landed days, ingested partitions, quarantined batches, and the feature store's state.

    ``dashboard`` is the Evidently workspace (default: ``evidently/`` under the lake).
    """
    daily = problem.spec.daily_sources()
    landed = [set(lake.landed_days(problem.name, s)) for s in daily]
    ingested = [instance.get_materialized_partitions(dg.AssetKey([problem.name, s])) for s in daily]
    registry = lake.read_latest(problem.name, "feature_registry") or {}
    online = lake.read_latest(problem.name, "online_features") or {}
    training = lake.read_latest(problem.name, "training_set")
    local = local_tracking(lake.root)
    tracking = tracking or local
    # the embedded store exists once something was tracked; a server always answers
    has_registry = tracking != local or (lake.root / "mlflow" / "mlflow.db").exists()
    held, versions, verdict, registry_error = _registry(tracking, problem.name, has_registry)
    current = DeploymentLog(lake.root, problem.name).current()
    refs = reference_changes(lake, problem, set(problem.spec.sources))
    relanded = [p for p in [*pending(lake, problem), refs] if p is not None and p.relanded]
    return {
        "landed_days": len(set.intersection(*landed)) if landed else 0,
        "ingested_partitions": len(set.intersection(*ingested)) if ingested else 0,
        "quarantined": len(lake.quarantined(problem.name)),
        # new content landed for a day already ingested; the landing sensor ingests it
        "relanded_not_ingested": [
            {
                "day": p.label,
                "sources": {
                    s: {"landed": h, "ingested": p.ingested[s]} for s, h in p.landed.items()
                },
            }
            for p in relanded
        ],
        # days whose newest landing was rejected: unreadable downstream unless kept
        "rejected_days": [
            r.to_dict() for s in problem.spec.sources for r in lake.rejections(problem.name, s)
        ],
        "feature_views": registry.get("feature_views", []),
        "online_store_rows": online.get("online_store_rows", 0),
        "training_set": (
            {
                "rows": training["rows"],
                "data_version": training["data_version"],
                "stale_days": (stale := stale_days(problem, lake, training, relanded)),
                # spec features the set has no column for (added to the spec since)
                "missing_features": (absent := missing_features(problem, training)),
                "stale": bool(stale or absent),
            }
            if training
            else None
        ),
        "registered_versions": versions,
        "aliases": held,
        "last_verdict": verdict,
        # only when the registry could not be read: the three keys above are then unknown
        **({"registry_error": registry_error} if registry_error else {}),
        "deployment": deployment_status(held, current),
        "service": service_status(lake.root, problem.name),
        # the monitoring history in Evidently: workspace, snapshots per kind, how to open it
        "dashboard": workspace_status(
            dashboard or str(lake.root / "evidently"), problem.name, problem.spec
        ),
        "monitoring": monitoring_status(problem, instance, lake),
        "skew": skew_status(problem, instance),
        "timeline": str(table) if (table := latest_timeline(lake.root, problem.name)) else None,
        # alerts raised (all in the local log), webhook deliveries, the newest alert
        "alerts": AlertLog(lake.root, problem.name).summary(),
    }


def missing_features(problem: Problem, training: dict[str, Any]) -> list[str]:
    """Spec features the latest training set has no column for, in spec order.

    A feature added to the spec after the set was built: training fails on it until the
    set is built again. Reads the Parquet footer only.
    """
    import pyarrow.parquet as pq

    try:
        columns = set(pq.read_schema(training["path"]).names)
    except (OSError, KeyError):
        return []
    return [f.name for f in problem.spec.features if f.name not in columns]


def stale_days(
    problem: Problem, lake: DataLake, training: dict[str, Any], relanded: list[Pending]
) -> list[dict[str, str]]:
    """Days the latest training or holdout set read that changed since.

    A day is stale when it was ingested again with other content than the set read (its
    ``inputs``), when its newest landing is now rejected, or when new content landed for it
    and waits for ingestion. The one step that builds the training set builds the holdout
    set (the days after it) too: both are listed, each entry saying which (``set``).

    Returns:
        ``{day, source, set, why}`` per stale day and source, by day.
    """
    out: dict[tuple[str, str, str], str] = {}
    holdout = lake.read_latest(problem.name, "holdout_set")
    for name, latest in (("training_set", training), ("holdout_set", holdout or {})):
        for key, digest in (latest.get("inputs") or {}).items():
            source, day = key.split("/", 1)
            report = lake.day_batch_report(problem.name, raw_table(source), day)
            if report and report.get("accepted") and report.get("content_hash") != digest:
                new = report["content_hash"]
                out[(day, source, name)] = f"ingested again with new content ({digest} -> {new})"
            elif (rejected := lake.blocking(problem.name, source, day)) is not None:
                out[(day, source, name)] = (
                    f"newest landing rejected, quarantined at {rejected.quarantine}"
                )
        if "start" in latest and "end" in latest:
            start, end = date.fromisoformat(latest["start"]), date.fromisoformat(latest["end"])
            for p in relanded:
                if p.local_day is not None and start <= p.local_day <= end:  # an hour's day
                    for source in p.landed:
                        key = (p.label, source, name)
                        out.setdefault(key, "re-landed, not ingested yet")
    return [{"day": d, "source": s, "set": n, "why": why} for (d, s, n), why in sorted(out.items())]


def _registry(
    tracking: Tracking, name: str, has_registry: bool
) -> tuple[dict[str, str], list[dict[str, str]], dict[str, Any] | None, str | None]:
    """Aliases, versions and last verdict; an unreadable registry says so, not "none"."""
    if not has_registry:
        return {}, [], None, None
    try:
        held = aliases(tracking, name)
        return held, registered_versions(tracking, name), last_verdict(tracking, name), None
    except RegistryError as exc:
        return {}, [], None, str(exc)


def monitoring_status(
    problem: Problem, instance: dg.DagsterInstance, lake: DataLake
) -> dict[str, Any]:
    """Newest drift partition, retrain runs and rollbacks so far."""
    drift = instance.get_materialized_partitions(dg.AssetKey([problem.name, "drift_report"]))
    retrains = instance.get_run_records(dg.RunsFilter(job_name=f"{problem.name}_retraining"))
    # a challenger replaced by a newer one was not rolled back for its figures
    rollbacks = [e for e in DeploymentLog(lake.root, problem.name).entries() if is_rollback(e)]
    return {
        "last_drift_partition": max(drift) if drift else None,
        "retrains": len(retrains),
        "rollbacks": len(rollbacks),
    }


def skew_status(problem: Problem, instance: dg.DagsterInstance) -> dict[str, Any] | None:
    """The newest day's train/serve skew, or None before any ``serving_skew`` check ran.

    Returns:
        ``{day, share, worst_feature, severity, rows_compared, error_days}``: the share of
        compared requests with any mismatching feature, the check's severity (ok | warn |
        error), and every day whose newest check is ERROR.
    """
    from mlplatform.defs.monitoring.assets import skew_by_day

    by_day = skew_by_day(instance, problem)
    if not by_day:
        return None
    day = max(by_day)
    newest = by_day[day]
    return {
        "day": day,
        "share": newest["skew_share"],
        "worst_feature": newest["worst_feature"],
        "severity": newest["severity"],
        "rows_compared": newest["rows_compared"],
        "error_days": sorted(d for d, e in by_day.items() if e["severity"] == "error"),
    }


def status(
    problems: dict[str, Problem],
    lake: DataLake,
    instance: dg.DagsterInstance,
    tracking: "Tracking | None" = None,
    dashboard: str | None = None,
) -> dict[str, Any]:
    """One object keyed by problem name.

    A problem that cannot load (``problems().broken``) is listed too, as
    ``{"broken": {file, kind, error}}``; a loaded one has ``"broken": None``.
    """
    report: dict[str, Any] = {
        name: {**problem_status(p, lake, instance, tracking, dashboard), "broken": None}
        for name, p in sorted(problems.items())
    }
    broken = getattr(problems, "broken", {})
    for name in sorted(broken):
        report[name] = {"broken": broken[name].to_dict()}
    return report
