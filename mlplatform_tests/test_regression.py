"""Task types from the training set to the gates: a regression target, and any metric searched.

The featured test lake (2013-01-01..05 train, 06..07 hold out) with a regression variant of
the flights spec: the target is the arrival delay itself (``arr_delay``, minutes), the metric
RMSE (minimized), the gates in minutes. Its training and holdout sets are built again by the
platform's own feature-store job for that spec; models are real LightGBM fits, and every
figure asserted is recomputed here from the predictions.
"""

import math
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mlplatform.lib.evaluation import calibration as cal
from mlplatform.lib.evaluation import gates
from mlplatform.lib.evaluation import metrics as ev
from mlplatform.lib.evaluation.comparison import compare
from mlplatform.lib.features.feature_store import feature_matrix
from mlplatform.lib.storage import DataLake
from mlplatform.lib.tracking import local_tracking
from mlplatform.lib.training import model as tr
from mlplatform.problems import Problem
from mlplatform.spec import ProblemSpec, TrainingSpec, parse_spec
from mlplatform_tests.helpers import FAST, Platform, checks, failure_messages, fresh_instance

TARGET = "arr_delay_minutes"
# fixed parameters: the same data and parameters give the same model (seeded, deterministic)
FITTED = {"learning_rate": 0.05, "num_leaves": 8, "min_child_samples": 50}
CONSTANT = {"learning_rate": 0.01, "num_leaves": 2, "min_child_samples": 100000}  # no split
SEARCH: dict[str, Any] = {"validation_days": 2, "max_rounds": 60, "early_stopping_rounds": 10}


def regression_spec(spec: ProblemSpec) -> ProblemSpec:
    """The flights spec predicting the arrival delay in minutes, judged on RMSE (minutes)."""
    data = spec.model_dump(mode="json")
    data["task"] = "regression"
    data["target"] |= {
        "name": TARGET,
        "operator": None,
        "value": None,
        "description": "Arrival delay in minutes (negative: early).",
    }
    data["metric"] = {"name": "rmse", "direction": "minimize"}
    data["gates"] |= {
        "min_metric": 80.0,  # minutes: a ceiling against broken models
        "max_regression": 1.0,  # minutes of RMSE the candidate may lose
        "slice_tolerance": 5.0,
        "bootstrap_resamples": 300,
        "latency_requests": 40,
    }
    data["training"] |= {"stopping": "early"}
    return parse_spec(data, "regression variant of flight_delay")


@pytest.fixture(scope="module")
def regression(
    tmp_path_factory: pytest.TempPathFactory, featured_base: Path, problem: Problem
) -> Iterator[Platform]:
    """The featured lake, its training and holdout sets rebuilt for the regression spec."""
    root = tmp_path_factory.mktemp("regression") / "data"
    shutil.copytree(featured_base, root)
    with fresh_instance() as instance:
        platform = Platform(replace(problem, spec=regression_spec(problem.spec)), root, instance)
        result = platform.run_feature_store()
        assert result.success, failure_messages(result)
        yield platform


def _frames(root: Path, problem: str = "flight_delay") -> tuple[pd.DataFrame, pd.DataFrame]:
    lake = DataLake(root)
    frames = []
    for table in ("training_set", "holdout_set"):
        latest = lake.read_latest(problem, table)
        assert latest is not None
        frames.append(pd.read_parquet(latest["path"]))
    return frames[0], frames[1]


def _settings(spec: ProblemSpec, **changes: object) -> TrainingSpec:
    return TrainingSpec.model_validate({**spec.training.model_dump(), **SEARCH, **changes})


