"""The alert sensor: reads what the instance recorded since its cursor and sends alerts.

One plain sensor per problem (``<problem>_alerts``, on by default, every 30 s). Each tick
reads the event log between its cursor (a storage id) and the newest event, in order:

- ``evaluation_report`` materialized with verdict ``failed``: its failed gates (the
  blocking checks of that run, each with its reason and numbers) → ``gate_failed``;
- ``deployment`` materialized at stage ``rolled_back`` (the rollout sensor's run, or
  ``mlplatform rollback`` by hand) → ``rolled_back``;
- ``drift_report`` materialized with ``drifted`` → ``drift``;
- ``serving_skew`` whose check ``skew_within_threshold`` failed at ERROR → ``skew``;
- a run of the problem's jobs or assets failed → ``run_failed`` (not when its only
  failure is the gates, already alerted);

then the freshness states Dagster's freshness daemon records for the problem's assets
with a freshness policy: each new ``FAIL`` → ``freshness``.

The first tick starts at the newest event (history is not replayed as alerts). The
cursor also holds the cool-down (``lib.monitoring.alerts.Cooldown``): a condition alerted once is
held back for ``alerts.cooldown_hours`` of the platform clock.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from mlplatform import settings
from mlplatform.defs.automation import freshness, retrain_job_name
from mlplatform.defs.deployment.assets import deployment_job_name, deployment_key
from mlplatform.defs.evaluation.assets import evaluation_key
from mlplatform.defs.features.stream import stream_specs
from mlplatform.defs.jobs import build_jobs
from mlplatform.defs.monitoring.assets import monitoring_key
from mlplatform.lib.deployment.log import REPLACED
from mlplatform.lib.monitoring.alerts import Alert, AlertLog, Cooldown, deliver, scalars
from mlplatform.lib.names import SERVING_SKEW, SKEW
from mlplatform.problems import Problem
from mlplatform.resources import LakeResource

INTERVAL_SECONDS = 30
PAGE = 100  # events read per query; a tick reads every page up to the newest event
CHECK_FAILED = "DagsterAssetCheckFailedError"  # a blocking check failed: its own alert


def alert_sensor_name(problem: Problem) -> str:
    """Name of the problem's alert sensor."""
    return f"{problem.name}_alerts"


def _materializations(
    instance: dg.DagsterInstance, key: dg.AssetKey, after: int, upto: int
) -> Iterator[dg.EventLogRecord]:
    """Materializations of ``key`` with storage id in (after, upto], oldest first."""
    cursor = None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=key, after_storage_id=after, before_storage_id=upto + 1
            ),
            limit=PAGE,
            cursor=cursor,
            ascending=True,
        )
        yield from result.records
        if not result.has_more:
            return
        cursor = result.cursor


def _check_evaluations(instance: dg.DagsterInstance, run_id: str, key: dg.AssetKey) -> list[Any]:
    """The asset check evaluations a run recorded on ``key``."""
    entries = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    out = []
    for entry in entries:
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        if data is not None and getattr(data, "asset_key", None) == key:
            out.append(data)
    return out


def _meta(record: dg.EventLogRecord) -> dict[str, Any]:
    m = record.asset_materialization
    return {k: getattr(v, "value", v) for k, v in (m.metadata if m else {}).items()}


def _subject(record: dg.EventLogRecord, **more: str) -> dict[str, str]:
    m = record.asset_materialization
    out = {"asset": m.asset_key.to_user_string() if m else "", "partition": (m and m.partition)}
    return {k: str(v) for k, v in {**out, "run_id": record.run_id, **more}.items() if v}


