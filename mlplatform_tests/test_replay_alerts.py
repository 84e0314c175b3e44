"""A replayed bad challenger: rolled back by the rollout sensor, alerted once at a receiver.

The short replay of ``test_replay.py`` (same test spec: a challenger must beat the stump
champion by 0.03 online), stopped after the first retrain's rollback, with the alerts'
webhook pointing at a real HTTP server on 127.0.0.1. The alert sensor ticks in the
replay's settle like every other sensor.
"""

import json
from datetime import date

from mlplatform.lib.alerts import AlertLog
from mlplatform.lib.deployment import DeploymentLog, is_rollback
from mlplatform.lib.timeline import replays_dir
from mlplatform.problems import Problem
from mlplatform.replay import replay
from mlplatform.status import problem_status
from mlplatform_tests.helpers import FAST, STUMP, STUMP_TRAINING, Platform
from mlplatform_tests.test_alerts import Receiver, Ticker, receiver, with_alerts
from mlplatform_tests.test_replay import _resources, _test_problem

__all__ = ["receiver"]  # the fixture, shared with test_alerts.py

START, END = date(2013, 1, 8), date(2013, 1, 11)


def test_a_replayed_bad_challenger_is_rolled_back_and_alerted_exactly_once(
    featured: Platform, problem: Problem, receiver: Receiver
) -> None:
    tuned = with_alerts(_test_problem(problem), webhook_url=receiver.url)
    platform = Platform(tuned, featured.lake.root, featured.instance)
    assert platform.run_feature_store().success
    assert platform.run_gated_training(**STUMP_TRAINING, params=STUMP).success  # champion 1

    replay(
        tuned,
        START,
        END,
        platform.defs,
        platform.instance,
        _resources(platform),
        retrain_ops={"flight_delay__model_candidate": {"config": {**FAST, "n_trials": 3}}},
    )

    (rolled,) = [
        e for e in DeploymentLog(platform.lake.root, "flight_delay").entries() if is_rollback(e)
    ]
    alerts = [b for b in receiver.bodies if b["kind"] == "rolled_back"]
    assert len(alerts) == 1, [b["text"] for b in receiver.bodies]
    (alert,) = alerts
    assert alert["subject"]["version"] == rolled.version
    assert alert["subject"]["asset"] == "flight_delay/deployment"
    assert alert["figures"]["champion"] == "1" and alert["figures"]["actor"] == "rollout sensor"
    assert "online roc_auc" in alert["summary"] and rolled.reason in alert["summary"]
    assert alert["runbook"] == "docs/runbooks/rollback.md"
    assert alert["figures"]["at"] == rolled.time  # on the replay's clock

    # another tick from the replay's cursor: nothing is sent again
    cursors = json.loads(
        (replays_dir(platform.lake.root, "flight_delay") / "cursors.json").read_text()
    )
    ticker = Ticker(platform)
    ticker.cursor = cursors["flight_delay_alerts"]
    ticker.tick()
    assert len([b for b in receiver.bodies if b["kind"] == "rolled_back"]) == 1
    logged = AlertLog(platform.lake.root, "flight_delay").entries()
    assert [e["kind"] for e in logged] == [b["kind"] for b in receiver.bodies]
    assert all(e["webhook"]["ok"] for e in logged)
    status = problem_status(tuned, platform.lake, platform.instance)["alerts"]
    assert status["sent"] == len(receiver.bodies) and status["by_kind"]["rolled_back"] == 1
