"""The ingestion drift check: today's key columns against the days before (WARN)."""

from datetime import date, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from mlplatform.lib.names import INGESTION_DRIFT as DRIFT
from mlplatform.lib.storage import DataLake
from mlplatform.problems import Problem

if TYPE_CHECKING:
    import pandas as pd


def drift_result(
    lake: DataLake,
    problem: Problem,
    source: str,
    day: date,
    frame: "pd.DataFrame",
    asset_key: dg.AssetKey,
) -> dg.AssetCheckResult:
    """Evidently drift of the spec's key columns; the HTML report is kept when it drifts."""
    from mlplatform.lib.drift import column_drift

    rule = problem.spec.sources[source].drift
    assert rule is not None, "only sources with a drift rule get this check"
    window = (day - timedelta(days=back) for back in range(1, rule.reference_days + 1))
    reference = lake.read_days(problem.name, source, window)
    if reference.empty or frame.empty:
        return dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=DRIFT,
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description="not evaluated: no reference days yet"
            if reference.empty
            else "not evaluated: the batch is empty",
            metadata={"reference_rows": len(reference), "current_rows": len(frame)},
        )
    html = lake.reports_dir(problem.name, DRIFT) / source / f"{day.isoformat()}.html"
    drifts = column_drift(frame, reference, rule.columns, rule.method, rule.threshold, html)
    drifted = [d.column for d in drifts if d.drifted]
    if not drifted:
        html.unlink(missing_ok=True)  # ~4 MB each: keep only the reports worth reading
    scores = {f"drift/{d.column}": d.score for d in drifts}
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=DRIFT,
        passed=not drifted,
        severity=dg.AssetCheckSeverity.WARN,
        description=(f"drift in {', '.join(drifted)}" if drifted else "no column drifted")
        + f" ({rule.method}, threshold {rule.threshold})",
        metadata={
            **scores,
            "drifted_columns": dg.MetadataValue.json(drifted),
            "reference_rows": len(reference),
            "current_rows": len(frame),
            **({"report": dg.MetadataValue.path(str(html))} if drifted else {}),
        },
    )