def gate_alerts(instance: dg.DagsterInstance, problem: Problem, record: dg.EventLogRecord):
    """A ``gate_failed`` alert for an evaluation report whose verdict is ``failed``."""
    meta = _meta(record)
    if meta.get("verdict") != "failed":
        return []
    version = str(meta.get("registered_version", "?"))
    failed = [
        e
        for e in _check_evaluations(instance, record.run_id, evaluation_key(problem))
        if not e.passed
    ]
    figures: dict[str, Any] = {"failed_gates": [e.check_name for e in failed]}
    metric = problem.spec.metric.name
    for name in (f"candidate_{metric}", f"champion_{metric}", "p99_latency_ms"):
        if name in meta:
            figures[name] = meta[name]
    reasons = []
    for e in failed:
        details = {k: getattr(v, "value", v) for k, v in e.metadata.items()}
        reasons.append(f"{e.check_name}: {details.get('reason') or e.description or 'failed'}")
        figures |= {
            f"{e.check_name}.{k}": v for k, v in scalars(details, limit=6).items() if k != "reason"
        }
    champion = meta.get("champion_version", "none")
    summary = f"version {version} was refused against champion {champion}; " + (
        "; ".join(reasons) if reasons else f"failed gates {meta.get('failed_gates')}"
    )
    return [
        Alert(
            "gate_failed",
            problem.name,
            summary,
            key=f"gate_failed:{version}:{record.run_id}",
            subject=_subject(record, version=version),
            figures=figures,
        )
    ]


def rollback_alerts(problem: Problem, record: dg.EventLogRecord) -> list[Alert]:
    """A ``rolled_back`` alert for a deployment transition that took a version back."""
    meta = _meta(record)
    reason = str(meta.get("reason", ""))
    if meta.get("stage") != "rolled_back" or reason.startswith(REPLACED):
        return []
    version, champion = str(meta.get("version", "?")), str(meta.get("champion", "?"))
    actor = str(meta.get("actor", "?"))
    return [
        Alert(
            "rolled_back",
            problem.name,
            f"version {version} was rolled back by {actor}; champion {champion} answers "
            f"every request. Why: {reason}",
            key=f"rolled_back:{version}:{meta.get('time', record.storage_id)}",
            subject=_subject(record, version=version),
            figures={
                "version": version,
                "champion": champion,
                "actor": actor,
                "reason": reason,
                "at": str(meta.get("time", "")),
            },
        )
    ]


def drift_alerts(problem: Problem, record: dg.EventLogRecord) -> list[Alert]:
    """A ``drift`` alert for a drift report that says ``drifted``."""
    meta = _meta(record)
    if not meta.get("drifted"):
        return []
    rule = problem.spec.monitoring
    features = list(meta.get("drifted_features") or [])
    day = record.asset_materialization.partition if record.asset_materialization else None
    return [
        Alert(
            "drift",
            problem.name,
            f"{day}: {float(meta.get('drift_share', 0)):.0%} of the served features drifted "
            f"(threshold {rule.drift_share:.0%}; {rule.stattest} >= {rule.threshold:g}) "
            f"against {meta.get('reference', 'the champion')}: {', '.join(features[:8])}",
            key="drift",
            subject=_subject(record),
            figures={
                "drift_share": meta.get("drift_share"),
                "drift_share_threshold": rule.drift_share,
                "stattest": rule.stattest,
                "feature_threshold": rule.threshold,
                "drifted_features": features,
                "prediction_drift_score": meta.get("prediction_drift_score"),
                "window_days_served": meta.get("window_days_served"),
            },
            severity="warning",
        )
    ]


