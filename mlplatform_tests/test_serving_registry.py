"""The service against its registry: outages, a deleted champion, aliases moved past the gates.

One module-scoped platform: version 1 (a stump) went through the gates to champion,
version 2 (better) passed them and is challenger, version 3 failed them, and version 4
was registered but never evaluated. The service runs over HTTP on a free port; tests run
in file order and the last one deletes the champion's version (the field case
``18_delete_champion_version``).
"""

import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from mlplatform.lib.deployment import registry as reg
from mlplatform.lib.deployment.log import DeploymentLog, Transition
from mlplatform.lib.deployment.rollout import RolloutError, apply
from mlplatform.lib.tracking import Tracking, local_tracking
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

NAME = "flight_delay"
CASES = Path(__file__).parent / "cases"
WAIT = 60.0  # seconds a test waits for the follower, at most (it reads every 0.2 s)


def _registered(result: dg.ExecuteInProcessResult) -> str:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key and e.asset_key.path[-1] == "model_candidate"
    ]
    return str(event.materialization.metadata["registered_version"].value)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, featured_base: Path, problem: Problem
) -> Iterator[tuple[Platform, Background, dict[str, str]]]:
    root = tmp_path_factory.mktemp("registry") / "data"
    shutil.copytree(featured_base, root)
    with fresh_instance() as instance:
        platform = Platform(tuned_problem(problem), root, instance)
        assert platform.run_feature_store().success
        versions = {}
        for role, params, training in (
            ("champion", STUMP, STUMP_TRAINING),
            ("passed", BETTER, FAST),
            ("failed", CONSTANT, FAST),
        ):
            result = platform.run_gated_training(params=params, **training)
            assert result.success == (role != "failed"), failure_messages(result)
            versions[role] = _registered(result)
        unjudged = platform.run_training(params=BETTER, **FAST)  # registered, never evaluated
        assert unjudged.success, failure_messages(unjudged)
        versions["unevaluated"] = _registered(unjudged)
        tracking = local_tracking(root)
        assert reg.aliases(tracking, NAME) == {
            "champion": versions["champion"],
            "challenger": versions["passed"],
        }
        assert reg.version_tags(tracking, NAME, versions["failed"])["verdict"] == "failed"
        runtime = build_runtime(
            platform.problem, root, tracking, refresh_seconds=0.2, flush_seconds=0.2
        )
        runtime.stall_seconds = 1.0  # a read unanswered for 1 s is reported as an outage
        service = serve_in_background(runtime)
        announce(root, NAME, service.url)
        yield platform, service, versions
        service.stop()


def _tracking(platform: Platform) -> Tracking:
    return local_tracking(platform.lake.root)


def _requests(platform: Platform, n: int) -> list[dict[str, Any]]:
    flights = platform.lake.read_days(NAME, "flights", [date(2013, 1, 7)])
    return as_requests(platform.problem, flights.iloc[:n])


