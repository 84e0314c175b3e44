"""The prediction log: every request the service answered, in Parquet files monitoring reads.

Records are buffered in memory and written as one Parquet file per flush (written to a
temporary name, fsynced, then renamed, so a file is whole or absent). A flush happens
every ``flush_seconds`` and whenever ``flush_rows`` records wait; so the most a crash can
lose is the requests of the last ``flush_seconds`` and never more than ``flush_rows - 1``.
"""

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

COLUMNS: dict[str, str] = {
    "request_id": "string",
    "time": "timestamp",  # when the service answered (UTC)
    "event_time": "timestamp",  # the request's prediction time (UTC)
    "key": "string",  # the request's natural key, to join outcomes
    "request": "string",  # the request as received (JSON)
    "stage": "string",
    "route": "string",  # champion | challenger: whose answer was returned
    "served_version": "string",
    "prediction": "double",
    "champion_version": "string",
    "champion_prediction": "double",
    "challenger_version": "string",
    "challenger_prediction": "double",
    "challenger_error": "string",
    "features": "string",  # the model inputs (JSON, spec order)
    "defaulted": "string",  # features that fell back to the spec's default (JSON list)
    "latency_ms": "double",
    "status": "string",  # ok | error
    "error": "string",
}


def _schema() -> "pa.Schema":
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "double": pa.float64(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema([(name, types[kind]) for name, kind in COLUMNS.items()])


def log_dir(root: Path, problem: str) -> Path:
    """Folder of a problem's prediction log: one subfolder per UTC day of serving."""
    return root / "predictions" / problem


class PredictionLog:
    """A buffered, durable writer; safe to call from many request threads."""

    def __init__(
        self, root: Path, problem: str, flush_rows: int = 500, flush_seconds: float = 0.5
    ) -> None:
        self.folder = log_dir(root, problem)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.written = 0

    def start(self) -> "PredictionLog":
        """Start the periodic flusher."""
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def write(self, record: dict[str, Any]) -> None:
        """Queue one record; the caller flushes when the buffer is full."""
        with self._lock:
            self._buffer.append(record)
            full = len(self._buffer) >= self.flush_rows
        if full:
            self.flush()

    def flush(self) -> int:
        """Write the queued records as one Parquet file; returns how many."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        # one flush at a time, and the buffer taken inside it: when flush() returns, every
        # record written before the call is on disk, even if another thread was flushing
        with self._write_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
            if not batch:
                return 0
            self._seq += 1
            now = datetime.now(UTC)
            # the folder is the UTC day of the batch's newest record, on the platform clock
            # (simulated in a replay): readers skip folders older than the day they want
            newest = max((r["time"] for r in batch if r.get("time")), default=now)
            newest = newest.astimezone(UTC)
            folder = self.folder / newest.date().isoformat()
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{now.strftime('%H%M%S%f')}-{os.getpid()}-{self._seq:06d}.parquet"
            tmp = folder / f".{name}.tmp"
            rows = [{c: r.get(c) for c in COLUMNS} for r in batch]
            table = pa.Table.from_pylist(rows, schema=_schema())
            with tmp.open("wb") as fh:
                pq.write_table(table, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, folder / name)
            self.written += len(batch)
        return len(batch)

    def close(self) -> None:
        """Stop the flusher and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()


def read_predictions(root: Path, problem: str, since: datetime | None = None) -> "pd.DataFrame":
    """Every logged prediction (optionally those answered at or after ``since``)."""
    import pandas as pd
    import pyarrow.parquet as pq

    files = sorted(log_dir(root, problem).glob("*/*.parquet"))
    if since is not None:
        first = since.astimezone(UTC).date().isoformat()
        files = [f for f in files if f.parent.name >= first]
    if not files:
        return _schema().empty_table().to_pandas()
    frame = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    if since is not None:
        frame = frame[frame["time"] >= pd.Timestamp(since).tz_convert("UTC")]
    return frame.reset_index(drop=True)


def now_utc() -> datetime:
    """The log's clock: the platform's (simulated in a replay)."""
    from mlplatform.settings import now

    return now()


def monotonic_ms() -> float:
    """A clock for latencies, in ms."""
    return time.perf_counter_ns() / 1e6
