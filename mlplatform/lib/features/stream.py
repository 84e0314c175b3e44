"""Pushing a stream source's events, hour by hour, into the feature store's online side.

One push holds the events of one hour ``[start, start + 1h)`` (UTC) of one stream source
(``kind: stream`` in the spec). It is validated as a whole against the stream's pandera
model and the hour; a push that fails is refused whole (nothing reaches a store) and its
rows are kept in the quarantine with their reasons. An accepted push is written to the
stream's event log (one Parquet file per hour: pushing an hour again replaces it, never
duplicates), then every stream view fed by the source computes its rows at the hour's
end with the problem's own builder (the function the evening's batch uses offline) and
Feast's ``store.push`` writes them to the online store through the view's ``PushSource``.

The offline side of a stream view is the evening's validated batch, not the pushes: the
batch is the system of record, and Feast's file offline store appends pushed rows, so a
re-pushed hour would be counted twice there. ``serving_skew`` measures that both agree.
"""

import contextlib
import json
import os
import weakref
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlplatform.errors import PlatformError
from mlplatform.lib.features.build import FeatureInputs, with_timestamps
from mlplatform.lib.features.tables import EVENT_TS, FeatureTable, local_midnight
from mlplatform.problems import Problem

if TYPE_CHECKING:
    from feast import FeatureStore

HOUR = timedelta(hours=1)
_STAMP = "%Y-%m-%dT%H"
_CACHED_FILES = 256  # a few days of hours of every stream
_READ_CACHE: dict[Path, tuple[float, pd.DataFrame]] = {}
# per store: the registry snapshot the push targets were resolved on, and those targets
_PUSH_TARGETS: "weakref.WeakKeyDictionary[Any, tuple[Any, int, dict[str, list[str] | None]]]" = (
    weakref.WeakKeyDictionary()
)


class PushRefused(PlatformError, ValueError):
    """A push that cannot be accepted; the message names the source, field and hour."""

    def __init__(self, message: str, quarantine: Path | None = None) -> None:
        super().__init__(message)
        self.quarantine = quarantine


@dataclass(frozen=True)
class PushResult:
    """What one accepted push did.

    ``rows``: events accepted; ``views``: rows pushed per stream view; ``newest_event_time``
    (UTC ISO, None when the hour was empty); ``lag_seconds``: push time minus that event
    time; ``replaced``: the hour had been pushed before.
    """

    problem: str
    source: str
    start: str
    end: str
    rows: int
    views: dict[str, int] = field(default_factory=dict)
    newest_event_time: str | None = None
    lag_seconds: float | None = None
    replaced: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def hour_start(value: datetime | pd.Timestamp) -> pd.Timestamp:
    """The UTC hour an instant falls in; refuses an instant without a UTC offset."""
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise PushRefused(f"hour {value!r}: give a UTC offset (e.g. 2013-01-29T14:00:00Z)")
    return stamp.tz_convert("UTC").floor("h")


