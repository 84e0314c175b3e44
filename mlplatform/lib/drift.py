"""Column drift between a current batch and a reference window, computed with Evidently."""

import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


def _quiet_import() -> None:
    # Evidently's import warns about its own dependencies (numpy.core, litestar): not ours
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import evidently
        import evidently.presets  # noqa: F401


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column: Evidently's score and its verdict under the method's threshold."""

    column: str
    score: float
    drifted: bool


def column_drift(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    columns: list[str],
    method: str,
    threshold: float,
    html_path: Path | None = None,
) -> list[ColumnDrift]:
    """Score each column's drift; Evidently decides the direction of each method's threshold.

    Numeric columns are those with a numeric dtype in ``reference``; the rest are
    categorical. When ``html_path`` is given, the Evidently report is saved there.
    """
    _quiet_import()
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(reference[c])]
    categorical = [c for c in columns if c not in numeric]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    report = Report(
        [ValueDrift(column=c, method=method, threshold=threshold) for c in columns],
        include_tests=True,
    )
    snapshot = report.run(
        Dataset.from_pandas(current.filter(items=columns), data_definition=definition),
        Dataset.from_pandas(reference.filter(items=columns), data_definition=definition),
    )
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    result = snapshot.dict()
    scores = {m["config"]["column"]: float(m["value"]) for m in result["metrics"]}
    failed = {
        t["metric_config"]["params"]["column"] for t in result["tests"] if t["status"] != "SUCCESS"
    }
    return [ColumnDrift(c, scores[c], c in failed) for c in columns]


def classification_report(
    current: pd.DataFrame, reference: pd.DataFrame | None, html_path: Path
) -> None:
    """Evidently's classification report (``target``, ``prediction`` columns) as HTML.

    ``current`` holds the candidate's predictions; ``reference`` the champion's on the same
    rows, when there is one, so the report shows both side by side.
    """
    _quiet_import()
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    definition = DataDefinition(
        classification=[BinaryClassification(target="target", prediction_probas="prediction")]
    )

    def dataset(frame: pd.DataFrame) -> Dataset:
        return Dataset.from_pandas(frame[["target", "prediction"]], data_definition=definition)

    snapshot = Report([ClassificationPreset()]).run(
        dataset(current), dataset(reference) if reference is not None else None
    )
    html_path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html_path))
