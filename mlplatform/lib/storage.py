"""The platform's file layout: landing zone, quarantine, warehouse and reports.

```
<data>/landing/<problem>/<source>/<YYYY-MM-DD>/<files>   one folder per source per day
<data>/landing/<problem>/<source>/snapshot/<files>       reference sources
<data>/quarantine/<problem>/<source>/<partition>/<UTC stamp>/   rejected batch + report.json
<data>/warehouse/<problem>/<table>/<partition>.parquet   tables written by assets
<data>/reports/<problem>/<kind>/...                      HTML and JSON reports
```
Writes go to a temporary name first and are renamed into place, so a crash never
leaves half a file where a reader would take it for a whole one.
"""

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

SNAPSHOT = "snapshot"
LANDED_SUFFIXES = (".csv", ".parquet")


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
        self, problem: str, source: str, day: date | None, frame: "pd.DataFrame", fmt: str
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
        """Load one partition of a table; the error says which one is missing."""
        import pandas as pd

        path = self.table_path(problem, table, day)
        if not path.exists():
            raise FileNotFoundError(
                f"{problem}/{table} has no partition {partition_label(day)} (expected {path})"
            )
        return pd.read_parquet(path)

    def read_days(self, problem: str, table: str, days: Iterable[date]) -> "pd.DataFrame":
        """The partitions of ``table`` that exist among ``days``, concatenated (maybe empty)."""
        import pandas as pd

        paths = [self.table_path(problem, table, d) for d in days]
        frames = [pd.read_parquet(p) for p in paths if p.exists()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def write_latest(self, problem: str, table: str, payload: dict[str, Any]) -> Path:
        """Point readers at a table's newest version (``<table>/latest.json``)."""
        return write_json(self.root / "warehouse" / problem / table / "latest.json", payload)

    def read_latest(self, problem: str, table: str) -> dict[str, Any] | None:
        """The newest version's pointer of a table, or None if there is none yet."""
        path = self.root / "warehouse" / problem / table / "latest.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def partitions(self, problem: str, table: str) -> list[date]:
        """Days for which a daily table has a partition, oldest first."""
        folder = self.root / "warehouse" / problem / table
        return sorted(date.fromisoformat(p.stem) for p in folder.glob("????-??-??.parquet"))

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
