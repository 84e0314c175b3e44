"""Automation: landing starts ingestion, features follow by declarative automation, and
retraining triggers respect their rails, on real Dagster instances and the real data."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from mlplatform.defs.automation import retrain_job_name
from mlplatform.lib.monitoring.retraining import rails
from mlplatform.problems import Problem
from mlplatform.spec import RetrainingSpec
from mlplatform_tests.helpers import (
    FAST,
    QUIET,
    STUMP,
    STUMP_TRAINING,
    Platform,
    failure_messages,
    tuned_problem,
)


def _tick(platform: Platform, name: str) -> tuple[list[dg.RunRequest], str | None]:
    sensor = platform.defs.resolve_sensor_def(name)
    resources = {"lake": platform.feast.lake, "mlflow": platform.mlflow}
    with dg.build_sensor_context(
        instance=platform.instance, resources=resources, definitions=platform.defs
    ) as context:
        data = sensor.evaluate_tick(context)
    return list(data.run_requests or []), data.skip_message


def test_landing_starts_the_ingestion_of_each_landed_day_once(platform: Platform) -> None:
    requests, _ = _tick(platform, "flight_delay_landing")
    keys = [str(r.run_key) for r in requests]
    # the run key carries the landed content's hash (a corrected file is a new request)
    assert keys[0].startswith("reference-")
    assert [k[: len("ingest-2013-01-01")] for k in keys[1:]] == [
        f"ingest-2013-01-0{d}" for d in range(1, 8)
    ]
    assert requests[1].partition_key == "2013-01-01"

    assert platform.run_reference().success
    assert platform.run_day("2013-01-07").success
    again, _ = _tick(platform, "flight_delay_landing")
    assert [r.run_key for r in again] == keys[1:7]  # the same content: the same requests


def test_nothing_landed_starts_nothing(
    tmp_path: Path, problem: Problem, instance: dg.DagsterInstance
) -> None:
    empty = Platform(problem, tmp_path / "data", instance)

    requests, skipped = _tick(empty, "flight_delay_landing")

    assert requests == [] and skipped == "no newly landed day"


def test_features_and_the_online_store_follow_ingestion_without_a_click(
    platform: Platform,
) -> None:
    plane = dg.AssetKey(["flight_delay", "plane"])
    online = dg.AssetKey(["flight_delay", "online_features"])
    # the automation sensor's first tick: nothing has happened yet
    start = dg.evaluate_automation_conditions(defs=platform.defs, instance=platform.instance)
    assert start.get_num_requested(plane) == 0  # no input yet
    assert start.get_num_requested(dg.AssetKey(["flight_delay", "feature_registry"])) == 1
    assert platform.run_reference().success
    for day in range(1, 8):
        assert platform.run_day(f"2013-01-0{day}").success

    first = dg.evaluate_automation_conditions(
        defs=platform.defs, instance=platform.instance, cursor=start.cursor
    )

    assert "2013-01-07" in first.get_requested_partitions(plane)
    # the day's data closes the day: its monitoring runs too
    for name in ("served_predictions", "online_outcomes", "online_performance", "drift_report"):
        key = dg.AssetKey(["flight_delay", name])
        assert "2013-01-07" in first.get_requested_partitions(key), name
    assert first.get_num_requested(online) == 1  # in the same run, after the tables

    for day in range(1, 8):
        assert platform.run_features(f"2013-01-0{day}").success
    assert platform.run_feature_store().success  # what the first tick asked for, done
    settled = dg.evaluate_automation_conditions(
        defs=platform.defs, instance=platform.instance, cursor=first.cursor
    )
    assert "2013-01-07" not in settled.get_requested_partitions(plane)  # handled already

    assert platform.run_features("2013-01-07").success  # a day recomputed
    after = dg.evaluate_automation_conditions(
        defs=platform.defs, instance=platform.instance, cursor=settled.cursor
    )
    assert after.get_num_requested(online) == 1  # the online store follows

    # a day nobody was served (no champion yet): monitoring records that, and fails nothing
    quiet = platform.run_monitoring("2013-01-07")
    assert quiet.success, failure_messages(quiet)
    (drift,) = [
        e.materialization.metadata
        for e in quiet.get_asset_materialization_events()
        if e.asset_key and e.asset_key.path[-1] == "drift_report"
    ]
    assert drift["skipped"].value == "no champion yet"


def test_the_rails_stop_a_retrain_without_labels_in_cool_down_or_over_the_cap() -> None:
    rule = RetrainingSpec(min_new_labels=100, cooldown_hours=24, daily_cap=1)
    now = datetime(2013, 3, 1, 6, tzinfo=UTC)

    assert rails(rule, now, [], 5000) is None
    assert "only 99 new labelled rows" in (rails(rule, now, [], 99) or "")
    assert "cool-down" in (rails(rule, now, [now - timedelta(hours=3)], 5000) or "")
    capped = RetrainingSpec(min_new_labels=0, cooldown_hours=0, daily_cap=2)
    two = [now - timedelta(hours=5), now - timedelta(hours=1)]
    assert "daily cap: 2" in (rails(capped, now, two, 5000) or "")
    assert rails(capped, now, two[1:], 5000) is None


def test_labelled_volume_retrains_through_the_gates_then_cools_down(
    featured: Platform, problem: Problem
) -> None:
    tuned = tuned_problem(problem)
    retraining = tuned.spec.retraining.model_copy(
        update={"labeled_volume": 1000, "min_new_labels": 500, "cooldown_hours": 24}
    )
    from dataclasses import replace

    tuned = replace(tuned, spec=tuned.spec.model_copy(update={"retraining": retraining}))
    platform = Platform(tuned, featured.lake.root, featured.instance)
    assert platform.run_feature_store().success  # training-set checks on this instance

    (request,), _ = _tick(platform, "flight_delay_labeled_volume")
    assert request.tags["mlplatform/retrain"] == "labeled_volume"
    assert "new labelled rows" in request.tags["mlplatform/reason"]

    job = platform.defs.resolve_job_def(retrain_job_name(tuned))
    ops = {
        "flight_delay__training_set": {"config": {"holdout_days": 2}},
        "flight_delay__model_candidate": {"config": {**FAST, "params": STUMP}},
    }
    result = job.execute_in_process(
        instance=platform.instance,
        run_config={**QUIET, "ops": ops},
        tags=request.tags,
        raise_on_error=False,
    )
    assert result.success, failure_messages(result)
    done = {e.asset_key.path[-1] for e in result.get_asset_materialization_events() if e.asset_key}
    assert {
        "training_set",
        "holdout_set",
        "model_candidate",
        "evaluation_report",
        "promotion",
    } <= done

    requests, skipped = _tick(platform, "flight_delay_labeled_volume")
    assert requests == []
    # the new champion's window ends on 01-05: the two holdout days' labels are new, but
    # the retrain a moment ago holds the next one back
    assert skipped and "cool-down" in skipped


def test_the_rails_run_on_the_platform_clock(
    featured: Platform, problem: Problem, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    retraining = problem.spec.retraining.model_copy(
        update={"labeled_volume": 1000, "min_new_labels": 500, "cooldown_hours": 24}
    )
    tuned = replace(problem, spec=problem.spec.model_copy(update={"retraining": retraining}))
    platform = Platform(tuned, featured.lake.root, featured.instance)
    monkeypatch.setenv("MLPLATFORM_NOW", "2013-01-08T06:00:00+00:00")  # a replayed morning
    (request,), _ = _tick(platform, "flight_delay_labeled_volume")
    assert request.tags["mlplatform/at"] == "2013-01-08T06:00:00+00:00"
    # the retrain that request started, as the daemon would record it (no need to train)
    job = platform.defs.resolve_job_def(retrain_job_name(tuned))
    platform.instance.create_run_for_job(job, tags=request.tags)

    monkeypatch.setenv("MLPLATFORM_NOW", "2013-01-08T20:00:00+00:00")
    assert "cool-down" in (_tick(platform, "flight_delay_labeled_volume")[1] or "")
    monkeypatch.setenv("MLPLATFORM_NOW", "2013-01-09T07:00:00+00:00")  # 25 h later
    (again,), _ = _tick(platform, "flight_delay_labeled_volume")
    assert again.tags["mlplatform/at"] == "2013-01-09T07:00:00+00:00"


def test_drift_retrains_once_per_champion(featured: Platform, problem: Problem) -> None:
    from dataclasses import replace

    tuned = tuned_problem(problem)
    retraining = tuned.spec.retraining.model_copy(update={"min_new_labels": 500})
    tuned = replace(tuned, spec=tuned.spec.model_copy(update={"retraining": retraining}))
    platform = Platform(tuned, featured.lake.root, featured.instance)
    assert platform.run_feature_store().success
    assert platform.run_gated_training(params=STUMP, **STUMP_TRAINING).success  # champion 1
    drift_report = dg.AssetKey(["flight_delay", "drift_report"])

    def drifted(day: str) -> dg.RunRequest:
        platform.instance.report_runless_asset_event(
            dg.AssetMaterialization(
                drift_report, partition=day, metadata={"drifted": True, "drift_share": 0.42}
            )
        )
        requests, skipped = _tick(platform, "flight_delay_drift")
        assert len(requests) == 1, skipped
        return requests[0]

    first, second = drifted("2013-01-06"), drifted("2013-01-07")

    assert first.tags["mlplatform/retrain"] == "drift"
    assert "drift on 2013-01-06: share 0.42" in first.tags["mlplatform/reason"]
    # the same run key: the daemon (and the replay) launch it once for champion 1
    assert first.run_key == second.run_key == "drift-1"
