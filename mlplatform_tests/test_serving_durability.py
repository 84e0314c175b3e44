"""The prediction log and the service's state under real faults.

Write errors come from real ``OSError`` sources: the log's folder replaced by a file
(``NotADirectoryError``), and a file-size limit (``RLIMIT_FSIZE``, set on a running
``mlplatform serve`` with ``prlimit``: Python ignores ``SIGXFSZ``, so writes past the limit
fail with ``EFBIG``, root included). Records answered before a fault stay on disk, records
answered during it are written once it clears, no request fails, no temporary file stays.
"""

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlplatform.lib.deployment.prediction_log import PredictionLog, log_dir, read_predictions
from mlplatform.problems import Problem
from mlplatform.serving.client import as_requests, wait_until_up
from mlplatform.serving.server import announced, service_file, service_url
from mlplatform_tests.helpers import STUMP, STUMP_TRAINING, Platform, fresh_instance, tuned_problem
from mlplatform_tests.services import free_port

CASES = Path(__file__).parent / "cases"
DAY = datetime(2013, 1, 6, 12, tzinfo=UTC)


def _record(i: int) -> dict[str, Any]:
    return {"request_id": f"r{i:04d}", "time": DAY, "status": "ok", "latency_ms": 1.0}


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll until ``condition`` holds; a deadline for waiting, not a timed assertion."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {seconds} s: {what}")
        time.sleep(0.05)


def _tmp_files(root: Path) -> list[Path]:
    return list((root / "predictions").rglob(".*.tmp"))


class FolderFault:
    """The log's folder replaced by a file: every write fails with a real ``OSError``."""

    def __init__(self, root: Path, problem: str) -> None:
        self.folder = log_dir(root, problem)
        self.saved = self.folder.with_name(self.folder.name + ".saved")

    def __enter__(self) -> "FolderFault":
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        if self.folder.exists():
            self.folder.rename(self.saved)
        self.folder.write_text("not a folder")
        return self

    def clear(self) -> None:
        self.folder.unlink()
        if self.saved.exists():
            self.saved.rename(self.folder)

    def __exit__(self, *exc: object) -> None:
        if self.folder.is_file():
            self.clear()


# -- the writer, in this process ------------------------------------------------------------


def test_the_flusher_survives_write_errors_and_writes_the_buffer_once_they_clear(
    tmp_path: Path,
) -> None:
    log = PredictionLog(tmp_path, "p", flush_rows=1000, flush_seconds=0.05, max_backoff_seconds=0.2)
    log.start()
    try:
        for i in range(5):
            log.write(_record(i))
        _wait_for(lambda: log.health()["written"] == 5, 30, "the records before the fault")
        with FolderFault(tmp_path, "p") as fault:
            for i in range(5, 40):
                log.write(_record(i))  # never raises, never waits on the disk
            _wait_for(lambda: log.health()["write_errors"] >= 3, 30, "three failed attempts")
            failing = log.health()
            fault.clear()
            # nobody calls flush(): only a flusher that survived its errors writes these
            _wait_for(lambda: log.health()["pending"] == 0, 30, "the buffer written")
    finally:
        log.close()

    assert failing["failing"] and failing["pending"] == 35 and failing["lost"] == 0
    assert "NotADirectoryError" in failing["last_error"]
    logged = read_predictions(tmp_path, "p")
    assert sorted(logged["request_id"]) == [f"r{i:04d}" for i in range(40)]
    after = log.health()
    assert (after["written"], after["lost"], after["failing"]) == (40, 0, False)
    assert not _tmp_files(tmp_path)


def test_a_long_outage_keeps_memory_bounded_and_counts_the_oldest_records_it_drops(
    tmp_path: Path,
) -> None:
    log = PredictionLog(tmp_path, "p", flush_rows=4, flush_seconds=3600, max_buffer=10)
    with FolderFault(tmp_path, "p") as fault:
        for i in range(25):
            log.write(_record(i))  # a full buffer flushes inline here: its error stays inside
        with pytest.raises(OSError):
            log.flush()  # the explicit call reports the error; the records stay queued
        state = log.health()
        fault.clear()
    assert log.flush() == 10

    assert (state["pending"], state["lost"], state["written"]) == (10, 15, 0)
    assert state["failing"] and state["write_errors"] >= 1
    logged = read_predictions(tmp_path, "p")
    assert sorted(logged["request_id"]) == [f"r{i:04d}" for i in range(15, 25)]  # newest kept
    assert log.health()["lost"] == 15
    assert not _tmp_files(tmp_path)


