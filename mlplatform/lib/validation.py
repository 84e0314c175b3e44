"""Validation of one landed batch: schema, keys, timestamps, null rates and volume.

Every function returns a ``CheckOutcome``: pass or fail, a severity, a one-line reason,
and JSON-able details. Dagster assets turn outcomes into asset check results; the
quarantine stores them as the batch's report.
"""

from datetime import date, datetime, timedelta
from statistics import median
from typing import Any

import pandas as pd
import pandera.pandas as pa

from mlplatform.lib.checks import CheckOutcome
from mlplatform.lib.names import DUPLICATES, NULL_RATES, SCHEMA, TIMESTAMPS, VOLUME
from mlplatform.lib.tables import local_midnight


def _records(frame: pd.DataFrame, limit: int) -> list[dict[str, Any]]:
    head = frame.head(limit).astype(object)
    return [
        {str(k): (None if pd.isna(v) else str(v)) for k, v in row.items()}
        for row in head.to_dict("records")
    ]


def _summary(table: pd.DataFrame) -> str:
    """One line: missing and unexpected columns first, then the columns with bad values."""
    parts = []
    for check, label in (("column_in_dataframe", "missing"), ("column_in_schema", "unexpected")):
        names = sorted(str(v) for v in table.loc[table["check"] == check, "value"])
        if names:
            parts.append(f"{label} column(s) {', '.join(names)}")
    values = table[~table["check"].isin(["column_in_dataframe", "column_in_schema"])]
    if len(values):
        columns = sorted({str(c) for c in values["column"] if pd.notna(c)})
        parts.append(f"{len(values)} bad value(s) in {', '.join(columns)}")
    return "; ".join(parts) or f"{len(table)} schema failure(s)"


def validate_schema(
    frame: pd.DataFrame, model: type[pa.DataFrameModel], max_cases: int = 20
) -> tuple[pd.DataFrame | None, CheckOutcome]:
    """Coerce and validate lazily, collecting every failure; the typed frame if it passed."""
    try:
        typed = model.validate(frame, lazy=True)
    except (pa.errors.SchemaErrors, pa.errors.SchemaError) as exc:
        if isinstance(exc, pa.errors.SchemaErrors):
            cases = exc.failure_cases
        else:  # strict-column errors can be raised eagerly even when validating lazily
            cases = pd.DataFrame(
                [
                    {
                        "column": exc.schema.name,
                        "check": str(exc.check),
                        "failure_case": str(exc),
                        "index": None,
                    }
                ]
            )
        table = pd.DataFrame(
            {
                "row": cases["index"],
                "column": cases["column"],
                "check": cases["check"],
                "value": cases["failure_case"],
            }
        )
        outcome = CheckOutcome(
            SCHEMA,
            False,
            "ERROR",
            _summary(table),
            {"failure_case_count": len(table), "failure_cases": _records(table, max_cases)},
        )
        return None, outcome
    return typed, CheckOutcome(
        SCHEMA,
        True,
        "ERROR",
        f"{len(typed)} rows match {model.__name__}",
        {"failure_case_count": 0, "failure_cases": []},
    )


def check_duplicates(frame: pd.DataFrame, key: list[str], max_cases: int = 20) -> CheckOutcome:
    """Each natural key appears once."""
    missing = [c for c in key if c not in frame.columns]
    if missing:
        return CheckOutcome(DUPLICATES, False, "ERROR", f"key column(s) missing: {missing}")
    dup = frame[frame.duplicated(subset=key, keep=False)]
    if dup.empty:
        return CheckOutcome(
            DUPLICATES, True, "ERROR", f"every {tuple(key)} is unique", {"duplicate_rows": 0}
        )
    return CheckOutcome(
        DUPLICATES,
        False,
        "ERROR",
        f"{len(dup)} rows share a natural key {tuple(key)}",
        {
            "duplicate_rows": len(dup),
            "examples": _records(pd.DataFrame({c: dup[c] for c in key}), max_cases),
        },
    )


def day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """Start (inclusive) and end (exclusive) of a calendar day in ``timezone``, as UTC."""
    return local_midnight(day, timezone), local_midnight(day + timedelta(days=1), timezone)


def check_timestamps(
    frame: pd.DataFrame,
    column: str,
    day: date,
    timezone: str,
    now: datetime,
    max_cases: int = 20,
) -> CheckOutcome:
    """Event times fall inside the partition's day (local time) and not after ``now``."""
    if column not in frame.columns:
        return CheckOutcome(TIMESTAMPS, False, "ERROR", f"timestamp column {column!r} missing")
    stamps = pd.to_datetime(frame[column], utc=True, errors="coerce")
    start, end = day_bounds(day, timezone)
    outside = stamps.notna() & ((stamps < start) | (stamps >= end))
    future = stamps.notna() & (stamps > pd.Timestamp(now).tz_convert("UTC"))
    details = {
        "outside_day": int(outside.sum()),
        "in_future": int(future.sum()),
        "unparseable": int(stamps.isna().sum()),
        "window": f"[{start.isoformat()}, {end.isoformat()})",
    }
    bad = outside | future
    if not bad.any():
        return CheckOutcome(TIMESTAMPS, True, "ERROR", f"every {column} is within {day}", details)
    examples = pd.DataFrame({"row": frame.index[bad], column: frame.loc[bad, column]})
    details["examples"] = _records(examples, max_cases)
    return CheckOutcome(
        TIMESTAMPS,
        False,
        "ERROR",
        f"{int(outside.sum())} {column} value(s) outside {day} ({timezone}), "
        f"{int(future.sum())} in the future",
        details,
    )


def check_null_rates(frame: pd.DataFrame, limits: dict[str, float]) -> CheckOutcome:
    """Null rates of the watched columns stay within their limits."""
    rates = {
        c: (float(frame[c].isna().mean()) if c in frame.columns and len(frame) else 0.0)
        for c in limits
    }
    over = {c: r for c, r in rates.items() if r > limits[c]}
    details = {"null_rates": rates, "limits": dict(limits)}
    if over:
        listed = ", ".join(f"{c} {r:.1%} > {limits[c]:.1%}" for c, r in over.items())
        return CheckOutcome(NULL_RATES, False, "ERROR", f"null rate over limit: {listed}", details)
    return CheckOutcome(NULL_RATES, True, "ERROR", "null rates within limits", details)


def check_volume(
    rows: int,
    history: list[int],
    *,
    min_history: int,
    warn_range: tuple[float, float],
    error_range: tuple[float, float],
) -> CheckOutcome:
    """Row count against the median of earlier accepted partitions; ERROR only when extreme."""
    if len(history) < min_history:
        return CheckOutcome(
            VOLUME,
            True,
            "WARN",
            f"{rows} rows; only {len(history)} earlier partition(s), need {min_history} to judge",
            {"rows": rows, "history_partitions": len(history)},
        )
    base = float(median(history))
    ratio = rows / base if base else float("inf")
    details = {
        "rows": rows,
        "trailing_median": base,
        "ratio": ratio,
        "history_partitions": len(history),
    }
    text = f"{rows} rows, {ratio:.2f}x the trailing median of {base:g}"
    if not error_range[0] <= ratio <= error_range[1]:
        return CheckOutcome(VOLUME, False, "ERROR", f"{text}: outside {error_range}", details)
    if not warn_range[0] <= ratio <= warn_range[1]:
        return CheckOutcome(VOLUME, False, "WARN", f"{text}: outside {warn_range}", details)
    return CheckOutcome(VOLUME, True, "WARN", text, details)
