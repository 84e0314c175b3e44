"""Column drift between a current batch and a reference window, computed with Evidently."""

import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd


def _quiet_import() -> None:
    # Evidently's import warns about its own dependencies (numpy.core, litestar): not ours
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import evidently
        import evidently.presets  # noqa: F401


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column: Evidently's score and its verdict under the method's threshold.

    A column that cannot be compared (no values on one side) is not evaluated: its score
    is NaN, it does not count as drifted, and ``note`` says why.
    """

    column: str
    score: float
    drifted: bool
    note: str = ""

    @property
    def evaluated(self) -> bool:
        """Whether Evidently scored the column."""
        return not self.note


def _unscorable(current: pd.DataFrame, reference: pd.DataFrame, column: str) -> str:
    """Why ``column`` cannot be compared ('' when it can): Evidently raises on empty columns."""
    for frame, side in ((current, ""), (reference, " in the reference")):
        if column not in frame.columns:
            return f"{column} is missing{side}"
        if not frame[column].notna().any():
            return f"{column} has no values{side}"
    return ""


@dataclass(frozen=True)
class DriftRun:
    """One Evidently drift report: each column's verdict and the preset's dataset summary.

    Attributes:
        columns: One ``ColumnDrift`` per column asked for, in that order.
        drifted_count: Drifted columns among the counted ones that were scored, from
            Evidently's ``DataDriftPreset`` (``DriftedColumnsCount``); 0 when none was scored.
        drifted_share: ``drifted_count`` over the counted columns scored, in [0, 1].
        snapshot: The Evidently ``Snapshot`` (None when no column could be scored).
    """

    columns: list[ColumnDrift]
    drifted_count: int = 0
    drifted_share: float = 0.0
    snapshot: Any = None


class DriftMethodError(ValueError):
    """A drift test that cannot score a column's type (wasserstein on a categorical one)."""


def drift_run(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    columns: list[str],
    method: str,
    threshold: float,
    counted: list[str] | None = None,
    drift_share: float = 0.5,
    html_path: Path | None = None,
    timestamp: datetime | None = None,
    tags: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    cat_method: str | None = None,
    cat_threshold: float | None = None,
) -> DriftRun:
    """Score each column's drift and count the drifted ones with Evidently's preset.

    Numeric columns are those with a numeric dtype in ``reference``; the rest are
    categorical, scored with ``cat_method`` and ``cat_threshold`` (Evidently's own
    ``cat_method``; default ``method`` and ``threshold``). Columns with no value in
    ``current`` or ``reference`` are returned not evaluated (``note``) instead of failing
    the whole report. ``counted`` (default: all of
    ``columns``) are the columns ``DataDriftPreset`` summarizes (its drift share and count,
    its test against ``drift_share``); the others get a ``ValueDrift`` of their own, with
    the same method and threshold. When ``html_path`` is given and a column was scored, the
    report is saved there; ``timestamp``, ``tags`` and ``metadata`` go to the snapshot.

    Raises:
        DriftMethodError: a test that cannot score a column's type (Evidently's
            ``StatTestInvalidFeatureTypeError``), naming the columns and the spec field.
    """
    notes = {c: _unscorable(current, reference, c) for c in columns}
    scored = [c for c in columns if not notes[c]]
    if not scored:
        return DriftRun([ColumnDrift(c, float("nan"), False, notes[c]) for c in columns])
    _quiet_import()
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    summarized = [c for c in (columns if counted is None else counted) if c in scored]
    numeric = [c for c in scored if pd.api.types.is_numeric_dtype(reference[c])]
    categorical = [c for c in scored if c not in numeric]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    cat_method, cat_threshold = cat_method or method, cat_threshold or threshold
    items: list = [
        ValueDrift(column=c, method=method, threshold=threshold)
        if c in numeric
        else ValueDrift(column=c, method=cat_method, threshold=cat_threshold)
        for c in scored
        if c not in summarized
    ]
    if summarized:
        preset = DataDriftPreset(
            columns=summarized,
            num_method=method,
            num_threshold=threshold,
            cat_method=cat_method,
            cat_threshold=cat_threshold,
            drift_share=drift_share,
        )
        items.insert(0, preset)
    try:
        snapshot = Report(items, include_tests=True).run(
            Dataset.from_pandas(current.filter(items=scored), data_definition=definition),
            Dataset.from_pandas(reference.filter(items=scored), data_definition=definition),
            timestamp=timestamp,
            tags=tags or [],
            metadata=dict(metadata or {}),
        )
    except ValueError as exc:  # Evidently's StatTestInvalidFeatureTypeError is one
        if "isn't applicable to feature of type" not in str(exc):
            raise
        raise DriftMethodError(
            f"drift test cannot score these columns: {exc} (numeric: {method!r} on "
            f"{numeric}; categorical: {cat_method!r} on {categorical}); choose a test for "
            "each column type (the spec's monitoring.cat_stattest, or a source's drift.method)"
        ) from None
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    result = snapshot.dict()
    scores, count, share = {}, 0, 0.0
    for m in result["metrics"]:
        config = m["config"]
        if config["type"].endswith(":ValueDrift"):
            scores[config["column"]] = float(m["value"])
        elif config["type"].endswith(":DriftedColumnsCount"):
            count, share = int(m["value"]["count"]), float(m["value"]["share"])
    failed = {
        t["metric_config"]["params"]["column"]
        for t in result["tests"]
        if t["status"] != "SUCCESS" and "column" in t["metric_config"]["params"]
    }
    drifts = [
        ColumnDrift(c, scores[c], c in failed)
        if c in scores
        else ColumnDrift(c, float("nan"), False, notes[c] or f"{c}: no score from Evidently")
        for c in columns
    ]
    return DriftRun(drifts, count, share, snapshot)


