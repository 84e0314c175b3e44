"""An Evidently metric the platform adds: the spec's success metric, sliceable by ``GroupBy``.

Evidently 0.7.23's classification metrics (``RocAuc``, ``LogLoss``...) run through its legacy
engine, which reads the report's whole dataset: inside ``GroupBy`` every group gets the
overall value (checked: three origins with AUCs 0.61, 0.78 and 0.94 all came back 0.78).
``OnlineMetric`` computes on the dataset it is handed, so ``GroupBy(OnlineMetric(...), col)``
gives each group its own value; it serves regression metrics (RMSE, MAE, R²) the same way.
Imports Evidently: import this module inside functions.
"""

import math
import warnings

with warnings.catch_warnings():
    # Evidently's import warns about its own dependencies (numpy.core, litestar): not ours
    warnings.simplefilter("ignore")
    from evidently.core.metric_types import SingleValueCalculation, SingleValueMetric


class OnlineMetric(SingleValueMetric):
    """The spec's metric (``evaluation.metrics.metric`` vocabulary): ``prediction`` vs ``target``.

    Any metric of ``spec.METRICS``: a binary one (``roc_auc``...) of probabilities against
    0/1 labels, a regression one (``rmse``, ``mae``, ``r2``) of predicted values against
    observed ones. Rows with a missing target or prediction are left out; a group where the
    metric is undefined (a single class for AUC, fewer than two rows for R²) gives NaN,
    which callers avoid by grouping only on judgeable labels (``dashboard.judgeable``).
    Its Evidently name is ``evidently:metric_v2:OnlineMetric`` (Evidently's default for a
    metric class), which dashboard panels refer to as ``OnlineMetric``.
    """

    name: str
    target: str
    prediction: str


class OnlineMetricCalculation(SingleValueCalculation[OnlineMetric]):
    """Computes ``OnlineMetric`` on the (sub)dataset it is given."""

    def calculate(self, context, current_data, reference_data):  # noqa: D102
        from mlplatform.lib.evaluation.metrics import metric

        frame = current_data.as_dataframe()[[self.metric.target, self.metric.prediction]].dropna()
        y = frame[self.metric.target].to_numpy(dtype=float)
        p = frame[self.metric.prediction].to_numpy(dtype=float)
        value = metric(self.metric.name, y, p) if len(frame) else math.nan
        return self.result(value)

    def display_name(self) -> str:  # noqa: D102
        return f"Online {self.metric.name} of '{self.metric.prediction}'"
