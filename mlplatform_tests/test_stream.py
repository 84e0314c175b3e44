"""Stream sources: hourly pushes through Feast push sources, their bad inputs, and the
real-time operational features computed by one function offline and online."""

import json
from datetime import date

import dagster as dg
import pandas as pd
import pytest

from mlplatform.defs.features.stream import report_push, stream_key
from mlplatform.lib.features.build import day_hours
from mlplatform.lib.features.feature_store import online_vector, service_of
from mlplatform.lib.features.stream import EventLog, PushRefused, push_hour, stream_rows
from mlplatform.lib.features.tables import EVENT_TS
from mlplatform.lib.names import features_table
from mlplatform.problems import Problem
from mlplatform.problems.flight_delay.features import operational, previous_departure
from mlplatform.problems.flight_delay.source import flight_events
from mlplatform_tests.helpers import Platform

TZ = "America/New_York"
DAY = date(2013, 1, 7)  # the featured lake's newest day: its offline tables exist


def _push_day_until(featured: Platform, problem: Problem, store, until: pd.Timestamp) -> None:
    """Push both streams hour by hour, from the evening two days before ``DAY`` to ``until``."""
    hour = pd.Timestamp("2013-01-06T04:00Z")  # 23:00 on the 5th, New York: the 6th's schedule
    while hour < until:
        for source in problem.spec.stream_sources():
            feed = problem.export_events(source, hour, hour + pd.Timedelta(hours=1))
            now = (hour + pd.Timedelta(hours=1)).to_pydatetime()
            push_hour(featured.lake.root, problem, store, source, hour, feed, now)
        hour += pd.Timedelta(hours=1)


def test_pushed_rows_equal_the_offline_rows_of_the_same_hour(
    featured: Platform, problem: Problem
) -> None:
    """The same builder online (pushed events) and offline (validated day): equal rows."""
    store = featured.feast.store(problem)
    t = pd.Timestamp("2013-01-07T19:00Z")  # 14:00 in New York
    _push_day_until(featured, problem, store, t)
    log = EventLog(featured.lake.root, problem.name)
    for table in [t for t in problem.feature_tables() if t.stream]:
        pushed = stream_rows(problem, log, table, t - pd.Timedelta(hours=1))
        offline = featured.lake.read_table(problem.name, features_table(table), DAY)
        pushed_at = set(pd.to_datetime(pushed[EVENT_TS], utc=True))
        assert len(pushed) > 0, table.name
        assert all(t - pd.Timedelta(hours=1) <= s <= t for s in pushed_at), table.name
        # every offline row of the instants pushed: no entity missing or extra online
        hour = offline[pd.to_datetime(offline[EVENT_TS], utc=True).isin(pushed_at)]
        key = [*table.join_keys, EVENT_TS]
        left = pushed.sort_values(key).reset_index(drop=True)
        right = hour[pushed.columns].sort_values(key).reset_index(drop=True)
        right[EVENT_TS] = pd.to_datetime(right[EVENT_TS], utc=True).dt.as_unit("us")
        pd.testing.assert_frame_equal(left, right, check_dtype=False, obj=table.name)


def test_a_push_reaches_the_online_store_and_dagster(
    featured: Platform, problem: Problem, instance: dg.DagsterInstance
) -> None:
    store = featured.feast.store(problem)
    t = pd.Timestamp("2013-01-07T19:00Z")
    _push_day_until(featured, problem, store, t - pd.Timedelta(hours=1))
    hour = t - pd.Timedelta(hours=1)
    feed = problem.export_events("flights", hour, t)
    result = push_hour(featured.lake.root, problem, store, "flights", hour, feed, t)
    assert result.rows == len(feed) > 0
    assert result.views["origin_ops_fv"] == 3  # one row per New York airport at 14:00
    assert result.lag_seconds is not None and 0 < result.lag_seconds <= 3600
    # a 14:00 flight from JFK reads the origin's 11:00-14:00 figures pushed just now
    service = service_of(problem, store, featured.lake.root)
    request = {
        "carrier": "AA",
        "flight": 1,
        "origin": "JFK",
        "dest": "LAX",
        "distance": 2475.0,
        "time_hour": t.isoformat(),
    }
    values = online_vector(problem, store, service, request)
    want = operational(problem.stream_events("flights", _export_days(problem)), [t], "origin")
    jfk = want[want["origin"] == "JFK"].iloc[0]
    assert values["origin_ops_dep_delay"] == pytest.approx(jfk["origin_ops_dep_delay"])
    assert values["origin_sched_hour"] == jfk["origin_sched_hour"]
    # the push is a materialization of the stream's asset, with its figures
    report_push(instance, problem, result)
    event = instance.get_latest_materialization_event(stream_key(problem, "flights"))
    assert event is not None and event.asset_materialization is not None
    meta = event.asset_materialization.metadata
    assert meta["rows"].value == result.rows
    assert meta["newest_event_time"].value == result.newest_event_time


def _export_days(problem: Problem) -> pd.DataFrame:
    return pd.concat(
        [problem.export_day("flights", date(2013, 1, d)) for d in (6, 7)], ignore_index=True
    )


