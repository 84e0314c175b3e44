"""Validation of one landed batch: schema, keys, timestamps, null rates and volume.

Every function returns a ``CheckOutcome``: pass or fail, a severity, a one-line reason,
and JSON-able details. Dagster assets turn outcomes into asset check results; the
quarantine stores them as the batch's report.
"""

import math
from datetime import date, datetime, timedelta
from statistics import median
from typing import Any

import pandas as pd
import pandera.pandas as pa

from mlplatform.lib.checks import CheckOutcome
from mlplatform.lib.features.tables import local_midnight
from mlplatform.lib.ingestion.hours import hour_bounds
from mlplatform.lib.names import (
    DUPLICATES,
    NULL_RATES,
    SCHEMA,
    TIMESTAMP_PARTS,
    TIMESTAMPS,
    VOLUME,
)


def _records(frame: pd.DataFrame, limit: int) -> list[dict[str, Any]]:
    head = frame.head(limit).astype(object)
    return [
        {str(k): (None if pd.isna(v) else str(v)) for k, v in row.items()}
        for row in head.to_dict("records")
    ]


def _summary(table: pd.DataFrame) -> str:
    """One line: missing and unexpected columns first, then the columns with bad values.

    Built from the failure cases (pandera's ``SchemaErrors.failure_cases`` and the ones
    found before pandera), not from ``SchemaErrors.error_counts``: those count by reason
    code (``DATAFRAME_CHECK``, ``COLUMN_NOT_IN_SCHEMA``) without naming a column, count a
    failed coercion twice (see ``validate_schema``), and know nothing of offsets or NaN text.
    """
    parts = []
    for check, label in (("column_in_dataframe", "missing"), ("column_in_schema", "unexpected")):
        names = sorted(str(v) for v in table.loc[table["check"] == check, "value"])
        if names:
            parts.append(f"{label} column(s) {', '.join(names)}")
    values = table[~table["check"].isin(["column_in_dataframe", "column_in_schema"])]
    if len(values):
        columns = sorted({str(c) for c in values["column"] if pd.notna(c)})
        parts.append(f"{len(values)} bad value(s) in {', '.join(columns)}")
        ours = sorted({str(c) for c in values["check"] if c in _EXPLAINED})
        parts += [_EXPLAINED[c] for c in ours]
    return "; ".join(parts) or f"{len(table)} schema failure(s)"


# Failure kinds found before or after pandera's coercion, and what each means to a reader.
UTC_OFFSET = "utc_offset"
LOCAL_TIME = "local_time_exists"
FINITE = "finite_number"
_EXPLAINED = {
    UTC_OFFSET: "timestamps without a UTC offset (declare the source's naive_timezone "
    "in the spec if they are local times)",
    LOCAL_TIME: "local times that do not exist or are ambiguous in the declared zone",
    FINITE: "text read as NaN or infinity (only the spec's null_values may be null)",
}
# An offset after a time of day: 'Z', 'UTC' or +hh[:mm]; a bare date's '-16' is no offset.
_OFFSET = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[Zz]|UTC|[+-]\d{2}(?::?\d{2})?)$"


def _schema_columns(model: type[pa.DataFrameModel]) -> dict[str, Any]:
    return {str(name): column.dtype.type for name, column in model.to_schema().columns.items()}


def _case(row: object, column: str, check: str, value: object) -> dict[str, object]:
    return {"index": row, "column": column, "check": check, "failure_case": str(value)}