def _answers(service: Background, requests: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(status code, answering version) per request."""
    out = []
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for request in requests:
            response = client.post("/predict", json=request)
            out.append((response.status_code, response.json().get("version", "")))
    return out


def _get(service: Background, path: str) -> dict[str, Any]:
    response = httpx.get(service.url + path, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _until(service: Background, path: str, done: Callable[[dict[str, Any]], bool]) -> dict:
    """GET ``path`` until ``done`` holds (the follower runs on its own timer); the last answer."""
    import time

    deadline = time.monotonic() + WAIT
    while not done(answer := _get(service, path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return answer


def test_an_alias_set_past_the_gates_is_not_followed_and_the_service_says_why(
    served: tuple[Platform, Background, dict[str, str]],
) -> None:
    platform, service, v = served
    tracking, requests = _tracking(platform), _requests(platform, 5)
    champion = v["champion"]

    seen = {}
    for role in ("failed", "unevaluated"):  # e.g. one click in the MLflow UI
        reg.set_alias(tracking, NAME, "champion", v[role])
        service.runtime.refresh()
        seen[role] = (
            _answers(service, requests),
            _get(service, "/health"),
            _get(service, "/deployment"),
        )
    # a service that starts now serves nothing rather than the uncleared version
    fresh = build_runtime(platform.problem, platform.lake.root, tracking)
    fresh.refresh()
    fresh.stop()

    for role, reason in (("failed", "recorded verdict is 'failed'"), ("unevaluated", "never")):
        answers, health, deployment = seen[role]
        assert set(answers) == {(200, champion)}
        assert (health["status"], health["champion"], health["degraded"]) == ("ok", champion, True)
        (alert,) = health["alerts"]
        assert (alert["kind"], alert["alias"], alert["version"]) == ("refused", "champion", v[role])
        assert reason in alert["reason"] and f"version {champion} keeps serving" in alert["reason"]
        assert deployment["champion"] == v[role]  # what the registry says...
        assert deployment["serving"]["champion"] == champion  # ...and what serves
        assert deployment["serving"]["alerts"] == [alert]
    assert fresh.snapshot.champion is None
    assert [a["version"] for a in fresh.snapshot.alerts] == [v["unevaluated"]]

    # the platform's rollout does not start an uncleared challenger, nor does its sensor
    reg.set_alias(tracking, NAME, "champion", champion)
    reg.set_alias(tracking, NAME, "challenger", v["unevaluated"])
    spec, root = platform.problem.spec, platform.lake.root
    with pytest.raises(RolloutError, match="never evaluated"):
        apply(NAME, spec, root, tracking, "shadow", "by hand", "test")
    assert platform.tick_rollout() is None
    # a shadow written into the deployment log by hand: the service does not score it
    DeploymentLog(root, NAME).append(Transition("shadow", v["unevaluated"], champion, 0.0, "", "t"))
    service.runtime.refresh()
    shadow = _get(service, "/deployment")["serving"]
    with pytest.raises(RolloutError, match="never evaluated"):
        apply(NAME, spec, root, tracking, "canary", "by hand", "test")

    assert shadow["challenger"] is None and shadow["stage"] == "none"
    assert [(a["alias"], a["kind"]) for a in shadow["alerts"]] == [("challenger", "refused")]
    reg.delete_alias(tracking, NAME, "challenger")
    service.runtime.refresh()
    health = _get(service, "/health")
    assert (health["champion"], health["alerts"], health["degraded"]) == (champion, [], False)


def test_a_locked_registry_store_keeps_serving_reports_the_outage_and_recovers(
    served: tuple[Platform, Background, dict[str, str]],
) -> None:
    platform, service, v = served
    requests = _requests(platform, 20)
    before = _get(service, "/health")["registry"]
    # past MLflow's own 20 s busy timeout the follower's read fails; before, it hangs
    lock = sqlite3.connect(platform.lake.root / "mlflow" / "mlflow.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        during = _until(service, "/health", lambda h: not h["registry"]["ok"])
        answers = _answers(service, requests)
        deployment = _get(service, "/deployment")  # answered: no registry read on the loop
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    after = _until(service, "/health", lambda h: h["registry"]["ok"])

    assert before["ok"] and before["error"] is None
    assert (during["status"], during["champion"], during["degraded"]) == ("ok", v["champion"], True)
    assert "locked or unreachable" in during["registry"]["error"] and during["registry"]["since"]
    assert set(answers) == {(200, v["champion"])}
    assert deployment["serving"]["champion"] == v["champion"] and not deployment["registry"]["ok"]
    assert after["champion"] == v["champion"] and not after["degraded"]
    assert after["registry"]["reads_total"] > before["reads_total"]


def test_an_emptied_then_restored_registry_is_an_outage_not_no_champion(
    served: tuple[Platform, Background, dict[str, str]],
) -> None:
    platform, service, v = served
    tracking, requests = _tracking(platform), _requests(platform, 20)
    db = platform.lake.root / "mlflow" / "mlflow.db"
    backup = db.with_name("backup.db")
    shutil.copy(db, backup)
    with db.open("r+b") as fh:  # emptied in place
        fh.truncate(0)
    try:
        during = _until(service, "/health", lambda h: h["registry"]["failures"] >= 2)
        answers = _answers(service, requests)
        with pytest.raises(reg.RegistryError, match="could not be read") as read:
            reg.aliases(tracking, NAME)  # evaluation and promotion take this for an outage
        with pytest.raises(reg.RegistryError):
            reg.last_verdict(tracking, NAME)
    finally:
        restored = db.with_name("restored.db")
        shutil.copy(backup, restored)
        os.replace(restored, db)  # a new file in its place, as a restore from backup
    after = _until(service, "/health", lambda h: h["registry"]["ok"])

    assert (during["status"], during["champion"]) == ("ok", v["champion"])
    assert not during["registry"]["ok"] and "no such table" in during["registry"]["error"]
    assert during["registry"]["failures_total"] >= during["registry"]["failures"] >= 2
    assert 0 < during["registry"]["retry_in_seconds"] <= 10  # backs off, bounded
    assert set(answers) == {(200, v["champion"])}
    assert str(db) in str(read.value)
    assert after["champion"] == v["champion"] and after["registry"]["failures"] == 0
    assert reg.aliases(tracking, NAME) == {"champion": v["champion"]}


def test_the_last_verdict_is_the_newest_evaluation_whatever_clock_stamped_it(
    served: tuple[Platform, Background, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlplatform.status import problem_status

    platform, _, v = served
    tracking = _tracking(platform)
    monkeypatch.setenv("MLPLATFORM_NOW", "2013-01-08T12:00:00")  # a replay's simulated clock
    result = platform.run_evaluation(version=v["unevaluated"])
    monkeypatch.delenv("MLPLATFORM_NOW")

    assert result.success, failure_messages(result)
    verdict = problem_status(platform.problem, platform.lake, platform.instance)["last_verdict"]
    assert verdict["version"] == v["unevaluated"] and verdict["verdict"] == "passed"
    assert verdict["evaluated_at"].startswith("2013-01-08")
    # judged before it on the wall clock, whose stamp sorts later
    assert reg.version_tags(tracking, NAME, v["failed"])["evaluated_at"] > verdict["evaluated_at"]
    assert reg.last_verdict(tracking, NAME) == verdict


def test_deleting_the_champions_version_keeps_it_serving_and_the_commands_say_so(
    served: tuple[Platform, Background, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlplatform.cli import main

    platform, service, v = served
    tracking, requests = _tracking(platform), _requests(platform, 20)
    root = platform.lake.root
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(root))
    monkeypatch.setenv("DAGSTER_HOME", str(root.parent / "dagster_home"))
    assert v["champion"] == "1" == reg.aliases(tracking, NAME)["champion"]  # as in the case
    case = CASES / "18_delete_champion_version.py"
    exec(compile(case.read_text(), str(case), "exec"), {})  # one click in the MLflow UI
    service.runtime.refresh()

    health = _get(service, "/health")
    answers = _answers(service, requests)
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)[NAME]
    assert main(["rollout", "shadow", "--problem", NAME, "--reason", "t", "--by", "t"]) == 1
    rollout = capsys.readouterr().err  # refusals: the platform's one line, on stderr
    assert main(["rollback", "--problem", NAME, "--reason", "t", "--by", "t"]) == 1
    rollback = capsys.readouterr().err
    reg.set_alias(tracking, NAME, "champion", v["passed"])  # the way back: a cleared version
    service.runtime.refresh()
    back = _get(service, "/health")

    assert (health["status"], health["champion"], health["degraded"]) == ("ok", "1", True)
    (alert,) = health["alerts"]
    assert alert["kind"] == "champion_deleted"
    assert "champion version 1 was deleted from the registry" in alert["reason"]
    assert set(answers) == {(200, "1")}
    assert status["service"]["up"] and "deleted from the registry" in status["service"]["alerts"][0]
    assert "version 1, the champion in the deployment log, was deleted" in rollout
    assert "nothing to roll back to" in rollback
    assert (back["champion"], back["alerts"]) == (v["passed"], [])
    assert set(_answers(service, requests)) == {(200, v["passed"])}
