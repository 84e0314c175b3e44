"""The replay: simulated days through Dagster's own sensors, schedule and automation.

One short replay (2013-01-08..16) on a real instance, MLflow and Feast store in a
temporary folder, with a test spec: retrains on Mondays and Thursdays, small rollout
counts, and a challenger must beat the champion online by 0.03 to go to full traffic.
The first champion is a stump. Training is seeded, so the outcomes are the same on
every run: one retrain is rolled back on its online metric, the other promoted. The
alerts' webhook points at a receiver on 127.0.0.1: each rollback reaches it exactly once.
"""

import json
from dataclasses import replace
from datetime import date

import pandas as pd
import pytest

from mlplatform.lib.deployment.log import DeploymentLog, is_rollback
from mlplatform.lib.monitoring.alerts import AlertLog
from mlplatform.lib.monitoring.timeline import Timeline, replays_dir
from mlplatform.problems import Problem
from mlplatform.replay import AlreadyReplayed, ReplayError, replay
from mlplatform.status import problem_status
from mlplatform_tests.helpers import FAST, STUMP, STUMP_TRAINING, Platform, tuned_problem
from mlplatform_tests.test_alerts import Receiver, Ticker, receiver, with_alerts

__all__ = ["receiver"]  # the fixture, shared with test_alerts.py

START, END = date(2013, 1, 8), date(2013, 1, 16)


def _test_problem(problem: Problem) -> Problem:
    tuned = tuned_problem(
        problem,
        rollout={
            "shadow_requests": 300,
            "canary_share": 0.5,
            "canary_requests": 200,
            "min_outcomes": 200,
            "max_metric_drop": -0.03,  # the challenger must be 0.03 better online
        },
        holdout_days=2,
        max_regression=0.05,
        slice_tolerance=0.2,
    )
    spec = tuned.spec.model_copy(
        update={
            "retraining": tuned.spec.retraining.model_copy(
                update={
                    "schedule": "0 6 * * 1,4",
                    "labeled_volume": None,
                    "on_drift": "alert",
                    "min_new_labels": 1000,
                }
            ),
            "monitoring": tuned.spec.monitoring.model_copy(update={"window_days": 3}),
        }
    )
    return replace(tuned, spec=spec)


def _resources(platform: Platform) -> dict:
    return {"lake": platform.feast.lake, "feast": platform.feast, "mlflow": platform.mlflow}


def test_a_replay_without_a_champion_says_what_to_do_first(featured: Platform) -> None:
    with pytest.raises(ReplayError, match="no champion to replay from"):
        replay(featured.problem, START, END, featured.defs, featured.instance, _resources(featured))


