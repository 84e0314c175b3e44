"""Metadata a user looks for on an asset page, built from DataFrames and check outcomes."""

from typing import TYPE_CHECKING, Any

import dagster as dg

from mlplatform.lib import markdown

if TYPE_CHECKING:
    import pandas as pd

    from mlplatform.lib.checks import CheckOutcome


def md_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of records (all keys of the first record as columns).

    For tables inside a markdown document (the evaluation report, a section mixing text
    and images); a table that is a metadata entry on its own is ``table`` below.
    """
    return markdown.table(rows, lambda v: "" if v is None else str(v))


def _cell(value: Any) -> str | int | float | bool | None:
    """A value Dagster's ``TableRecord`` takes: numpy scalars unwrapped, NaN as empty."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            value = value.item()  # numpy scalar
        except (ValueError, TypeError):
            pass
    if isinstance(value, float) and value != value:
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _kind(values: list[Any]) -> str:
    """The ``TableColumn`` type of a column's cells (``string`` when they are mixed)."""
    kinds = {type(v) for v in values if v is not None}
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float")):
        if kinds == {kind}:
            return name
    return "float" if kinds == {int, float} else "string"


def table(rows: list[dict[str, Any]]) -> dg.TableMetadataValue:
    """Records as Dagster table metadata: the UI shows a sortable table with typed columns.

    Columns are every key of the records, in first-seen order; a record without a key has
    an empty cell. Cells are strings, numbers, booleans or empty (other values as text).
    """
    columns: dict[str, None] = {}
    for row in rows:
        columns |= dict.fromkeys(str(k) for k in row)
    cells = [{c: _cell(row.get(c)) for c in columns} for row in rows]
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name=c, type=_kind([r[c] for r in cells])) for c in columns]
    )
    return dg.MetadataValue.table(records=[dg.TableRecord(r) for r in cells], schema=schema)


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
        "preview": table(preview),
        "null_rates": dg.MetadataValue.json(nulls),
    }


def _value(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return dg.MetadataValue.text(str(value))
    if isinstance(value, int | float | str):
        return value
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        return table(value)
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
