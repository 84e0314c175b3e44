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
    categorical. Columns with no value in ``current`` or ``reference`` are returned not
    evaluated (``note``) instead of failing the whole report. When ``html_path`` is given
    and a column was scored, the Evidently report is saved there.
    """
    notes = {c: _unscorable(current, reference, c) for c in columns}
    scored = [c for c in columns if not notes[c]]
    if not scored:
        return [ColumnDrift(c, float("nan"), False, notes[c]) for c in columns]
    _quiet_import()
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    numeric = [c for c in scored if pd.api.types.is_numeric_dtype(reference[c])]
    categorical = [c for c in scored if c not in numeric]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    report = Report(
        [ValueDrift(column=c, method=method, threshold=threshold) for c in scored],
        include_tests=True,
    )
    snapshot = report.run(
        Dataset.from_pandas(current.filter(items=scored), data_definition=definition),
        Dataset.from_pandas(reference.filter(items=scored), data_definition=definition),
    )
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    result = snapshot.dict()
    scores = {m["config"]["column"]: float(m["value"]) for m in result["metrics"]}
    failed = {
        t["metric_config"]["params"]["column"] for t in result["tests"] if t["status"] != "SUCCESS"
    }
    return [
        ColumnDrift(c, scores[c], c in failed)
        if c in scores
        else ColumnDrift(c, float("nan"), False, notes[c] or f"{c}: no score from Evidently")
        for c in columns
    ]


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
