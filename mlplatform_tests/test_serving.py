"""The HTTP service and the staged rollout, on a real server, registry and Feast store.

One module-scoped platform: champion version 1 (a stump) and challenger version 2 (a
better model) after the gates, served over HTTP on a free port. Tests run in file order
and walk the rollout: shadow → canary → full, then a bad challenger rolled back by the
sensor, the kill switch, and a rollback with requests in flight.
"""

import json
import shutil
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pandas as pd
import pytest

from mlplatform.lib.deployment import registry as reg
from mlplatform.lib.deployment.log import DeploymentLog, is_rollback
from mlplatform.lib.deployment.prediction_log import read_predictions
from mlplatform.lib.deployment.rollout import request_key, routes_to_challenger
from mlplatform.lib.tracking import local_tracking
from mlplatform.problems import Problem
from mlplatform.serving.client import as_requests
from mlplatform.serving.server import Background, announce, build_runtime, serve_in_background
from mlplatform_tests.helpers import (
    BETTER,
    CONSTANT,
    FAST,
    STUMP,
    STUMP_TRAINING,
    Platform,
    failure_messages,
    fresh_instance,
    tuned_problem,
)

ROLLOUT = {"shadow_requests": 30, "canary_share": 0.5, "canary_requests": 20, "min_outcomes": 30}


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, featured_base: Path, problem: Problem
) -> Iterator[tuple[Platform, Background]]:
    root = tmp_path_factory.mktemp("served") / "data"
    shutil.copytree(featured_base, root)
    with fresh_instance() as instance:
        platform = Platform(tuned_problem(problem, rollout=ROLLOUT), root, instance)
        assert platform.run_feature_store().success
        assert platform.run_gated_training(params=STUMP, **STUMP_TRAINING).success
        assert platform.run_gated_training(params=BETTER, **FAST).success
        runtime = build_runtime(
            platform.problem, root, local_tracking(root), refresh_seconds=0.2, flush_seconds=0.2
        )
        service = serve_in_background(runtime)
        announce(root, problem.name, service.url)
        yield platform, service
        service.stop()


def _requests(platform: Platform, n: int, skip: int = 0) -> list[dict[str, Any]]:
    """Real flights of the holdout days (their outcomes are known), as requests."""
    days = [date(2013, 1, 6), date(2013, 1, 7)]
    flights = platform.lake.read_days("flight_delay", "flights", days)
    return as_requests(
        platform.problem, flights[flights["arr_delay"].notna()].iloc[skip : skip + n]
    )