def test_pushing_an_hour_twice_replaces_it(featured: Platform, problem: Problem) -> None:
    store = featured.feast.store(problem)
    hour = pd.Timestamp("2013-01-07T15:00Z")
    feed = problem.export_events("weather", hour, hour + pd.Timedelta(hours=1))
    now = hour + pd.Timedelta(hours=1)
    first = push_hour(featured.lake.root, problem, store, "weather", hour, feed, now)
    second = push_hour(featured.lake.root, problem, store, "weather", hour, feed, now)
    log = EventLog(featured.lake.root, problem.name)
    assert (first.replaced, second.replaced) == (False, True)
    assert log.hours("weather") == [hour]
    assert len(log.read("weather", hour, now)) == len(feed) == 3


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda f: f.assign(gate="B12"), "gate"),  # a column nobody declared
        (lambda f: f.assign(dep_delay="late"), "dep_delay"),
        (lambda f: f.assign(origin="BOS"), "origin"),
        # the hour after the one pushed
        (lambda f: f.assign(status_at=f["status_at"] + pd.Timedelta(hours=1)), "status_at"),
    ],
    ids=["unknown_column", "wrong_type", "not_new_york", "outside_the_hour"],
)
def test_a_bad_push_is_refused_whole_and_kept(
    featured: Platform, problem: Problem, change, named: str
) -> None:
    store = featured.feast.store(problem)
    hour = pd.Timestamp("2013-01-07T18:00Z")
    feed = problem.export_events("flights", hour, hour + pd.Timedelta(hours=1))
    now = pd.Timestamp("2013-01-08T12:00Z")
    with pytest.raises(PushRefused) as refused:
        push_hour(featured.lake.root, problem, store, "flights", hour, change(feed), now)
    message = str(refused.value)
    assert "flights" in message and named in message
    # nothing reached the event log or the online store; the push is kept with reasons
    assert EventLog(featured.lake.root, problem.name).hours("flights") == []
    assert refused.value.quarantine is not None
    kept = pd.read_csv(refused.value.quarantine / "events.csv")
    assert len(kept) == len(feed) and kept["reason"].notna().any()
    assert not list((featured.lake.root / "stream").rglob("*.parquet"))


def test_events_from_the_future_are_refused(featured: Platform, problem: Problem) -> None:
    store = featured.feast.store(problem)
    hour = pd.Timestamp("2013-01-07T18:00Z")
    feed = problem.export_events("weather", hour, hour + pd.Timedelta(hours=1))
    now = hour + pd.Timedelta(minutes=30)  # the clock has not reached the :55 reports
    with pytest.raises(PushRefused, match="reported_at: in the future"):
        push_hour(featured.lake.root, problem, store, "weather", hour, feed, now)


def test_a_push_to_a_source_that_is_not_a_stream_is_refused(
    featured: Platform, problem: Problem
) -> None:
    store = featured.feast.store(problem)
    with pytest.raises(PushRefused, match="'planes' is not a stream source"):
        push_hour(
            featured.lake.root,
            problem,
            store,
            "planes",
            pd.Timestamp("2013-01-07T18:00Z"),
            pd.DataFrame({"tailnum": ["N1"]}),
            pd.Timestamp("2013-01-08T00:00Z"),
        )


def test_a_flights_own_departure_is_never_its_feature() -> None:
    """Operational features at t count flights scheduled before t, departures known before t."""
    t = pd.Timestamp("2013-01-07T19:00Z")
    flights = pd.DataFrame(
        {
            "carrier": ["AA", "AA", "B6"],
            "flight": [1, 2, 3],
            "origin": ["JFK", "JFK", "JFK"],
            "dest": ["LAX", "SFO", "BOS"],
            "tailnum": ["N1", "N2", "N1"],
            # 1: scheduled at t itself, left 10 min early (before t): it is the request
            # 2: scheduled an hour before, leaves 5 min after t: not gone at t
            # 3: scheduled two hours before, left 20 min late, same plane as flight 1
            "time_hour": [t, t - pd.Timedelta(hours=1), t - pd.Timedelta(hours=2)],
            "sched_dep_time": [1400, 1300, 1200],
            "dep_delay": [-10.0, 65.0, 20.0],
        }
    )
    events = flight_events(flights, TZ)
    ops = operational(events, [t], "origin").set_index("origin")
    assert ops.loc["JFK", "origin_ops_scheduled"] == 2  # flights 2 and 3, never 1
    assert ops.loc["JFK", "origin_ops_dep_delay"] == 20.0  # only 3 had left
    assert ops.loc["JFK", "origin_ops_late_share"] == 1.0
    assert ops.loc["JFK", "origin_ops_not_gone_share"] == 0.5
    assert ops.loc["JFK", "origin_sched_hour"] == 1  # flight 1, the schedule is known
    planes = previous_departure(events, [t]).set_index("tailnum")
    assert planes.loc["N1", "prev_dep_delay"] == 20.0  # flight 3, not flight 1 itself
    assert "N2" in planes.index and planes.loc["N2", "prev_overdue"] == 1.0


