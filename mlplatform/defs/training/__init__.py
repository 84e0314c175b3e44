"""The training stage: the training set and the model candidate."""

import dagster as dg

from mlplatform.defs.training.assets import build_training_set_asset
from mlplatform.defs.training.model import build_model_asset
from mlplatform.problems import Problem


def build_defs(problem: Problem) -> dg.Definitions:
    """The training stage of ``problem``."""
    return dg.Definitions(assets=[build_training_set_asset(problem), build_model_asset(problem)])
