"""Plots drawn by Optuna and LightGBM themselves, as PNG, without side effects on a process."""

import matplotlib
import numpy as np
import optuna
from matplotlib import pyplot as plt

from mlplatform.lib import plots

PNG = b"\x89PNG"


def _study(trials: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("learning_rate", 0.01, 0.3)
        leaves = trial.suggest_int("num_leaves", 4, 64)
        if trial.number == 2:
            raise optuna.TrialPruned()
        return x + leaves / 1000

    study.optimize(objective, n_trials=trials)
    return study


def test_optuna_plots_leave_the_process_style_and_pyplot_as_they_were() -> None:
    study = _study(6)
    before = dict(matplotlib.rcParams)

    history = plots.png(plots.optimization_history(study, "auc"))
    searched = plots.param_importances(study, "auc")

    assert history.startswith(PNG)
    assert searched is not None and plots.png(searched).startswith(PNG)
    assert dict(matplotlib.rcParams) == before  # Optuna's ggplot style did not leak
    assert plt.get_fignums() == []  # no figure left open in pyplot


def test_no_parameter_importance_from_a_single_trial() -> None:
    assert plots.param_importances(_study(1), "auc") is None


def test_feature_importance_of_a_booster_that_never_split_is_still_drawn() -> None:
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    x, y = rng.random((200, 3)), rng.integers(0, 2, 200)
    split = lgb.train({"verbose": -1, "num_leaves": 4}, lgb.Dataset(x, y), 5)
    stump = lgb.train({"verbose": -1, "min_data_in_leaf": 1000}, lgb.Dataset(x, y), 2)

    assert plots.png(plots.importance(split)).startswith(PNG)
    assert plots.png(plots.importance(stump)).startswith(PNG)