def _gates(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {n: e for (a, n), e in checks(result).items() if a == "evaluation_report"}


def _report(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key and e.asset_key.path[-1] == "evaluation_report"
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_the_regression_training_set_holds_the_delay_in_minutes(regression: Platform) -> None:
    training, holdout = _frames(regression.lake.root)
    for frame in (training, holdout):
        y = frame[TARGET]
        assert y.dtype == np.float64 and y.notna().all()
        assert y.nunique() > 100 and y.min() < 0 < y.max()  # minutes early and late, not 0/1
    assert "is_delayed" not in training.columns


def test_training_searches_the_spec_metric_and_minimizes_rmse(
    regression: Platform, tmp_path: Path
) -> None:
    spec = regression.problem.spec
    training, _ = _frames(regression.lake.root)
    cfg = _settings(spec, n_trials=4)

    got = tr.train_candidate(training, spec, cfg, f"sqlite:///{tmp_path / 'o.db'}", "rmse")

    assert got.search is not None
    study = got.search.study
    assert study.direction.name == "MINIMIZE"
    values = [t.value for t in study.trials if t.state.name == "COMPLETE" and t.value is not None]
    assert values and study.best_value == min(values)
    # pruning saw the validation RMSE, every 10 rounds
    reported = [v for t in study.trials for v in t.intermediate_values.values()]
    assert reported and all(v > 0 for v in reported)
    # the final fit is scored on the spec's metric, recomputed from its predictions
    assert got.fit.metric == "rmse" and math.isnan(got.fit.auc)
    matrix = feature_matrix(training, spec)
    x, y = got.encoding.matrix(matrix), training[TARGET].to_numpy()
    _, valid = tr.time_split(training, cfg.validation_days, spec.partitioning.timezone)
    p = np.asarray(got.fit.booster.predict(x[valid]), dtype=float)
    assert got.fit.value == pytest.approx(ev.metric("rmse", y[valid], p), rel=1e-6)
    assert got.fit.scores["mae"] == pytest.approx(ev.metric("mae", y[valid], p), rel=1e-6)
    assert got.fit.value == pytest.approx(study.best_value, rel=1e-9)
    # a regression model predicts minutes, not a probability
    assert p.min() < 0 or p.max() > 1


def test_a_binary_problem_judged_on_log_loss_is_searched_minimizing(
    featured_base: Path, problem: Problem, tmp_path: Path
) -> None:
    data = problem.spec.model_dump(mode="json")
    data["metric"] = {"name": "log_loss", "direction": "minimize"}
    spec = parse_spec(data, "log-loss variant of flight_delay")
    training, _ = _frames(featured_base)
    cfg = _settings(spec, n_trials=4, stopping="early")

    got = tr.train_candidate(training, spec, cfg, f"sqlite:///{tmp_path / 'o.db'}", "ll")

    assert got.search is not None
    study = got.search.study
    assert study.direction.name == "MINIMIZE"
    values = [t.value for t in study.trials if t.state.name == "COMPLETE" and t.value is not None]
    assert study.best_value == min(values)
    matrix = feature_matrix(training, spec)
    x, y = got.encoding.matrix(matrix), training[spec.target.name].to_numpy()
    _, valid = tr.time_split(training, cfg.validation_days, spec.partitioning.timezone)
    p = np.asarray(got.fit.booster.predict(x[valid]), dtype=float)
    assert got.fit.metric == "log_loss"
    assert got.fit.value == pytest.approx(ev.metric("log_loss", y[valid], p), rel=1e-5)
    # roc_auc stays searched maximizing, as before
    auc = tr.train_candidate(
        training, problem.spec, cfg, f"sqlite:///{tmp_path / 'a.db'}", "auc"
    ).search
    assert auc is not None and auc.study.direction.name == "MAXIMIZE"


def test_gates_compare_regression_candidates_with_the_paired_bootstrap(
    regression: Platform,
) -> None:
    spec = regression.problem.spec
    first = regression.run_gated_training(params=FITTED, **FAST)
    assert first.success, failure_messages(first)
    report = _report(first)
    assert report["verdict"] == "passed"
    assert 10 < float(report["candidate_rmse"]) < spec.gates.min_metric

    constant = regression.run_gated_training(params=CONSTANT, **FAST)

    refused = _gates(constant)["no_regression"]
    assert not refused.passed
    details: dict[str, Any] = {k: v.value for k, v in refused.metadata.items()}
    assert details["method"] == "bootstrap"
    # worse with confidence (the whole interval of the drop above 0), and not within the
    # tolerance of 1 minute of RMSE
    assert 0 < float(details["regression_low"]) < float(details["regression"])
    assert float(details["regression_high"]) > spec.gates.max_regression
    assert _gates(constant)["min_metric"].passed  # under the ceiling: refused by comparison

    same = regression.run_gated_training(params=FITTED, **FAST)

    judged = _gates(same)
    assert judged["no_regression"].passed and judged["no_slice_regression"].passed
    again = _report(same)
    assert float(again["candidate_rmse"]) == pytest.approx(float(report["candidate_rmse"]))
    assert float(again["champion_rmse"]) == pytest.approx(float(report["candidate_rmse"]))
    # regression figures, no probability figures
    text = str(again["report"])
    assert "![residuals]" in text and "![predicted vs actual]" in text
    assert "![roc]" not in text and "![calibration]" not in text
    assert "| rmse |" in text and "| mae |" in text and "| r2 |" in text
    assert "log_loss" not in text and "calibration_error" not in text
    rows = again["comparison"].records
    assert rows and all(r.data["positives"] == "n/a" for r in rows)
    assert "log-odds" not in text and "units of arr_delay" in text


def test_the_model_run_records_the_spec_metric_not_auc(regression: Platform) -> None:
    result = regression.run_training(params=FITTED, **FAST)

    assert result.success, failure_messages(result)
    (event,) = result.get_asset_materialization_events()
    meta: dict[str, Any] = {k: v.value for k, v in event.materialization.metadata.items()}
    assert meta["metric"] == "rmse" and float(meta["valid_rmse"]) > 0
    assert "valid_auc" not in meta and "valid_logloss" not in meta
    run = local_tracking(regression.lake.root).client().get_run(str(meta["mlflow_run_id"]))
    assert run.data.metrics["valid_rmse"] == pytest.approx(float(meta["valid_rmse"]))
    assert "valid_mae" in run.data.metrics and "valid_auc" not in run.data.metrics


def test_slices_metrics_and_calibration_work_in_minutes(regression: Platform) -> None:
    problem = regression.problem
    spec, g = problem.spec, problem.spec.gates
    training, holdout = _frames(regression.lake.root)
    models = cal.Models(training, holdout, spec, params={"num_leaves": 8}, rounds=40)
    y, a, b = holdout[TARGET].to_numpy(), models.predict(1), models.predict(2)

    summary = ev.summary(y, a, spec.task)
    assert set(summary) == {"rmse", "mae", "r2", "mean_prediction", "mean_target", "rows"}
    assert summary["rmse"] == pytest.approx(float(np.sqrt(np.mean((y - a) ** 2))))
    assert summary["mean_target"] == pytest.approx(float(y.mean()))
    # slices judged on their rows alone; positives do not apply
    columns = problem.slices(holdout)
    table = ev.slice_metrics(
        columns, y, {"candidate": a}, "rmse", g.min_slice_rows, 30, "regression"
    )
    assert all(r["positives"] is None for r in table)
    assert all(r["evaluated"] == (r["rows"] >= g.min_slice_rows) for r in table)
    # an injected worsening of 3 minutes of RMSE is reached and refused by the bootstrap
    worse, reached = cal.degrade(y, b, np.ones(len(y), bool), 3.0, seed=5, metric="rmse")
    assert reached == pytest.approx(3.0, abs=0.01)
    assert ev.metric("rmse", y, worse) - ev.metric("rmse", y, b) == pytest.approx(reached)
    paired = compare("rmse", y, worse, b, 0.95, resamples=300, seed=0)
    assert paired.method == "bootstrap" and paired.low > 0  # the candidate's RMSE is higher
    outcome = gates.no_regression(paired.candidate, paired, spec.metric, g)
    assert not outcome.passed
    # one slice made worse by three times its tolerance is refused by the slice gate, though
    # no resample (300) reaches the tolerance and Holm asks for alpha / (judged slices)
    mask = (columns["hour_band"].astype(str) == "evening").to_numpy()
    far, _ = cal.degrade(y, b, mask, 3 * g.slice_tolerance, seed=5, metric="rmse")
    judged = cal.judge(problem, holdout, y, far, b, seed=0)
    (row,) = [r for r in judged.slices if r["slice"] == "hour_band" and r["value"] == "evening"]
    assert row["decision"] == "REFUSED" and row["low"] > g.slice_tolerance
    assert judged.refused["no_slice_regression"]

    result = cal.calibrate(problem, training, holdout, pairs=2, seed=3)

    assert result.metric == "rmse" and result.pairs == 2
    assert [r["injected_drop"] for r in result.power if r["kind"] == "overall"] == [
        0.4,
        0.8,
        1.2,
        2.0,
    ]
    for r in result.power:
        assert r["reached_drop"] == pytest.approx(r["injected_drop"], abs=0.01)
    assert set(result.aa) == {"no_regression", "no_slice_regression", "any"}
    assert (
        "rows are NOT JUDGED" in cal.rules(problem)[1] and "positives" not in cal.rules(problem)[1]
    )


def test_the_dask_fit_of_a_regression_cuts_at_its_lowest_rmse(regression: Platform) -> None:
    from mlplatform.lib.training.distributed import best_round, fit_dask
    from mlplatform.resources import DaskResource

    assert best_round([9.0, 8.0, 7.0, 7.5, 6.9, 7.2, 7.3], patience=2, maximize=False) == 5
    spec = regression.problem.spec
    training, _ = _frames(regression.lake.root)
    cfg = _settings(spec, max_rounds=80, early_stopping_rounds=15)
    matrix = feature_matrix(training, spec)
    encoding = tr.fit_encoding(matrix, spec)
    x, y = encoding.matrix(matrix), training[TARGET].to_numpy()
    train, valid = tr.time_split(training, cfg.validation_days, spec.partitioning.timezone)
    data = tr.datasets(x, y, train, valid, encoding, "rmse")
    params = {**tr.base_params(cfg.seed, tr.monotone_constraints(spec), "rmse"), **FITTED}

    single = tr.fit(data, params, cfg)
    with DaskResource(scheduler_address="local", local_workers=2).client() as client:
        assert client is not None
        distributed = fit_dask(client, data, params, cfg)

    assert distributed.metric == "rmse" and abs(distributed.value - single.value) < 1.0
    p = np.asarray(distributed.booster.predict(x[valid]), dtype=float)
    assert distributed.value == pytest.approx(ev.metric("rmse", y[valid], p))
    assert distributed.scores["mae"] == pytest.approx(ev.metric("mae", y[valid], p))
