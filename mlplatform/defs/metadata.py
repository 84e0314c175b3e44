"""Metadata a user looks for on an asset page, built from DataFrames and check outcomes."""

from typing import TYPE_CHECKING, Any

import dagster as dg

from mlplatform.lib import markdown

if TYPE_CHECKING:
    import pandas as pd

    from mlplatform.lib.checks import CheckOutcome


def md_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of records (all keys of the first record as columns)."""
    return markdown.table(rows, lambda v: "" if v is None else str(v))


def frame_metadata(frame: "pd.DataFrame", preview_rows: int = 10) -> dict[str, Any]:
    """Row count, column schema, a preview and null rates of a table."""
    import pandas as pd

    schema = dg.TableSchema(
        columns=[dg.TableColumn(name=str(c), type=str(t)) for c, t in frame.dtypes.items()]
    )
    head = frame.head(preview_rows).astype(object)
    preview = [
        {str(k): (None if pd.isna(v) else v) for k, v in row.items()}
        for row in head.to_dict("records")
    ]
    nulls = {str(c): round(float(frame[c].isna().mean()), 4) for c in frame.columns if len(frame)}
    return {
        "dagster/row_count": len(frame),
        "dagster/column_schema": schema,
        "preview": dg.MetadataValue.md(md_table(preview)),
        "null_rates": dg.MetadataValue.json(nulls),
    }


def _value(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return dg.MetadataValue.text(str(value))
    if isinstance(value, int | float | str):
        return value
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        return dg.MetadataValue.md(md_table(value))
    return dg.MetadataValue.json(value)


def check_result(outcome: "CheckOutcome", asset_key: dg.AssetKey) -> dg.AssetCheckResult:
    """An asset check result carrying the outcome's reason and details."""
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=outcome.name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity(outcome.severity),
        description=outcome.reason,
        metadata={"reason": outcome.reason, **{k: _value(v) for k, v in outcome.details.items()}},
    )
