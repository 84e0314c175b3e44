"""Batch scoring: a day's batch answers are the service's answers, request by request.

A day is served hour by hour through the serving runtime, from an online store brought up to
each hour (``test_skew``'s ``serving`` fixture and ``_serve_hourly``: champion 1, challenger 2
in shadow, so every request is scored by both); then ``batch_predictions`` is materialized for
that day and compared with the prediction log on the same requests.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlplatform.cli import main
from mlplatform.lib.deployment.batch import PREDICTION, TABLE, feature_column
from mlplatform.lib.monitoring.skew import Tolerance, compare, served_matrix
from mlplatform_tests.helpers import QUIET, failure_messages
from mlplatform_tests.test_skew import NAME, _serve_hourly
from mlplatform_tests.test_skew import serving as serving  # the module-scoped fixture, reused

DAY = "2013-01-07"
EXACT = Tolerance(0.0, 0.0)


def _materialize(platform: Any, day: str) -> dict[str, Any]:
    """Run the scoring job for ``day``; the materialization's metadata."""
    from mlplatform.defs.deployment.batch import batch_job_name

    job = platform.defs.resolve_job_def(batch_job_name(platform.problem))
    result = job.execute_in_process(
        instance=platform.instance, partition_key=day, raise_on_error=False, run_config=QUIET
    )
    assert result.success, failure_messages(result)
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_a_days_batch_scores_equal_the_online_answers_at_the_same_prediction_times(
    serving: tuple[Any, Any],
) -> None:
    from mlplatform.lib.deployment import registry as reg
    from mlplatform.lib.deployment.batch import score_requests
    from mlplatform.lib.deployment.prediction_log import read_predictions
    from mlplatform.lib.tracking import local_tracking

    platform, runtime = serving
    spec = platform.problem.spec
    assert platform.tick_rollout() is not None  # shadow: the challenger scores every request
    runtime.refresh()
    served = _serve_hourly(platform, runtime, DAY)
    log = read_predictions(platform.lake.root, NAME)
    assert len(log) == served > 100 and (log["status"] == "ok").all()

    meta = _materialize(platform, DAY)

    batch = pd.read_parquet(str(meta["path"]))
    flights = platform.lake.read_table(NAME, "flights", DAY)
    assert meta["dagster/row_count"] == len(batch) == len(flights)  # every scheduled flight
    assert meta["model_version"] == "1" and batch["key"].is_unique
    assert Path(str(meta["path"])) == platform.lake.table_path(NAME, TABLE, DAY)
    assert str(batch["prediction_time"].dtype) == "datetime64[us, UTC]"
    assert batch[PREDICTION].dtype == np.float64
    assert batch[feature_column("temp")].dtype == np.float64
    assert all(isinstance(v, str) for v in batch[feature_column("dest")])

    # the served requests, by their key, in the batch
    mine = batch.set_index("key").loc[log["key"]]
    assert (mine["model_version"] == log["champion_version"].to_numpy()).all()
    served_at = pd.to_datetime(log["event_time"], utc=True).dt.as_unit("us")
    assert (mine["prediction_time"].to_numpy() == served_at.to_numpy()).all()
    gap = np.abs(mine[PREDICTION].to_numpy() - log["champion_prediction"].to_numpy())
    assert gap.max() <= 1e-9, gap.max()
    features = mine[[feature_column(f.name) for f in spec.features]]
    features.columns = [f.name for f in spec.features]
    features.index = log.index
    same = compare(served_matrix(log, spec), features, log["key"], spec.features, EXACT)
    assert same.mismatch_share == 0.0, same.worst
    # hours apart, the store answered differently: the batch did not read one moment's values
    assert mine.groupby(served_at.dt.hour.to_numpy())[feature_column("temp")].nunique().min() > 1

    # the challenger through the same path: its shadow answers, to the same precision
    store, service = runtime.scorer.store, runtime.scorer.service
    challenger = reg.load_version(local_tracking(platform.lake.root), NAME, "2")
    requests = [json.loads(r) for r in log["request"]]
    again = score_requests(platform.problem, challenger, store, service, requests)
    assert (again["model_version"] == "2").all()
    assert again[PREDICTION].nunique() > 50  # a model of many leaves, not a stump
    gap = np.abs(again[PREDICTION].to_numpy() - log["challenger_prediction"].to_numpy())
    assert gap.max() <= 1e-9, gap.max()


def test_score_prints_the_parquet_and_its_rows_and_refuses_a_day_it_cannot_score(
    serving: tuple[Any, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    platform, _ = serving
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(platform.lake.root))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    rows = len(platform.lake.read_table(NAME, "flights", "2013-01-06"))

    assert main(["score", "--problem", NAME, "--day", "2013-01-06"]) == 0
    path = platform.lake.table_path(NAME, TABLE, "2013-01-06")
    assert f"{rows} requests of 2013-01-06 scored by version 1: {path}" in capsys.readouterr().out
    assert len(pd.read_parquet(path)) == rows

    assert main(["score", "--problem", NAME, "--day", "2012-12-31"]) == 2  # outside the data
    assert "has data for 2013-01-01..2013-12-31, not 2012-12-31\n" in capsys.readouterr().err
    assert main(["score", "--problem", NAME, "--day", "2013-01-09"]) == 1  # never ingested
    out = capsys.readouterr().out
    assert "FAILED" in out and "no accepted flights table for 2013-01-09" in out
    # ingested, but one of its feature tables never built: refused, not scored from older rows
    built = platform.lake.table_path(NAME, "features/origin_ops", "2013-01-05")
    built.rename(tmp_path / "aside.parquet")
    try:
        assert main(["score", "--problem", NAME, "--day", "2013-01-05"]) == 1
    finally:
        (tmp_path / "aside.parquet").rename(built)
    assert "the features of 2013-01-05 are not built (origin_ops)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["score", "--problem", NAME, "--day", "2013-02-30"])
    assert exited.value.code == 2
    assert "is not a date" in capsys.readouterr().err


def test_batch_predictions_is_daily_in_deployment_and_runs_only_when_asked() -> None:
    import dagster as dg

    from mlplatform.definitions import defs
    from mlplatform.problems import get_problem

    problem = get_problem(NAME)
    specs = {s.key: s for s in defs().resolve_all_asset_specs()}
    batch = specs[dg.AssetKey([NAME, "batch_predictions"])]
    tables = {dg.AssetKey([NAME, t.name]) for t in problem.feature_tables()}
    assert {d.asset_key for d in batch.deps} == {dg.AssetKey([NAME, "flights"]), *tables}
    assert batch.group_name == "deployment" and batch.partitions_def is not None
    assert batch.automation_condition is None  # not in every replayed evening
    assert "prediction_time (timestamp[us, UTC])" in (batch.description or "")
