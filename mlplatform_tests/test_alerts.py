"""Alerts: the ``<problem>_alerts`` sensor on real instances, to a real HTTP receiver.

The receiver is an HTTP server on 127.0.0.1 that records each POST and answers with the
statuses it is told to. Sensor ticks go through Dagster's own ``evaluate_tick`` with the
cursor carried from tick to tick, as the daemon does. The rollback alert of a replayed
bad challenger is tested in ``test_replay.py`` (its short replay).
"""

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mlplatform import settings
from mlplatform.defs.monitoring.alerts import alert_sensor_name
from mlplatform.lib.monitoring.alerts import AlertLog
from mlplatform.problems import Problem
from mlplatform.resources import LakeResource
from mlplatform.status import problem_status
from mlplatform_tests.helpers import CONSTANT, STUMP_TRAINING, Platform, tuned_problem


@dataclass
class Receiver:
    """A webhook on 127.0.0.1: the bodies it received, and the statuses it answers with."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered in turn; then 200


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length", 0))
            status = got.statuses.pop(0) if got.statuses else 200
            if status == 200:
                got.bodies.append(json.loads(self.rfile.read(size)))
            else:
                self.rfile.read(size)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"busy")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/secret"
    yield got
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def with_alerts(problem: Problem, **alerts: Any) -> Problem:
    """The problem with its alerts block changed."""
    spec = problem.spec.model_copy(update={"alerts": problem.spec.alerts.model_copy(update=alerts)})
    return replace(problem, spec=spec)


class Ticker:
    """Ticks one problem's alert sensor, carrying its cursor as the daemon does."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.sensor = platform.defs.resolve_sensor_def(alert_sensor_name(platform.problem))
        self.cursor: str | None = None
        self.skip_reason = ""

    def tick(self) -> None:
        resources = {"lake": LakeResource(root=str(self.platform.lake.root))}
        with dg.build_sensor_context(
            instance=self.platform.instance, resources=resources, cursor=self.cursor
        ) as context:
            data = self.sensor.evaluate_tick(context)
        assert not data.run_requests
        self.cursor = data.cursor
        self.skip_reason = data.skip_message or ""

    def log(self) -> list[dict[str, Any]]:
        return AlertLog(self.platform.lake.root, self.platform.problem.name).entries()


def _drift_report(platform: Platform, day: str, share: float) -> None:
    """A drift report of ``day`` saying drifted, with the metadata the asset records."""
    platform.instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=dg.AssetKey([platform.problem.name, "drift_report"]),
            partition=day,
            metadata={
                "drift_share": share,
                "drifted": dg.MetadataValue.bool(True),
                "window_days_served": 14,
                "drifted_features": dg.MetadataValue.json(["pressure", "origin_rate_28d"]),
                "prediction_drift_score": 0.31,
                "reference": "champion 1, training set abc",
            },
        )
    )


def _at(monkeypatch: pytest.MonkeyPatch, stamp: datetime) -> None:
    monkeypatch.setenv(settings.CLOCK_VAR, stamp.isoformat())


