"""The evaluation stage: the evaluation report (its checks are the gates) and the promotion."""

import dagster as dg

from mlplatform.defs.evaluation.assets import build_evaluation_asset
from mlplatform.defs.evaluation.promotion import build_promotion_asset
from mlplatform.problems import Problem


def build_defs(problem: Problem) -> dg.Definitions:
    """The evaluation stage of ``problem``."""
    return dg.Definitions(assets=[build_evaluation_asset(problem), build_promotion_asset(problem)])
