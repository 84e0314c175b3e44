"""Replay benchmark: throughput, one day's automated update against a rebuild, the metric.

1. A fresh lake and Dagster instance in a temporary folder: 2013-01-01..01-28 landed,
   ingested and featurized, and a first model trained and promoted through the same jobs
   ``make demo`` runs (the spec's search budget).
2. ``replay`` of the next ``--days`` days (default 14), ``--trials`` per retrain (default
   5): ``days_per_minute`` is days over the replay's wall minutes.
3. ``incremental_ratio``: the median ``update_seconds`` of replayed days that launched no
   retrain (the landing sensor's ingestion, the automation sensor's feature tables, online
   store and monitoring, the rollout and retraining ticks) against a day's share of a full
   rebuild: on a second fresh lake and instance, the ingestion, features and feature-store
   jobs over every day the replay ends with, divided by their number.
4. ``online_metric`` and ``frozen_metric``: the spec's metric over all replayed answers,
   of the served models and of the frozen first model on the same requests.
5. The per-phase medians over the replayed days: ``serve_s_median`` (the day served hour
   by hour: pushes, requests, the 06:00 schedule and settle), ``update_s_median`` (the
   evening, every day), ``ticks_s_median`` (seconds a day spends evaluating sensor ticks,
   the runs they ask for excluded).

``--feast-push`` pushes through Feast's ``store.push`` every time (its registry lookup per
call, as before ``lib.features.stream.push_targets``): the same replay, for a before/after.

Last line: one JSON object with those keys and what they were measured on.
Run: ``.venv/bin/python bench/replay.py [--days N] [--trials N] [--feast-push]``.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from mlplatform import settings
from mlplatform.lib.features import stream
from mlplatform.lib.ingestion.landing import days
from mlplatform.problems import get_problem
from mlplatform.replay import Replay, replay
from mlplatform_tests.helpers import Platform, failure_messages

FIRST, LAST_TRAINED = date(2013, 1, 1), date(2013, 1, 28)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def built(platform: Platform, start: date, end: date) -> float:
    """Land, ingest and featurize ``start``..``end``, then the feature store; seconds."""
    platform.land(start.isoformat(), end.isoformat())
    began = time.perf_counter()
    runs = [platform.run_reference()]
    runs += [platform.run_day(d.isoformat()) for d in days(start, end)]
    runs += [platform.run_features(d.isoformat()) for d in days(start, end)]
    runs.append(platform.run_feature_store(holdout_days=platform.problem.spec.gates.holdout_days))
    for result in runs:
        if not result.success:
            raise SystemExit(f"setup failed: {failure_messages(result)}")
    return time.perf_counter() - began


def timed_ticks(timezone: str) -> dict[str, float]:
    """Seconds spent in ``Replay.tick_sensor`` per local day of the platform clock."""
    from zoneinfo import ZoneInfo

    zone, spent = ZoneInfo(timezone), {}
    tick = Replay.tick_sensor

    def timed(self: Replay, name: str) -> list[dg.RunRequest]:
        began = time.perf_counter()
        try:
            return tick(self, name)
        finally:
            day = settings.now().astimezone(zone).date().isoformat()
            spent[day] = spent.get(day, 0.0) + time.perf_counter() - began

    Replay.tick_sensor = timed  # the bench's own timer around the same call
    return spent


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--feast-push", action="store_true", help="Feast's lookup every push")
    args = parser.parse_args()
    if args.feast_push:
        stream.push_targets = lambda store, source: None  # store.push resolves the views
    problem = get_problem("flight_delay")
    ticks = timed_ticks(problem.spec.partitioning.timezone)
    start = LAST_TRAINED + timedelta(days=1)
    end = LAST_TRAINED + timedelta(days=args.days)
    metric = problem.spec.metric.name
    with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
        platform = Platform(problem, Path(tmp) / "replayed", instance)
        log(f"setup: {FIRST}..{LAST_TRAINED} built, first model trained")
        built(platform, FIRST, LAST_TRAINED)
        trained = platform.run_gated_training()
        if not trained.success:
            raise SystemExit(f"first model failed: {failure_messages(trained)}")
        resources = {
            "lake": platform.feast.lake,
            "feast": platform.feast,
            "mlflow": platform.mlflow,
        }
        began = time.perf_counter()
        timeline = replay(
            problem,
            start,
            end,
            platform.defs,
            instance,
            resources,
            retrain_ops={f"{problem.name}__model_candidate": {"config": {"n_trials": args.trials}}},
            progress=log,
        )
        replay_seconds = time.perf_counter() - began
        os.environ.pop(settings.CLOCK_VAR, None)
        serve = [d["morning_seconds"] + d["serving_seconds"] for d in timeline.days]
        updates = [d["update_seconds"] for d in timeline.days]
        quiet = [d["update_seconds"] for d in timeline.days if "retrain" not in d["events"]]
        summary = timeline.summary()

        with dg.instance_for_test() as fresh:
            rebuild = Platform(problem, Path(tmp) / "rebuilt", fresh)
            log(f"full rebuild: {FIRST}..{end}")
            rebuild_seconds = built(rebuild, FIRST, end)
    n_days = (end - FIRST).days + 1
    share = rebuild_seconds / n_days
    update = statistics.median(quiet) if quiet else float("nan")
    out = {
        "days_per_minute": round(args.days / (replay_seconds / 60), 3),
        "incremental_ratio": round(update / share, 3),
        "online_metric": round(summary[f"online_{metric}"], 4),
        "frozen_metric": round(summary[f"frozen_{metric}"], 4),
        "metric": metric,
        "replayed": f"{start}..{end}",
        "replay_seconds": round(replay_seconds, 1),
        "update_seconds_median": round(update, 2),
        "serve_s_median": median(serve),
        "update_s_median": median(updates),
        "ticks_s_median": median([ticks.get(str(d), 0.0) for d in days(start, end)]),
        "push_lookup": "feast" if args.feast_push else "cached",
        "rebuild_seconds_per_day": round(share, 2),
        "rebuild_days": n_days,
        "retrains": summary["retrains"],
        "promotions": summary["promotions"],
        "rollbacks": summary["rollbacks"],
        "trials_per_retrain": args.trials,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
