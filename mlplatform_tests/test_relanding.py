"""Re-landed days and rejected re-deliveries, on real lakes, real Dagster instances and the
real landing sensor (issue 15, items 4 and 5).

- Case ``17_relanded_day_not_reingested``: new content for a landed day (its content hash
  changed) is ingested again: the rejected day recovers, a corrected accepted day is
  re-validated, and automation rebuilds what depends on it.
- A day whose newest landing was rejected is not readable downstream (the lake refuses
  it, naming the day and the quarantine folder) until a corrected file is accepted or
  someone keeps the previous table, with who and why.
"""

import os
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from mlplatform.defs.automation import keep_previous
from mlplatform.defs.features.assets import complete_days
from mlplatform.lib.ingestion.landing import landed_hash, pending
from mlplatform.lib.storage import RejectedDayError
from mlplatform.status import problem_status
from mlplatform_tests.helpers import QUIET, Platform, failure_messages, materialized

CASE = "17_relanded_day_not_reingested"
CASES = Path(__file__).parent / "cases"
LANDING = "flight_delay_landing"
RAW_FLIGHTS = dg.AssetKey(["flight_delay", "raw_flights"])
FLIGHTS = dg.AssetKey(["flight_delay", "flights"])
CARRIER_DELAYS = dg.AssetKey(["flight_delay", "carrier_delays"])
ONLINE = dg.AssetKey(["flight_delay", "online_features"])


def _tick(platform: Platform, cursor: str | None = None) -> Any:
    """One evaluation of the real landing sensor, as the daemon runs it."""
    sensor = platform.defs.resolve_sensor_def(LANDING)
    with dg.build_sensor_context(
        instance=platform.instance,
        resources={"lake": platform.feast.lake},
        definitions=platform.defs,
        cursor=cursor,
    ) as context:
        return sensor.evaluate_tick(context)