def test_a_lasting_drift_is_sent_once_per_cool_down_across_ticks(
    tmp_path: Path,
    problem: Problem,
    instance: dg.DagsterInstance,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    platform = Platform(with_alerts(problem, webhook_url=receiver.url), tmp_path, instance)
    ticker = Ticker(platform)
    start = datetime(2013, 2, 1, 23, tzinfo=UTC)
    _drift_report(platform, "2013-01-31", 0.5)  # before the sensor's first tick: history
    _at(monkeypatch, start)
    ticker.tick()  # the first tick starts at the newest event
    assert receiver.bodies == []

    _drift_report(platform, "2013-02-01", 0.42)
    ticker.tick()
    ticker.tick()  # nothing new: the cursor moved past it
    assert [b["kind"] for b in receiver.bodies] == ["drift"]
    first = receiver.bodies[0]
    assert first["subject"]["partition"] == "2013-02-01"
    assert first["figures"]["drift_share"] == 0.42
    assert first["figures"]["drifted_features"] == ["pressure", "origin_rate_28d"]
    assert first["runbook"] == "docs/runbooks/drift.md"
    assert (settings.project_root() / first["runbook"]).exists()
    assert "42% of the served features drifted" in first["text"]

    _at(monkeypatch, start + timedelta(hours=23))  # the same condition within 24 h: held
    _drift_report(platform, "2013-02-02", 0.45)
    ticker.tick()
    assert len(receiver.bodies) == 1
    assert "1 held back by the cool-down" in ticker.skip_reason

    _at(monkeypatch, start + timedelta(hours=24, minutes=30))  # the cool-down is over
    _drift_report(platform, "2013-02-03", 0.47)
    ticker.tick()
    ticker.tick()
    assert [b["subject"]["partition"] for b in receiver.bodies] == ["2013-02-01", "2013-02-03"]
    assert receiver.bodies[1]["held_back_before"] == 1
    log = ticker.log()
    assert [e["subject"]["partition"] for e in log] == ["2013-02-01", "2013-02-03"]
    assert all(e["webhook"]["ok"] and e["webhook"]["attempts"] == 1 for e in log)
    assert "secret" not in json.dumps(log)  # the webhook's token stays out of the log

    status = problem_status(platform.problem, platform.lake, instance)["alerts"]
    assert status["sent"] == 2 and status["webhook_delivered"] == 2
    assert status["last"]["subject"]["partition"] == "2013-02-03"


def test_a_webhook_that_is_down_leaves_the_alert_in_the_log_with_its_failure(
    tmp_path: Path, problem: Problem, instance: dg.DagsterInstance
) -> None:
    down = with_alerts(problem, webhook_url=closed_port_url(), retries=1, timeout_seconds=1)
    platform = Platform(down, tmp_path, instance)
    ticker = Ticker(platform)
    ticker.tick()

    _drift_report(platform, "2013-02-01", 0.42)
    assert not platform.run_day("2013-01-01").success  # nothing landed: a failed run
    ticker.tick()  # the tick itself succeeds

    drift, run = ticker.log()
    assert drift["kind"] == "drift" and drift["subject"]["partition"] == "2013-02-01"
    hook = drift["webhook"]
    assert hook["ok"] is False and hook["status"] is None and hook["attempts"] == 2
    assert "Connection refused" in hook["error"] or "NewConnectionError" in hook["error"]
    # the next alert of the tick does not wait for the dead webhook's retries again
    assert run["kind"] == "run_failed" and run["webhook"]["attempts"] == 0
    assert run["webhook"]["error"].startswith("not attempted")
    assert "2 webhook failure(s)" in ticker.skip_reason
    status = problem_status(platform.problem, platform.lake, instance)["alerts"]
    assert status["sent"] == 2 and status["webhook_failed"] == 2
    ticker.tick()
    assert len(ticker.log()) == 2  # recorded once, not retried on every tick


def test_a_busy_webhook_is_retried_and_slack_gets_text(
    tmp_path: Path, problem: Problem, instance: dg.DagsterInstance, receiver: Receiver
) -> None:
    slack = with_alerts(problem, webhook_url=receiver.url, webhook_format="slack")
    platform = Platform(slack, tmp_path, instance)
    ticker = Ticker(platform)
    ticker.tick()
    receiver.statuses = [503]

    _drift_report(platform, "2013-02-01", 0.42)
    ticker.tick()

    (body,) = receiver.bodies
    assert list(body) == ["text"]
    assert body["text"].startswith("[flight_delay] drift over the threshold")
    assert "runbook: docs/runbooks/drift.md" in body["text"]
    (entry,) = ticker.log()
    assert entry["webhook"]["ok"] and entry["webhook"]["attempts"] == 2


def test_a_failed_run_and_a_late_feed_alert_once_each(
    tmp_path: Path, problem: Problem, instance: dg.DagsterInstance, receiver: Receiver
) -> None:
    from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

    platform = Platform(with_alerts(problem, webhook_url=receiver.url), tmp_path, instance)
    ticker = Ticker(platform)
    ticker.tick()

    result = platform.run_day("2013-01-01")  # nothing landed: the ingestion run fails
    assert not result.success
    stream = dg.AssetKey(["flight_delay", "weather_stream"])
    # what Dagster's freshness daemon records when a feed is silent past its fail window
    instance.report_runless_asset_event(
        FreshnessStateChange(
            key=stream,
            previous_state=FreshnessState.PASS,
            new_state=FreshnessState.FAIL,
            state_change_timestamp=datetime.now(UTC).timestamp(),
        )
    )
    ticker.tick()
    ticker.tick()

    kinds = sorted(b["kind"] for b in receiver.bodies)
    assert kinds == ["freshness", "run_failed"]
    failed = next(b for b in receiver.bodies if b["kind"] == "run_failed")
    assert failed["subject"]["job"] == "flight_delay_ingestion"
    assert failed["subject"]["run_id"] == result.run_id
    assert failed["figures"]["partition"] == "2013-01-01"
    assert failed["runbook"] == "docs/runbooks/failed-run.md"
    late = next(b for b in receiver.bodies if b["kind"] == "freshness")
    assert late["subject"]["asset"] == "flight_delay/weather_stream"
    assert late["figures"]["fail_window_hours"] == 2.0
    assert "never" in late["summary"]  # no push recorded on this instance


@pytest.mark.slow
def test_a_refused_candidate_sends_one_gate_alert_and_no_run_alert(
    featured: Platform, problem: Problem, receiver: Receiver
) -> None:
    tuned = with_alerts(tuned_problem(problem), webhook_url=receiver.url)
    platform = Platform(tuned, featured.lake.root, featured.instance)
    ticker = Ticker(platform)
    ticker.tick()

    # a constant model (AUC 0.5) under min_metric 0.55; this instance holds no record of
    # the training set's checks either: two gates refuse it, the run fails on them
    result = platform.run_gated_training(params=CONSTANT, **STUMP_TRAINING)
    assert not result.success
    ticker.tick()

    (body,) = receiver.bodies
    assert body["kind"] == "gate_failed" and body["subject"]["version"] == "1"
    assert body["subject"]["asset"] == "flight_delay/evaluation_report"
    assert body["figures"]["failed_gates"] == ["min_metric", "training_set_checks"]
    assert body["figures"]["candidate_roc_auc"] == pytest.approx(0.5)
    assert "min_metric" in body["summary"] and "0.55" in body["summary"]
    assert body["runbook"] == "docs/runbooks/gate-failed.md"


def _skew_day(instance: dg.DagsterInstance, day: str, share: float, level: str) -> None:
    """A run recording a day's ``serving_skew`` and its check, as the asset does."""
    from mlplatform.lib.names import SKEW

    key = dg.AssetKey(["flight_delay", "serving_skew"])
    figures = {"day": day, "skew_share": share, "rows_compared": 930, "worst_feature": "temp"}

    @dg.asset(key=key, check_specs=[dg.AssetCheckSpec(SKEW, asset=key)])
    def serving_skew() -> dg.MaterializeResult:
        return dg.MaterializeResult(
            metadata={**figures, "severity": level},
            check_results=[
                dg.AssetCheckResult(
                    check_name=SKEW,
                    passed=level == "ok",
                    severity=dg.AssetCheckSeverity.ERROR
                    if level == "error"
                    else dg.AssetCheckSeverity.WARN,
                    metadata={**figures, "severity": level, "warn_share": 0.01, "error_share": 0.1},
                )
            ],
        )

    assert dg.materialize([serving_skew], instance=instance).success


def test_skew_at_error_alerts_and_a_warning_does_not(
    tmp_path: Path, problem: Problem, instance: dg.DagsterInstance, receiver: Receiver
) -> None:
    platform = Platform(with_alerts(problem, webhook_url=receiver.url), tmp_path, instance)
    ticker = Ticker(platform)
    ticker.tick()

    _skew_day(instance, "2013-01-09", 0.05, "warn")
    _skew_day(instance, "2013-01-10", 0.14, "error")
    ticker.tick()

    (body,) = receiver.bodies
    assert body["kind"] == "skew" and body["figures"]["day"] == "2013-01-10"
    assert body["figures"]["skew_share"] == 0.14 and body["figures"]["error_share"] == 0.1
    assert "14.0% of 930 served requests" in body["summary"] and "temp" in body["summary"]
    assert body["runbook"] == "docs/runbooks/serving-skew.md"
