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
    from mlplatform.lib.monitoring.drift import column_drift

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
    skipped = {d.column: d.note for d in drifts if not d.evaluated}
    if not drifted:
        html.unlink(missing_ok=True)  # ~4 MB each: keep only the reports worth reading
    scores = {f"drift/{d.column}": d.score for d in drifts if d.evaluated}
    said = [f"drift in {', '.join(drifted)}" if drifted else "no column drifted"]
    if skipped:
        # a column that cannot be compared is itself news about the feed: not a pass
        said.append(f"not evaluated: {'; '.join(skipped.values())}")
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=DRIFT,
        passed=not drifted and not skipped,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(said) + f" ({rule.method}, threshold {rule.threshold})",
        metadata={
            **scores,
            "drifted_columns": dg.MetadataValue.json(drifted),
            "not_evaluated": dg.MetadataValue.json(skipped),
            "reference_rows": len(reference),
            "current_rows": len(frame),
            **({"report": dg.MetadataValue.path(str(html))} if drifted else {}),
        },
    )


def advisory_drift_result(
    lake: DataLake,
    problem: Problem,
    source: str,
    day: date,
    frame: "pd.DataFrame",
    asset_key: dg.AssetKey,
    log: "dg.DagsterLogManager",
) -> dg.AssetCheckResult:
    """``drift_result``, never raising: an advisory check must not fail its data step.

    A check that cannot evaluate says so (WARN, not passed) with the error.
    """
    try:
        return drift_result(lake, problem, source, day, frame, asset_key)
    # any failure of an advisory check is reported as its result, never raised
    except Exception as exc:
        log.warning(f"{asset_key.to_user_string()} {day}: {DRIFT} not evaluated: {exc!r}")
        return dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=DRIFT,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"not evaluated: {type(exc).__name__}: {exc}"[:500],
            metadata={"current_rows": len(frame), "error": f"{type(exc).__name__}: {exc}"},
        )