# nine replayed days end to end: ~9 min alone on the 2 cores, longer beside another worker;
# a timeout inside a run's step is caught by Dagster and the replay goes on half-done
@pytest.mark.timeout(2400)
def test_a_short_replay_retrains_promotes_and_rolls_back(
    featured: Platform, problem: Problem, receiver: Receiver
) -> None:
    # the alerts' webhook is a real HTTP server on 127.0.0.1
    tuned = with_alerts(_test_problem(problem), webhook_url=receiver.url)
    platform = Platform(tuned, featured.lake.root, featured.instance)
    assert platform.run_feature_store().success  # training-set checks on this instance
    assert platform.run_gated_training(**STUMP_TRAINING, params=STUMP).success  # champion 1
    lines: list[str] = []

    timeline = replay(
        tuned,
        START,
        END,
        platform.defs,
        platform.instance,
        _resources(platform),
        retrain_ops={"flight_delay__model_candidate": {"config": {**FAST, "n_trials": 3}}},
        progress=lines.append,
    )

    days = pd.read_csv(timeline.folder / "timeline.csv")
    events = pd.read_csv(timeline.folder / "events.csv")
    versions = pd.read_csv(timeline.folder / "versions.csv")
    assert list(days["day"]) == [f"2013-01-{d:02d}" for d in range(8, 17)]
    assert (days["requests"] > 500).all() and (days["failed_requests"] == 0).all()
    assert (days["labelled"] > 0.8 * days["requests"]).all()
    # Thursday 01-10 and Monday 01-14, 06:00: the schedule's retrains, each through the
    # gates into shadow. One is not 0.03 better online than the champion: rolled back on
    # its outcomes. The other is: canary, then full traffic.
    retrains = events[events["kind"] == "retrain"]
    assert list(retrains["day"]) == ["2013-01-10", "2013-01-14"]
    assert retrains["detail"].str.startswith("schedule:").all()
    assert retrains["detail"].str.contains("passed → challenger").all()
    trained = set(retrains["version"].astype(str))
    (promoted,) = events[events["kind"] == "full"]["version"].astype(str)
    kinds = list(zip(events["kind"], events["version"].astype(str), strict=True))
    assert [k for k, v in kinds if v == promoted] == ["retrain", "shadow", "canary", "full"]
    rolled = events[events["kind"] == "rolled_back"]
    assert len(rolled) >= 1 and set(rolled["version"].astype(str)) <= trained - {promoted}
    assert rolled["detail"].str.contains("online roc_auc").all()
    # the frozen first model is the champion until the promotion: the same answers
    promoted_on = str(events[events["kind"] == "full"]["day"].iloc[0])
    before = days[days["day"] < promoted_on]
    assert (before["champion"].astype(str) == "1").all()
    # a canary answers from its start to the end of the day it ends on (the stage is
    # recorded at each day's end): days without one at either end were the champion's
    canary = before["stage"] == "canary"
    unshared = before[~canary & ~canary.shift(1, fill_value=False)]
    assert (unshared["online_roc_auc"] == unshared["frozen_roc_auc"]).all()
    after = days[days["day"] > promoted_on]
    assert len(after) and (after["champion"].astype(str) == promoted).all()
    assert (after["online_roc_auc"] != after["frozen_roc_auc"]).all()
    # a challenger in shadow was scored on every request of its day, answering none
    shadowed = versions[(versions["role"] == "challenger") & (versions["answered"] == 0)]
    assert set(shadowed["version"].astype(str)) == trained
    assert (shadowed["scored"] > 500).all()
    summary = timeline.summary()
    assert summary["retrains"] == 2 and summary["promotions"] == 1 and summary["rollbacks"] >= 1
    assert (timeline.folder / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert "<img" in (timeline.folder / "timeline.html").read_text()
    assert len(lines) == 1 + len(days)  # one progress line per day
    read_back = Timeline.load(timeline.folder, "flight_delay", "roc_auc")
    assert [(e.kind, e.version) for e in read_back.events] == [
        (e.kind, e.version) for e in timeline.events
    ]
    assert len(read_back.days) == len(days) and read_back.frozen_version == "1"

    status = problem_status(tuned, platform.lake, platform.instance, platform.mlflow.tracking())
    assert status["timeline"] == str(timeline.folder / "timeline.csv")
    assert status["monitoring"]["retrains"] == 2
    assert status["monitoring"]["rollbacks"] >= 1
    assert status["monitoring"]["last_drift_partition"] == "2013-01-16"

    # the replayed days populate the Evidently dashboards: four snapshots per day
    board = status["dashboard"]
    assert board["snapshots"] == dict.fromkeys(("drift", "performance", "serving", "skew"), 9)
    assert board["days"] == {"first": "2013-01-08", "last": "2013-01-16"}
    # every evaluated version (the champion and both retrains) has its model card in MLflow
    client = platform.mlflow.tracking().client()
    for version in client.search_model_versions("name = 'flight_delay'"):
        files = {a.path for a in client.list_artifacts(version.run_id)}
        assert "model_card.md" in files, version.version
    assert len(client.search_model_versions("name = 'flight_delay'")) == 3

    # each rollback (the bad challenger) reached the receiver as one alert, exactly once
    rollbacks = [e for e in DeploymentLog(platform.lake.root, "flight_delay").entries()]
    rollbacks = [e for e in rollbacks if is_rollback(e)]
    alerts = [b for b in receiver.bodies if b["kind"] == "rolled_back"]
    assert [a["subject"]["version"] for a in alerts] == [e.version for e in rollbacks]
    for alert, rolled in zip(alerts, rollbacks, strict=True):
        assert alert["subject"]["asset"] == "flight_delay/deployment"
        assert alert["figures"]["actor"] == "rollout sensor"
        assert "online roc_auc" in alert["summary"] and rolled.reason in alert["summary"]
        assert alert["runbook"] == "docs/runbooks/rollback.md"
        assert alert["figures"]["at"] == rolled.time  # on the replay's clock
    # another tick from the replay's cursor sends nothing again
    cursors = json.loads(
        (replays_dir(platform.lake.root, "flight_delay") / "cursors.json").read_text()
    )
    sent = len(receiver.bodies)
    ticker = Ticker(platform)
    ticker.cursor = cursors["flight_delay_alerts"]
    ticker.tick()
    assert len(receiver.bodies) == sent
    logged = AlertLog(platform.lake.root, "flight_delay").entries()
    assert [e["kind"] for e in logged] == [b["kind"] for b in receiver.bodies]
    assert all(e["webhook"]["ok"] for e in logged)
    assert status["alerts"]["sent"] == sent
    assert status["alerts"]["by_kind"]["rolled_back"] == len(rollbacks)

    # the same days again: nothing new (make demo run twice); overlapping days: refused
    again = (platform.defs, platform.instance, _resources(platform))
    with pytest.raises(AlreadyReplayed) as replayed:
        replay(tuned, START, END, *again)
    assert replayed.value.table == timeline.folder / "timeline.csv"
    with pytest.raises(ReplayError, match=r"2013-01-15..2013-01-16 \(2 days\) were already"):
        replay(tuned, date(2013, 1, 15), date(2013, 1, 20), *again)
