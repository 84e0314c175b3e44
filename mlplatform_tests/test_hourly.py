"""``partitioning.granularity: hourly``: real flights landed, checked and ingested hour by hour.

The flights spec with ``granularity: hourly`` (a copy of the problem, its spec changed in
the test): its daily sources land one file per local hour, each hour is checked and
quarantined alone (Dagster hourly partitions in New York time), and the typed tables, the
feature tables and everything after them stay daily, a day read from its hours through
``dg.TimeWindowPartitionMapping``. The flights as shipped (daily) keep their definitions.
"""

import shutil
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mlplatform.defs.jobs import daily_job_name, typed_job_name
from mlplatform.defs.partitions import daily_partitions
from mlplatform.lib.ingestion.hours import hour_keys
from mlplatform.lib.ingestion.landing import pending
from mlplatform.problems import Problem
from mlplatform.problems.flight_delay.source import export_day
from mlplatform.spec import ProblemSpec
from mlplatform_tests.helpers import (
    QUIET,
    Platform,
    checks,
    failure_messages,
    fresh_instance,
    materialized,
)

DAY = "2013-01-02"
TZ = "America/New_York"
BROKEN = "2013-01-02-10:00"


def hourly_variant(problem: Problem) -> Problem:
    """The flights problem with ``granularity: hourly``.

    The weather's null-rate limits are per day (72 observations); an hour holds three, where
    one missing pressure is a third: the hourly variant leaves weather null rates unjudged.
    """
    data = problem.spec.model_dump(mode="json", exclude_unset=True)
    data["partitioning"]["granularity"] = "hourly"
    data["sources"]["weather"].pop("max_null_rate")
    return replace(problem, spec=ProblemSpec.model_validate(data))


def run(platform: Platform, job: str, partition: str | None) -> dg.ExecuteInProcessResult:
    return platform.defs.resolve_job_def(job).execute_in_process(
        instance=platform.instance, partition_key=partition, raise_on_error=False, run_config=QUIET
    )


@dataclass(frozen=True)
class HourlyBase:
    """A lake with DAY landed per hour and every hour ingested, and what automation asked."""

    root: Path
    asked_before_last_hour: set[str | None]
    asked_after_last_hour: set[str | None]


@pytest.fixture(scope="module")
def hourly_base(tmp_path_factory: pytest.TempPathFactory, problem: Problem) -> HourlyBase:
    root = tmp_path_factory.mktemp("hourly") / "data"
    typed = dg.AssetKey(["flight_delay", "flights"])
    with fresh_instance() as inst:
        platform = Platform(hourly_variant(problem), root, inst)
        platform.land(DAY, DAY)
        assert platform.run_reference().success
        start = dg.evaluate_automation_conditions(defs=platform.defs, instance=inst)
        keys = hour_keys(date.fromisoformat(DAY), TZ)
        for key in keys[:-1]:
            result = run(platform, daily_job_name(platform.problem), key)
            assert result.success, (key, failure_messages(result))
        waiting = dg.evaluate_automation_conditions(
            defs=platform.defs, instance=inst, cursor=start.cursor
        )
        assert run(platform, daily_job_name(platform.problem), keys[-1]).success
        done = dg.evaluate_automation_conditions(
            defs=platform.defs, instance=inst, cursor=waiting.cursor
        )
    return HourlyBase(
        root,
        set(waiting.get_requested_partitions(typed)),
        set(done.get_requested_partitions(typed)),
    )


@pytest.fixture
def hourly(
    tmp_path: Path, hourly_base: HourlyBase, problem: Problem, instance: dg.DagsterInstance
) -> Platform:
    """A fresh copy of the hourly lake on a new instance (nothing materialized in it)."""
    root = tmp_path / "data"
    shutil.copytree(hourly_base.root, root)
    return Platform(hourly_variant(problem), root, instance)


