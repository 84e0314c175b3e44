"""The platform's file layout: landing zone, quarantine, warehouse and reports.

```
<data>/landing/<problem>/<source>/<YYYY-MM-DD>/<files>   one folder per source per day
<data>/landing/<problem>/<source>/<YYYY-MM-DD-HH:MM>/<files>   per hour (granularity: hourly)
<data>/landing/<problem>/<source>/snapshot/<files>       reference sources
<data>/quarantine/<problem>/<source>/<partition>/<UTC stamp>/   rejected batch + report.json
<data>/warehouse/<problem>/<table>/<partition>.parquet   tables written by assets
<data>/warehouse/<problem>/raw_<source>/<day>.report.json   the newest landing's checks
<data>/warehouse/<problem>/raw_<source>/<day>.kept.json     who kept the previous table, why
<data>/reports/<problem>/<kind>/...                      HTML and JSON reports
```
Writes go to a temporary name first and are renamed into place, so a crash never
leaves half a file where a reader would take it for a whole one.

**A day whose newest landing was rejected is not readable.** The typed table of a
source (``<source>/<day>.parquet``) may still hold the previously accepted batch, but
once a newer landing of that day fails a blocking check, the lake refuses it:
``read_table`` raises ``RejectedDayError`` (naming the day and the rejected landing's
quarantine folder), ``read_days``, ``partitions`` and ``has_partition`` leave the day out,
until a corrected landing is accepted or someone keeps the previous table (``keep``,
with who and why). The rule lives here, so no reader can forget it.
"""

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.errors import PlatformError, UsageError

if TYPE_CHECKING:
    import pandas as pd

SNAPSHOT = "snapshot"
LANDED_SUFFIXES = (".csv", ".parquet")
# the raw table of a source holds its batches as landed, and their validation reports
RAW_PREFIX = "raw_"


class RejectedDayError(PlatformError, FileNotFoundError):
    """A table's day is not readable: its newest landing was rejected and not overridden."""


class NothingToKeepError(PlatformError, ValueError):
    """``keep`` asked for a day whose newest landing was not rejected, or with no table."""