def _execute(platform: Platform, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """Run one of the sensor's requests in-process with the daemon's tags."""
    selection = list(request.asset_selection or [])
    job = platform.defs.resolve_implicit_job_def_def_for_assets(selection)
    assert job is not None
    return job.execute_in_process(
        instance=platform.instance,
        partition_key=request.partition_key,
        asset_selection=selection,
        tags={
            **request.tags,
            "dagster/run_key": request.run_key or "",
            "dagster/sensor_name": LANDING,
        },
        run_config=QUIET,
        raise_on_error=False,
    )


def _settle(platform: Platform) -> list[dg.RunRequest]:
    """Tick the sensor and run what it asks until it asks for nothing; what ran."""
    done: list[dg.RunRequest] = []
    for _ in range(10):
        requests = list(_tick(platform).run_requests or [])
        if not requests:
            return done
        for request in requests:
            assert _execute(platform, request).success, request.partition_key
        done += requests
    raise AssertionError("the landing sensor kept asking")


def _by_day(requests: list[dg.RunRequest]) -> dict[str, dg.RunRequest]:
    return {str(r.partition_key): r for r in requests if r.partition_key}


def _replace_landed(path: Path, frame: pd.DataFrame) -> None:
    """Replace a landed file the way an upstream system does: a new file renamed in place."""
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _read_text_csv(path: Path) -> pd.DataFrame:
    # every value as written, so only the cell we change differs
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_17_relanded_day_not_reingested(platform: Platform) -> None:
    steps = (CASES / f"{CASE}.md").read_text(encoding="utf-8")
    assert "2013-01-17" in steps and "arr_delay -3.0 -> 180.0" in steps
    lake = platform.lake

    # the case's lake: 2013-01-01..16 ingested (by the sensor, on this instance), 01-17..20
    # landed, not ingested
    platform.land("2013-01-08", "2013-01-16")
    first = _by_day(_settle(platform))
    assert sorted(first) == [f"2013-01-{d:02d}" for d in range(1, 17)]
    original_key_15 = first["2013-01-15"].run_key
    platform.land("2013-01-17", "2013-01-20")

    # 1. the landed flights file of 2013-01-17 replaced with a header-only file
    flights_17 = platform.landed_file("flights", "2013-01-17")
    good_17 = flights_17.read_bytes()
    _replace_landed(flights_17, _read_text_csv(flights_17).head(0))

    # 2. the sensor asks for 01-17..20; 01-17 is rejected (volume) and quarantined
    asked = _by_day(list(_tick(platform).run_requests or []))
    assert sorted(asked) == ["2013-01-17", "2013-01-18", "2013-01-19", "2013-01-20"]
    rejected = _execute(platform, asked["2013-01-17"])
    assert not rejected.success
    (rejection,) = lake.rejections("flight_delay", "flights")
    assert rejection.day == "2013-01-17" and "volume" in rejection.failed
    assert Path(rejection.quarantine).is_dir()

    # 3. the good 01-17 lands again; one value of the accepted 01-15 is corrected
    _replace_landed(flights_17, _read_text_csv(flights_17).head(0))  # same bytes: nothing new
    flights_17.write_bytes(good_17)
    flights_15 = platform.landed_file("flights", "2013-01-15")
    corrected = _read_text_csv(flights_15)
    assert corrected.loc[0, "arr_delay"] == "-3.0"
    corrected.loc[0, "arr_delay"] = "180.0"
    _replace_landed(flights_15, corrected)

    # status says so before anything runs: re-landed, not ingested; 01-17 still rejected
    before = problem_status(platform.problem, lake, platform.instance)
    relanded = {r["day"]: r["sources"] for r in before["relanded_not_ingested"]}
    assert set(relanded) == {"2013-01-15", "2013-01-17"}
    assert set(relanded["2013-01-15"]) == {"flights"}  # the weather of that day is unchanged
    assert relanded["2013-01-15"]["flights"]["landed"] == landed_hash(
        lake, "flight_delay", "flights", "2013-01-15"
    )
    assert [r["day"] for r in before["rejected_days"]] == ["2013-01-17"]

    # 4. the next tick asks for the corrected day and the recovered day too, with new keys
    cursor_before = dg.evaluate_automation_conditions(
        defs=platform.defs, instance=platform.instance
    ).cursor
    asked = _by_day(list(_tick(platform).run_requests or []))
    assert sorted(asked) == [f"2013-01-{d}" for d in (15, 17, 18, 19, 20)]
    again_15 = asked["2013-01-15"]
    assert again_15.run_key != original_key_15
    assert set(again_15.asset_selection or []) == {RAW_FLIGHTS, FLIGHTS}  # only what changed
    assert asked["2013-01-17"].run_key != rejected.dagster_run.tags["dagster/run_key"]

    # the day recovers; the corrected day is re-validated and its typed table rebuilt
    recovered = _execute(platform, asked["2013-01-17"])
    assert recovered.success, failure_messages(recovered)
    assert {"raw_flights", "flights"} <= materialized(recovered)
    assert lake.rejections("flight_delay", "flights") == []
    assert len(lake.read_table("flight_delay", "flights", "2013-01-17")) > 800
    revalidated = _execute(platform, again_15)
    assert revalidated.success, failure_messages(revalidated)
    typed = lake.read_table("flight_delay", "flights", "2013-01-15")
    assert 180.0 in typed["arr_delay"].to_list()
    # the raw asset recorded the hash it ingested as its data version
    record = platform.instance.get_latest_data_version_record(
        RAW_FLIGHTS, partition_key="2013-01-15"
    )
    assert record is not None and record.asset_materialization is not None
    recorded = record.asset_materialization.tags or {}
    assert recorded["dagster/data_version"] == landed_hash(
        lake, "flight_delay", "flights", "2013-01-15"
    )

    # everything downstream of the re-ingested days follows by automation
    after = dg.evaluate_automation_conditions(
        defs=platform.defs, instance=platform.instance, cursor=cursor_before
    )
    requested = after.get_requested_partitions(CARRIER_DELAYS)
    assert {"2013-01-15", "2013-01-16", "2013-01-17"} <= requested
    assert after.get_num_requested(ONLINE) == 1

    # settled: the ingested days are not asked for again, status has no re-landed day
    settled = _by_day(list(_tick(platform).run_requests or []))
    assert sorted(settled) == ["2013-01-18", "2013-01-19", "2013-01-20"]
    assert problem_status(platform.problem, lake, platform.instance)["relanded_not_ingested"] == []

    # a correction undone (the original content back) is new again, under a new run key
    corrected.loc[0, "arr_delay"] = "-3.0"
    _replace_landed(flights_15, corrected)
    undone = _by_day(list(_tick(platform).run_requests or []))["2013-01-15"]
    assert undone.run_key not in {original_key_15, again_15.run_key}


def test_a_rejected_redelivery_is_not_read_downstream_until_kept(featured: Platform) -> None:
    lake, problem = featured.lake, featured.problem
    day = "2013-01-07"
    _settle(featured)  # this instance ingests the lake's days, as the daemon would
    assert featured.run_features(day).success  # built from the accepted batch
    flights = featured.landed_file("flights", day)
    delivered = _read_text_csv(flights)
    _replace_landed(flights, delivered.head(0))  # a broken re-delivery

    (request,) = list(_tick(featured).run_requests or [])
    assert request.partition_key == day
    assert not _execute(featured, request).success  # rejected by volume
    assert lake.table_path("flight_delay", "flights", day).exists()  # the old table is there

    # ...but no reader gets it: the lake names the day and the quarantine folder
    (rejection,) = lake.rejections("flight_delay", "flights")
    with pytest.raises(RejectedDayError) as refused:
        lake.read_table("flight_delay", "flights", day)
    assert day in str(refused.value) and rejection.quarantine in str(refused.value)
    assert rejection.quarantine.startswith(str(lake.root / "quarantine"))
    assert not lake.has_partition("flight_delay", "flights", day)
    assert day not in {str(d) for d in lake.partitions("flight_delay", "flights")}
    window = lake.read_days("flight_delay", "flights", [pd.Timestamp(day).date()])
    assert window.empty
    assert [
        r.day for r in lake.blocked_days("flight_delay", "flights", [pd.Timestamp(day).date()])
    ] == [day]
    # the feature job fails that day with the same message; the training set skips it
    features = featured.run_features(day)
    assert not features.success
    assert any(rejection.quarantine in m and day in m for m in failure_messages(features))
    assert day not in {str(d) for d in complete_days(featured.feast.lake, problem)}
    shown = problem_status(problem, lake, featured.instance)
    assert shown["rejected_days"][0]["day"] == day and shown["rejected_days"][0]["kept"] is None
    (stale,) = shown["training_set"]["stale_days"]  # the holdout set read that day
    assert (stale["day"], stale["source"], stale["set"]) == (day, "flights", "holdout_set")
    assert rejection.quarantine in stale["why"]
    # sets built now leave the day out, saying so; they are not stale
    built = featured.run_feature_store()
    assert built.success, failure_messages(built)
    holdout = lake.read_latest("flight_delay", "holdout_set")
    assert holdout is not None and holdout["end"] == "2013-01-06"  # the day is left out
    logged = [e.user_message for e in featured.instance.all_logs(built.run_id)]
    assert any(m.startswith("left out") and rejection.quarantine in m for m in logged)
    assert problem_status(problem, lake, featured.instance)["training_set"]["stale"] is False

    # keeping the previous table needs who and why, and a rejected day with a table
    with pytest.raises(ValueError, match="--by and --reason"):
        keep_previous(
            featured.instance,
            featured.feast.lake,
            problem,
            "flights",
            pd.Timestamp(day).date(),
            "",
            "x",
        )
    with pytest.raises(ValueError, match="not rejected"):
        keep_previous(
            featured.instance,
            featured.feast.lake,
            problem,
            "flights",
            pd.Timestamp("2013-01-06").date(),
            "ana",
            "x",
        )
    cursor = dg.evaluate_automation_conditions(
        defs=featured.defs, instance=featured.instance
    ).cursor
    keep_previous(
        featured.instance,
        featured.feast.lake,
        problem,
        "flights",
        pd.Timestamp(day).date(),
        "ana",
        "upstream re-sent a truncated export; the first delivery was right",
    )
    assert len(lake.read_table("flight_delay", "flights", day)) > 800
    kept = problem_status(problem, lake, featured.instance)["rejected_days"][0]["kept"]
    assert kept["by"] == "ana" and "truncated" in kept["reason"]
    # the runless materialization of the kept partition brings its feature days along
    followed = dg.evaluate_automation_conditions(
        defs=featured.defs, instance=featured.instance, cursor=cursor
    )
    assert day in followed.get_requested_partitions(CARRIER_DELAYS)
    assert featured.run_features(day).success

    # a keep answers one rejected landing: another rejected landing blocks the day again
    _replace_landed(flights, delivered.head(1))  # one row of 900
    (again,) = list(_tick(featured).run_requests or [])
    assert not _execute(featured, again).success
    assert not lake.has_partition("flight_delay", "flights", day)


def test_a_relanded_day_marks_the_training_set_stale(featured: Platform) -> None:
    lake, problem = featured.lake, featured.problem
    latest = lake.read_latest("flight_delay", "training_set")
    assert latest is not None and latest["start"] <= "2013-01-03" <= latest["end"]
    _settle(featured)
    assert problem_status(problem, lake, featured.instance)["training_set"]["stale"] is False
    flights = featured.landed_file("flights", "2013-01-03")
    corrected = _read_text_csv(flights)
    corrected.loc[0, "arr_delay"] = "180.0"
    _replace_landed(flights, corrected)
    assert [p.label for p in pending(lake, problem)] == ["2013-01-03"]

    tick = _tick(featured)
    (request,) = list(tick.run_requests or [])
    (observation,) = [e for e in tick.asset_events if e.asset_key.path[-1] == "training_set"]
    assert observation.metadata["stale"] == dg.MetadataValue.bool(True)
    assert observation.metadata["stale_days"] == dg.MetadataValue.json(["2013-01-03"])
    # the same re-landing is flagged once, not on every tick until its run is done
    assert not _tick(featured, tick.cursor).asset_events
    waiting = problem_status(problem, lake, featured.instance)["training_set"]
    assert waiting["stale_days"] == [
        {
            "day": "2013-01-03",
            "source": "flights",
            "set": "training_set",
            "why": "re-landed, not ingested yet",
        }
    ]

    assert _execute(featured, request).success
    (stale,) = problem_status(problem, lake, featured.instance)["training_set"]["stale_days"]
    assert stale["day"] == "2013-01-03" and "ingested again with new content" in stale["why"]


def test_keep_from_the_command_line(
    platform: Platform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from mlplatform.cli import main

    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(platform.lake.root))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    keep = ["keep", "--problem", "flight_delay", "--source", "flights", "--day", "2013-01-06"]
    assert main([*keep, "--by", "ana", "--reason", "checked"]) == 1  # a state, not a usage
    assert "not rejected; nothing to keep" in capsys.readouterr().err

    flights = platform.landed_file("flights", "2013-01-06")
    _replace_landed(flights, _read_text_csv(flights).head(0))
    assert not platform.run_day("2013-01-06").success
    assert main([*keep, "--reason", "the first delivery was right", "--by", "ana"]) == 0
    printed = capsys.readouterr().out
    assert "kept flight_delay/flights 2013-01-06 (by ana" in printed
    assert str(platform.lake.root / "quarantine") in printed
    assert main(["status", "--json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)["flight_delay"]["rejected_days"]
    assert shown["day"] == "2013-01-06" and shown["kept"]["by"] == "ana"
    assert len(platform.lake.read_table("flight_delay", "flights", "2013-01-06")) > 800


def test_a_relanded_snapshot_is_ingested_again(platform: Platform) -> None:
    assert platform.run_reference().success
    assert not [r for r in _tick(platform).run_requests or [] if r.partition_key is None]
    (planes,) = platform.lake.landed_files("flight_delay", "planes", None)
    corrected = _read_text_csv(planes)
    assert corrected.loc[0, "seats"] == "55"
    corrected.loc[0, "seats"] = "50"  # a correction to the reference data
    _replace_landed(planes, corrected)
    shown = problem_status(platform.problem, platform.lake, platform.instance)
    assert [r["day"] for r in shown["relanded_not_ingested"]] == ["snapshot"]

    (request,) = [r for r in _tick(platform).run_requests or [] if r.partition_key is None]
    assert set(request.asset_selection or []) == {
        dg.AssetKey(["flight_delay", "raw_planes"]),
        dg.AssetKey(["flight_delay", "planes"]),
    }
    assert _execute(platform, request).success
    assert platform.lake.read_table("flight_delay", "planes", None)["seats"].iloc[0] == 50
    assert not [r for r in _tick(platform).run_requests or [] if r.partition_key is None]