def test_hour_keys_are_dagsters_own_across_both_clock_changes() -> None:
    hourly = dg.HourlyPartitionsDefinition(
        start_date="2013-03-09-00:00", end_date="2013-11-05-00:00", timezone=TZ
    )
    ours = [k for d in pd.date_range("2013-03-09", "2013-11-04") for k in hour_keys(d.date(), TZ)]
    assert ours == hourly.get_partition_keys()
    assert len(hour_keys(date(2013, 3, 10), TZ)) == 23
    assert "2013-11-03-01:00-0500" in hour_keys(date(2013, 11, 3), TZ)  # the repeated hour


def test_raw_batches_are_hourly_partitions_and_the_rest_stays_daily(problem: Problem) -> None:
    variant = hourly_variant(problem)
    defs = Platform(variant, Path("/nonexistent"), dg.DagsterInstance.ephemeral()).defs
    graph = defs.resolve_asset_graph()
    raw = graph.get(dg.AssetKey(["flight_delay", "raw_flights"])).partitions_def
    assert isinstance(raw, dg.HourlyPartitionsDefinition)
    assert raw.timezone == TZ
    assert raw.get_partition_keys()[:2] == ["2013-01-01-00:00", "2013-01-01-01:00"]
    assert len(raw.get_partition_keys()) == 365 * 24  # one 23-hour and one 25-hour day
    for name in ("flights", "weather", "carrier_delays", "origin_weather", "drift_report"):
        part = graph.get(dg.AssetKey(["flight_delay", name])).partitions_def
        assert part == daily_partitions(variant.spec), name
    # the typed table of a day follows its hours by automation, once all are in
    typed = graph.get(dg.AssetKey(["flight_delay", "flights"]))
    assert typed.automation_condition is not None


def test_each_hour_lands_its_own_file_and_nothing_is_lost(hourly: Platform) -> None:
    keys = hour_keys(date.fromisoformat(DAY), TZ)
    assert hourly.lake.landed_hours("flight_delay", "flights") == keys
    assert hourly.lake.landed_days("flight_delay", "flights") == []  # no daily folder
    per_hour = [hourly.lake.landed_files("flight_delay", "flights", k) for k in keys]
    assert all(len(files) == 1 for files in per_hour)
    assert per_hour[10][0].name == "flights_2013-01-02-10:00.csv"
    frames = [pd.read_csv(files[0], dtype="string") for files in per_hour]
    assert sum(len(f) for f in frames) == len(export_day("flights", date.fromisoformat(DAY)))
    hours = pd.to_datetime(frames[10]["time_hour"], utc=True).dt.tz_convert(TZ).dt.hour
    assert set(hours) == {10}
    assert len(frames[3]) == 0  # no departures at 3 a.m.: a header-only file


def test_the_daily_typed_and_feature_tables_read_the_days_hours(
    hourly_base: HourlyBase, hourly: Platform
) -> None:
    # Dagster itself asked for the day's typed tables once all its hours were in, not before
    assert hourly_base.asked_before_last_hour == set()
    assert hourly_base.asked_after_last_hour == {DAY}
    typed = run(hourly, typed_job_name(hourly.problem), DAY)
    assert typed.success, failure_messages(typed)
    assert materialized(typed) == {"flights", "weather"}
    table = hourly.lake.read_table("flight_delay", "flights", DAY)
    expected = export_day("flights", date.fromisoformat(DAY))
    assert len(table) == len(expected) > 900
    assert str(table["time_hour"].dtype) == "datetime64[ns, UTC]"
    assert len(hourly.lake.read_table("flight_delay", "weather", DAY)) == 72
    features = hourly.run_features(DAY)
    assert features.success, failure_messages(features)
    weather = hourly.lake.read_table("flight_delay", "features/origin_weather", DAY)
    assert set(weather["origin"]) == {"EWR", "JFK", "LGA"}
    assert len(hourly.lake.read_table("flight_delay", "features/carrier_delays", DAY)) > 0


