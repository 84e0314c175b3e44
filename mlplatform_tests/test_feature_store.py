"""The Feast store end to end: training sets, the one feature path, and the gates auditing them."""

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from mlplatform.lib.features.feature_store import (
    feature_matrix,
    feature_vector,
    feature_vectors,
    online_vector,
)
from mlplatform.lib.features.tables import EVENT_TS, local_midnight
from mlplatform.lib.features.training_set import (
    data_version,
    leakage_audit,
    point_in_time_audit,
    row_keys,
)
from mlplatform.lib.storage import DataLake
from mlplatform.problems import Problem
from mlplatform_tests.helpers import Platform, checks, materialized

TZ = "America/New_York"


def _training(root: Path) -> pd.DataFrame:
    latest = DataLake(root).read_latest("flight_delay", "training_set")
    assert latest is not None
    return pd.read_parquet(latest["path"])


def _offline(root: Path, problem: Problem) -> dict[str, pd.DataFrame]:
    lake = DataLake(root)
    days = lake.partitions("flight_delay", "features/plane")
    return {
        t.name: lake.read_days("flight_delay", f"features/{t.name}", days)
        for t in problem.feature_tables()
    }


def test_training_and_holdout_sets_split_every_labelled_flight_by_day(
    featured_base: Path, problem: Problem
) -> None:
    training = _training(featured_base)
    lake = DataLake(featured_base)
    train_meta = lake.read_latest("flight_delay", "training_set")
    holdout_meta = lake.read_latest("flight_delay", "holdout_set")
    assert train_meta and holdout_meta
    assert (train_meta["start"], train_meta["end"]) == ("2013-01-01", "2013-01-05")
    assert (holdout_meta["start"], holdout_meta["end"]) == ("2013-01-06", "2013-01-07")
    holdout = pd.read_parquet(holdout_meta["path"])
    days = lake.partitions("flight_delay", "flights")
    flights = lake.read_days("flight_delay", "flights", days)
    assert len(training) + len(holdout) == flights["arr_delay"].notna().sum() > 5000
    last_trained = pd.to_datetime(training[EVENT_TS], utc=True).max()
    assert pd.to_datetime(holdout[EVENT_TS], utc=True).min() > last_trained
    # the holdout keeps each request's prediction time, to replay it through serving
    assert (pd.to_datetime(holdout["time_hour"], utc=True) == holdout[EVENT_TS]).all()
    assert training["is_delayed"].isin([0, 1]).all()
    assert set(f.name for f in problem.spec.features) <= set(training.columns)
    assert not training.duplicated(row_keys(problem.spec)).any()
    # weather is known for every flight (hourly, TTL 6 h)
    assert training["temp"].notna().mean() > 0.99


def test_training_set_is_deterministic_and_its_gates_pass(featured: Platform) -> None:
    before = _training(featured.lake.root)
    result = featured.run_feature_store()

    assert result.success
    evaluations = checks(result)
    assert {
        name: e.passed for (asset, name), e in evaluations.items() if asset == "training_set"
    } == {
        "point_in_time": True,
        "no_leakage": True,
        "online_parity": True,
    }
    after = _training(featured.lake.root)
    assert data_version(after) == data_version(before)
    pd.testing.assert_frame_equal(after, before)


def test_online_and_offline_paths_give_the_same_vector(
    featured: Platform, problem: Problem
) -> None:
    """Real flights at 10:00 on 2013-01-07, once through Feast offline and once online."""
    moment = local_midnight(date(2013, 1, 7), TZ) + timedelta(hours=10)
    store = featured.feast.store(problem)
    service = featured.feast.service(problem, store)
    # the online store as it stood at 10:00 that day: every value known by then
    store.materialize(start_date=local_midnight(date(2013, 1, 1), TZ), end_date=moment)
    flights = featured.lake.read_table("flight_delay", "flights", "2013-01-07")
    requests = flights[pd.to_datetime(flights["time_hour"], utc=True) == moment]
    assert len(requests) > 20

    offline = feature_matrix(
        feature_vectors(problem, store, service, requests, online=False), problem.spec
    )
    online = feature_matrix(
        feature_vectors(problem, store, service, requests, online=True), problem.spec
    )

    pd.testing.assert_frame_equal(online, offline)
    assert offline["temp"].notna().all() and offline["carrier_delay_rate_7d"].notna().all()
    # the serving path: one request, no DataFrame, the same vector
    one = requests.iloc[0].to_dict()
    vector = feature_vector(online_vector(problem, store, service, one), problem.spec)
    expected = offline.iloc[0].tolist()
    assert [v for v in vector if v == v] == [v for v in expected if v == v]  # NaN-free equal


# -- each gate fails when its condition is broken


