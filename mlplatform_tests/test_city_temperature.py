"""The second shipped problem end to end: hourly temperatures of two cities, a regression.

Real data (the ``vega_datasets`` package's Seattle and San Francisco files, 2010) through
the platform's own jobs on a real Dagster instance, MLflow and Feast store in a temporary
folder: land, ingest (checks), feature tables (a stream view and a daily one), the feature
store with its point-in-time and leakage audits, a gated training, one forecast over
HTTP, and a two-day replay hour by hour through the serving path.

The lake holds 2010-06-01..06-06: 06-01..04 train, 06-05..06 are held out; the replay
walks 06-07..06-08.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

import dagster as dg
import httpx
import numpy as np
import pandas as pd
import pytest

from mlplatform.lib.features.build import day_hours
from mlplatform.lib.storage import DataLake
from mlplatform.lib.tracking import local_tracking
from mlplatform.problems import Problem, get_problem
from mlplatform.problems.city_temperature import features, source
from mlplatform.replay import replay
from mlplatform.serving.client import as_requests
from mlplatform.serving.server import build_runtime, serve_in_background
from mlplatform_tests.helpers import Platform, checks, failure_messages, fresh_instance

NAME = "city_temperature"
DAYS = [f"2010-06-{d:02d}" for d in range(1, 7)]
REPLAY = (date(2010, 6, 7), date(2010, 6, 8))
TRAINING: dict[str, Any] = {"n_trials": 2, "validation_days": 1, "max_rounds": 200}


def _test_problem() -> Problem:
    """The shipped spec, without retraining in the two replayed days (06-07 is a Monday).

    A retrain would hold out the spec's 7 days, more than the test lake has.
    """
    problem = get_problem(NAME)
    retraining = problem.spec.retraining.model_copy(
        update={"on_drift": "alert", "labeled_volume": None, "schedule": None}
    )
    return replace(problem, spec=problem.spec.model_copy(update={"retraining": retraining}))


@dataclass(frozen=True)
class Trained:
    """The platform after training, and the check results of its feature store and gates."""

    platform: Platform
    store: dict[tuple[str, str], Any]
    gates: dict[tuple[str, str], Any]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """Six days landed, ingested and featured; the feature store built; a champion trained."""
    root = tmp_path_factory.mktemp("city") / "data"
    with fresh_instance() as instance:
        platform = Platform(_test_problem(), root, instance)
        platform.land(DAYS[0], DAYS[-1])
        for day in DAYS:
            result = platform.run_day(day)
            assert result.success, failure_messages(result)
        for day in DAYS:
            result = platform.run_features(day)
            assert result.success, failure_messages(result)
        store = platform.run_feature_store()
        assert store.success, failure_messages(store)
        training = platform.run_gated_training(**TRAINING)
        assert training.success, failure_messages(training)
        yield Trained(platform, checks(store), checks(training))


def test_the_package_data_reads_as_pacific_standard_time_with_one_hour_missing() -> None:
    hourly = source.hourly()
    assert set(hourly["city"]) == {"seattle", "san_francisco"}
    assert len(hourly) == 2 * (365 * 24 - 1)  # 2010-03-14 03:00 PST is in neither file
    first = hourly.groupby("city")["time"].min()
    assert (first == pd.Timestamp("2010-01-01T08:00:00Z")).all()  # 00:00 PST
    # partitions are local days: the clock change days hold 23 and 25 hours
    assert len(source.export_day("forecasts", date(2010, 3, 14))) == 2 * 23
    assert len(source.export_day("forecasts", date(2010, 11, 7))) == 2 * 25
    day = source.export_day("forecasts", date(2010, 6, 1))
    assert ((day["target_time"] - day["issued_at"]) == pd.Timedelta(hours=6)).all()


def test_lagged_features_use_only_reports_before_the_forecast_hour() -> None:
    days = [date(2010, 6, d) for d in (1, 2, 3)]
    obs = pd.concat([source.export_day("observations", d) for d in days])
    events = source.stream_events("observations", obs)
    hours = day_hours(date(2010, 6, 3), "America/Los_Angeles")
    rows = features.lagged(events, hours).set_index(["city", "event_timestamp"])
    temps = obs.set_index(["city", "time"])["temp"]
    t = hours[10]
    for lag in features.LAGS:
        assert (
            rows.loc[("seattle", t), f"temp_{lag}h"]
            == temps[("seattle", t - pd.Timedelta(hours=lag))]
        )
    day = [temps[("seattle", t - pd.Timedelta(hours=h))] for h in range(1, 25)]
    assert rows.loc[("seattle", t), "temp_mean_24h"] == pytest.approx(np.mean(day))
    # the newest hour is the previous one: the hour's own observation is reported at :55
    # (after t), so changing it (or any later one) changes nothing at t
    later = events["time"] >= t
    changed = events.assign(temp=events["temp"].where(~later, events["temp"] + 40))
    again = features.lagged(changed, [t]).set_index(["city", "event_timestamp"])
    pd.testing.assert_frame_equal(again, rows.loc[again.index])
    # online, only what was pushed before t exists: the same row
    pushed = events[events["reported_at"] < t]
    online = features.lagged(pushed, [t]).set_index(["city", "event_timestamp"])
    pd.testing.assert_frame_equal(online, rows.loc[online.index])


@pytest.mark.slow
@pytest.mark.e2e
def test_ingestion_and_the_training_set_audits_pass_on_real_days(trained: Trained) -> None:
    lake = trained.platform.lake
    forecasts = lake.read_days(NAME, "forecasts", [date(2010, 6, 1)])
    assert len(forecasts) == 48 and str(forecasts["issued_at"].dt.tz) == "UTC"
    store = trained.store
    for name in ("point_in_time", "no_leakage", "online_parity"):
        assert store[("training_set", name)].passed, name
    for name in ("point_in_time", "no_leakage"):
        assert store[("holdout_set", name)].passed, name


@pytest.mark.slow
@pytest.mark.e2e
def test_the_model_beats_persistence_and_yesterday_on_the_holdout_days(trained: Trained) -> None:
    gates = trained.gates
    assert all(e.passed for (asset, _), e in gates.items() if asset == "evaluation_report")
    rmse = float(gates[("evaluation_report", "min_metric")].metadata["value"].value)
    holdout = _holdout(trained.platform.lake)
    assert len(holdout) == 2 * 48
    label = holdout["temp_6h_ahead"]
    persistence = math.sqrt(((label - holdout["temp_1h"]) ** 2).mean())
    # measured on 06-05..06: the model ~0.2 F, the newest observation (7 h before) ~7 F
    assert 0 < rmse < persistence / 5, (rmse, persistence)
    # the target hour the day before, the model's starting point (training.boost_from):
    # the boosted change must improve on it
    yesterday = math.sqrt(((label - holdout["temp_18h"]) ** 2).mean())
    assert rmse < yesterday, (rmse, yesterday)


def _holdout(lake: DataLake) -> pd.DataFrame:
    folder = lake.root / "warehouse" / NAME / "holdout_set"
    (newest,) = sorted(folder.glob("*.parquet"), key=lambda p: p.stat().st_mtime)[-1:]
    return pd.read_parquet(newest)


@pytest.mark.slow
@pytest.mark.e2e
def test_one_forecast_over_http(trained: Trained) -> None:
    platform = trained.platform
    root = platform.lake.root
    runtime = build_runtime(platform.problem, root, local_tracking(root), refresh_seconds=0.2)
    service = serve_in_background(runtime)
    try:
        # the newest hour the online store holds: the last forecast of the last day
        day = platform.lake.read_days(NAME, "forecasts", [date(2010, 6, 6)])
        last = day[day["issued_at"] == day["issued_at"].max()].iloc[[0]]
        (request,) = as_requests(platform.problem, last)
        with httpx.Client(base_url=service.url) as client:
            answer = client.post("/predict", json=request).json()
            explained = client.post("/predict", json={**request, "explain": True}).json()
            refused = client.post("/predict", json={**request, "city": "portland"})
    finally:
        service.stop()
    assert answer["version"] == "1" and answer["route"] == "champion"
    # the day's means are stamped at its end (midnight, an hour after this forecast): online
    # that row is from the future, so the service treats them as missing, never as known
    assert set(answer["missing_features"]) == {"temp_mean_1d", "temp_mean_7d"}
    assert not answer["defaulted_features"]
    truth = float(last["temp"].iloc[0])
    assert abs(answer["prediction"] - truth) < 2.0, (answer, truth)  # °F, not a probability
    assert refused.status_code == 422
    # the model boosts from temp_18h: its value sits in that feature's contribution, and
    # the contributions still add up to the prediction
    parts = explained["contributions"]
    assert math.isclose(
        sum(parts.values()) + explained["base_value"], explained["prediction"], abs_tol=1e-6
    )
    assert abs(parts["temp_18h"] - explained["prediction"]) < 5.0, parts


@pytest.mark.slow
@pytest.mark.e2e
def test_a_two_day_replay_serves_every_hour(trained: Trained) -> None:
    platform = trained.platform
    resources = {"lake": platform.feast.lake, "feast": platform.feast, "mlflow": platform.mlflow}
    timeline = replay(platform.problem, *REPLAY, platform.defs, platform.instance, resources)
    days = pd.read_csv(timeline.folder / "timeline.csv")
    assert list(days["day"]) == ["2010-06-07", "2010-06-08"]
    assert (days["requests"] == 48).all() and (days["failed_requests"] == 0).all()
    assert (days["labelled"] == 48).all()
    assert (days["online_rmse"] < 1.0).all()  # °F over each day's 48 forecasts
    # served vectors equal their point-in-time rebuild; drift is scored every day
    assert (days["skew_share"] == 0).all() and days["drift_share"].notna().all()
    failed = platform.instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    assert not failed, [r.run_id for r in failed]
    # each replayed day was landed and ingested by the platform's own automation
    ingested = platform.instance.get_materialized_partitions(dg.AssetKey([NAME, "forecasts"]))
    assert {"2010-06-07", "2010-06-08"} <= ingested


def test_boost_from_must_name_a_numeric_feature_of_a_regression_problem() -> None:
    spec = get_problem(NAME).spec
    assert spec.training.boost_from == "temp_18h"
    data = spec.model_dump()
    for name in ("city", "temp_6h_ahead"):  # categorical; the target, no feature
        data["training"]["boost_from"] = name
        with pytest.raises(ValueError, match=r"training\.boost_from: .*numeric feature"):
            type(spec).model_validate(data)
    flights = get_problem("flight_delay").spec.model_dump()
    flights["training"]["boost_from"] = flights["features"][0]["name"]
    with pytest.raises(ValueError, match=r"training\.boost_from: .*regression problem"):
        type(spec).model_validate(flights)