@dataclass(frozen=True)
class Rejection:
    """The newest landing of one source's day, rejected by a blocking check.

    Attributes:
        problem: The problem's name.
        source: The source (its typed table has the same name).
        day: The partition label (ISO day).
        failed: Names of the failed ERROR checks, or the read error of an unreadable file.
        quarantine: Folder holding the rejected files and their report.
        content_hash: Digest of the rejected landing (see ``lib.ingestion.ingest.content_hash``).
        kept: Who kept the previously accepted table despite this landing, and why
            (``by``, ``reason``, ``at``), or None while the day is blocked.
    """

    problem: str
    source: str
    day: str
    failed: list[str]
    quarantine: str
    content_hash: str
    kept: dict[str, Any] | None = None

    @property
    def blocks(self) -> bool:
        """True while nobody kept the previous table: the day is unreadable downstream."""
        return self.kept is None

    def message(self) -> str:
        """One paragraph: which day, why, where the landing is, and the two ways out."""
        return (
            f"{self.problem}/{self.source} {self.day} is not readable: its newest landing was "
            f"rejected by {', '.join(self.failed) or 'its checks'} and is quarantined at "
            f"{self.quarantine}. Re-land a corrected file (it is ingested again), or keep the "
            f"previously accepted table: mlplatform keep --problem {self.problem} "
            f"--source {self.source} --day {self.day} --by WHO --reason WHY"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (status, metadata)."""
        return {
            "day": self.day,
            "source": self.source,
            "failed": self.failed,
            "quarantine": self.quarantine,
            "content_hash": self.content_hash,
            "kept": self.kept,
        }


def _failed_checks(report: dict[str, Any]) -> list[str]:
    failed = [
        str(c.get("name"))
        for c in report.get("checks", [])
        if not c.get("passed", True) and c.get("severity") == "ERROR"
    ]
    return failed or ([str(report["error"])] if report.get("error") else [])


def partition_label(day: date | str | None) -> str:
    """Folder/file label of a partition: the ISO day, or ``snapshot`` for reference data."""
    if day is None:
        return SNAPSHOT
    return day.isoformat() if isinstance(day, date) else day


def _atomic_write(path: Path, write: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)
    return path


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    text = json.dumps(payload, indent=2, default=str, sort_keys=True)
    return _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@dataclass(frozen=True)
class DataLake:
    """All of the platform's files under one root folder."""

    root: Path

    # -- landing zone ------------------------------------------------------------------
    def landing_dir(self, problem: str, source: str, day: date | str | None) -> Path:
        """The folder one source's export for one day (or its snapshot) lands in."""
        return self.root / "landing" / problem / source / partition_label(day)

    def landed_files(self, problem: str, source: str, day: date | str | None) -> list[Path]:
        """The export files landed for a partition, in name order (hidden files ignored)."""
        folder = self.landing_dir(problem, source, day)
        if not folder.is_dir():
            return []
        return sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix in LANDED_SUFFIXES
        )

    def land(
        self, problem: str, source: str, day: date | str | None, frame: "pd.DataFrame", fmt: str
    ) -> Path:
        """Write one export file for a partition, replacing what was landed before."""
        folder = self.landing_dir(problem, source, day)
        for old in self.landed_files(problem, source, day):
            old.unlink()
        name = f"{source}_{partition_label(day)}.{fmt}"
        if fmt == "csv":
            return _atomic_write(folder / name, lambda tmp: frame.to_csv(tmp, index=False))
        return _atomic_write(folder / name, lambda tmp: frame.to_parquet(tmp, index=False))

    def landed_days(self, problem: str, source: str) -> list[date]:
        """Days with at least one landed file for ``source``."""
        base = self.root / "landing" / problem / source
        days = []
        for folder in sorted(base.glob("????-??-??")) if base.is_dir() else []:
            if self.landed_files(problem, source, folder.name):
                days.append(date.fromisoformat(folder.name))
        return days

    def landed_hours(self, problem: str, source: str) -> list[str]:
        """Hourly partition keys with at least one landed file for ``source``, in order.

        Keys as ``lib.ingestion.hours`` names them (``YYYY-MM-DD-HH:MM``, with a UTC offset
        for the repeated hour when summer time ends); for ``granularity: hourly``.
        """
        base = self.root / "landing" / problem / source
        folders = sorted(base.glob("????-??-??-??:??*")) if base.is_dir() else []
        return [f.name for f in folders if self.landed_files(problem, source, f.name)]

    # -- quarantine --------------------------------------------------------------------
    def quarantine(
        self,
        problem: str,
        source: str,
        day: date | str | None,
        files: list[Path],
        report: dict[str, Any],
    ) -> Path:
        """Copy a rejected batch and its validation report aside; the landing is untouched."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        folder = self.root / "quarantine" / problem / source / partition_label(day) / stamp
        folder.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copy2(path, folder / path.name)
        write_json(folder / "report.json", {**report, "quarantine": str(folder)})
        return folder

    def quarantined(self, problem: str) -> list[Path]:
        """Every quarantined batch of a problem (one folder each), oldest first per source."""
        base = self.root / "quarantine" / problem
        return sorted(p.parent for p in base.glob("*/*/*/report.json")) if base.is_dir() else []

    # -- warehouse ---------------------------------------------------------------------
    def table_path(self, problem: str, table: str, day: date | str | None) -> Path:
        """Parquet file of one partition of a warehouse table."""
        return self.root / "warehouse" / problem / table / f"{partition_label(day)}.parquet"

    def write_table(
        self, problem: str, table: str, day: date | str | None, frame: "pd.DataFrame"
    ) -> Path:
        """Store one partition of a table as Parquet."""
        path = self.table_path(problem, table, day)
        return _atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))

    def read_table(self, problem: str, table: str, day: date | str | None) -> "pd.DataFrame":
        """Load one partition of a table; the error says which one is missing.

        Raises:
            RejectedDayError: the day's newest landing was rejected (and nobody kept the
                previous table); the message names the day and the quarantine folder.
            FileNotFoundError: the partition does not exist.
        """
        import pandas as pd

        path = self.table_path(problem, table, day)
        if (blocked := self.blocking(problem, table, day)) is not None:
            raise RejectedDayError(blocked.message())
        if not path.exists():
            raise FileNotFoundError(
                f"{problem}/{table} has no partition {partition_label(day)} (expected {path})"
            )
        return pd.read_parquet(path)

    def read_days(self, problem: str, table: str, days: Iterable[date]) -> "pd.DataFrame":
        """The readable partitions of ``table`` among ``days``, concatenated (maybe empty).

        A day that does not exist, or whose newest landing was rejected, is left out (as if
        missing); ``blocked_days`` says which were left out for a rejection, and why.
        """
        import pandas as pd

        readable = [d for d in days if self.has_partition(problem, table, d)]
        frames = [pd.read_parquet(self.table_path(problem, table, d)) for d in readable]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def write_latest(self, problem: str, table: str, payload: dict[str, Any]) -> Path:
        """Point readers at a table's newest version (``<table>/latest.json``)."""
        return write_json(self.root / "warehouse" / problem / table / "latest.json", payload)

    def read_latest(self, problem: str, table: str) -> dict[str, Any] | None:
        """The newest version's pointer of a table, or None if there is none yet."""
        path = self.root / "warehouse" / problem / table / "latest.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def partitions(self, problem: str, table: str) -> list[date]:
        """Days for which a daily table has a readable partition, oldest first.

        Days whose newest landing was rejected are left out (see ``blocking``).
        """
        folder = self.root / "warehouse" / problem / table
        days = sorted(date.fromisoformat(p.stem) for p in folder.glob("????-??-??.parquet"))
        return [d for d in days if self.blocking(problem, table, d) is None]

    def has_partition(self, problem: str, table: str, day: date | str | None) -> bool:
        """True if the partition exists and its newest landing was not rejected."""
        return (
            self.table_path(problem, table, day).exists()
            and self.blocking(problem, table, day) is None
        )

    # -- rejected landings -------------------------------------------------------------
    def rejection(self, problem: str, table: str, day: date | str | None) -> Rejection | None:
        """The rejection of the newest landing behind ``table``'s day, kept or not.

        ``table`` is a source's typed table (its raw table holds the landings' reports);
        any other table (features, training sets) has no landing and returns None.
        """
        if table.startswith(RAW_PREFIX) or "/" in table:
            return None
        report = self.day_batch_report(problem, RAW_PREFIX + table, day)
        if report is None or report.get("accepted", True):
            return None
        digest = str(report.get("content_hash", ""))
        kept = self._kept(problem, table, day)
        # a keep answers one rejected landing; a newer rejected landing blocks again
        valid = kept if kept is not None and kept.get("content_hash") == digest else None
        return Rejection(
            problem=problem,
            source=table,
            day=partition_label(day),
            failed=_failed_checks(report),
            quarantine=str(report.get("quarantine", "")),
            content_hash=digest,
            kept=valid,
        )

    def day_batch_report(
        self, problem: str, table: str, day: date | str | None
    ) -> dict[str, Any] | None:
        """``read_batch_report``; for a day landed hour by hour, the day's from its hours.

        With ``granularity: hourly`` a day has no report of its own: its hours' reports
        make it, accepted when every hour was, with the first rejected hour's checks and
        quarantine otherwise, ``rows`` summed and ``content_hash`` a digest of the hours'
        (any hour ingested again with new content changes it). None if nothing was ingested.
        """
        report = self.read_batch_report(problem, table, day)
        label = partition_label(day)
        if report is not None or len(label) != len("YYYY-MM-DD"):
            return report
        folder = self.root / "warehouse" / problem / table
        paths = sorted(folder.glob(f"{label}-??:??*.report.json"))
        if not paths:
            return None
        hours = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
        rejected = [h for h in hours if not h.get("accepted", True)]
        token = "|".join(f"{h.get('partition')}={h.get('content_hash')}" for h in hours)
        return {
            **(rejected[0] if rejected else {}),
            "partition": label,
            "hours": [h.get("partition") for h in hours],
            "accepted": not rejected,
            "rows": sum(int(h.get("rows", 0)) for h in hours),
            "content_hash": hashlib.sha256(token.encode()).hexdigest()[:16],
        }

    def blocking(self, problem: str, table: str, day: date | str | None) -> Rejection | None:
        """The rejection that makes ``table``'s day unreadable now, or None if readable."""
        found = self.rejection(problem, table, day)
        return found if found is not None and found.blocks else None

    def blocked_days(self, problem: str, table: str, days: Iterable[date]) -> list[Rejection]:
        """Among ``days``, those ``read_days`` leaves out because of a rejected landing."""
        return [r for d in days if (r := self.blocking(problem, table, d)) is not None]

    def rejections(self, problem: str, source: str) -> list[Rejection]:
        """Every day of ``source`` whose newest landing was rejected (kept or not), by day."""
        folder = self.root / "warehouse" / problem / (RAW_PREFIX + source)
        labels = sorted(p.name.split(".")[0] for p in folder.glob("*.report.json"))
        return [r for label in labels if (r := self.rejection(problem, source, label))]

    def _kept_path(self, problem: str, source: str, day: date | str | None) -> Path:
        return self.table_path(problem, RAW_PREFIX + source, day).with_suffix(".kept.json")

    def _kept(self, problem: str, source: str, day: date | str | None) -> dict[str, Any] | None:
        path = self._kept_path(problem, source, day)
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def keep(
        self, problem: str, source: str, day: date | str, by: str, reason: str
    ) -> dict[str, Any]:
        """Keep the previously accepted table of a day whose newest landing was rejected.

        The record (who, why, when, and which rejected landing it answers) is written beside
        the raw table; the day is readable again until another landing of it is rejected.

        Returns:
            The record written.

        Raises:
            UsageError: no who or why.
            NothingToKeepError: the newest landing of the day was not rejected, or no
                landing of that day was ever accepted (there is no table to keep).
        """
        if not by.strip() or not reason.strip():
            raise UsageError("keeping a rejected day's previous table needs --by and --reason")
        label = partition_label(day)
        found = self.rejection(problem, source, day)
        if found is None:
            raise NothingToKeepError(
                f"{problem}/{source} {label}: its newest landing was not rejected; nothing to keep"
            )
        table = self.table_path(problem, source, day)
        if not table.exists():
            raise NothingToKeepError(
                f"{problem}/{source} {label}: no landing of that day was ever accepted, so "
                f"there is no table to keep; re-land a corrected file (the rejected one is at "
                f"{found.quarantine})"
            )
        record = {
            "by": by.strip(),
            "reason": reason.strip(),
            "at": datetime.now(UTC).isoformat(),
            "content_hash": found.content_hash,
            "quarantine": found.quarantine,
            "table": str(table),
        }
        write_json(self._kept_path(problem, source, day), record)
        return record

    def input_versions(
        self, problem: str, sources: Iterable[str], days: Iterable[date]
    ) -> dict[str, str]:
        """``"<source>/<day>" → content hash`` of the accepted landings a build read.

        Stored with a derived table (e.g. the training set), it tells later whether a day
        it read was ingested again with other content (the table is then stale).
        """
        out: dict[str, str] = {}
        for source in sources:
            for day in days:
                report = self.day_batch_report(problem, RAW_PREFIX + source, day)
                if report is not None:
                    out[f"{source}/{partition_label(day)}"] = str(report.get("content_hash", ""))
        return out

    def batch_report_path(self, problem: str, table: str, day: date | str | None) -> Path:
        """The validation report stored beside a raw table's partition."""
        return self.table_path(problem, table, day).with_suffix(".report.json")

    def read_batch_report(
        self, problem: str, table: str, day: date | str | None
    ) -> dict[str, Any] | None:
        """The stored validation report of a raw partition, or None if never ingested."""
        path = self.batch_report_path(problem, table, day)
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def reports_dir(self, problem: str, kind: str) -> Path:
        """Folder for a problem's reports of one kind (drift, validation...)."""
        return self.root / "reports" / problem / kind
