"""Automation across stages: conditions, freshness policies, the landing sensor, retraining.

- Landing a day's files starts its ingestion run (``<problem>_landing`` sensor); the
  feature tables of any day whose inputs updated follow by declarative automation, and
  the online store after them (Dagster's ``default_automation_condition_sensor``-style
  sensor, on by default).
- Freshness policies say how old raw data, features and the model may get.
- Retraining: a schedule, a labelled-volume sensor and a drift sensor launch the retrain
  job (training set → candidate → gates → promotion; the rollout sensor takes over),
  each behind the spec's rails (minimum new labels, cool-down, daily cap).
"""

import json
import warnings
from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg

from mlplatform import settings
from mlplatform.lib.ingestion.landing import Pending, pending, reference_changes
from mlplatform.lib.names import raw_table
from mlplatform.problems import Problem
from mlplatform.resources import LakeResource, MlflowResource

AC = dg.AutomationCondition
LANDING_INTERVAL = 30
RETRAIN_INTERVAL = 300
AUTOMATION_SENSOR = "automation"

# eager() without its "latest time window only": any day whose inputs updated, behind the
# blocking checks of its inputs (a rejected batch never feeds a feature table); the form
# Dagster's docs give for back-filling partitioned assets
ANY_DAY = (
    AC.eager().without(AC.in_latest_time_window()) & AC.all_deps_blocking_checks_passed()
).with_label("any day whose inputs updated")
# the online store depends on every day of every table: never wait for a missing day.
# Built by hand: eager() minus ~any_deps_missing() would still carry its newly_missing()
# branch, which materializes a never-built store on the first tick, before any input exists
AFTER_ANY_UPDATE = (
    AC.any_deps_updated().since_last_handled() & ~AC.any_deps_in_progress() & ~AC.in_progress()
).with_label("after any input updated")

# once, when never materialized. Built by hand: on_missing() only acts on partitions that
# go missing after the condition is applied, and never on an asset missing from the start
ONCE = (AC.missing() & ~AC.in_progress() & ~AC.execution_failed()).with_label("once")


def retrain_job_name(problem: Problem) -> str:
    """Name of the job a retraining trigger launches."""
    return f"{problem.name}_retraining"


def conditions(problem: Problem) -> dict[dg.AssetKey, dg.AutomationCondition]:
    """Which assets automation keeps up to date, and when."""
    out: dict[dg.AssetKey, dg.AutomationCondition] = {
        dg.AssetKey([problem.name, t.name]): ANY_DAY for t in problem.feature_tables()
    }
    out[dg.AssetKey([problem.name, "feature_registry"])] = ONCE
    monitoring = (
        "served_predictions",
        "online_outcomes",
        "online_performance",
        "drift_report",
        "serving_skew",  # after served_predictions and the day's feature tables
    )
    for name in monitoring:
        out[dg.AssetKey([problem.name, name])] = ANY_DAY  # when the day's data lands
    if problem.spec.partitioning.granularity == "hourly":
        # a day's typed table once all its hours are in and none is rejected
        for source in problem.spec.daily_sources():
            out[dg.AssetKey([problem.name, source])] = ANY_DAY
    out[dg.AssetKey([problem.name, "online_features"])] = AFTER_ANY_UPDATE
    return out


def freshness(problem: Problem) -> dict[dg.AssetKey, Any]:
    """How stale raw data, features and the model may get before the UI flags them."""
    day = dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=48), warn_window=timedelta(hours=26)
    )
    week = dg.FreshnessPolicy.time_window(
        fail_window=timedelta(days=8), warn_window=timedelta(days=7)
    )
    hour = dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=3), warn_window=timedelta(hours=2)
    )
    landed = hour if problem.spec.partitioning.granularity == "hourly" else day
    out: dict[dg.AssetKey, Any] = {
        dg.AssetKey([problem.name, raw_table(s)]): landed for s in problem.spec.daily_sources()
    }
    out |= {dg.AssetKey([problem.name, t.name]): day for t in problem.feature_tables()}
    out[dg.AssetKey([problem.name, "model_candidate"])] = week
    return out


