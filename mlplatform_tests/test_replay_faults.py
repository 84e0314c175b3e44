"""The replay refuses what it cannot replay honestly, and runs what automation asks for.

Each test uses the featured lake (2013-01-01..07) with a fresh instance, ingesting the
days it needs on that instance; none needs a model or a full replayed day.
"""

from datetime import date

import dagster as dg
import pytest

from mlplatform.cli import main
from mlplatform.defs.automation import AUTOMATION_SENSOR
from mlplatform.replay import Replay, ReplayError, replay
from mlplatform_tests.helpers import Platform


def _resources(platform: Platform) -> dict:
    return {"lake": platform.feast.lake, "feast": platform.feast, "mlflow": platform.mlflow}


def _replay(platform: Platform, start: date, **kwargs: object) -> None:
    replay(
        platform.problem,
        start,
        start,
        platform.defs,
        platform.instance,
        _resources(platform),
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_gap_of_unlanded_days_is_refused_not_served_from_stale_features(
    featured: Platform,
) -> None:
    assert featured.run_day("2013-01-07").success
    assert featured.run_features("2013-01-07").success

    # 01-08 and 01-09 never landed: 01-10 would be served from features days old
    with pytest.raises(ReplayError, match=r"2013-01-08..2013-01-09 \(2 days\) were never landed"):
        _replay(featured, date(2013, 1, 10))
    # the day after the newest ingested one gets past the check (to the champion's)
    with pytest.raises(ReplayError, match="no champion to replay from"):
        _replay(featured, date(2013, 1, 8))


def test_days_ingested_without_features_are_refused_with_the_command_to_run(
    featured: Platform,
) -> None:
    assert featured.run_day("2013-01-07").success  # a manual ingest: no features yet

    with pytest.raises(ReplayError, match=r"2013-01-07..2013-01-07 were ingested but") as e:
        _replay(featured, date(2013, 1, 8))
    assert "mlplatform features --problem flight_delay --start 2013-01-07" in str(e.value)


def test_zero_trials_per_retrain_is_refused_before_the_first_day(
    featured: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    ops = {"flight_delay__model_candidate": {"config": {"n_trials": 0}}}
    with pytest.raises(ReplayError, match="n_trials: Input should be greater than or equal to 1"):
        _replay(featured, date(2013, 1, 8), retrain_ops=ops)

    argv = ["replay", "--problem", "flight_delay", "--start", "2013-01-08", "--end", "2013-01-09"]
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--trials", "0"])
    assert exited.value.code == 2
    assert "'0' is not a whole number of at least 1" in capsys.readouterr().err


def test_a_backfill_request_of_the_automation_sensor_runs_one_run_per_day(
    featured: Platform,
) -> None:
    """A re-ingest of the planes (every `mlplatform ingest` runs the reference job) makes
    the automation sensor ask for the `plane` table of every day at once, as a backfill;
    the replay crashed on it ("automation: no job for RunRequest(... plane ...)")."""
    for day in ("2013-01-06", "2013-01-07"):
        assert featured.run_day(day).success
        assert featured.run_features(day).success
    runner = Replay(featured.problem, featured.defs, featured.instance, _resources(featured))
    runner.tick_sensor(AUTOMATION_SENSOR)  # the sensor's cursor, as a previous replay left it
    assert featured.run_reference().success  # the manual `ingest`: planes again

    requests = runner.tick_sensor(AUTOMATION_SENSOR)
    backfills = [r for r in requests if r.asset_graph_subset is not None]
    assert backfills, "the automation sensor asks for several days at once"
    for request in requests:
        runner.execute(AUTOMATION_SENSOR, None, request)

    assert runner.launched and all(run.success for run in runner.launched)
    plane = dg.AssetKey(["flight_delay", "plane"])
    partitions = {
        run.result.dagster_run.tags.get("dagster/partition")
        for run in runner.launched
        if plane in (run.result.dagster_run.asset_selection or set())
    }
    assert {"2013-01-06", "2013-01-07"} <= partitions