class EventLog:
    """The accepted events of a problem's stream sources: one Parquet file per UTC hour.

    Layout: ``<root>/stream/<problem>/<source>/<YYYY-MM-DDTHH>.parquet``. Files are
    written atomically; reads cache each file by its modification time.
    """

    def __init__(self, root: Path, problem: str) -> None:
        self.folder = root / "stream" / problem
        self._cache = _READ_CACHE  # shared: each push opens a log, and reads ~2 days back

    def path(self, source: str, start: pd.Timestamp) -> Path:
        """File of one hour of ``source``."""
        return self.folder / source / f"{start.strftime(_STAMP)}.parquet"

    def write(self, source: str, start: pd.Timestamp, events: pd.DataFrame) -> bool:
        """Store the hour's events, replacing an earlier push of it; True if it replaced one."""
        path = self.path(source, start)
        replaced = path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        events.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return replaced

    def hours(self, source: str) -> list[pd.Timestamp]:
        """Hours pushed for ``source``, oldest first."""
        folder = self.folder / source
        if not folder.is_dir():
            return []
        return sorted(
            pd.Timestamp(datetime.strptime(p.stem, _STAMP).replace(tzinfo=UTC))
            for p in folder.glob("*.parquet")
        )

    def read(self, source: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Every event pushed for the hours in ``[start, end)``, in push order."""
        frames = []
        for hour in pd.date_range(start, end, freq="h", inclusive="left"):
            path = self.path(source, hour)
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue
            cached = self._cache.get(path)
            if cached is None or cached[0] != mtime:
                cached = (mtime, pd.read_parquet(path))
                self._cache[path] = cached
                while len(self._cache) > _CACHED_FILES:  # oldest first (insertion order)
                    self._cache.pop(next(iter(self._cache)))
            frames.append(cached[1])
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def stream_tables(problem: Problem, source: str) -> list[FeatureTable]:
    """The stream views fed by ``source``."""
    return [t for t in problem.feature_tables() if t.stream == source]


def _refuse(
    root: Path,
    problem: Problem,
    source: str,
    start: pd.Timestamp,
    events: pd.DataFrame,
    reasons: pd.Series,
    message: str,
) -> PushRefused:
    """Keep the refused push with a reason per row; the error names where."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = root / "quarantine" / problem.name / "stream" / source / start.strftime(_STAMP) / stamp
    folder.mkdir(parents=True, exist_ok=True)
    kept = events.astype(str).assign(reason=reasons.reindex(events.index).fillna("").to_numpy())
    kept.to_csv(folder / "events.csv", index=False)
    report = {
        "problem": problem.name,
        "source": source,
        "hour": start.isoformat(),
        "error": message,
    }
    (folder / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return PushRefused(f"{message}; the push is kept at {folder}", folder)


def validate_push(
    root: Path,
    problem: Problem,
    source: str,
    start: pd.Timestamp,
    events: pd.DataFrame,
    now: datetime,
) -> pd.DataFrame:
    """The push typed by the stream's model, or ``PushRefused`` naming source and field.

    Refused: a source that is not a stream; columns the model does not declare; values
    of the wrong type or out of range (pandera); event times outside the hour
    ``[start, start + 1h)`` or after ``now`` (the platform's clock).
    """
    from mlplatform.lib.ingestion.validation import validate_schema

    spec = problem.spec.sources.get(source)
    if spec is None or spec.stream is None:
        streams = ", ".join(problem.spec.stream_sources()) or "none"
        raise PushRefused(f"{problem.name}: {source!r} is not a stream source (streams: {streams})")
    model = problem.schema_named(spec.stream.schema_name)
    column = spec.stream.event_time

    def refuse(reasons: pd.Series, why: str) -> PushRefused:
        what = f"{problem.name}: push of {source} for {start:%Y-%m-%d %H}:00 UTC refused"
        return _refuse(root, problem, source, start, events, reasons, f"{what}: {why}")

    typed, outcome = validate_schema(events, model)
    if typed is None:
        cases = outcome.details.get("failure_cases", [])
        reasons = pd.Series(
            {
                int(c["row"]): f"{c['column']}: {c['check']} ({c['value']})"
                for c in cases
                if str(c.get("row")) not in ("None", "nan", "")
            },
            dtype=object,
        )
        if reasons.empty:  # a whole-column failure (unknown or missing column): every row
            reasons = pd.Series(outcome.reason, index=events.index, dtype=object)
        raise refuse(reasons, outcome.reason)
    at = pd.to_datetime(typed[column], utc=True)
    end = start + HOUR
    reasons = pd.Series("", index=typed.index, dtype=object)
    reasons[(at < start) | (at >= end)] = (
        f"{column}: outside the hour {start:%H}:00-{end:%H}:00 UTC"
    )
    reasons[at > pd.Timestamp(now)] = f"{column}: in the future (after {pd.Timestamp(now)})"
    bad = reasons[reasons != ""]
    if not bad.empty:
        first = bad.index[0]
        raise refuse(
            bad,
            f"{len(bad)} of {len(typed)} events have {bad[first]} (row {first}: "
            f"{column}={at[first]})",
        )
    return typed


def stream_rows(
    problem: Problem, log: EventLog, table: FeatureTable, start: pd.Timestamp
) -> pd.DataFrame:
    """The rows of a stream view that became known in the hour ``[start, start + 1h]``.

    Computed by the problem's builder from the events pushed so far, as the evening's
    batch computes them from the validated days (``lib.features.build.build_day``).
    """
    assert table.stream is not None, f"{table.name} is not a stream view"
    t = start + HOUR
    tz = problem.spec.partitioning.timezone
    day = t.tz_convert(tz).date()
    # the events the builder may need: the table's trailing days and the evening before
    since = pd.Timestamp(local_midnight(day - timedelta(days=table.trailing_days + 1), tz))
    inputs = FeatureInputs(
        day=day,
        timezone=tz,
        target=problem.spec.target,
        daily={},
        reference={},
        events={table.stream: log.read(table.stream, since, t)},
        hours=[t],
    )
    if inputs.events[table.stream].empty:
        return pd.DataFrame()
    rows = problem.build_features(table, inputs)
    if rows.empty:
        return rows
    stamps = pd.to_datetime(rows[EVENT_TS], utc=True)
    return with_timestamps(table, rows[(stamps >= start) & (stamps <= t)])


def push_targets(store: "FeatureStore", push_source: str) -> list[str] | None:
    """The feature views ``store.push(push_source, ...)`` writes to, or None to call it.

    Feast's ``push`` resolves them on every call by converting every registered view
    from its protobuf (plus every feature service, for ``precompute_online``): ~0.15 s
    of CPU a push here, more than the write. The answer only changes with the registry,
    so it is kept per store and registry snapshot (the cached registry proto, by identity
    and size: Feast replaces it when the registry file changes, an ``apply`` through this
    store changes its size).
    None (push the ordinary way) for a registry without that cache (the SQL registry), a
    source that also feeds a label view, or a view a precomputed service reads.
    """
    from feast.data_source import PushSource

    registry: Any = store.registry
    if getattr(registry, "cached_registry_proto", None) is None:
        return None
    store.list_entities(allow_cache=True)  # reloads the cache if the registry file changed
    proto = registry.cached_registry_proto
    size = proto.ByteSize()
    known = _PUSH_TARGETS.get(store)
    if known is None or known[0] is not proto or known[1] != size:
        known = (proto, size, {})
        _PUSH_TARGETS[store] = known
    targets = known[2]
    if push_source not in targets:
        # the selection ``push`` makes (``_fvs_for_push_source_or_raise``), by public calls
        def fed(source: Any) -> bool:
            return isinstance(source, PushSource) and source.name == push_source

        views = [
            *store.list_feature_views(allow_cache=True),
            *store.list_stream_feature_views(allow_cache=True),
        ]
        names = sorted({v.name for v in views if fed(v.stream_source)})
        label_views = getattr(store, "list_label_views", None)
        labels = [v for v in label_views(allow_cache=True) if fed(v.source)] if label_views else []
        precomputed = {
            p.name
            for s in store.registry.list_feature_services(store.project, allow_cache=True)
            if getattr(s, "precompute_online", False)
            for p in s.feature_view_projections
        }
        usable = names and not labels and not precomputed & set(names)
        targets[push_source] = names if usable else None
    return targets[push_source]


def push_hour(
    root: Path,
    problem: Problem,
    store: "FeatureStore",
    source: str,
    start: datetime | pd.Timestamp,
    events: pd.DataFrame,
    now: datetime,
    store_lock: contextlib.AbstractContextManager[Any] | None = None,
) -> PushResult:
    """Validate, log and push one hour of a stream source's events.

    Args:
        root: the data folder (event log and quarantine live under it).
        problem: the problem whose stream ``source`` is.
        store: the problem's Feast store.
        source: a stream source of the spec.
        start: any instant of the hour pushed (UTC offset required).
        events: the hour's events in the stream model's columns (``event_time`` UTC).
        now: the platform's clock; no event may be after it.
        store_lock: held around each write to the store (a service shares one SQLite
            connection between its readers and its pushes).

    Raises:
        PushRefused: the push was refused whole; nothing reached either store.
    """
    from feast.data_source import PushMode

    hour = hour_start(start)
    typed = validate_push(root, problem, source, hour, events, now)
    log = EventLog(root, problem.name)
    replaced = log.write(source, hour, typed)
    views = {}
    for table in stream_tables(problem, source):
        rows = stream_rows(problem, log, table, hour)
        if not rows.empty:
            views_fed = push_targets(store, table.push_source)
            with store_lock or contextlib.nullcontext():
                if views_fed is None:
                    store.push(table.push_source, rows, to=PushMode.ONLINE)
                for name in views_fed or []:  # what ``push`` does for each view it resolves
                    store.write_to_online_store(name, rows)
        views[table.view] = len(rows)
    column = problem.spec.sources[source].stream.event_time  # pyright: ignore[reportOptionalMemberAccess]
    newest = pd.to_datetime(typed[column], utc=True).max() if len(typed) else None
    return PushResult(
        problem.name,
        source,
        hour.isoformat(),
        (hour + HOUR).isoformat(),
        len(typed),
        views,
        newest.isoformat() if newest is not None else None,
        (pd.Timestamp(now) - newest).total_seconds() if newest is not None else None,
        replaced,
    )