def test_offline_stream_rows_exist_for_every_hour_of_the_day(
    featured: Platform, problem: Problem
) -> None:
    frame = featured.lake.read_table(problem.name, "features/origin_ops", DAY)
    stamps = set(pd.to_datetime(frame[EVENT_TS], utc=True))
    busy = [h for h in day_hours(DAY, TZ) if 6 <= h.tz_convert(TZ).hour <= 23]
    assert set(busy) <= stamps


def test_the_push_command_refuses_a_bad_file_in_one_line_and_pushes_a_good_one(
    featured: Platform,
    problem: Problem,
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlplatform.cli import main

    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(featured.lake.root))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("MLPLATFORM_NOW", "2013-01-07T20:00:00+00:00")
    hour = pd.Timestamp("2013-01-07T18:00Z")
    feed = problem.export_events("weather", hour, hour + pd.Timedelta(hours=1))
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    feed.to_csv(good, index=False)
    feed.assign(temp="warm").to_csv(bad, index=False)
    argv = ["push", "--problem", "flight_delay", "--source", "weather", "--hour", hour.isoformat()]
    assert main([*argv, "--file", str(bad)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "push of weather" in line and "temp" in line and "kept at" in line
    assert main([*argv, "--file", str(good)]) == 0
    assert "pushed 3 weather events" in capsys.readouterr().out
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        event = instance.get_latest_materialization_event(stream_key(problem, "weather"))
        assert event is not None and event.asset_materialization is not None
        assert event.asset_materialization.metadata["rows"].value == 3


def test_online_parity_leaves_out_rows_pushed_after_the_evening_batch(
    featured: Platform, problem: Problem
) -> None:
    """A retrain at 06:00 finds this morning's pushes online; parity still holds."""
    from mlplatform.lib.features.feature_store import parity_sample
    from mlplatform.lib.features.training_set import parity_audit

    store = featured.feast.store(problem)
    # the 7th as a running feed pushed it (from its schedule, out at 23:00 the evening
    # before), then its last hour: the rows pushed at midnight are stamped at the batch's
    # end itself, and belong to the 8th's batch
    hour = pd.Timestamp("2013-01-07T04:00Z")
    while hour < pd.Timestamp("2013-01-08T05:00Z"):
        for source in problem.spec.stream_sources():
            feed = problem.export_events(source, hour, hour + pd.Timedelta(hours=1))
            now = hour + pd.Timedelta(hours=1)
            push_hour(featured.lake.root, problem, store, source, hour, feed, now)
        hour += pd.Timedelta(hours=1)
    online, newest = parity_sample(store, featured.lake, problem, 20)
    assert online["origin_ops"].empty  # all three airports were pushed at midnight
    assert len(online["carrier_delays"]) > 0  # batch views are compared as before
    outcome = parity_audit(online, newest, problem.feature_tables())
    assert outcome.passed, outcome.reason


def test_the_service_takes_pushes_and_refuses_bad_ones_with_a_4xx(
    featured: Platform, problem: Problem, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from mlplatform.lib.tracking import local_tracking
    from mlplatform.serving.server import build_runtime, serve_in_background

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("MLPLATFORM_NOW", "2013-01-07T20:00:00+00:00")
    runtime = build_runtime(problem, featured.lake.root, local_tracking(featured.lake.root))
    service = serve_in_background(runtime)
    hour = pd.Timestamp("2013-01-07T18:00Z")
    feed = problem.export_events("weather", hour, hour + pd.Timedelta(hours=1))
    events = json.loads(feed.to_json(orient="records", date_format="iso"))
    try:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            bad = client.post(
                "/push/weather",
                json={"hour": hour.isoformat(), "events": [{**events[0], "temp": "warm"}]},
            )
            unknown = client.post("/push/planes", json={"hour": hour.isoformat(), "events": []})
            naive = client.post(
                "/push/weather", json={"hour": "2013-01-07T18:00", "events": events}
            )
            good = client.post("/push/weather", json={"hour": hour.isoformat(), "events": events})
    finally:
        service.stop()
    assert bad.status_code == 422 and "temp" in bad.json()["detail"]
    assert unknown.status_code == 404 and "not a stream source" in unknown.json()["detail"]
    assert naive.status_code == 422 and "UTC offset" in naive.json()["detail"]
    assert good.status_code == 200, good.text
    assert good.json()["rows"] == 3 and good.json()["views"] == {"origin_weather_fv": 3}
    assert good.json()["recorded_in_dagster"] is True
    values = runtime.scorer.store.get_online_features(
        features=["origin_weather_fv:temp", "origin_weather_fv:origin_weather_ts"],
        entity_rows=[{"origin": "JFK"}],
    ).to_dict()
    jfk = feed[feed["origin"] == "JFK"].iloc[0]
    assert values["temp"] == [pytest.approx(jfk["temp"])]
    assert values["origin_weather_ts"] == [int(jfk["reported_at"].timestamp())]