def apply(defs: dg.Definitions, problems: list[Problem]) -> dg.Definitions:
    """The definitions with every problem's conditions and freshness policies attached."""
    wanted: dict[dg.AssetKey, dict[str, Any]] = {}
    for problem in problems:
        for key, condition in conditions(problem).items():
            wanted.setdefault(key, {})["automation_condition"] = condition
        for key, policy in freshness(problem).items():
            wanted.setdefault(key, {})["freshness_policy"] = policy
    # map_asset_specs is marked preview in 1.13; it is the one place that shows every
    # condition and policy, rather than scattering them over the stages' decorators
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return defs.map_asset_specs(
            func=lambda spec: (
                spec.replace_attributes(**wanted[spec.key]) if spec.key in wanted else spec
            )
        )


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """Evaluates every asset's automation condition; on by default.

    Evaluated in the code location (``use_user_code_server``) rather than inside the
    daemon, so its ticks are an ordinary sensor evaluation with a cursor: the replay ticks
    it through ``build_sensor_context`` exactly as the daemon does.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.AutomationConditionSensorDefinition(
            AUTOMATION_SENSOR,
            target=dg.AssetSelection.all(),
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=LANDING_INTERVAL,
            use_user_code_server=True,
            description="Keeps feature tables, the online store and monitoring up to date "
            "after ingestion.",
        )


CONTENT_TAG = "mlplatform/content_hash"
# how many run keys the landing sensor remembers having flagged training sets for
_FLAGGED_KEYS = 200


def stale_observations(
    problem: Problem, lake: LakeResource, days: list[Pending]
) -> list[dg.AssetObservation]:
    """Observations marking the training and holdout sets stale for re-landed days they read.

    A training set is built from whole days; when one of them is ingested again with new
    content, the set no longer matches its inputs. It is not rebuilt here (retraining has
    its own triggers and rails): the asset page and ``status`` say which days changed.
    """
    store = lake.lake()
    out = []
    for name in ("training_set", "holdout_set"):
        latest = store.read_latest(problem.name, name)
        if not latest or "start" not in latest:
            continue
        start, end = date.fromisoformat(latest["start"]), date.fromisoformat(latest["end"])
        hit = [
            p
            for p in days
            if p.relanded and p.local_day is not None and start <= p.local_day <= end
        ]
        if hit:
            out.append(
                dg.AssetObservation(
                    asset_key=dg.AssetKey([problem.name, name]),
                    metadata={
                        "stale": True,
                        "data_version": str(latest.get("data_version", "")),
                        "stale_days": dg.MetadataValue.json([p.label for p in hit]),
                        "reason": "re-landed with new content, ingested again: "
                        + "; ".join(p.describe() for p in hit),
                    },
                )
            )
    return out


def build_landing_sensor(problem: Problem) -> dg.SensorDefinition:
    """Ingests each day whose files all landed, again whenever their content changes.

    The decision is the landed content's hash against the hash the raw asset ingested
    last (its data version, also in the batch report): a new day, a corrected file for a
    rejected day, and a correction to an accepted day are all new content. The run key
    carries the hash, so each content is asked for once. Feature tables and the online
    store follow the re-ingested day by declarative automation (``any_deps_updated``);
    training and holdout sets that read the day get a ``stale`` observation.
    """
    daily = list(problem.spec.daily_sources())
    references = [s for s, spec in problem.spec.sources.items() if spec.kind == "reference"]
    # hourly batches: the sensor ingests each hour's raw batch; the day's typed table follows
    # by automation once all its hours are in (their partitions differ: not one run)
    hourly = problem.spec.partitioning.granularity == "hourly"

    def keys(sources: list[str]) -> list[dg.AssetKey]:
        return [dg.AssetKey([problem.name, t]) for s in sources for t in (raw_table(s), s)]

    def batch_keys(sources: list[str]) -> list[dg.AssetKey]:
        return (
            [dg.AssetKey([problem.name, raw_table(s)]) for s in sources]
            if hourly
            else keys(sources)
        )

    @dg.sensor(
        name=f"{problem.name}_landing",
        target=dg.AssetSelection.assets(*batch_keys(daily), *keys(references)),
        minimum_interval_seconds=LANDING_INTERVAL,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Ingests each {problem.name} {'hour' if hourly else 'day'} once every "
        "daily source has landed, and "
        "the reference snapshots once all landed; each again when its content changes.",
    )
    def _landing(context: dg.SensorEvaluationContext, lake: LakeResource):
        store = lake.lake()
        ingested = {
            s: context.instance.get_materialized_partitions(
                dg.AssetKey([problem.name, raw_table(s)])
            )
            for s in daily
        }
        requests: list[dg.RunRequest] = []
        built = {
            r
            for r in references
            if context.instance.get_latest_materialization_event(dg.AssetKey([problem.name, r]))
        }
        # snapshots too: once when all landed, again for each new content of one of them
        refs = reference_changes(store, problem, built)
        if refs is not None:
            requests.append(
                dg.RunRequest(
                    run_key=refs.run_key,
                    asset_selection=keys(refs.sources),
                    tags={CONTENT_TAG: ",".join(f"{s}={h}" for s, h in refs.landed.items())},
                )
            )
        todo = pending(store, problem, ingested)[:10]
        for day in todo:
            if day.relanded:
                context.log.warning(f"{problem.name} re-landed, ingesting again: {day.describe()}")
            requests.append(
                dg.RunRequest(
                    run_key=day.run_key,
                    partition_key=day.label,
                    asset_selection=batch_keys(day.sources),
                    tags={CONTENT_TAG: ",".join(f"{s}={h}" for s, h in day.landed.items())},
                )
            )
        # flag a training set once per re-landing, not on every tick until the run is done
        flagged: list[str] = json.loads(context.cursor) if context.cursor else []
        fresh = [d for d in todo if d.relanded and d.run_key not in flagged]
        events = stale_observations(problem, lake, fresh)
        cursor = json.dumps((flagged + [d.run_key for d in fresh])[-_FLAGGED_KEYS:])
        if not requests:
            return dg.SensorResult(skip_reason="no newly landed day", cursor=cursor)
        return dg.SensorResult(run_requests=requests, asset_events=events, cursor=cursor)

    return _landing


AT_TAG = "mlplatform/at"


def _retrain_request(trigger: str, reason: str, key: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{trigger}-{key}",
        tags={
            "mlplatform/retrain": trigger,
            "mlplatform/reason": reason[:200],
            AT_TAG: settings.now().isoformat(),
        },
    )


def _retrain_decision(
    problem: Problem, instance: dg.DagsterInstance, lake: LakeResource, mlflow: MlflowResource
) -> tuple[str | None, int, str | None]:
    """(why not, new labels, champion) under the rails, from the registry and past runs."""
    from mlplatform.lib.deployment import registry as reg
    from mlplatform.lib.monitoring.retraining import labels_after, rails, window_end

    tracking = mlflow.tracking()
    champion = reg.aliases(tracking, problem.name).get(reg.CHAMPION)
    cutoff = window_end(reg.version_tags(tracking, problem.name, champion)) if champion else None
    # the holdout days after the window were seen by the gates, not by the model: they count
    new = labels_after(lake.lake(), problem.name, problem.spec, cutoff)
    now = settings.now()
    records = instance.get_run_records(dg.RunsFilter(job_name=retrain_job_name(problem)), limit=50)
    # a retrain's time is its launch tag (the platform's clock, simulated in a replay)
    recent = [
        datetime.fromisoformat(r.dagster_run.tags[AT_TAG])
        if AT_TAG in r.dagster_run.tags
        else r.create_timestamp
        for r in records
    ]
    return rails(problem.spec.retraining, now, recent, new), new, champion


def build_retraining(problem: Problem) -> list[Any]:
    """The retrain job, its schedule, and the labelled-volume and drift sensors."""
    rule = problem.spec.retraining
    job = dg.define_asset_job(
        retrain_job_name(problem),
        selection=dg.AssetSelection.assets(
            *(
                dg.AssetKey([problem.name, n])
                # the online store first: the training set's parity check reads it
                for n in ("online_features", "training_set", "holdout_set", "model_candidate")
            ),
            dg.AssetKey([problem.name, "evaluation_report"]),
            dg.AssetKey([problem.name, "promotion"]),
        ),
        description=f"Retrain {problem.name}: the online store brought up to date, new training "
        "and holdout sets, a candidate, the gates, and promotion to challenger; the rollout "
        "sensor takes it from there.",
    )
    out: list[Any] = [job]
    tz = problem.spec.partitioning.timezone

    if rule.schedule:

        @dg.schedule(
            name=f"{problem.name}_retrain_schedule",
            cron_schedule=rule.schedule,
            execution_timezone=tz,
            job_name=retrain_job_name(problem),
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description=f"Retrain {problem.name} on the spec's calendar, behind its rails.",
        )
        def _schedule(
            context: dg.ScheduleEvaluationContext, lake: LakeResource, mlflow: MlflowResource
        ):
            blocked, new, _ = _retrain_decision(problem, context.instance, lake, mlflow)
            if blocked:
                return dg.SkipReason(blocked)
            stamp = context.scheduled_execution_time.isoformat()
            return _retrain_request("schedule", f"{new} new labelled rows; calendar", stamp)

        out.append(_schedule)

    if rule.labeled_volume:
        volume = rule.labeled_volume

        @dg.sensor(
            name=f"{problem.name}_labeled_volume",
            job_name=retrain_job_name(problem),
            minimum_interval_seconds=RETRAIN_INTERVAL,
            default_status=dg.DefaultSensorStatus.RUNNING,
            description=f"Retrain {problem.name} once {volume} labelled rows arrived after "
            "the champion's training window.",
        )
        def _volume(
            context: dg.SensorEvaluationContext, lake: LakeResource, mlflow: MlflowResource
        ):
            blocked, new, champion = _retrain_decision(problem, context.instance, lake, mlflow)
            if new < volume:
                return dg.SkipReason(f"{new} new labelled rows of {volume}")
            if blocked:
                return dg.SkipReason(blocked)
            return _retrain_request(
                "labeled_volume", f"{new} new labelled rows", f"{champion}-{new // volume}"
            )

        out.append(_volume)

    if rule.on_drift != "off":

        @dg.sensor(
            name=f"{problem.name}_drift",
            job_name=retrain_job_name(problem),
            minimum_interval_seconds=RETRAIN_INTERVAL,
            default_status=dg.DefaultSensorStatus.RUNNING,
            description=f"On drift of {problem.name}'s served features: "
            f"{'retrain' if rule.on_drift == 'retrain' else 'alert only'}.",
        )
        def _drift(context: dg.SensorEvaluationContext, lake: LakeResource, mlflow: MlflowResource):
            event = context.instance.get_latest_materialization_event(
                dg.AssetKey([problem.name, "drift_report"])
            )
            report = event.asset_materialization if event else None
            drifted = report.metadata.get("drifted") if report else None
            if report is None or drifted is None or not drifted.value:
                return dg.SkipReason("no drift in the latest drift report")
            day = report.partition
            share = report.metadata["drift_share"].value
            message = f"drift on {day}: share {share:.2f} of features"
            if rule.on_drift == "alert":
                context.log.warning(f"ALERT {problem.name}: {message} (alert only, no retrain)")
                return dg.SkipReason(f"alert only: {message}")
            blocked, _, champion = _retrain_decision(problem, context.instance, lake, mlflow)
            if blocked:
                return dg.SkipReason(f"{message}; not retraining: {blocked}")
            # one drift retrain per champion: while its candidates fail the gates, drift
            # against the same champion holds for weeks (the replay of 2013: daily retrains
            # all autumn); the schedule and the volume trigger still retrain meanwhile
            return _retrain_request("drift", message, f"{champion}")

        out.append(_drift)
    return out


def keep_previous(
    instance: dg.DagsterInstance,
    lake: LakeResource,
    problem: Problem,
    source: str,
    day: date,
    by: str,
    reason: str,
) -> dict[str, Any]:
    """Keep a day's previously accepted table although its newest landing was rejected.

    Records who and why in the lake (the day is readable again), and a runless
    materialization of the typed asset's partition carrying the same, so the asset page
    shows it and automation rebuilds the feature days that had left the day out.

    Returns:
        The record written to the lake.

    Raises:
        UnknownNameError: ``source`` is not a daily source of the problem.
        UsageError: no who or why.
        NothingToKeepError: the day's newest landing was not rejected, or has no table.
    """
    from mlplatform.errors import UnknownNameError

    if source not in problem.spec.daily_sources():
        raise UnknownNameError(
            f"{problem.name} has no daily source {source!r}; "
            f"known: {', '.join(problem.spec.daily_sources())}"
        )
    record = lake.lake().keep(problem.name, source, day, by, reason)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=dg.AssetKey([problem.name, source]),
            partition=day.isoformat(),
            description=f"previous table kept by {record['by']}: {record['reason']}",
            metadata={
                "kept_by": record["by"],
                "kept_reason": record["reason"],
                "rejected_landing": dg.MetadataValue.path(record["quarantine"]),
                "path": dg.MetadataValue.path(record["table"]),
            },
        )
    )
    return record