@pytest.fixture
def audit_inputs(
    featured_base: Path, problem: Problem
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    return _training(featured_base), _offline(featured_base, problem)


def test_point_in_time_audit_passes_on_the_real_training_set(
    audit_inputs: tuple[pd.DataFrame, dict[str, pd.DataFrame]], problem: Problem
) -> None:
    training, offline = audit_inputs
    outcome = point_in_time_audit(
        training, problem.feature_tables(), offline, row_keys(problem.spec)
    )
    assert outcome.passed, outcome.reason


@pytest.mark.parametrize(
    ("shift_hours", "expect"),
    [(2, "1 from the future"), (-7, "1 past TTL"), (-1, "1 not the newest")],
)
def test_point_in_time_audit_catches_a_wrong_pick(
    audit_inputs: tuple[pd.DataFrame, dict[str, pd.DataFrame]],
    problem: Problem,
    shift_hours: int,
    expect: str,
) -> None:
    training, offline = audit_inputs
    broken = training.copy()
    values = broken["origin_weather_ts"].to_numpy(dtype=float, copy=True)
    values[100] += shift_hours * 3600
    broken["origin_weather_ts"] = values

    outcome = point_in_time_audit(broken, problem.feature_tables(), offline, row_keys(problem.spec))

    assert not outcome.passed and outcome.severity == "ERROR"
    assert outcome.reason.startswith("origin_weather:") and expect in outcome.reason


def test_point_in_time_audit_catches_duplicate_rows(
    audit_inputs: tuple[pd.DataFrame, dict[str, pd.DataFrame]], problem: Problem
) -> None:
    training, offline = audit_inputs
    doubled = pd.concat([training, training.head(2)], ignore_index=True)
    outcome = point_in_time_audit(
        doubled, problem.feature_tables(), offline, row_keys(problem.spec)
    )
    assert not outcome.passed and "2 duplicate" in outcome.reason


def test_leakage_guard_rejects_an_outcome_column(
    audit_inputs: tuple[pd.DataFrame, dict[str, pd.DataFrame]], problem: Problem
) -> None:
    training, _ = audit_inputs
    assert leakage_audit(training, problem.spec).passed
    leaky = training.assign(dep_delay=1.0)
    outcome = leakage_audit(leaky, problem.spec)
    assert not outcome.passed and "['dep_delay']" in outcome.reason


def test_parity_gate_stops_the_run_when_offline_changes_after_materialization(
    featured: Platform,
) -> None:
    # rewrite the newest carrier statistics without materializing them again
    path = featured.lake.table_path("flight_delay", "features/carrier_delays", "2013-01-07")
    stats = pd.read_parquet(path)
    stats["carrier_delay_rate_7d"] = stats["carrier_delay_rate_7d"] + 0.5
    stats.to_parquet(path, index=False)

    result = featured.run_feature_store()

    assert not result.success
    evaluation = checks(result)[("training_set", "online_parity")]
    assert not evaluation.passed and evaluation.severity.value == "ERROR"
    assert "differ from offline" in (evaluation.description or "")
    assert checks(result)[("training_set", "point_in_time")].passed


def test_status_reports_the_feature_store(
    featured: Platform, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from mlplatform.cli import main

    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(featured.lake.root))
    monkeypatch.setenv("DAGSTER_HOME", str(featured.lake.root.parent / "home"))
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)["flight_delay"]
    assert status["feature_views"] == sorted(t.view for t in featured.problem.feature_tables())
    assert status["online_store_rows"] > 1000
    assert status["training_set"]["rows"] == len(_training(featured.lake.root))
    assert status["training_set"]["data_version"] == data_version(_training(featured.lake.root))
    assert "training_set" not in materialized(featured.run_features("2013-01-07"))


def test_the_feast_cli_works_on_the_same_repository(featured_base: Path, problem: Problem) -> None:
    import os
    import subprocess
    import sys

    cli = Path(sys.executable).with_name("mlplatform")
    out = subprocess.run(
        [str(cli), "feast", "--problem", "flight_delay", "--", "feature-views", "list"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**os.environ, "MLPLATFORM_DATA_DIR": str(featured_base)},
    )
    listed = {line.split()[0] for line in out.stdout.splitlines()[1:] if line.strip()}
    assert listed == {t.view for t in problem.feature_tables()}


@pytest.mark.parametrize("table", ["origin_ops", "carrier_ops", "plane_ops"])
def test_point_in_time_audit_covers_the_stream_views(
    audit_inputs: tuple[pd.DataFrame, dict[str, pd.DataFrame]], problem: Problem, table: str
) -> None:
    """An operational row picked an hour late (it would count the flight's own hour)."""
    training, offline = audit_inputs
    picked = training[f"{table}_ts"].notna()
    assert picked.mean() > 0.2  # the real training set reads the stream views
    broken = training.copy()
    values = broken[f"{table}_ts"].to_numpy(dtype=float, copy=True)
    values[int(picked.to_numpy().nonzero()[0][0])] += 3600
    broken[f"{table}_ts"] = values

    outcome = point_in_time_audit(broken, problem.feature_tables(), offline, row_keys(problem.spec))

    assert not outcome.passed and outcome.reason.startswith(f"{table}: 1 from the future")
