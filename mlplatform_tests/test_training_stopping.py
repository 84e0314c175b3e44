"""The stopping rule of the final fit: early stopping, or a fixed number of rounds refit."""

from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest

from mlplatform.lib.features.feature_store import feature_matrix
from mlplatform.lib.storage import DataLake
from mlplatform.lib.training import model as tr
from mlplatform.problems import get_problem
from mlplatform.spec import TrainingSpec

PARAMS = {"learning_rate": 0.1, "num_leaves": 15}


def _training_set(root: Path) -> pd.DataFrame:
    latest = DataLake(root).read_latest("flight_delay", "training_set")
    assert latest is not None
    return pd.read_parquet(latest["path"])


def _settings(**changes: object) -> TrainingSpec:
    spec = get_problem("flight_delay").spec
    base = {**spec.training.model_dump(), "validation_days": 2, "max_rounds": 80}
    return TrainingSpec.model_validate({**base, "early_stopping_rounds": 10, **changes})


def test_refit_fixed_boosts_its_rounds_on_every_day_and_reports_the_held_out_score(
    featured_base: Path, tmp_path: Path
) -> None:
    spec = get_problem("flight_delay").spec
    training = _training_set(featured_base)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    cfg = _settings(stopping="refit_fixed", refit_rounds=25)

    got = tr.train_candidate(training, spec, cfg, storage, "s", fixed_params=PARAMS)

    assert got.fit.booster.num_trees() == 25
    assert got.fit.booster.best_iteration == 25
    # the reported score is that of the same 25 rounds boosted without the validation days
    matrix = feature_matrix(training, spec)
    x, y = got.encoding.matrix(matrix), training[spec.target.name].to_numpy()
    train, valid = tr.time_split(training, 2, spec.partitioning.timezone)
    data = tr.datasets(x, y, train, valid, got.encoding)
    params = {**tr.base_params(cfg.seed, tr.monotone_constraints(spec)), **PARAMS}
    held = tr.fit(data, params, cfg)
    assert held.booster.num_trees() == 25
    assert got.fit.auc == pytest.approx(held.auc)
    # ...while the model itself learnt from the validation days too
    refit = np.asarray(got.fit.booster.predict(x[valid]), dtype=float)
    assert not np.allclose(refit, np.asarray(held.booster.predict(x[valid]), dtype=float))


def test_early_stopping_keeps_its_best_round_and_stays_available(
    featured_base: Path, tmp_path: Path
) -> None:
    spec = get_problem("flight_delay").spec
    cfg = _settings(stopping="early")
    got = tr.train_candidate(
        _training_set(featured_base),
        spec,
        cfg,
        f"sqlite:///{tmp_path / 'o.db'}",
        "s",
        fixed_params=PARAMS,
    )

    assert TrainingSpec().stopping == "early"
    assert 1 <= got.fit.booster.best_iteration <= 80
    assert got.fit.rounds <= got.fit.booster.best_iteration + 10


def test_an_unknown_stopping_rule_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="stopping"):
        _settings(stopping="sometimes")


def test_max_rounds_caps_the_refit_rounds() -> None:
    assert tr.fixed_rounds(_settings(stopping="refit_fixed", refit_rounds=300)) == 80
    assert tr.fixed_rounds(_settings(stopping="refit_fixed", refit_rounds=30)) == 30


@pytest.mark.slow
def test_refit_fixed_on_a_dask_cluster_refits_every_day_there(
    featured_base: Path, tmp_path: Path
) -> None:
    from mlplatform.lib.training.distributed import fit_dask
    from mlplatform.resources import DaskResource

    spec = get_problem("flight_delay").spec
    training = _training_set(featured_base)
    cfg = _settings(stopping="refit_fixed", refit_rounds=25)
    with DaskResource(scheduler_address="local", local_workers=2).client() as client:
        assert client is not None
        got = tr.train_candidate(
            training,
            spec,
            cfg,
            f"sqlite:///{tmp_path / 'o.db'}",
            "s",
            fixed_params=PARAMS,
            final_fit=lambda data, params, c: fit_dask(client, data, params, c),
        )

    # cut at its best round on rows it has seen: the last one or near it
    assert 20 <= got.fit.booster.num_trees() <= 25
    assert 0.5 < got.fit.auc < 1.0


def test_refit_fixed_after_a_search_reports_its_best_trials_scores_without_refitting_it(
    featured_base: Path, tmp_path: Path
) -> None:
    spec = get_problem("flight_delay").spec
    training = _training_set(featured_base)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    cfg = _settings(stopping="refit_fixed", refit_rounds=25, n_trials=3, pruner="none")

    got = tr.train_candidate(training, spec, cfg, storage, "s")

    assert got.search is not None
    recorded = tr.held_scores(got.search, cfg)
    assert recorded is not None and recorded == got.fit.scores
    # the scores the study recorded are those of fitting the chosen parameters again
    matrix = feature_matrix(training, spec)
    x, y = got.encoding.matrix(matrix), training[spec.target.name].to_numpy()
    train, valid = tr.time_split(training, 2, spec.partitioning.timezone)
    data = tr.datasets(x, y, train, valid, got.encoding)
    full = {**tr.base_params(cfg.seed, tr.monotone_constraints(spec)), **got.params}
    held = tr.fit(data, full, cfg)
    assert held.scores == got.fit.scores
    # and the model is the refit of those parameters on every day, as with fixed ones
    fixed = tr.train_candidate(
        training, spec, cfg, f"sqlite:///{tmp_path / 'fixed.db'}", "f", fixed_params=got.params
    )
    assert fixed.fit.booster.model_to_string() == got.fit.booster.model_to_string()
    assert fixed.fit.scores == got.fit.scores