def localize_timestamps(
    frame: pd.DataFrame, model: type[pa.DataFrameModel], naive_zone: str | None
) -> tuple[pd.DataFrame, list[dict[str, object]]]:
    """Timestamps written without a UTC offset, read in ``naive_zone`` or refused.

    For each column the model types as a zoned timestamp: text with an offset (``Z``,
    ``+01:00``) is left to pandera; text without one is localized in ``naive_zone`` (and
    rewritten with its UTC offset) or, when no zone is declared, is a failure case. Naive
    datetime columns (Parquet) are treated alike. Unparseable text is left to pandera.

    Returns:
        The frame with naive timestamps localized (the input when nothing changed), and
        failure cases as pandera's ``failure_cases`` records (index, column, check,
        failure_case).
    """
    cases: list[dict[str, object]] = []
    out = frame
    for column, dtype in _schema_columns(model).items():
        if column not in frame.columns or not isinstance(dtype, pd.DatetimeTZDtype):
            continue
        values = frame[column]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            continue
        if pd.api.types.is_datetime64_dtype(values.dtype):
            parsed, naive = values, values.notna()
        else:
            text = values.astype("string").str.strip()
            offset = text.str.contains(_OFFSET, regex=True).fillna(False).astype(bool)
            candidates = values.notna() & ~offset
            parsed = pd.to_datetime(text.where(candidates), errors="coerce", format="ISO8601")
            naive = candidates & parsed.notna()
        if not naive.any():
            continue
        if naive_zone is None:
            cases += [_case(r, column, UTC_OFFSET, v) for r, v in values[naive].items()]
            continue
        local = pd.DatetimeIndex(parsed[naive]).tz_localize(
            naive_zone, ambiguous="NaT", nonexistent="NaT"
        )
        zoned = pd.Series(local, index=values.index[naive])
        missing = zoned.isna()
        cases += [
            _case(r, column, LOCAL_TIME, f"{v} in {naive_zone}")
            for r, v in values[naive][missing.to_numpy()].items()
        ]
        if out is frame:
            out = frame.copy()
        if pd.api.types.is_datetime64_dtype(values.dtype):
            out[column] = zoned.reindex(values.index)
        else:
            rewritten = values.astype(object).copy()
            rewritten[zoned.index[~missing]] = [t.isoformat() for t in zoned[~missing]]
            out[column] = rewritten.astype("string")
    return out, cases


def _non_finite(frame: pd.DataFrame, model: type[pa.DataFrameModel]) -> list[dict[str, object]]:
    """Text that pandera's float coercion would silently read as NaN or infinity.

    ``"nan"``, ``"NaN"`` or ``"-inf"`` convert to float without error: only the spec's
    ``null_values`` (nulls already) may stand for a missing number.
    """
    cases: list[dict[str, object]] = []
    for column, dtype in _schema_columns(model).items():
        if column not in frame.columns or not pd.api.types.is_float_dtype(dtype):
            continue
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values.dtype):
            continue  # typed input (Parquet): a NaN there is a null the writer meant
        bad = set()
        for value in values.dropna().unique():
            try:
                number = float(str(value))
            except ValueError:
                continue  # not a number at all: pandera's coercion reports it
            if not math.isfinite(number):
                bad.add(value)
        if bad:
            hits = values[values.isin(list(bad))]
            cases += [_case(r, column, FINITE, v) for r, v in hits.items()]
    return cases