def test_a_record_no_retry_could_write_is_dropped_and_counted_without_blocking_the_rest(
    tmp_path: Path,
) -> None:
    log = PredictionLog(tmp_path, "p", flush_rows=1000, flush_seconds=3600)
    log.write(_record(0))
    log.write({**_record(1), "prediction": "not a number"})  # a double column
    log.write(_record(2))

    assert log.flush() == 2
    assert sorted(read_predictions(tmp_path, "p")["request_id"]) == ["r0000", "r0002"]
    state = log.health()
    assert (state["lost"], state["pending"]) == (1, 0)
    assert "r0001" in state["last_error"]


def test_closing_on_a_broken_disk_returns_counts_the_loss_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    log = PredictionLog(tmp_path, "p", flush_rows=1000, flush_seconds=0.05).start()
    with FolderFault(tmp_path, "p"):
        for i in range(7):
            log.write(_record(i))
        log.close()  # does not raise: a shutdown must finish (and remove its state)
    state = log.health()
    assert (state["lost"], state["pending"], state["written"]) == (7, 0, 0)
    assert not _tmp_files(tmp_path)


def test_a_writer_killed_mid_write_leaves_a_temporary_file_the_next_start_removes(
    tmp_path: Path,
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    day = log_dir(tmp_path, "p") / "2013-01-06"
    day.mkdir(parents=True)
    stale = day / f".101010000000-{dead.pid}-000001.parquet.tmp"  # the writer is gone
    live = day / f".101010000000-{os.getppid()}-000001.parquet.tmp"  # its writer still runs
    stale.write_bytes(b"PAR1 torn")
    live.write_bytes(b"PAR1 being written")

    PredictionLog(tmp_path, "p").start().close()

    assert not stale.exists() and live.exists()
    assert read_predictions(tmp_path, "p").empty


# -- the real service, in its own process ---------------------------------------------------


@pytest.fixture(scope="module")
def champion(
    tmp_path_factory: pytest.TempPathFactory, featured_base: Path, problem: Problem
) -> Iterator[Platform]:
    """A lake whose registry holds a champion (version 1) that ``mlplatform serve`` serves."""
    root = tmp_path_factory.mktemp("durable") / "data"
    shutil.copytree(featured_base, root)
    with fresh_instance() as instance:
        platform = Platform(tuned_problem(problem), root, instance)
        assert platform.run_feature_store().success
        assert platform.run_gated_training(params=STUMP, **STUMP_TRAINING).success
        yield platform


class Served:
    """``mlplatform serve`` as its own process; stderr is drained as it comes."""

    def __init__(self, platform: Platform, port: int) -> None:
        env = {**os.environ, "MLPLATFORM_DATA_DIR": str(platform.lake.root)}
        cli = Path(sys.executable).with_name("mlplatform")
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [str(cli), "serve", "--problem", "flight_delay", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        stderr = self.proc.stderr
        assert stderr is not None
        self.reader = threading.Thread(target=lambda: self.lines.extend(stderr), daemon=True)
        self.reader.start()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_up(self) -> None:
        if not wait_until_up(self.url, 120):
            self.proc.kill()
            raise AssertionError(f"mlplatform serve did not answer on {self.url}: {self.stderr}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.reader.join(timeout=10)

    def health(self) -> dict[str, Any]:
        return httpx.get(self.url + "/health", timeout=10).json()


def _requests(platform: Platform, n: int) -> list[dict[str, Any]]:
    flights = platform.lake.read_days("flight_delay", "flights", [DAY.date()])
    return as_requests(platform.problem, flights.iloc[:n])


def _answer(url: str, requests: list[dict[str, Any]], batch: int = 1) -> list[str]:
    """Send singles (``batch`` 1) or batches; every answer must be a 200. Returns the ids."""
    ids = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(0, len(requests), batch):
            chunk = requests[i : i + batch]
            body = chunk[0] if batch == 1 else {"instances": chunk}
            response = client.post("/predict", json=body)
            assert response.status_code == 200, response.text
            answer = response.json()
            ids += [p["request_id"] for p in answer.get("predictions", [answer])]
    return ids


def _limit_file_size(pid: int, size: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (size, hard))


@pytest.mark.slow
def test_a_file_size_limit_on_the_service_fails_no_request_and_loses_no_answered_record(
    champion: Platform,
) -> None:
    from mlplatform.status import problem_status

    root = champion.lake.root
    requests = _requests(champion, 720)
    service = Served(champion, free_port())
    try:
        service.wait_up()
        before = _answer(service.url, requests[:50])
        _wait_for(
            lambda: set(before) <= set(read_predictions(root, "flight_delay")["request_id"]),
            60,
            "the records answered before the fault on disk",
        )

        _limit_file_size(service.proc.pid, 1024)  # smaller than any Parquet file
        during = _answer(service.url, requests[50:150])  # one at a time
        during += _answer(service.url, requests[150:650], batch=100)  # the flush_rows trigger
        _wait_for(
            lambda: service.health()["prediction_log"]["write_errors"] >= 2,
            60,
            "two failed writes",
        )
        failing = service.health()["prediction_log"]
        status = problem_status(champion.problem, champion.lake, champion.instance)["service"]

        _limit_file_size(service.proc.pid, resource.RLIM_INFINITY)
        _wait_for(
            lambda: service.health()["prediction_log"]["pending"] == 0,
            120,
            "the buffered records written after the fault cleared",
        )
        recovered = service.health()["prediction_log"]
        logged = set(read_predictions(root, "flight_delay")["request_id"])
        tmp_after_recovery = _tmp_files(root)

        _limit_file_size(service.proc.pid, 1024)  # broken again, then stopped
        unwritable = _answer(service.url, requests[650:670])
    finally:
        service.stop()

    assert len(set(before + during)) == 650 and set(before + during) <= logged
    assert failing["failing"] and failing["pending"] == 600 and failing["lost"] == 0
    assert "File too large" in failing["last_error"]
    assert status["up"] and status["prediction_log"]["pending"] == 600
    assert "File too large" in status["prediction_log"]["last_error"]
    assert any("prediction log: 0 records lost, 600 waiting" in a for a in status["alerts"])
    assert (recovered["failing"], recovered["lost"]) == (False, 0)
    assert recovered["written"] >= 650
    assert not tmp_after_recovery
    # the shutdown under the fault: it ends, says what it lost, leaves nothing behind
    assert not set(unwritable) & set(read_predictions(root, "flight_delay")["request_id"])
    assert "20 records could not be written before shutdown" in service.stderr
    assert not _tmp_files(root)
    assert not service_file(root, "flight_delay").exists()


@pytest.mark.slow
def test_a_second_serve_on_a_busy_port_exits_and_leaves_the_running_service_announced(
    champion: Platform,
) -> None:
    # 19_second_serve_removes_announcement: the second serve removed the first's service.json
    case = (CASES / "19_second_serve_removes_announcement.md").read_text()
    (port,) = {int(p) for p in re.findall(r"--port (\d+)", case)}
    port = port if _port_free(port) else free_port()
    root = champion.lake.root
    first = Served(champion, port)
    second = third = None
    try:
        first.wait_up()
        held = announced(root, "flight_delay")

        second = Served(champion, port)
        second.proc.wait(timeout=120)
        second.reader.join(timeout=10)
        kept = announced(root, "flight_delay")
        found = service_url(root, "flight_delay")  # what status and rollback call
        still = first.health()["status"]

        # the kind's other member: a service that was replaced must not remove the newer one's
        third = Served(champion, free_port())
        third.wait_up()
        first.stop()
        after_first = announced(root, "flight_delay")
    finally:
        for service in (first, second, third):
            if service is not None:
                service.stop()

    assert second is not None and third is not None
    assert held and held["url"] == first.url and held["pid"] == first.proc.pid
    assert second.proc.returncode not in (0, None)
    (line,) = second.stderr.strip().splitlines()  # one line, naming the port and the holder
    assert f"port {port}" in line and first.url in line and f"pid {first.proc.pid}" in line
    assert kept == held and still == "ok"
    assert found == first.url
    assert after_first and after_first["url"] == third.url
    assert not service_file(root, "flight_delay").exists()  # the third removed its own


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
