"""Explanations: each feature's contribution to a model's raw score, and global importance.

LightGBM's built-in SHAP values (``Booster.predict(pred_contrib=True)``, TreeSHAP of
Lundberg et al. 2020, "From local explanations to global understanding with explainable
AI for trees", Nature Machine Intelligence 2:56-67): for every row, one value per input in
raw-score units (log-odds for a binary model) plus the expected raw score ``bias``; the
values and the bias add up to the row's raw score exactly (a regression model's raw score
is its prediction, in the target's units). Nothing is sampled or fitted.

The evaluation page ranks features by their mean absolute contribution on the holdout;
the serving path explains single requests with the same values
(``LoadedModel.contributions_row``).
"""

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mlplatform.lib.deployment.registry import LoadedModel

BIAS = "bias"  # the column of the expected raw score (SHAP's base value)


def contributions(model: "LoadedModel", frame: pd.DataFrame) -> pd.DataFrame:
    """Each feature's contribution to each row's raw score, and the expected raw score.

    Args:
        model: a loaded registered version (its booster and its encoding).
        frame: raw feature values, one row per example, a column per feature of
            ``model.encoding.features`` (extra columns are ignored), e.g.
            ``lib.features.feature_store.feature_matrix``'s output; categorical values as strings.

    Returns:
        float64 DataFrame on ``frame``'s index, columns ``model.encoding.features`` (in that
        order) then ``bias``: per row, the columns sum to the model's raw score
        (``booster.predict(x, raw_score=True)``, log-odds for a binary model), plus, for a
        model boosting from a feature (``training.boost_from``), what it starts from, in
        that feature's column.

    Raises:
        KeyError: a feature of the encoding is missing from ``frame``.
    """
    features = model.encoding.features
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise KeyError(f"contributions: no column for feature(s) {missing}")
    x = model.encoding.matrix(frame[features])
    values = np.asarray(model.booster.predict(x, pred_contrib=True), dtype=np.float64)
    start = model.encoding.offset(x)
    if start is not None and model.encoding.boost_from is not None:
        values[:, features.index(model.encoding.boost_from)] += start
    return pd.DataFrame(values, index=frame.index, columns=[*features, BIAS])


def global_importance(contribution: pd.DataFrame) -> pd.DataFrame:
    """Features ranked by their mean absolute contribution (``contributions``'s output).

    Returns:
        One row per feature (``bias`` left out), largest first: ``feature``,
        ``mean_abs_contribution`` (raw-score units: log-odds for a binary model, the
        target's units for regression), ``mean_contribution`` (its
        signed mean: the feature's average push up or down) and ``share`` (of the sum of
        the mean absolute contributions over the features; 0 when that sum is 0).
    """
    values = contribution.drop(columns=[BIAS], errors="ignore")
    mean_abs = values.abs().mean()
    total = float(mean_abs.sum())
    table = pd.DataFrame(
        {
            "feature": values.columns.astype(str),
            "mean_abs_contribution": mean_abs.to_numpy(dtype=np.float64),
            "mean_contribution": values.mean().to_numpy(dtype=np.float64),
            "share": (mean_abs / total).to_numpy(dtype=np.float64) if total > 0 else 0.0,
        }
    )
    return table.sort_values(
        ["mean_abs_contribution", "feature"], ascending=[False, True], ignore_index=True
    )