def skew_alerts(
    instance: dg.DagsterInstance, problem: Problem, record: dg.EventLogRecord
) -> list[Alert]:
    """A ``skew`` alert for a day whose ``skew_within_threshold`` check failed at ERROR."""
    evaluations = [
        e
        for e in _check_evaluations(instance, record.run_id, monitoring_key(problem, SERVING_SKEW))
        if e.check_name == SKEW
    ]
    failed = [e for e in evaluations if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
    if not failed:
        return []
    meta = {k: getattr(v, "value", v) for k, v in failed[-1].metadata.items()}
    return [
        Alert(
            "skew",
            problem.name,
            f"{meta.get('day')}: {float(meta.get('skew_share', 0)):.1%} of "
            f"{meta.get('rows_compared')} served requests differ from their point-in-time "
            f"rebuild (ERROR above {float(meta.get('error_share', 0)):.0%}); worst feature "
            f"{meta.get('worst_feature') or '-'}; promotion is held while it lasts",
            key="skew",
            subject=_subject(record),
            figures=scalars(meta),
        )
    ]


def _owned(run: dg.DagsterRun, problem: Problem, jobs: set[str], step: str) -> bool:
    """Whether a run belongs to the problem: its job, its assets, or its steps."""
    if run.job_name in jobs or step.startswith(f"{problem.name}__"):
        return True
    return any(k.path[0] == problem.name for k in run.asset_selection or ())


def run_alerts(
    instance: dg.DagsterInstance, problem: Problem, record: dg.EventLogRecord, jobs: set[str]
) -> list[Alert]:
    """A ``run_failed`` alert for a failed run of the problem (the gates excepted)."""
    run = instance.get_run_by_id(record.run_id)
    event = record.event_log_entry.dagster_event
    data = event.event_specific_data if event else None
    first = getattr(data, "first_step_failure_event", None)
    step = (first.step_key if first else None) or ""
    error = getattr(data, "error", None)
    if first is not None and getattr(first.event_specific_data, "error", None):
        error = first.event_specific_data.error
    if run is None or not _owned(run, problem, jobs, step):
        return []
    cls = getattr(error, "cls_name", "") or ""
    if cls == CHECK_FAILED and step == "__".join(evaluation_key(problem).path):
        return []  # the gates refused the candidate: its gate_failed alert says why
    message = (getattr(error, "message", None) or (event and event.message) or "").strip()
    origin = run.tags.get("dagster/sensor_name") or run.tags.get("dagster/schedule_name")
    return [
        Alert(
            "run_failed",
            problem.name,
            f"run {run.run_id[:8]} of {run.job_name} failed"
            + (f" at step {step}" if step else "")
            + f": {message.splitlines()[0][:300] if message else 'no error recorded'}",
            key=f"run_failed:{run.job_name}:{step}",
            subject={"job": run.job_name, "run_id": run.run_id, **({"step": step} if step else {})},
            figures={
                "error": cls or "unknown",
                "launched_by": origin or "a person or the CLI",
                **(
                    {"partition": run.tags["dagster/partition"]}
                    if "dagster/partition" in run.tags
                    else {}
                ),
            },
        )
    ]


def freshness_alerts(
    instance: dg.DagsterInstance, problem: Problem, seen: dict[str, str]
) -> list[Alert]:
    """A ``freshness`` alert per asset whose freshness state newly turned ``FAIL``.

    ``seen`` maps each asset in FAIL to the time its state changed; updated in place
    (an asset back to PASS leaves it, so its next FAIL alerts again).
    """
    policies: dict[dg.AssetKey, Any] = freshness(problem)
    policies |= {s.key: s.freshness_policy for s in stream_specs(problem)}
    states = instance.get_freshness_state_records(list(policies))
    out = []
    for key, policy in policies.items():
        name = key.to_user_string()
        state = states.get(key)
        if state is None or state.freshness_state.value != "FAIL":
            seen.pop(name, None)
            continue
        changed = state.updated_at.isoformat()
        if seen.get(name) == changed:
            continue
        seen[name] = changed
        latest = instance.get_latest_materialization_event(key)
        window = getattr(getattr(policy, "fail_window", None), "to_timedelta", lambda: None)()
        last = datetime.fromtimestamp(latest.timestamp, UTC) if latest else None
        age = (datetime.now(UTC) - last).total_seconds() / 3600 if last else None
        out.append(
            Alert(
                "freshness",
                problem.name,
                f"{name} is late: last updated "
                + (f"{last.isoformat(timespec='minutes')} ({age:.1f} h ago)" if last else "never")
                + (f", its freshness policy fails after {window}" if window else ""),
                key=f"freshness:{name}",
                subject={"asset": name},
                figures={
                    "state": "FAIL",
                    "since": changed,
                    "age_hours": round(age, 2) if age is not None else None,
                    "fail_window_hours": window.total_seconds() / 3600 if window else None,
                },
            )
        )
    return out


def collect(
    instance: dg.DagsterInstance, problem: Problem, after: int, upto: int, jobs: set[str]
) -> list[Alert]:
    """Every alert the events with storage id in (after, upto] call for, in event order."""
    found: list[tuple[int, list[Alert]]] = []
    readers = {
        evaluation_key(problem): lambda r: gate_alerts(instance, problem, r),
        deployment_key(problem): lambda r: rollback_alerts(problem, r),
        monitoring_key(problem, "drift_report"): lambda r: drift_alerts(problem, r),
        monitoring_key(problem, SERVING_SKEW): lambda r: skew_alerts(instance, problem, r),
    }
    for key, read in readers.items():
        found += [(r.storage_id, read(r)) for r in _materializations(instance, key, after, upto)]
    cursor = None
    while True:
        result = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(
                dg.DagsterEventType.RUN_FAILURE,
                after_storage_id=after,
                before_storage_id=upto + 1,
            ),
            limit=PAGE,
            cursor=cursor,
            ascending=True,
        )
        found += [(r.storage_id, run_alerts(instance, problem, r, jobs)) for r in result.records]
        if not result.has_more:
            break
        cursor = result.cursor
    return [a for _, alerts in sorted(found, key=lambda f: f[0]) for a in alerts]