def column_drift(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    columns: list[str],
    method: str,
    threshold: float,
    html_path: Path | None = None,
) -> list[ColumnDrift]:
    """Score each column's drift; Evidently decides the direction of each method's threshold.

    ``drift_run``'s columns: columns with no value in ``current`` or ``reference`` are
    returned not evaluated (``note``); the report is saved at ``html_path`` when given.
    """
    return drift_run(current, reference, columns, method, threshold, html_path=html_path).columns


def classification_report(
    current: pd.DataFrame, reference: pd.DataFrame | None, html_path: Path
) -> None:
    """Evidently's classification report (``target``, ``prediction`` columns) as HTML.

    ``current`` holds the candidate's predictions; ``reference`` the champion's on the same
    rows, when there is one, so the report shows both side by side.
    """
    performance_report(current, reference, html_path, regression=False)


def performance_report(
    current: pd.DataFrame, reference: pd.DataFrame | None, html_path: Path, regression: bool
) -> None:
    """Evidently's report of predictions against outcomes, for the problem's task, as HTML.

    Args:
        current: The candidate's rows: ``target`` (0/1, or the observed value) and
            ``prediction`` (the probability of 1, or the predicted value), float.
        reference: The champion's predictions on the same rows, or None; the report shows
            both side by side.
        html_path: Where the page is written (folders made).
        regression: ``RegressionPreset`` (errors, RMSE, MAE, R², predicted vs actual)
            instead of ``ClassificationPreset`` (a binary classifier's probabilities).
    """
    _quiet_import()
    from evidently import BinaryClassification, DataDefinition, Dataset, Regression, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    if regression:
        definition = DataDefinition(
            numerical_columns=["target", "prediction"],
            regression=[Regression(target="target", prediction="prediction")],
        )
        preset: Any = RegressionPreset()
    else:
        definition = DataDefinition(
            classification=[BinaryClassification(target="target", prediction_probas="prediction")]
        )
        preset = ClassificationPreset()

    def dataset(frame: pd.DataFrame) -> Dataset:
        return Dataset.from_pandas(frame[["target", "prediction"]], data_definition=definition)

    snapshot = Report([preset]).run(
        dataset(current), dataset(reference) if reference is not None else None
    )
    html_path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html_path))
