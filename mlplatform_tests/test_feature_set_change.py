"""A champion trained before the spec's feature list changed keeps serving and is judged.

Found by a new user: after adding two features to a problem's spec, every request to the
running service was a 500 and every retrain crashed in its evaluation, because each
model's inputs were encoded by position in the *current* spec's order. A model encodes its
inputs by name now (``Encoding.row`` / ``Encoding.matrix``): a feature the spec gained since
it was trained is not its input, a feature the spec dropped reaches it as missing.

Here the champion is trained on flight_delay without ``days_to_holiday`` (the spec has
since gained it) and with ``pressure`` (the spec has since dropped it); it is registered in
a real MLflow store and served over HTTP on 127.0.0.1 under the changed spec.
"""

import json
import shutil
from dataclasses import replace
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from mlplatform.problems import Problem
from mlplatform_tests.helpers import Platform, fresh_instance, register_booster

NAME = "flight_delay"
TRAIN_DAYS = [date(2013, 1, d) for d in range(1, 6)]
ADDED, DROPPED = "days_to_holiday", "pressure"
PARAMS = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_data_in_leaf": 50,
    "seed": 7,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
    "verbose": -1,
}


def _without(problem: Problem, feature: str) -> Problem:
    from mlplatform.spec import parse_spec

    data = problem.spec.model_dump(by_alias=True)
    data["features"] = [f for f in data["features"] if f["name"] != feature]
    return replace(problem, spec=parse_spec(data, f"spec without {feature}"))


def test_a_champion_trained_on_another_feature_list_keeps_serving(
    tmp_path: Path, featured_base: Path, problem: Problem
) -> None:
    import lightgbm as lgb

    from mlplatform.lib.deployment import registry as reg
    from mlplatform.lib.deployment.scoring import OnlineScorer
    from mlplatform.lib.features.build import label
    from mlplatform.lib.monitoring.skew import offline_matrix
    from mlplatform.lib.tracking import local_tracking
    from mlplatform.lib.training.model import fit_encoding
    from mlplatform.serving.client import as_requests
    from mlplatform.serving.server import build_runtime, serve_in_background

    root = tmp_path / "data"
    shutil.copytree(featured_base, root)
    then, now = _without(problem, ADDED), _without(problem, DROPPED)
    with fresh_instance() as instance:
        platform = Platform(problem, root, instance)
        flights = platform.lake.read_days(NAME, "flights", TRAIN_DAYS)
        flights = flights[label(flights, problem.spec.target).notna()].reset_index(drop=True)
        store = platform.feast.store(problem)
        service = platform.feast.service(problem, store)
        requests = pd.DataFrame.from_records(as_requests(problem, flights))
        matrix = offline_matrix(problem, store, service, requests)
        encoding = fit_encoding(matrix, then.spec)
        x = encoding.matrix(matrix)
        booster = lgb.train(
            PARAMS,
            lgb.Dataset(x, label(flights, problem.spec.target).to_numpy(dtype=float)),
            num_boost_round=30,
        )
        version = register_booster(root, NAME, booster, encoding, x, PARAMS)
        tracking = local_tracking(root)
        reg.set_alias(tracking, NAME, reg.CHAMPION, version)
        champion = reg.load_version(tracking, NAME, version)
        assert ADDED not in champion.encoding.features
        assert DROPPED in champion.encoding.features

        # the evaluation's path (latency timing, behavioural cases) under the changed spec
        scorer = OnlineScorer(now, store, service)
        request = as_requests(now, flights.iloc[:1])[0]
        values = scorer.features(request).values
        assert ADDED in values and DROPPED not in values
        row = champion.encoding.row(values)
        assert np.isnan(row[champion.encoding.features.index(DROPPED)])
        by_matrix = champion.predict_matrix(champion.encoding.matrix(pd.DataFrame([values])))
        assert scorer.score(champion, request) == float(by_matrix[0])

        # the service under the changed spec answers with the champion's own inputs
        runtime = build_runtime(now, root, tracking, refresh_seconds=0.2, flush_seconds=0.2)
        running = serve_in_background(runtime)
        try:
            sent = as_requests(now, flights.iloc[:20])
            with httpx.Client(base_url=running.url, timeout=30) as client:
                response = client.post("/predict", json={"instances": sent})
            assert response.status_code == 200, response.text
            answers = response.json()["predictions"]
            runtime.predictions.flush()
        finally:
            running.stop()
    assert [a["version"] for a in answers] == [version] * len(sent)
    from mlplatform.lib.deployment.prediction_log import read_predictions

    log = read_predictions(root, NAME).set_index("request_id")
    names = [f.name for f in now.spec.features]  # the log keeps the spec's order
    logged_values = [
        dict(zip(names, json.loads(str(log.loc[a["request_id"], "features"])), strict=True))
        for a in answers
    ]
    expected = champion.predict_matrix(champion.encoding.matrix(pd.DataFrame(logged_values)))
    np.testing.assert_allclose([a["prediction"] for a in answers], expected, rtol=1e-12)


def test_status_calls_a_training_set_without_a_new_spec_feature_stale(
    featured_base: Path, problem: Problem
) -> None:
    # the same user's training set said stale: false although training could not read it
    from mlplatform.lib.storage import DataLake
    from mlplatform.spec import parse_spec
    from mlplatform.status import missing_features

    latest = DataLake(featured_base).read_latest(NAME, "training_set")
    assert latest is not None
    data = problem.spec.model_dump(by_alias=True)
    data["features"].append(
        {"name": "dep_minute", "source": "flights", "kind": "numeric", "description": "new"}
    )
    grown = replace(problem, spec=parse_spec(data, "spec with a new feature"))

    assert missing_features(problem, latest) == []
    assert missing_features(grown, latest) == ["dep_minute"]