def validate_schema(
    frame: pd.DataFrame,
    model: type[pa.DataFrameModel],
    max_cases: int = 20,
    naive_zone: str | None = None,
) -> tuple[pd.DataFrame | None, CheckOutcome]:
    """Coerce and validate lazily, collecting every failure; the typed frame if it passed.

    Beyond pandera's own checks, a timestamp without a UTC offset is refused unless
    ``naive_zone`` says where it was written (see ``localize_timestamps``), and text that
    would coerce to NaN or infinity in a float column (``"nan"``, ``"inf"``) is refused.
    Failure cases name the row (0-based data row), column, check and value.
    """
    localized, early = localize_timestamps(frame, model, naive_zone)
    early += _non_finite(frame, model)
    typed: pd.DataFrame | None = None
    cases = pd.DataFrame(early, columns=["index", "column", "check", "failure_case"])
    try:
        typed = model.validate(localized, lazy=True)
    except (pa.errors.SchemaErrors, pa.errors.SchemaError) as exc:
        if isinstance(exc, pa.errors.SchemaErrors):
            found = exc.failure_cases
        else:  # strict-column errors can be raised eagerly even when validating lazily
            found = pd.DataFrame(
                [
                    {
                        "column": exc.schema.name,
                        "check": str(exc.check),
                        "failure_case": str(exc),
                        "index": None,
                    }
                ]
            )
        found = found[["index", "column", "check", "failure_case"]]
        # A value that fails coercion also fails the column's dtype check, once more and
        # at shifted rows: the coercion failure is the one that names row and value.
        check = found["check"].astype(str)
        coerced = set(found.loc[check.str.startswith("coerce_dtype("), "column"])
        found = found[~(check.str.startswith("dtype(") & found["column"].isin(coerced))]
        # It also lists the nulls of a column it could not coerce: nulls are judged by the
        # column's nullable flag, not as values that failed to convert.
        nullable = {str(n) for n, c in model.to_schema().columns.items() if c.nullable}
        found = found[
            ~(
                found["check"].astype(str).str.startswith("coerce_dtype(")
                & found["failure_case"].isna()
                & found["column"].isin(nullable)
            )
        ]
        cases = found if cases.empty else pd.concat([cases, found], ignore_index=True)
    if not cases.empty:
        table = pd.DataFrame(
            {
                "row": cases["index"],
                "column": cases["column"],
                "check": cases["check"].astype(str),
                "value": cases["failure_case"],
            }
        )
        # whole-column failures first, then in file order: the first cases read like the file
        order = pd.to_numeric(table["row"], errors="coerce").fillna(-1)
        table = table.loc[order.sort_values(kind="stable").index]
        outcome = CheckOutcome(
            SCHEMA,
            False,
            "ERROR",
            _summary(table),
            {"failure_case_count": len(table), "failure_cases": _records(table, max_cases)},
        )
        return None, outcome
    assert typed is not None
    return typed, CheckOutcome(
        SCHEMA,
        True,
        "ERROR",
        f"{len(typed)} rows match {model.__name__}",
        {"failure_case_count": 0, "failure_cases": []},
    )


def check_duplicates(frame: pd.DataFrame, key: list[str], max_cases: int = 20) -> CheckOutcome:
    """Each natural key appears once.

    Not pandera's ``unique`` option on the schema: the key is the spec's ``natural_key``
    (said once, in the spec), a duplicate is its own asset check and quarantine entry
    rather than more schema failure cases, and keys are judged even on a batch whose schema
    check failed (``ingest.check_batch`` passes the untyped rows then).
    """
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
    day: date | str,
    timezone: str,
    now: datetime,
    max_cases: int = 20,
) -> CheckOutcome:
    """Event times fall inside the partition (local time) and not after ``now``.

    ``day`` is a local day, or an hourly key (``lib.ingestion.hours``) for an hour.
    """
    if column not in frame.columns:
        return CheckOutcome(TIMESTAMPS, False, "ERROR", f"timestamp column {column!r} missing")
    stamps = pd.to_datetime(frame[column], utc=True, errors="coerce")
    start, end = hour_bounds(day, timezone) if isinstance(day, str) else day_bounds(day, timezone)
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


