"""A regression problem after the registry: served values, explanations, online RMSE, rollout.

The flight_delay spec turned into a regression (``task: regression``, the target is
``arr_delay`` itself, metric RMSE minimized) over the featured test lake. Two LightGBM
regressions are trained here directly (``lightgbm.train``, objective ``regression``) on the
training path's point-in-time features of 2013-01-01..05: a model of the delay, and the same
model fitted to the delay plus 30 minutes (a biased challenger). Both are registered in a
real MLflow store, cleared, and served over HTTP on 127.0.0.1; requests are real flights of
the two following days, whose outcomes are known.
"""

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from mlplatform.problems import Problem
from mlplatform_tests.helpers import Platform, failure_messages, fresh_instance, register_booster

NAME = "flight_delay"
TARGET = "arr_delay_minutes"
TRAIN_DAYS = [date(2013, 1, d) for d in range(1, 6)]
SERVE_DAYS = [date(2013, 1, 6), date(2013, 1, 7)]
BIAS_MINUTES = 30.0
ROLLOUT = {
    "shadow_requests": 30,
    "canary_share": 0.5,
    "canary_requests": 20,
    "min_outcomes": 30,
    "max_metric_drop": 1.0,  # minutes of RMSE
}
PARAMS = {
    "objective": "regression",
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_data_in_leaf": 50,
    "seed": 7,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
    "verbose": -1,
}


def regression_problem(problem: Problem) -> Problem:
    """flight_delay as a regression of the arrival delay, through the spec's own validation."""
    from mlplatform.spec import parse_spec

    data = problem.spec.model_dump(by_alias=True)
    data["task"] = "regression"
    data["target"] |= {"name": TARGET, "operator": None, "value": None}
    data["metric"] = {"name": "rmse", "direction": "minimize"}
    data["rollout"] |= ROLLOUT
    return replace(problem, spec=parse_spec(data, "test regression spec"))


@dataclass
class Served:
    platform: Platform
    service: Any  # serving.server.Background
    model: Any  # the delay model (lightgbm.Booster)
    biased: Any  # the same fitted to the delay + BIAS_MINUTES
    versions: dict[str, str]  # model, biased, same (a second registration of model)


def _register(platform: Platform, booster: Any, encoding: Any, x: np.ndarray) -> str:
    """One registered version of ``booster``, cleared as if it had passed the gates."""
    reference = _training_set_version(platform.lake.root)
    return register_booster(platform.lake.root, NAME, booster, encoding, x, PARAMS, reference)


def _training_set_version(root: Path) -> str:
    """The featured lake's training set (the drift report's reference: its feature rows)."""
    (path,) = sorted((root / "warehouse" / NAME / "training_set").glob("*.parquet"))
    return path.stem


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, featured_base: Path, problem: Problem
) -> Iterator[Served]:
    import lightgbm as lgb

    from mlplatform.lib.deployment import registry as reg
    from mlplatform.lib.features.build import label
    from mlplatform.lib.monitoring.skew import offline_matrix
    from mlplatform.lib.tracking import local_tracking
    from mlplatform.lib.training.model import fit_encoding
    from mlplatform.serving.client import as_requests
    from mlplatform.serving.server import build_runtime, serve_in_background

    root = tmp_path_factory.mktemp("regression") / "data"
    shutil.copytree(featured_base, root)
    with fresh_instance() as instance:
        platform = Platform(regression_problem(problem), root, instance)
        spec = platform.problem.spec
        flights = platform.lake.read_days(NAME, "flights", TRAIN_DAYS)
        flights = flights[label(flights, spec.target).notna()].reset_index(drop=True)
        fstore = platform.feast.store(platform.problem)
        requests = pd.DataFrame.from_records(as_requests(platform.problem, flights))
        matrix = offline_matrix(
            platform.problem, fstore, platform.feast.service(platform.problem, fstore), requests
        )
        y = label(flights, spec.target).to_numpy(dtype=float)
        encoding = fit_encoding(matrix, spec)
        x = encoding.matrix(matrix)

        def fit(target: np.ndarray) -> lgb.Booster:
            data = lgb.Dataset(x, target, categorical_feature=encoding.categorical_indices)
            return lgb.train(PARAMS, data, num_boost_round=60)

        model, biased = fit(y), fit(y + BIAS_MINUTES)
        versions = {
            "model": _register(platform, model, encoding, x),
            "biased": _register(platform, biased, encoding, x),
            "same": _register(platform, model, encoding, x),
        }
        tracking = local_tracking(root)
        reg.set_alias(tracking, NAME, reg.CHAMPION, versions["model"])
        runtime = build_runtime(
            platform.problem, root, tracking, refresh_seconds=0.2, flush_seconds=0.2
        )
        service = serve_in_background(runtime)
        try:
            yield Served(platform, service, model, biased, versions)
        finally:
            service.stop()


