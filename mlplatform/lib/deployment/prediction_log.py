"""The prediction log: every request the service answered, in Parquet files monitoring reads.

Records are buffered in memory and written as one Parquet file per flush (written to a
temporary name, fsynced, then renamed, so a file is whole or absent; a failed write removes
its temporary file). A background flusher writes every ``flush_seconds``, and at once when
``flush_rows`` records wait; so a crash loses the requests of the last ``flush_seconds``.

A write error (full disk, file-size limit, folder gone or read-only) never reaches a request:
the records stay buffered, in order, and the flusher retries with exponential backoff until
the fault clears. Memory stays bounded: past ``max_buffer`` waiting records the oldest is
dropped and counted (``lost``). ``health()`` reports written, pending and lost records and
the last write error (the service's ``/health`` and ``mlplatform status`` show it).
"""

import contextlib
import logging
import os
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.lib.process import process_alive

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger("mlplatform.serving.prediction_log")

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
    "missing": "string",  # model inputs the store had no value for, defaulted or not (JSON list)
    "unseen": "string",  # categorical inputs the served model never saw in training (JSON list)
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
    """A buffered, durable writer; safe to call from many request threads.

    ``write`` never raises and never waits on the disk while the flusher runs. ``flush``
    writes what waits and raises the write's ``OSError`` (its records stay queued).

    Args:
        root: The data folder (the log goes to ``predictions/<problem>/<UTC day>/``).
        problem: The problem's name.
        flush_rows: Records that wake the flusher at once (without a flusher: written inline).
        flush_seconds: Seconds between flushes; the first retry delay after a write error.
        max_buffer: Records held in memory at most (plus one batch being written); past it
            the oldest waiting record is dropped and counted in ``lost``.
        max_backoff_seconds: Longest delay between retries while writes fail.
    """

    def __init__(
        self,
        root: Path,
        problem: str,
        flush_rows: int = 500,
        flush_seconds: float = 0.5,
        max_buffer: int = 50_000,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self.folder = log_dir(root, problem)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.max_buffer, self.max_backoff_seconds = max(max_buffer, 1), max_backoff_seconds
        self._buffer: deque[dict[str, Any]] = deque()
        self._inflight = 0  # records taken by the flush in progress
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._failures = 0  # consecutive failed writes: the backoff's exponent
        self.written = 0
        self.lost = 0  # dropped for room, unwritable, or still queued when the log closed
        self.write_errors = 0  # failed write attempts (each retried)
        self.last_error: str | None = None
        self.last_error_at: str | None = None

    def start(self) -> "PredictionLog":
        """Remove temporary files of dead writers, then start the background flusher."""
        self._remove_stale_tmp()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        # nothing may end this loop but close(): a dead flusher loses every later record
        while not self._stop.is_set():
            self._wake.wait(self._delay())
            self._wake.clear()
            if not self._stop.is_set():
                self._flush_quietly()

    def _delay(self) -> float:
        if not self._failures:
            return self.flush_seconds
        backoff = self.flush_seconds * 2 ** min(self._failures, 20)
        return min(backoff, max(self.max_backoff_seconds, self.flush_seconds))

    def write(self, record: dict[str, Any]) -> None:
        """Queue one record; never raises. A full buffer wakes the flusher."""
        with self._lock:
            while self._buffer and len(self._buffer) + self._inflight >= self.max_buffer:
                self._buffer.popleft()  # bounded memory: the oldest waiting record goes
                self.lost += 1
            self._buffer.append(record)
            # while writes fail, the backoff decides when to try again, not the traffic
            full = len(self._buffer) >= self.flush_rows and not self._failures
        if not full:
            return
        if self._thread is not None and self._thread.is_alive():
            self._wake.set()
        else:
            self._flush_quietly()

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception:  # recorded by flush(); the records wait for the next attempt
            log.warning(
                "prediction log: write failed (%s); %d records wait, %d lost so far; "
                "retrying in %.1f s",
                self.last_error,
                self.pending,
                self.lost,
                self._delay(),
            )

    @property
    def pending(self) -> int:
        """Records answered but not yet on disk."""
        with self._lock:
            return len(self._buffer) + self._inflight

    def flush(self) -> int:
        """Write the queued records as one Parquet file; returns how many were written.

        Raises:
            OSError: The write failed; the records stay queued, ahead of newer ones, and
                the error is reported by ``health()``.
        """
        # one flush at a time, and the buffer taken inside it: when flush() returns, every
        # record written before the call is on disk, even if another thread was flushing
        with self._write_lock:
            with self._lock:
                batch = list(self._buffer)
                self._buffer.clear()
                self._inflight = len(batch)
            try:
                table, batch = self._table(batch)
                if batch:
                    self._write_file(table, batch)
            except Exception as exc:
                with self._lock:
                    self._buffer.extendleft(reversed(batch))  # older records stay first
                    self._inflight = 0
                    self._failures += 1
                    self.write_errors += 1
                    self._note(exc)
                raise
            with self._lock:
                self._inflight = 0
                self._failures = 0
                self.written += len(batch)
            return len(batch)

    def _table(self, batch: list[dict[str, Any]]) -> "tuple[pa.Table, list[dict[str, Any]]]":
        """The batch as a table, without records no retry could write (counted as lost)."""
        import pyarrow as pa

        schema = _schema()
        try:
            return pa.Table.from_pylist([_row(r) for r in batch], schema=schema), batch
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass  # one bad value must not keep the whole batch (and all later ones) out
        kept = []
        for record in batch:
            try:
                pa.Table.from_pylist([_row(record)], schema=schema)
                kept.append(record)
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                with self._lock:
                    self.lost += 1
                    self._note(exc, f"record {record.get('request_id')} dropped")
                log.error("prediction log: unwritable record dropped: %s", self.last_error)
        return pa.Table.from_pylist([_row(r) for r in kept], schema=schema), kept

    def _write_file(self, table: "pa.Table", batch: list[dict[str, Any]]) -> None:
        import pyarrow.parquet as pq

        self._seq += 1
        now = datetime.now(UTC)
        # the folder is the UTC day of the batch's newest record, on the platform clock
        # (simulated in a replay): readers skip folders older than the day they want
        newest = max((r["time"] for r in batch if r.get("time")), default=now)
        folder = self.folder / newest.astimezone(UTC).date().isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{now.strftime('%H%M%S%f')}-{os.getpid()}-{self._seq:06d}.parquet"
        tmp = folder / f".{name}.tmp"
        try:
            with tmp.open("wb") as fh:
                pq.write_table(table, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, folder / name)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)  # a torn file never stays behind
            raise

    def _note(self, exc: BaseException, what: str = "") -> None:
        message = f"{type(exc).__name__}: {exc}"
        self.last_error = f"{what}: {message}" if what else message
        self.last_error_at = datetime.now(UTC).isoformat(timespec="seconds")

    def _remove_stale_tmp(self) -> None:
        """Temporary files left by a writer that was killed mid-write (named by its pid)."""
        for tmp in self.folder.glob("*/.*.parquet.tmp"):
            parts = tmp.name.split("-")
            if len(parts) == 3 and parts[1].isdigit() and not process_alive(int(parts[1])):
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def health(self) -> dict[str, Any]:
        """The writer's state for ``/health``: records written, pending and lost, last error.

        ``failing`` is true while writes fail (records wait and are retried);
        ``last_error`` stays after recovery so an operator sees what happened.
        """
        with self._lock:
            return {
                "written": self.written,
                "pending": len(self._buffer) + self._inflight,
                "lost": self.lost,
                "write_errors": self.write_errors,
                "failing": self._failures > 0,
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
            }

    def close(self, attempts: int = 3) -> None:
        """Stop the flusher and write what is left; never raises.

        Records that still cannot be written after ``attempts`` tries (about 2 s at most)
        are counted as lost and logged, so that a shutdown never hangs on a broken disk.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for attempt in range(attempts):
            try:
                self.flush()
                return
            except Exception:
                if attempt + 1 < attempts:
                    time.sleep(min(self.flush_seconds * 2**attempt, 1.0))
        with self._lock:
            left = len(self._buffer)
            self._buffer.clear()
            self.lost += left
        log.error(
            "prediction log: %d records could not be written before shutdown (%s); lost",
            left,
            self.last_error,
        )


def _row(record: dict[str, Any]) -> dict[str, Any]:
    return {c: record.get(c) for c in COLUMNS}


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