def _serve_cli(platform: Platform, *args: str) -> tuple[Any, str]:
    """``mlplatform serve`` as its own process on a free port, once it answers."""
    import os
    import socket
    import subprocess
    import sys

    from mlplatform.serving.client import wait_until_up

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MLPLATFORM_DATA_DIR": str(platform.lake.root)}
    cli = Path(sys.executable).with_name("mlplatform")
    proc = subprocess.Popen(
        [str(cli), "serve", "--problem", "flight_delay", "--port", str(port), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    if not wait_until_up(url, 90):
        proc.kill()
        raise AssertionError(f"mlplatform serve {args} did not answer on {url}")
    return proc, url


def _send(service: Background, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with httpx.Client(base_url=service.url, timeout=10) as client:
        out = []
        for request in requests:
            response = client.post("/predict", json=request)
            assert response.status_code == 200, response.text
            out.append(response.json())
    return out


def _sync(service: Background) -> None:
    """Follow the registry now and flush the prediction log (both also run on timers)."""
    service.runtime.refresh()
    service.runtime.predictions.flush()


def _aliases(platform: Platform) -> dict[str, str]:
    return reg.aliases(local_tracking(platform.lake.root), "flight_delay")


def test_bad_requests_get_a_422_naming_the_field_and_big_bodies_a_413(
    served: tuple[Platform, Background],
) -> None:
    platform, service = served
    good = _requests(platform, 1)[0]
    with httpx.Client(base_url=service.url) as client:
        wrong = client.post("/predict", json={**good, "origin": "Newark"})
        missing = client.post("/predict", json={k: v for k, v in good.items() if k != "carrier"})
        extra = client.post("/predict", json={**good, "arr_delay": 12})
        in_batch = client.post("/predict", json={"instances": [good, {**good, "flight": -3}]})
        big = client.post("/predict", json={"instances": [good] * 10_000})
        body = json.dumps({"instances": [good] * 10_000}).encode()
        # the same body streamed without a Content-Length (chunked): 413 too, not a 400
        chunked = client.post(
            "/predict",
            content=(body[i : i + 65536] for i in range(0, len(body), 65536)),
            headers={"content-type": "application/json"},
        )
        small_chunked = client.post(
            "/predict",
            content=iter([json.dumps(good).encode()]),
            headers={"content-type": "application/json"},
        )
        schema = client.get("/openapi.json").json()

    assert wrong.status_code == 422
    assert [e["loc"] for e in wrong.json()["detail"]] == [["body", "origin"]]
    assert [e["loc"] for e in missing.json()["detail"]] == [["body", "carrier"]]
    assert extra.json()["detail"][0]["type"] == "extra_forbidden"  # an outcome is refused
    assert [e["loc"] for e in in_batch.json()["detail"]] == [["body", "instances", 1, "flight"]]
    assert big.status_code == 413
    assert chunked.status_code == 413 and "body over" in chunked.json()["detail"]
    assert small_chunked.status_code == 200 and small_chunked.json()["version"] == "1"
    assert "/predict" in schema["paths"] and "Request" in schema["components"]["schemas"]


def test_the_champion_answers_one_flight_or_a_batch(served: tuple[Platform, Background]) -> None:
    platform, service = served
    requests = _requests(platform, 3)
    with httpx.Client(base_url=service.url) as client:
        one = client.post("/predict", json=requests[0]).json()
        batch = client.post("/predict", json={"instances": requests}).json()
        health = client.get("/health").json()
        unknown_plane = client.post("/predict", json={**requests[0], "tailnum": "N0NE"}).json()
        unknown_origin = client.post("/predict", json={**requests[0], "origin": "XYZ"})

    assert one["version"] == "1" and one["route"] == "champion" and 0 < one["prediction"] < 1
    assert batch["predictions"][0]["prediction"] == one["prediction"]
    assert len(batch["predictions"]) == 3 and health == {**health, "status": "ok", "champion": "1"}
    # an aircraft the store has never seen: its features are missing, and reach the model
    # as missing (the spec gives them no default)
    plane = {"plane_age", "seats", "engines", "plane_type"}
    assert unknown_plane["version"] == "1" and plane <= set(unknown_plane["missing_features"])
    assert not plane & set(unknown_plane["defaulted_features"])
    # an origin the problem never serves is refused as ingestion refuses it (issue 16); the
    # weather defaults are tested with the weather feed down in test_serving_requests.py
    assert unknown_origin.status_code == 422
    assert [e["loc"] for e in unknown_origin.json()["detail"]] == [["body", "origin"]]
    _sync(service)
    logged = read_predictions(platform.lake.root, "flight_delay")
    row = logged[logged["request_id"] == one["request_id"]].iloc[0]
    assert row["served_version"] == "1" and row["prediction"] == one["prediction"]
    assert row["key"] == request_key(platform.problem.spec, requests[0])
    assert row["latency_ms"] > 0 and row["features"].startswith("[")


def test_a_new_challenger_shadows_scored_and_logged_but_never_returned(
    served: tuple[Platform, Background],
) -> None:
    platform, service = served
    assert _aliases(platform) == {"champion": "1", "challenger": "2"}

    assert platform.tick_rollout() == ("shadow", "version 2 passed the gates")
    _sync(service)
    answers = _send(service, _requests(platform, 150))
    _sync(service)

    assert {(a["version"], a["route"], a["stage"]) for a in answers} == {
        ("1", "champion", "shadow")
    }
    logged = read_predictions(platform.lake.root, "flight_delay")
    mine = logged[logged["request_id"].isin([a["request_id"] for a in answers])]
    assert len(mine) == 150
    assert (mine["challenger_version"] == "2").all() and mine["challenger_prediction"].notna().all()
    assert (mine["challenger_prediction"] != mine["prediction"]).any()


def test_canary_routes_the_spec_share_by_a_stable_hash(served: tuple[Platform, Background]) -> None:
    platform, service = served

    stage, reason = platform.tick_rollout() or ("", "")
    assert stage == "canary" and "shadow scored" in reason
    _sync(service)
    requests = _requests(platform, 100, skip=150)
    first, again = _send(service, requests), _send(service, requests)

    spec = platform.problem.spec
    expected = [routes_to_challenger(request_key(spec, r), 0.5) for r in requests]
    assert [a["route"] == "challenger" for a in first] == expected
    assert [a["route"] for a in again] == [a["route"] for a in first]  # stable per flight
    assert 0.25 < sum(expected) / len(expected) < 0.75
    assert {a["version"] for a in first if a["route"] == "challenger"} == {"2"}


def test_full_makes_the_canary_champion_and_the_old_one_previous(
    served: tuple[Platform, Background],
) -> None:
    platform, service = served
    _sync(service)

    stage, reason = platform.tick_rollout() or ("", "")

    assert stage == "full" and "canary answered" in reason
    assert _aliases(platform) == {"champion": "2", "previous": "1"}
    _sync(service)
    answers = _send(service, _requests(platform, 5))
    assert {(a["version"], a["route"]) for a in answers} == {("2", "champion")}
    entries = DeploymentLog(platform.lake.root, "flight_delay").entries()
    assert [e.stage for e in entries] == ["shadow", "canary", "full"]
    assert all(e.actor == "rollout sensor" and e.reason for e in entries)


def test_a_challenger_worse_online_is_rolled_back_by_the_sensor(
    served: tuple[Platform, Background],
) -> None:
    platform, service = served
    failed = platform.run_gated_training(params=CONSTANT, **FAST)
    version = str(
        next(
            e.materialization.metadata["registered_version"].value
            for e in failed.get_asset_materialization_events()
            if e.asset_key and e.asset_key.path[-1] == "evaluation_report"
        )
    )
    gates = [e.check_name for e in failed.get_asset_check_evaluations() if not e.passed]
    assert platform.run_evaluation(
        version=version,
        override_gates=gates,
        override_by="test",
        override_reason="a bad model let through on purpose, to be caught online",
    ).success
    assert platform.tick_rollout() == ("shadow", f"version {version} overridden the gates")
    _sync(service)
    _send(service, _requests(platform, 150, skip=250))
    _sync(service)

    stage, reason = platform.tick_rollout() or ("", "")

    assert stage == "rolled_back" and "drop" in reason and "roc_auc" in reason
    assert _aliases(platform) == {"champion": "2", "previous": "1"}
    _sync(service)
    answers = _send(service, _requests(platform, 5))
    assert {(a["version"], a["stage"]) for a in answers} == {("2", "none")}
    assert platform.tick_rollout() is None  # nothing left to roll out


def test_the_kill_switch_sends_every_request_to_the_champion(
    served: tuple[Platform, Background],
) -> None:
    from mlplatform.lib.deployment.rollout import RolloutError, apply

    platform, service = served
    assert platform.run_gated_training(params=BETTER, **FAST).success  # same model as v2
    challenger = _aliases(platform)["challenger"]
    assert platform.tick_rollout() == ("shadow", f"version {challenger} passed the gates")
    _sync(service)
    _send(service, _requests(platform, 150, skip=400))
    _sync(service)
    assert (platform.tick_rollout() or ("",))[0] == "canary"
    _sync(service)
    requests = _requests(platform, 30, skip=550)
    assert any(a["route"] == "challenger" for a in _send(service, requests))

    tracking = local_tracking(platform.lake.root)
    spec = platform.problem.spec
    apply("flight_delay", spec, platform.lake.root, tracking, "kill", "pager", "oncall")
    _sync(service)
    with pytest.raises(RolloutError, match="nothing to kill"):  # a second kill: no entry
        apply("flight_delay", spec, platform.lake.root, tracking, "kill", "again", "oncall")

    assert {(a["version"], a["route"]) for a in _send(service, requests)} == {("2", "champion")}
    assert _aliases(platform)["challenger"] == challenger  # kept, for a person to look at
    assert platform.tick_rollout() is None  # the sensor does not restart a killed rollout


def test_rollback_with_requests_in_flight_fails_none_and_switches_all(
    served: tuple[Platform, Background],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlplatform.cli import main

    platform, service = served
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(platform.lake.root))
    monkeypatch.setenv("DAGSTER_HOME", str(platform.lake.root.parent / "dagster_home"))
    requests = _requests(platform, 50, skip=600)
    seen: list[tuple[str, int]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=service.url, timeout=10) as client:
            while not stop.is_set():
                for request in requests:
                    response = client.post("/predict", json=request)
                    version = response.json().get("version", "") if response.is_success else ""
                    seen.append((version, response.status_code))

    workers = [threading.Thread(target=load) for _ in range(2)]
    for w in workers:
        w.start()
    while len(seen) < 100:
        threading.Event().wait(0.05)
    assert main(["rollback", "--problem", "flight_delay", "--reason", "test", "--by", "t"]) == 0
    after = len(seen)
    while len(seen) < after + 100:
        threading.Event().wait(0.05)
    stop.set()
    for w in workers:
        w.join()

    out = capsys.readouterr().out
    assert "serves champion 1 after" in out
    assert {code for _, code in seen} == {200}  # not one request failed during the swap
    assert {v for v, _ in seen[:100]} == {"2"} and {v for v, _ in seen[after + 10 :]} == {"1"}
    assert _aliases(platform)["champion"] == "1"
    assert DeploymentLog(platform.lake.root, "flight_delay").current().stage == "rolled_back"
    with dg.DagsterInstance.get() as cli_instance:  # the command's own instance (DAGSTER_HOME)
        event = cli_instance.get_latest_materialization_event(
            dg.AssetKey(["flight_delay", "deployment"])
        )
    assert event and event.asset_materialization
    recorded = event.asset_materialization.metadata
    assert recorded["reason"].value == "test" and recorded["actor"].value == "t"


def test_status_shows_the_deployment_and_the_service(served: tuple[Platform, Background]) -> None:
    from mlplatform.status import problem_status

    platform, service = served
    status = problem_status(platform.problem, platform.lake, platform.instance)

    written = status["service"].pop("prediction_log")  # the log writer's state, from /health
    assert status["service"] == {"url": service.url, "up": True}
    assert (written["lost"], written["failing"]) == (0, False) and written["written"] > 0
    assert status["deployment"]["champion"] == "1" and status["deployment"]["stage"] in (
        "rolled_back",
        "killed",
        "pending",
    )


def test_a_killed_service_loses_no_request_answered_before_the_last_flush(
    served: tuple[Platform, Background],
) -> None:
    import signal
    import time

    platform, _ = served
    proc, url = _serve_cli(platform)
    try:
        answered = _send(Background(None, None, None, url), _requests(platform, 50))  # type: ignore[arg-type]
        time.sleep(1.5)  # three flush intervals (0.5 s), room for a busy machine
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()

    logged = read_predictions(platform.lake.root, "flight_delay")
    ids = {a["request_id"] for a in answered}
    assert len(ids & set(logged["request_id"])) == 50
    assert not list((platform.lake.root / "predictions").glob("*/*/.*.tmp"))  # no torn file


def test_the_prediction_log_flushes_a_full_buffer_at_once(tmp_path: Path) -> None:
    from mlplatform.lib.deployment.prediction_log import PredictionLog

    log = PredictionLog(tmp_path, "p", flush_rows=3, flush_seconds=3600)  # no timer started
    for i in range(2):
        log.write({"request_id": str(i), "status": "ok", "latency_ms": 1.0})
    assert read_predictions(tmp_path, "p").empty  # two wait in memory: what a crash may lose
    log.write({"request_id": "2", "status": "ok", "latency_ms": 1.0})
    assert sorted(read_predictions(tmp_path, "p")["request_id"]) == ["0", "1", "2"]


def test_monitoring_joins_a_day_of_served_requests_to_outcomes_and_scores_drift(
    served: tuple[Platform, Background],
) -> None:
    platform, service = served
    service.runtime.predictions.flush()
    logged = read_predictions(platform.lake.root, "flight_delay")
    local = pd.to_datetime(logged["event_time"], utc=True).dt.tz_convert("America/New_York")
    of_day = logged[local.dt.date == date(2013, 1, 6)]

    result = platform.run_monitoring("2013-01-06")

    assert result.success
    meta = {
        e.asset_key.path[-1]: {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.asset_key
    }
    assert meta["served_predictions"]["dagster/row_count"] == len(of_day) > 500
    ok = of_day[of_day["status"] == "ok"]
    # every request was a real flight of that day, except the unknown-airport probe
    assert meta["online_outcomes"]["labelled"] == ok["key"].str.contains("XYZ").eq(False).sum()
    perf = meta["online_performance"]
    assert 0.5 < float(perf["online_roc_auc"]) < 1  # type: ignore[arg-type]
    assert perf["requests"] == len(of_day)
    assert "version" in [c.name for c in perf["versions"].schema.columns]  # type: ignore[union-attr]
    drift = meta["drift_report"]
    assert 0 <= float(drift["drift_share"]) <= 1  # type: ignore[arg-type]
    assert Path(str(drift["evidently_report"])).exists()
    assert "month" in drift["feature_scores"]  # type: ignore[operator]
    from mlplatform.status import problem_status

    watched = problem_status(platform.problem, platform.lake, platform.instance)["monitoring"]
    assert watched["last_drift_partition"] == "2013-01-06"
    assert watched["rollbacks"] == 2  # the sensor's (bad challenger) and the command's


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_graceful_stop_flushes_every_workers_log_and_the_announcement(
    served: tuple[Platform, Background], workers: str
) -> None:
    import signal

    from mlplatform.serving.server import service_file

    platform, _ = served
    proc, url = _serve_cli(platform, "--workers", workers, "--refresh", "5")
    try:
        answered = _send(Background(None, None, None, url), _requests(platform, 40))  # type: ignore[arg-type]
        proc.send_signal(signal.SIGTERM)  # at once: the workers flush on shutdown
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert {a["version"] for a in answered} == {"1"}
    logged = read_predictions(platform.lake.root, "flight_delay")
    assert {a["request_id"] for a in answered} <= set(logged["request_id"])
    assert not service_file(platform.lake.root, "flight_delay").exists()


def test_a_new_challenger_ends_a_running_shadow_in_the_log(
    served: tuple[Platform, Background],
) -> None:
    from mlplatform.lib.deployment.rollout import apply

    platform, _ = served
    tracking = local_tracking(platform.lake.root)
    old = _aliases(platform)["challenger"]  # killed earlier, its alias kept
    apply(
        "flight_delay", platform.problem.spec, platform.lake.root, tracking, "shadow", "retry", "t"
    )

    result = platform.run_gated_training(params=BETTER, **FAST)

    assert result.success, failure_messages(result)
    new = _aliases(platform)["challenger"]
    last = DeploymentLog(platform.lake.root, "flight_delay").current()
    assert new != old
    assert (last.stage, last.version, last.actor) == ("rolled_back", old, "promotion")
    assert last.reason == f"replaced by version {new}, which passed the gates"
    assert not is_rollback(last)  # status counts rollbacks for their figures, not this