def test_a_broken_hour_is_quarantined_alone_and_holds_its_day(hourly: Platform) -> None:
    lake, name = hourly.lake, "flight_delay"
    versions = lake.input_versions(name, ["flights"], [date.fromisoformat(DAY)])
    (path,) = lake.landed_files(name, "flights", BROKEN)
    good = pd.read_csv(path, dtype="string", keep_default_na=False)
    broken = good.copy()
    broken.loc[0, "time_hour"] = "2013-01-02T18:00:00Z"  # 13:00 in New York: another hour
    lake.land(name, "flights", BROKEN, broken, "csv")
    # the sensor's view: only that hour has new content
    (todo,) = pending(lake, hourly.problem)
    assert (todo.label, todo.sources) == (BROKEN, ["flights"])

    result = run(hourly, daily_job_name(hourly.problem), BROKEN)
    found = checks(result)
    assert not found[("raw_flights", "timestamps_in_partition")].passed
    assert "outside 2013-01-02-10:00" in str(
        found[("raw_flights", "timestamps_in_partition")].description
    )
    assert found[("raw_weather", "timestamps_in_partition")].passed
    quarantined = sorted((lake.root / "quarantine" / name).glob("*/*"))
    assert [p.relative_to(lake.root / "quarantine" / name).as_posix() for p in quarantined] == [
        f"flights/{BROKEN}"
    ]
    reports = {
        k: lake.read_batch_report(name, "raw_flights", k)
        for k in hour_keys(date.fromisoformat(DAY), TZ)
    }
    assert [k for k, r in reports.items() if r and not r["accepted"]] == [BROKEN]
    # the day is unreadable downstream until the hour is corrected, and says which hour
    blocked = lake.blocking(name, "flights", date.fromisoformat(DAY))
    assert blocked is not None and BROKEN in blocked.quarantine
    assert "timestamps_in_partition" in blocked.failed
    assert versions != lake.input_versions(name, ["flights"], [date.fromisoformat(DAY)])
    typed = run(hourly, typed_job_name(hourly.problem), DAY)
    assert not typed.success
    assert any(BROKEN in m for m in failure_messages(typed))

    lake.land(name, "flights", BROKEN, good, "csv")  # the corrected hour
    assert run(hourly, daily_job_name(hourly.problem), BROKEN).success
    assert lake.blocking(name, "flights", date.fromisoformat(DAY)) is None
    # what a training set records of the day: its hours' content, the same again now
    assert versions == lake.input_versions(name, ["flights"], [date.fromisoformat(DAY)])
    assert list(versions) == [f"flights/{DAY}"]


def test_the_daily_flights_definitions_are_unchanged(problem: Problem) -> None:
    daily = Platform(problem, Path("/nonexistent"), dg.DagsterInstance.ephemeral()).defs
    hourly = Platform(hourly_variant(problem), Path("/nonexistent"), dg.DagsterInstance.ephemeral())
    graph, other = daily.resolve_asset_graph(), hourly.defs.resolve_asset_graph()
    assert set(graph.get_all_asset_keys()) == set(other.get_all_asset_keys())
    for key in graph.get_all_asset_keys():
        if key.path[0] != "flight_delay":
            continue
        part = graph.get(key).partitions_def
        assert part is None or part == daily_partitions(problem.spec), key
    raw = graph.get(dg.AssetKey(["flight_delay", "raw_flights"]))
    assert raw.partitions_def == dg.DailyPartitionsDefinition(
        start_date="2013-01-01", end_date="2014-01-01", timezone=TZ
    )
    ingestion = daily.resolve_job_def(daily_job_name(problem))
    assert ingestion.partitions_def == daily_partitions(problem.spec)
    assert {"flights", "raw_flights", "weather", "raw_weather"} <= {
        n.split("__")[-1] for n in ingestion.graph.node_dict
    }
    assert typed_job_name(problem) not in {j.name for j in daily.resolve_all_job_defs()}
    # the typed tables keep the landing sensor's run (no automation condition of their own)
    assert graph.get(dg.AssetKey(["flight_delay", "flights"])).automation_condition is None