def check_timestamp_parts(
    frame: pd.DataFrame,
    column: str,
    parts: dict[str, str],
    timezone: str,
    max_cases: int = 20,
) -> CheckOutcome:
    """Columns that restate parts of ``column`` (year, month, day, hour, minute) agree with it.

    ``parts`` maps a column to the part of the timestamp it restates, in ``timezone`` (the
    partition's local time). A local time written as UTC (or the other way round) moves
    every timestamp by the zone's offset while each looks plausible on its own: this is the
    check that sees it.
    """
    missing = [c for c in [column, *parts] if c not in frame.columns]
    if missing:
        return CheckOutcome(TIMESTAMP_PARTS, False, "ERROR", f"column(s) missing: {missing}")
    stamps = frame[column]
    if not isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = pd.to_datetime(stamps, utc=True, errors="coerce", format="ISO8601")
    local = stamps.dt.tz_convert(timezone)
    bad = pd.Series(False, index=frame.index)
    mismatches: dict[str, int] = {}
    for restated, part in parts.items():
        stated = pd.to_numeric(frame[restated], errors="coerce")
        expected = getattr(local.dt, part)
        wrong = (stated.notna() & expected.notna() & (stated != expected)).astype(bool)
        mismatches[restated] = int(wrong.sum())
        bad |= wrong
    details: dict[str, Any] = {"timezone": timezone, "parts": dict(parts), "mismatches": mismatches}
    if not bad.any():
        return CheckOutcome(
            TIMESTAMP_PARTS,
            True,
            "ERROR",
            f"{', '.join(parts)} agree with {column} ({timezone})",
            details,
        )
    shift = ""
    hour_columns = [c for c, p in parts.items() if p == "hour"]
    if hour_columns:
        stated = pd.to_numeric(frame.loc[bad, hour_columns[0]], errors="coerce")
        offsets = ((stated - local[bad].dt.hour) % 24).dropna()
        if len(offsets):
            hours = int(offsets.mode().iloc[0])
            hours = hours - 24 if hours > 12 else hours
            details["typical_shift_hours"] = hours
            way = "behind" if hours > 0 else "ahead of"
            shift = f"; {column} is typically {abs(hours)} h {way} {hour_columns[0]}"
    examples = pd.DataFrame(
        {"row": frame.index[bad], column: local[bad].astype(str)}
        | {c: frame.loc[bad, c] for c in parts}
    )
    details["examples"] = _records(examples, max_cases)
    wrong_columns = ", ".join(c for c, n in mismatches.items() if n)
    return CheckOutcome(
        TIMESTAMP_PARTS,
        False,
        "ERROR",
        f"{int(bad.sum())} row(s) where {column} read in {timezone} disagrees with "
        f"{wrong_columns}{shift}",
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
    same_weekday: list[int] | None = None,
) -> CheckOutcome:
    """Row count as a ratio to a trailing median; outside ``error_range`` it blocks.

    Args:
        rows: rows of the batch.
        history: row counts of the accepted partitions of the trailing window.
        min_history: fewest partitions a median may rest on; with fewer it is not judged.
        warn_range: (low, high) ratios outside which the check warns.
        error_range: (low, high) ratios outside which the check fails with ERROR.
        same_weekday: row counts of the window's accepted partitions on the batch's
            weekday; used instead of ``history`` once it holds ``min_history`` of them.
    """
    if same_weekday is not None and len(same_weekday) >= min_history:
        basis, counts = "same weekday", same_weekday
    else:
        basis, counts = "trailing days", history
    details: dict[str, Any] = {
        "rows": rows,
        "history_partitions": len(history),
        "same_weekday_partitions": len(same_weekday or []),
        "warn_range": list(warn_range),
        "error_range": list(error_range),
    }
    if len(counts) < min_history:
        return CheckOutcome(
            VOLUME,
            True,
            "WARN",
            f"{rows} rows; only {len(history)} earlier partition(s), need {min_history} to judge",
            details,
        )
    base = float(median(counts))
    # an hour that is empty every day (the night, granularity: hourly) is as usual when empty
    ratio = rows / base if base else (1.0 if rows == 0 else float("inf"))
    details |= {"trailing_median": base, "ratio": ratio, "basis": basis}
    text = f"{rows} rows, {ratio:.2f}x the median of {base:g} ({basis}, {len(counts)} days)"
    if not error_range[0] <= ratio <= error_range[1]:
        return CheckOutcome(
            VOLUME,
            False,
            "ERROR",
            f"{text}: outside {error_range}; a partial or inflated export? "
            "If the day is real, override the volume check (who, why)",
            details,
        )
    if not warn_range[0] <= ratio <= warn_range[1]:
        return CheckOutcome(VOLUME, False, "WARN", f"{text}: outside {warn_range}", details)
    return CheckOutcome(VOLUME, True, "WARN", text, details)