def _requests(served: Served, n: int, skip: int = 0) -> list[dict[str, Any]]:
    """Real flights of the served days whose arrival delay is known, as requests."""
    from mlplatform.serving.client import as_requests

    flights = served.platform.lake.read_days(NAME, "flights", SERVE_DAYS)
    known = flights[flights["arr_delay"].notna()]
    return as_requests(served.platform.problem, known.iloc[skip : skip + n])


def _send(served: Served, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with httpx.Client(base_url=served.service.url, timeout=30) as client:
        response = client.post("/predict", json={"instances": requests})
    assert response.status_code == 200, response.text
    served.service.runtime.predictions.flush()
    return response.json()["predictions"]


def _logged(served: Served) -> pd.DataFrame:
    from mlplatform.lib.deployment.prediction_log import read_predictions

    served.service.runtime.predictions.flush()
    return read_predictions(served.platform.lake.root, NAME)


def _observed(served: Served, keys: pd.Series) -> np.ndarray:
    """The arrival delay of each request key, read from the lake (minutes)."""
    from mlplatform.lib.deployment.online import outcome_keys

    flights = served.platform.lake.read_days(NAME, "flights", SERVE_DAYS)
    by_key = pd.Series(
        flights["arr_delay"].to_numpy(dtype=float),
        index=outcome_keys(flights, served.platform.problem.spec).to_numpy(),
    )
    return by_key.reindex(keys).to_numpy()


def test_a_regression_answer_is_the_models_value_with_contributions_summing_to_it(
    served: Served,
) -> None:
    request = _requests(served, 1, skip=40)[0]
    with httpx.Client(base_url=served.service.url, timeout=30) as client:
        response = client.post("/predict", json={**request, "explain": True})
        schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert response.status_code == 200, response.text
    answer = response.json()
    value = answer["prediction"]
    assert set(answer) >= {"prediction", "contributions", "base_value"}
    assert "probability" not in answer

    # the value the booster gives for the inputs the service read, not clipped to [0, 1]
    row = _logged(served).set_index("request_id").loc[answer["request_id"]]
    vector = json.loads(row["features"])
    encoding = served.service.runtime.snapshot.champion.encoding
    expected = float(served.model.predict(np.asarray([encoding.row(vector)]))[0])
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert not 0.0 <= value <= 1.0  # minutes of delay: this flight's lies outside [0, 1]
    # explained in the value's own units: base + contributions = the prediction (no logit)
    total = answer["base_value"] + sum(answer["contributions"].values())
    assert total == pytest.approx(value, abs=1e-6)
    assert set(answer["contributions"]) == set(encoding.features)

    # the service documents what the value is
    described = schema["Prediction"]["properties"]["prediction"]["description"]
    assert f"Predicted value of {TARGET}" in described and "Probability" not in described
    base = schema["Prediction"]["properties"]["base_value"]["description"]
    assert "log-odds" not in base


def test_online_metrics_of_outcomes_are_sklearns_rmse_mae_and_r2(served: Served) -> None:
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    from mlplatform.lib.monitoring.outcomes import performance, with_outcomes

    answers = _send(served, _requests(served, 150, skip=100))
    assert max(abs(a["prediction"]) for a in answers) > 1.0
    log = _logged(served)
    mine = log[log["request_id"].isin({a["request_id"] for a in answers})]
    flights = served.platform.lake.read_days(NAME, "flights", SERVE_DAYS)
    joined = with_outcomes(mine, flights, served.platform.problem.spec)
    (row,) = performance(joined, mine, "rmse")

    y = _observed(served, mine["key"])
    p = mine["prediction"].to_numpy(dtype=float)
    assert row["labelled"] == len(mine) == 150
    assert row["rmse"] == pytest.approx(root_mean_squared_error(y, p))
    assert row["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert row["r2"] == pytest.approx(r2_score(y, p))
    assert row["mean_observed"] == pytest.approx(y.mean())
    assert row["mean_prediction"] == pytest.approx(p.mean())
    assert "calibration_error" not in row and "observed_rate" not in row


def _shadow_round(served: Served, challenger: str, skip: int) -> tuple[str, str, Any]:
    """Challenger alias on ``challenger``, shadow started by the sensor, 60 requests, a tick.

    Returns the sensor's transition after the requests, and the figures it judged.
    """
    from mlplatform.lib.deployment import registry as reg
    from mlplatform.lib.deployment.log import DeploymentLog
    from mlplatform.lib.deployment.online import challenger_figures
    from mlplatform.lib.deployment.rollout import since
    from mlplatform.lib.tracking import local_tracking

    platform = served.platform
    reg.set_alias(local_tracking(platform.lake.root), NAME, reg.CHALLENGER, challenger)
    assert platform.tick_rollout() == ("shadow", f"version {challenger} passed the gates")
    served.service.runtime.refresh()
    assert served.service.runtime.snapshot.challenger is not None
    _send(served, _requests(served, 60, skip=skip))
    log = _logged(served)
    current = DeploymentLog(platform.lake.root, NAME).current()
    figures = challenger_figures(
        log, platform.lake, NAME, platform.problem.spec, challenger, since(current)
    )
    transition = platform.tick_rollout()
    assert transition is not None
    return *transition, figures


def test_the_rollout_refuses_a_worse_online_rmse_and_accepts_an_equal_one(
    served: Served, record_property: Any
) -> None:
    from sklearn.metrics import root_mean_squared_error

    from mlplatform.lib.deployment.rollout import decide

    spec = served.platform.problem.spec
    stage, reason, figures = _shadow_round(served, served.versions["biased"], skip=300)
    log = _logged(served)
    scored = log[log["challenger_version"] == served.versions["biased"]]
    y = _observed(served, scored["key"])
    assert figures.labelled == len(scored) == 60
    assert figures.champion_metric == pytest.approx(
        root_mean_squared_error(y, scored["champion_prediction"])
    )
    assert figures.challenger_metric == pytest.approx(
        root_mean_squared_error(y, scored["challenger_prediction"])
    )
    assert figures.challenger_metric - figures.champion_metric > spec.rollout.max_metric_drop
    assert stage == "rolled_back"
    assert "online rmse" in reason and "rise" in reason, reason
    record_property("refused", reason)  # in a JUnit report (--junitxml), with the figures

    stage, reason, figures = _shadow_round(served, served.versions["same"], skip=400)
    assert figures.labelled == 60
    assert figures.challenger_metric == pytest.approx(figures.champion_metric)
    assert stage == "canary", reason
    record_property("accepted", reason)
    # the rule itself, on these figures: a rise within the allowance waits, beyond it refuses
    worse = replace(figures, challenger_metric=figures.champion_metric + 1.5)
    within = replace(figures, challenger_metric=figures.champion_metric + 0.5)
    assert decide("canary", worse, spec.rollout, "rmse", "minimize")[0] == "rollback"  # type: ignore[index]
    assert decide("canary", within, spec.rollout, "rmse", "minimize") is None


def test_a_monitored_day_reports_online_rmse_and_mean_delay_per_the_spec(served: Served) -> None:
    from evidently.ui.workspace import Workspace
    from sklearn.metrics import root_mean_squared_error

    from mlplatform.lib.monitoring.dashboard import snapshot_id

    platform = served.platform
    day = SERVE_DAYS[0]
    _send(served, _requests(served, 100, skip=500))  # the day's own requests, whatever ran before
    result = platform.run_monitoring(day.isoformat())
    assert result.success, failure_messages(result)
    meta: dict[str, dict[str, Any]] = {
        e.asset_key.path[-1]: {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.asset_key
    }
    joined = platform.lake.read_days(NAME, "monitoring/online_outcomes", [day])
    labelled = joined[joined["label"].notna()]
    main = labelled[labelled["served_version"] == meta["online_performance"]["main_version"]]
    rmse = root_mean_squared_error(main["label"], main["prediction"])
    performance = meta["online_performance"]
    assert performance["online_rmse"] == pytest.approx(rmse)
    assert performance["mean_observed"] == pytest.approx(main["label"].mean())
    assert "calibration_error" not in performance
    assert np.isfinite(meta["drift_report"]["prediction_drift_score"])

    workspace = Workspace(str(platform.lake.root / "evidently"))
    (project,) = workspace.search_project(NAME)
    titles = [p.title for p in workspace.get_dashboard(project.id).panels]
    assert f"Mean {TARGET}: observed and predicted" in titles
    assert not [t for t in titles if "late" in t.lower()]
    snapshot: Any = workspace.get_run(project.id, snapshot_id(NAME, "performance", day))
    (online,) = [
        float(r.value)
        for r in snapshot.metric_results.values()
        if r.metric_value_location.metric.params["type"] == "evidently:metric_v2:OnlineMetric"
    ]
    assert online == pytest.approx(
        root_mean_squared_error(labelled["label"], labelled["prediction"])
    )


def test_a_regression_performance_report_is_evidentlys_regression_preset(
    served: Served, tmp_path: Path
) -> None:
    from mlplatform.lib.monitoring.drift import performance_report

    _send(served, _requests(served, 100, skip=600))
    log = _logged(served)
    ok = log[log["status"] == "ok"]
    frame = pd.DataFrame(
        {"target": _observed(served, ok["key"]), "prediction": ok["prediction"].to_numpy()}
    )
    html = tmp_path / "regression.html"
    champion = frame.assign(prediction=frame["prediction"] + BIAS_MINUTES)
    performance_report(frame, champion, html, regression=True)
    page = html.read_text(encoding="utf-8")
    # the regression preset's own panels (a classification report has none of them)
    assert "R2 Score (current)" in page and "R2 Score (reference)" in page
    assert "Predicted - Actual" in page
