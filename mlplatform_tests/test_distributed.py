"""Distributed training: lightgbm.dask on a LocalCluster against LightGBM on one machine."""

import numpy as np
import pandas as pd
import pytest

from mlplatform.lib.training import model as tr
from mlplatform.lib.training.distributed import best_round, fit_dask
from mlplatform.problems import Problem
from mlplatform.resources import DaskResource
from mlplatform_tests.helpers import Platform

PARAMS = {"learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 20}


def test_best_round_follows_lightgbm_early_stopping() -> None:
    assert best_round([0.5, 0.6, 0.7, 0.69, 0.68, 0.71, 0.6, 0.6], patience=2) == 3
    assert best_round([0.5, 0.6, 0.7, 0.69, 0.68, 0.71], patience=3) == 6
    assert best_round([0.7, 0.7, 0.7], patience=5) == 1  # ties are no improvement


@pytest.mark.slow
def test_the_dask_fit_matches_the_single_machine_fit_on_the_same_data(
    featured: Platform, problem: Problem
) -> None:
    latest = featured.lake.read_latest("flight_delay", "training_set")
    assert latest is not None
    training = pd.read_parquet(latest["path"])
    spec = problem.spec
    cfg = spec.training.model_copy(
        update={
            "validation_days": 2,
            "max_rounds": 150,
            "early_stopping_rounds": 20,
            "stopping": "early",  # the rule fit_dask mirrors
        }
    )
    from mlplatform.lib.features.feature_store import feature_matrix

    matrix = feature_matrix(training, spec)
    encoding = tr.fit_encoding(matrix, spec)
    x, y = encoding.matrix(matrix), training[spec.target.name].to_numpy()
    train, valid = tr.time_split(training, cfg.validation_days, spec.partitioning.timezone)
    data = tr.datasets(x, y, train, valid, encoding)
    params = {**tr.base_params(cfg.seed, tr.monotone_constraints(spec)), **PARAMS}

    single = tr.fit(data, params, cfg)
    with DaskResource(scheduler_address="local", local_workers=2).client() as client:
        assert client is not None and len(client.scheduler_info()["workers"]) == 2
        distributed = fit_dask(client, data, params, cfg)

    assert abs(distributed.auc - single.auc) < 0.02, (distributed.auc, single.auc)
    assert distributed.booster.best_iteration == distributed.booster.num_trees()
    # the reported AUC is the truncated model's own on the validation split
    from sklearn.metrics import roc_auc_score

    p = distributed.booster.predict(x[valid])
    assert np.isclose(roc_auc_score(y[valid], p), distributed.auc)
