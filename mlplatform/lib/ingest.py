"""Ingesting one landed batch: read, validate, store, and quarantine what is rejected.

The landing zone is never modified: a rejected batch stays where it landed and a copy
with its validation report goes to the quarantine, so nothing is lost and re-landing a
corrected file recovers.
"""

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa

from mlplatform.lib import validation as v
from mlplatform.lib.names import raw_table
from mlplatform.lib.reading import MalformedFileError, read_batch
from mlplatform.lib.storage import DataLake, partition_label, write_json
from mlplatform.spec import SourceSpec


class NothingLandedError(FileNotFoundError):
    """No export file has landed for the partition."""


class RejectedBatchError(ValueError):
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


def _history(lake: DataLake, problem: str, source: str, day: date, days: int) -> list[int]:
    counts = []
    for back in range(1, days + 1):
        report = lake.read_batch_report(problem, raw_table(source), day - timedelta(days=back))
        if report and report["accepted"]:
            counts.append(int(report["rows"]))
    return counts


def check_batch(
    frame: pd.DataFrame,
    spec: SourceSpec,
    model: type[pa.DataFrameModel],
    day: date | None,
    timezone: str,
    history: list[int],
    now: datetime,
    max_cases: int = 20,
) -> list[v.CheckOutcome]:
    """Every check the spec asks of ``source``, on one batch."""
    typed, schema = v.validate_schema(frame, model, max_cases)
    # Keys and timestamps are compared typed when the schema allows it, so that two
    # spellings of one timestamp count as a duplicate.
    basis = typed if typed is not None else frame
    outcomes = [schema, v.check_duplicates(basis, spec.natural_key, max_cases)]
    if day is not None and spec.event_timestamp:
        outcomes.append(
            v.check_timestamps(basis, spec.event_timestamp, day, timezone, now, max_cases)
        )
    if spec.max_null_rate:
        outcomes.append(v.check_null_rates(frame, spec.max_null_rate))
    if day is not None and spec.volume:
        rule = spec.volume
        outcomes.append(
            v.check_volume(
                len(frame),
                history,
                min_history=rule.min_history,
                warn_range=rule.warn_range,
                error_range=rule.error_range,
            )
        )
    return outcomes


def ingest_batch(
    lake: DataLake,
    problem: str,
    source: str,
    spec: SourceSpec,
    model: type[pa.DataFrameModel],
    day: date | None,
    timezone: str,
    now: datetime | None = None,
) -> Batch:
    """Read the landed files of a partition, validate them and store the batch as landed.

    Raises ``NothingLandedError`` when nothing landed and ``MalformedFileError`` (after
    quarantining the files) when a file cannot be read at all.
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
    }
    digest = content_hash(files)
    try:
        frame = read_batch(files)
    except MalformedFileError as exc:
        report.update(
            {"accepted": False, "rows": 0, "content_hash": digest, "error": str(exc), "checks": []}
        )
        report["quarantine"] = str(lake.quarantine(problem, source, day, files, report))
        # Recorded beside the raw table too, so no typed table is built from an older batch.
        write_json(lake.batch_report_path(problem, raw_table(source), day), report)
        raise
    history = (
        _history(lake, problem, source, day, spec.volume.trailing_days)
        if (day is not None and spec.volume)
        else []
    )
    outcomes = check_batch(frame, spec, model, day, timezone, history, now)
    accepted = not any(o.blocks for o in outcomes)
    report.update(
        {
            "accepted": accepted,
            "rows": len(frame),
            "content_hash": digest,
            "checks": [o.to_dict() for o in outcomes],
        }
    )
    quarantine = None if accepted else lake.quarantine(problem, source, day, files, report)
    if quarantine is not None:
        report["quarantine"] = str(quarantine)
    lake.write_table(problem, raw_table(source), day, frame)
    write_json(lake.batch_report_path(problem, raw_table(source), day), report)
    return Batch(source, label, files, frame, outcomes, digest, quarantine)


def load_accepted(
    lake: DataLake, problem: str, source: str, model: type[pa.DataFrameModel], day: date | None
) -> pd.DataFrame:
    """The typed table of an accepted raw partition; refuses a rejected one."""
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
    return model.validate(lake.read_table(problem, raw_table(source), day))
