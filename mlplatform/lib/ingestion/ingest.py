"""Ingesting one landed batch: read, validate, store, and quarantine what is rejected.

The landing zone is never modified: a rejected batch stays where it landed and a copy
with its validation report goes to the quarantine, so nothing is lost and re-landing a
corrected file recovers.
"""

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa

from mlplatform.errors import PlatformError
from mlplatform.lib.checks import override as release
from mlplatform.lib.ingestion import validation as v
from mlplatform.lib.ingestion.hours import day_of, hour_keys, same_hour_before
from mlplatform.lib.ingestion.reading import MalformedFileError, read_batch
from mlplatform.lib.names import NULL_RATES, VOLUME, raw_table
from mlplatform.lib.storage import DataLake, partition_label, write_json
from mlplatform.spec import SourceSpec


@dataclass(frozen=True)
class Override:
    """A user's explicit release of named failed checks of one batch: who and why."""

    checks: tuple[str, ...]
    by: str
    reason: str


class NothingLandedError(PlatformError, FileNotFoundError):
    """No export file has landed for the partition."""


class RejectedBatchError(PlatformError, ValueError):
    """A typed table was asked for a raw partition whose batch was rejected."""


@dataclass(frozen=True)
class Batch:
    """One ingested partition of one source."""

    source: str
    partition: str
    files: list[Path]
    frame: pd.DataFrame
    outcomes: list[v.CheckOutcome]
    content_hash: str
    quarantine: Path | None
    overridden: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        """No ERROR check failed."""
        return not any(o.blocks for o in self.outcomes)

    @property
    def failed(self) -> list[str]:
        """Names of the ERROR checks that failed."""
        return [o.name for o in self.outcomes if o.blocks]


