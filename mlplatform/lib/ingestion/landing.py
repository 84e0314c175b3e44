"""Landing a problem's exports: one file per source per day, plus reference snapshots.

With ``partitioning.granularity: hourly``, one file per source per local hour instead
(``hour_exports``).

Also what landed but was not ingested yet: a landed day is identified by its content
hash, so a corrected file for a day already ingested (accepted or rejected) is new.
"""

import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from mlplatform.errors import UsageError
from mlplatform.lib.ingestion.hours import day_of, hour_keys, hour_start
from mlplatform.lib.storage import DataLake, partition_label
from mlplatform.problems import Problem

if TYPE_CHECKING:
    import pandas as pd


def days(start: date, end: date) -> Iterator[date]:
    """Every day from ``start`` to ``end``, both included."""
    if end < start:
        raise UsageError(f"end {end} is before start {start}")
    for offset in range((end - start).days + 1):
        yield start + timedelta(days=offset)


def check_range(problem: Problem, start: date, end: date) -> None:
    """Refuse days outside the problem's partitions before anything runs.

    Raises:
        UsageError: ``end`` before ``start``, or a day outside the spec's partitioning.
    """
    first, last = problem.spec.partitioning.start, problem.spec.partitioning.end
    last -= timedelta(days=1)
    if end < start:
        raise UsageError(f"end {end} is before start {start}")
    if start < first or end > last:
        asked = start if start == end else f"{start}..{end}"
        raise UsageError(f"{problem.name} has data for {first}..{last}, not {asked}")


def land(lake: DataLake, problem: Problem, start: date, end: date) -> dict[str, int]:
    """Write the daily exports of ``start``..``end`` and the reference snapshots.

    Returns the number of rows landed per source. Landing a day again replaces its files.
    """
    spec = problem.spec
    check_range(problem, start, end)
    rows: dict[str, int] = {}
    for source, source_spec in spec.sources.items():
        if source_spec.kind == "reference":
            frame = problem.export_reference(source)
            lake.land(problem.name, source, None, frame, source_spec.format)
            rows[source] = len(frame)
            continue
        rows[source] = 0
        for day in days(start, end):
            if spec.partitioning.granularity == "hourly":
                for key, frame in hour_exports(problem, source, day).items():
                    lake.land(problem.name, source, key, frame, source_spec.format)
                    rows[source] += len(frame)
                continue
            frame = problem.export_day(source, day)
            lake.land(problem.name, source, day, frame, source_spec.format)
            rows[source] += len(frame)
    return rows


def hour_exports(problem: Problem, source: str, day: date) -> "dict[str, pd.DataFrame]":
    """``hourly key → export`` of every local hour of ``day`` (``granularity: hourly``).

    From the problem's ``export_hour`` when it has one; otherwise ``export_day`` cut by the
    source's ``event_timestamp``. Rows whose time cannot be read, or that fall outside the
    day, go with the day's first hour, whose checks then refuse them (nothing is dropped).
    An hour without rows lands as a file with the header only.
    """
    import pandas as pd

    tz = problem.spec.partitioning.timezone
    keys = hour_keys(day, tz)
    starts = {key: pd.Timestamp(hour_start(key, tz)) for key in keys}
    first = problem.export_hour(source, starts[keys[0]])
    if first is not None:
        rest = {k: problem.export_hour(source, starts[k]) for k in keys[1:]}
        return {keys[0]: first, **{k: f for k, f in rest.items() if f is not None}}
    frame = problem.export_day(source, day)
    column = problem.spec.sources[source].event_timestamp
    assert column is not None, "a daily source has an event_timestamp (spec check)"
    stamps = pd.to_datetime(frame[column], utc=True, errors="coerce", format="ISO8601")
    hour = stamps.dt.floor("h")
    by_start = {start: key for key, start in starts.items()}
    placed = hour.map(by_start).where(hour.isin(list(by_start)), keys[0])
    return {key: frame.loc[placed == key].reset_index(drop=True) for key in keys}


@functools.lru_cache(maxsize=8192)
def _digest(files: tuple[tuple[str, int, int, int], ...]) -> str:
    from mlplatform.lib.ingestion.ingest import content_hash

    return content_hash([Path(name) for name, *_ in files])


def landed_hash(lake: DataLake, problem: str, source: str, day: date | str | None) -> str | None:
    """Content hash of a partition's landed files, as ingestion records it; None if none.

    The same digest the raw asset stores as its data version
    (``lib.ingestion.ingest.content_hash``).
    Memoized on each file's path, size, modification time and inode, so the landing sensor
    re-reads only files that changed since its last tick (a re-landed file is a new inode).
    """
    files = lake.landed_files(problem, source, day)
    if not files:
        return None
    stats = []
    for path in files:
        st = path.stat()
        stats.append((str(path), st.st_size, st.st_mtime_ns, st.st_ino))
    return _digest(tuple(stats))