def test_the_landing_sensor_asks_for_each_hour_raw_batches_only(hourly: Platform) -> None:
    from mlplatform.resources import LakeResource

    sensor = hourly.defs.resolve_sensor_def("flight_delay_landing")
    lake = LakeResource(root=str(hourly.lake.root))
    with dg.build_sensor_context(
        instance=hourly.instance, resources={"lake": lake}, definitions=hourly.defs
    ) as context:
        data = sensor.evaluate_tick(context)
    hours = [r for r in data.run_requests or [] if r.partition_key]
    assert [r.partition_key for r in hours] == hour_keys(date.fromisoformat(DAY), TZ)[:10]
    raw = {
        dg.AssetKey(["flight_delay", "raw_flights"]),
        dg.AssetKey(["flight_delay", "raw_weather"]),
    }
    assert all(set(r.asset_selection or []) == raw for r in hours)


def test_volume_of_an_hour_is_judged_against_the_same_hour_of_earlier_days(
    hourly: Platform,
) -> None:
    from mlplatform.lib.ingestion.ingest import ingest_batch
    from mlplatform.lib.ingestion.landing import hour_exports

    problem, lake = hourly.problem, hourly.lake
    spec = problem.spec.sources["flights"]
    rows = {}
    for day in (3, 4, 5, 6):
        key = f"2013-01-0{day}-10:00"
        frame = hour_exports(problem, "flights", date(2013, 1, day))[key]
        lake.land("flight_delay", "flights", key, frame, "csv")
        batch = ingest_batch(
            lake, "flight_delay", "flights", spec, problem.schema("flights"), key, TZ
        )
        rows[day] = len(frame)
    volume = next(o for o in batch.outcomes if o.name == "volume")
    # 01-02..01-05 at 10:00: four earlier days, the same hour (not the hours before it)
    assert volume.details["history_partitions"] == 4
    earlier = [
        len(pd.read_csv(lake.landed_files("flight_delay", "flights", "2013-01-02-10:00")[0]))
    ]
    earlier += [rows[d] for d in (3, 4, 5)]
    assert volume.details["trailing_median"] == float(pd.Series(earlier).median())
    assert volume.details["rows"] == rows[6]


def test_the_replay_lands_and_ingests_each_hour_at_its_end(
    tmp_path: Path, problem: Problem, instance: dg.DagsterInstance
) -> None:
    from mlplatform.replay import Replay
    from mlplatform.resources import LakeResource

    variant = hourly_variant(problem)
    platform = Platform(variant, tmp_path / "data", instance)
    for source in ("planes", "airports"):
        platform.lake.land("flight_delay", source, None, variant.export_reference(source), "csv")
    assert platform.run_reference().success
    lake = LakeResource(root=str(platform.lake.root))
    resources = {"lake": lake, "feast": platform.feast, "mlflow": platform.mlflow}
    replay = Replay(variant, platform.defs, instance, resources)

    replay.land_hours(date.fromisoformat(DAY))

    keys = hour_keys(date.fromisoformat(DAY), TZ)
    raw = dg.AssetKey(["flight_delay", "raw_flights"])
    assert sorted(instance.get_materialized_partitions(raw)) == sorted(keys)
    ingestions = [r for r in replay.launched if r.origin == "flight_delay_landing"]
    # one run per hour, each started when its hour had ended (the platform's clock)
    assert [r.result.dagster_run.tags.get("dagster/partition") for r in ingestions] == keys
    assert ingestions[0].at.isoformat() == "2013-01-02T06:00:00+00:00"  # 01:00 in New York
    assert ingestions[-1].at.isoformat() == "2013-01-03T05:00:00+00:00"
    # the day's typed tables followed by automation, after its last hour
    typed = dg.AssetKey(["flight_delay", "flights"])
    assert instance.get_materialized_partitions(typed) == {DAY}