def content_hash(files: list[Path]) -> str:
    """Digest of the landed files' names and bytes: the batch's data version."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# Checks a user may release by hand (who, why): they judge whether a day is plausible, not
# whether its rows can be typed; schema, keys and timestamps guard the typed table itself.
OVERRIDABLE = (VOLUME, NULL_RATES)


def _history(
    lake: DataLake, problem: str, source: str, day: date | str, days: int, timezone: str
) -> list[tuple[date, int]]:
    """(day, rows) of the accepted partitions of the ``days`` before ``day``, newest first.

    For an hourly key, the same local hour of each of those days (``hours.same_hour_before``).
    """
    if isinstance(day, str):
        earlier_partitions = same_hour_before(day, timezone, days)
    else:
        earlier_partitions = [(day - timedelta(days=b),) * 2 for b in range(1, days + 1)]
    counts = []
    for earlier, partition in earlier_partitions:
        report = lake.read_batch_report(problem, raw_table(source), partition)
        if report and report["accepted"]:
            counts.append((earlier, int(report["rows"])))
    return counts


def check_batch(
    frame: pd.DataFrame,
    spec: SourceSpec,
    model: type[pa.DataFrameModel],
    day: date | str | None,
    timezone: str,
    history: list[tuple[date, int]],
    now: datetime,
    max_cases: int = 20,
) -> list[v.CheckOutcome]:
    """Every check the spec asks of ``source``, on one batch.

    ``day`` is the partition: a local day, an hourly key (``lib.ingestion.hours``) or None
    (a snapshot). ``history`` holds (day, rows) of the accepted partitions of the volume
    rule's window (for an hour, the same hour of earlier days).
    """
    typed, schema = v.validate_schema(frame, model, max_cases, spec.naive_timezone)
    # Keys and timestamps are compared typed when the schema allows it, so that two
    # spellings of one timestamp count as a duplicate.
    basis = typed
    if basis is None:
        basis = v.localize_timestamps(frame, model, spec.naive_timezone)[0]
    outcomes = [schema, v.check_duplicates(basis, spec.natural_key, max_cases)]
    if day is not None and spec.event_timestamp:
        outcomes.append(
            v.check_timestamps(basis, spec.event_timestamp, day, timezone, now, max_cases)
        )
    if spec.event_timestamp and spec.timestamp_parts:
        outcomes.append(
            v.check_timestamp_parts(
                basis, spec.event_timestamp, dict(spec.timestamp_parts), timezone, max_cases
            )
        )
    if spec.max_null_rate:
        outcomes.append(v.check_null_rates(frame, spec.max_null_rate))
    if day is not None and spec.volume:
        rule = spec.volume
        weekday = (day_of(day) if isinstance(day, str) else day).weekday()
        same_weekday = (
            [rows for d, rows in history if d.weekday() == weekday]
            if rule.basis == "same_weekday"
            else None
        )
        outcomes.append(
            v.check_volume(
                len(frame),
                [rows for _, rows in history],
                min_history=rule.min_history,
                warn_range=rule.warn_range,
                error_range=rule.error_range,
                same_weekday=same_weekday,
            )
        )
    return outcomes


def ingest_batch(
    lake: DataLake,
    problem: str,
    source: str,
    spec: SourceSpec,
    model: type[pa.DataFrameModel],
    day: date | str | None,
    timezone: str,
    now: datetime | None = None,
    override: Override | None = None,
    run_id: str | None = None,
) -> Batch:
    """Read the landed files of a partition, validate them and store the batch as landed.

    ``day`` is a local day, an hourly key (``granularity: hourly``; its timestamps are
    checked against the hour, its volume against the same hour of earlier days) or None.

    ``override`` releases named failed checks (``OVERRIDABLE`` only) as warnings that
    record who and why; ``run_id`` (the run that ingests) is recorded in the batch report.

    Raises:
        NothingLandedError: nothing landed for the partition.
        MalformedFileError: a file cannot be read at all (after quarantining the files).
        ValueError: an override of a check outside ``OVERRIDABLE`` or without who/why.
    """
    now = now or datetime.now(UTC)
    label = partition_label(day)
    files = lake.landed_files(problem, source, day)
    if not files:
        raise NothingLandedError(
            f"nothing landed for {problem}/{source} {label}: "
            f"{lake.landing_dir(problem, source, day)} has no .csv or .parquet file"
        )
    report: dict[str, Any] = {
        "problem": problem,
        "source": source,
        "partition": label,
        "files": [str(p) for p in files],
        "checked_at": now.isoformat(),
        "run_id": run_id,
    }
    digest = content_hash(files)
    try:
        frame = read_batch(files, spec.null_values)
    except MalformedFileError as exc:
        report.update(
            {"accepted": False, "rows": 0, "content_hash": digest, "error": str(exc), "checks": []}
        )
        report["quarantine"] = str(lake.quarantine(problem, source, day, files, report))
        # Recorded beside the raw table too, so no typed table is built from an older batch.
        write_json(lake.batch_report_path(problem, raw_table(source), day), report)
        raise
    history = (
        _history(lake, problem, source, day, spec.volume.trailing_days, timezone)
        if (day is not None and spec.volume)
        else []
    )
    outcomes = check_batch(frame, spec, model, day, timezone, history, now)
    overridden: list[str] = []
    if override is not None:
        outcomes, overridden = release(
            outcomes, list(override.checks), override.by, override.reason, OVERRIDABLE
        )
    accepted = not any(o.blocks for o in outcomes)
    report.update(
        {
            "accepted": accepted,
            "rows": len(frame),
            "content_hash": digest,
            "checks": [o.to_dict() for o in outcomes],
        }
    )
    if overridden and override is not None:
        report["override"] = {"checks": overridden, "by": override.by, "reason": override.reason}
    quarantine = None if accepted else lake.quarantine(problem, source, day, files, report)
    if quarantine is not None:
        report["quarantine"] = str(quarantine)
    lake.write_table(problem, raw_table(source), day, frame)
    write_json(lake.batch_report_path(problem, raw_table(source), day), report)
    return Batch(source, label, files, frame, outcomes, digest, quarantine, overridden)


def load_accepted(
    lake: DataLake,
    problem: str,
    source: str,
    model: type[pa.DataFrameModel],
    day: date | str | None,
    naive_zone: str | None = None,
) -> pd.DataFrame:
    """The typed table of an accepted raw partition; refuses a rejected one.

    ``naive_zone`` is the source's ``naive_timezone``: the batch is typed the way its
    schema check typed it.
    """
    label = partition_label(day)
    report = lake.read_batch_report(problem, raw_table(source), day)
    if report is None:
        raise RejectedBatchError(f"{problem}/{raw_table(source)} {label} was never ingested")
    if not report["accepted"]:
        failed = [
            c["name"] for c in report["checks"] if not c["passed"] and c["severity"] == "ERROR"
        ]
        raise RejectedBatchError(
            f"{problem}/{raw_table(source)} {label} was rejected by "
            f"{failed or report.get('error')}; "
            f"the batch is quarantined at {report.get('quarantine', 'the quarantine')}. "
            f"Re-land a corrected file and materialize {raw_table(source)} again."
        )
    typed, schema = v.validate_schema(
        lake.read_table(problem, raw_table(source), day), model, naive_zone=naive_zone
    )
    if typed is None:  # the batch passed this check when it was ingested
        raise RejectedBatchError(f"{problem}/{raw_table(source)} {label}: {schema.reason}")
    return typed


def load_accepted_hours(
    lake: DataLake,
    problem: str,
    source: str,
    model: type[pa.DataFrameModel],
    day: date,
    timezone: str,
    naive_zone: str | None = None,
) -> pd.DataFrame:
    """The typed table of a day built from its hourly batches (``granularity: hourly``).

    Every hour of the local day (23 to 25 of them) must have been ingested and accepted;
    the hours' typed rows are concatenated in hour order, with the columns of the schema.

    Raises:
        RejectedBatchError: an hour was never ingested, or its newest landing was rejected
            (the message names the hour and its quarantine folder).
    """
    frames = [
        load_accepted(lake, problem, source, model, key, naive_zone)
        for key in hour_keys(day, timezone)
    ]
    non_empty = [f for f in frames if not f.empty]
    return pd.concat(non_empty, ignore_index=True) if non_empty else frames[0]


_CASE_ORDER = {"row": 0, "column": 1, "check": 2, "value": 3}


def describe_rejection(report: dict[str, Any], max_cases: int = 3) -> list[str]:
    """Lines for a person about a rejected batch; empty for an accepted one.

    The files, each blocking check's reason with its first ``max_cases`` failure cases,
    and the quarantine folder.
    """
    if report.get("accepted", True):
        return []
    lines = [f"{report['source']} {report['partition']}: rejected"]
    lines += [f"  file: {f}" for f in report.get("files", [])]
    if report.get("error"):
        lines.append(f"  unreadable: {report['error']}")
    for check in report.get("checks", []):
        if check["passed"] or check["severity"] != "ERROR":
            continue
        lines.append(f"  check {check['name']}: {check['reason']}")
        details = check.get("details", {})
        cases = details.get("failure_cases") or details.get("examples") or []
        for case in cases[:max_cases]:
            # where first (row, column), then what; the stored report sorts its keys
            keys = sorted(case, key=lambda k: (_CASE_ORDER.get(k, len(_CASE_ORDER)), k))
            lines.append("    " + ", ".join(f"{k}={case[k]}" for k in keys))
        if details.get("failure_case_count", 0) > max_cases:
            lines.append(f"    ... {details['failure_case_count'] - max_cases} more in the report")
        elif len(cases) > max_cases:
            lines.append(f"    ... {len(cases) - max_cases} more examples in the report")
    if report.get("quarantine"):
        lines.append(f"  quarantined at: {report['quarantine']}")
    return lines