@dataclass(frozen=True)
class Pending:
    """A landed partition whose content differs from what was last ingested, for some sources.

    Attributes:
        day: The partition (a day, or an hourly key); None for the reference snapshots.
        landed: ``source → content hash`` of the landed files, for the sources to ingest.
        ingested: ``source → content hash`` ingested last (None: never ingested).
        checked_at: ``source → time`` of that last ingestion (ISO; None: never ingested).
    """

    day: date | str | None
    landed: dict[str, str]
    ingested: dict[str, str | None]
    checked_at: dict[str, str | None]

    @property
    def label(self) -> str:
        """The partition's label: the ISO day, or ``snapshot``."""
        return partition_label(self.day)

    @property
    def local_day(self) -> date | None:
        """The local day of the partition (an hour's day); None for the snapshots."""
        return day_of(self.day) if isinstance(self.day, str) else self.day

    @property
    def sources(self) -> list[str]:
        """The sources whose landing is new, in the order given."""
        return list(self.landed)

    @property
    def relanded(self) -> bool:
        """True if some source of the day was ingested before (this is new content)."""
        return any(v is not None for v in self.ingested.values())

    @property
    def run_key(self) -> str:
        """Unique per (partition, landed content, previous ingestion).

        The content hash makes a corrected file a new request; the previous ingestion's
        time makes content that comes back (a correction undone) a new request too, where
        a run key alone would have been spent already.
        """
        token = "|".join(
            f"{s}={self.landed[s]}@{self.checked_at.get(s) or ''}" for s in sorted(self.landed)
        )
        name = f"ingest-{self.label}" if self.day else "reference"
        return f"{name}-{hashlib.sha256(token.encode()).hexdigest()[:12]}"

    def describe(self) -> str:
        """One line: the day, and per source what landed against what was ingested."""
        parts = [
            f"{s} {self.ingested.get(s) or 'never ingested'} -> {h}" for s, h in self.landed.items()
        ]
        return f"{self.label}: {'; '.join(parts)}"


def _compare(
    lake: DataLake, problem: str, sources: list[str], day: date | str | None, built: set[str]
) -> Pending | None:
    """The sources of one partition whose landed content is not the one ingested last.

    ``built`` names the sources whose partition the Dagster instance holds materialized;
    for the others the lake's report is not trusted (a new instance ingests again).
    """
    from mlplatform.lib.names import raw_table

    new: dict[str, str] = {}
    before: dict[str, str | None] = {}
    stamps: dict[str, str | None] = {}
    for source in sources:
        digest = landed_hash(lake, problem, source, day)
        if digest is None:  # removed since the listing
            continue
        report = lake.read_batch_report(problem, raw_table(source), day)
        known = report is not None and source in built
        previous = str(report.get("content_hash")) if report and known else None
        if previous != digest:
            new[source] = digest
            before[source] = previous
            stamps[source] = str(report.get("checked_at")) if report and known else None
    return Pending(day, new, before, stamps) if new else None


def pending(
    lake: DataLake,
    problem: Problem,
    ingested: dict[str, set[str]] | None = None,
) -> list[Pending]:
    """Days whose daily sources all landed and whose landed content was not ingested yet.

    A source's day needs ingestion when it was never ingested, or when the content hash of
    its landed files differs from the hash of the batch ingested last (accepted or
    rejected, from the raw table's report): a corrected file for a rejected day, or a
    correction to an accepted one.

    Args:
        lake: The data lake.
        problem: The problem.
        ingested: ``source → partitions`` the Dagster instance holds materialized for the
            source's raw asset; a partition missing there counts as never ingested (a new
            instance over an old lake ingests again). None trusts the lake's reports alone.

    Returns:
        The days to ingest, oldest first; each names only the sources to ingest. With
        ``granularity: hourly``, the hours (by their keys) instead of the days.
    """
    daily = list(problem.spec.daily_sources())
    if not daily:
        return []
    if problem.spec.partitioning.granularity == "hourly":
        tz = problem.spec.partitioning.timezone
        hours = set.intersection(*(set(lake.landed_hours(problem.name, s)) for s in daily))
        found_hours = []
        for key in sorted(hours, key=lambda k: hour_start(k, tz)):
            built = {s for s in daily if ingested is None or key in ingested.get(s, set())}
            if (found := _compare(lake, problem.name, daily, key, built)) is not None:
                found_hours.append(found)
        return found_hours
    landed = set.intersection(*(set(lake.landed_days(problem.name, s)) for s in daily))
    out: list[Pending] = []
    for day in sorted(landed):
        label = day.isoformat()
        built = {s for s in daily if ingested is None or label in ingested.get(s, set())}
        if (found := _compare(lake, problem.name, daily, day, built)) is not None:
            out.append(found)
    return out


def reference_changes(lake: DataLake, problem: Problem, built: set[str]) -> Pending | None:
    """The reference snapshots to ingest, or None.

    Nothing until every reference source has landed; then each source never built
    (not in ``built``) or whose landed content differs from the batch ingested last.
    """
    refs = [s for s, spec in problem.spec.sources.items() if spec.kind == "reference"]
    if not refs or not all(lake.landed_files(problem.name, r, None) for r in refs):
        return None
    return _compare(lake, problem.name, refs, None, built)