def build_alert_sensor(problem: Problem) -> dg.SensorDefinition:
    """The problem's alert sensor, on by default."""
    rule = problem.spec.alerts
    jobs = {j.name for j in build_jobs(problem)}
    jobs |= {retrain_job_name(problem), deployment_job_name(problem)}

    @dg.sensor(
        name=alert_sensor_name(problem),
        minimum_interval_seconds=INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Alerts on {problem.name}: a failed gate, a rollback, drift, a late "
        "asset, a failed run, skew at ERROR; to the local alert log and the spec's webhook, "
        "each condition once per cool-down.",
    )
    def _alerts(context: dg.SensorEvaluationContext, lake: LakeResource):
        state = json.loads(context.cursor) if context.cursor else None
        upto = context.instance.event_log_storage.get_maximum_record_id() or 0
        # the first tick starts now: history before the sensor existed is not alerted
        after = int(state["after"]) if state else upto
        seen: dict[str, str] = dict(state.get("freshness", {})) if state else {}
        cooldown = Cooldown.from_json(state.get("cooldown") if state else None)
        alerts = collect(context.instance, problem, after, upto, jobs)
        alerts += freshness_alerts(context.instance, problem, seen)
        alerts = [a for a in alerts if a.kind in rule.kinds]
        log, at = AlertLog(lake.lake().root, problem.name), settings.now()
        sent, held, failed = 0, 0, 0
        for alert in alerts:
            before = cooldown.admit(alert, at, rule.cooldown_hours)
            if before is None:
                held += 1
                continue
            record = deliver(alert, rule, log, before, try_webhook=not failed)
            sent += 1
            hook = record["webhook"]
            if hook and not hook["ok"]:
                failed += 1
                context.log.warning(f"alert webhook failed ({hook['error']}); kept in {log.path}")
            context.log.warning(f"ALERT {alert.text(before)}")
        cooldown.prune(at, rule.cooldown_hours)
        cursor = json.dumps(
            {"after": upto, "freshness": seen, "cooldown": cooldown.to_json()}, sort_keys=True
        )
        said = f"{sent} alert(s) sent, {held} held back by the cool-down"
        return dg.SensorResult(
            cursor=cursor, skip_reason=said + (f", {failed} webhook failure(s)" if failed else "")
        )

    return _alerts
