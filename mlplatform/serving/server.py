"""Build and run the service: ``mlplatform serve`` and the tests start it through here."""

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlplatform.lib.tracking import Tracking
from mlplatform.problems import Problem
from mlplatform.serving.runtime import Runtime


def build_runtime(
    problem: Problem,
    root: Path,
    tracking: Tracking,
    refresh_seconds: float = 0.5,
    flush_seconds: float = 0.5,
    flush_rows: int = 500,
    store: Any = None,
) -> Runtime:
    """A runtime over the problem's Feast online store, registry and prediction log.

    ``store`` is the profile's Feast store; None opens the local one under ``root``.
    """
    from mlplatform.lib.feature_store import open_store, service_of
    from mlplatform.lib.prediction_log import PredictionLog
    from mlplatform.lib.scoring import OnlineScorer

    store = store if store is not None else open_store(problem, root)
    scorer = OnlineScorer(problem, store, service_of(problem, store, root))
    predictions = PredictionLog(root, problem.name, flush_rows, flush_seconds).start()
    return Runtime(problem, root, tracking, scorer, predictions, refresh_seconds)


def profile_runtime(problem: Problem, refresh_seconds: float = 0.5) -> Runtime:
    """A runtime on the active profile's resources (data folder, Feast store, registry)."""
    from mlplatform.resources import build_resources

    resources: Any = build_resources()
    return build_runtime(
        problem,
        resources["lake"].lake().root,
        resources["mlflow"].tracking(),
        refresh_seconds=refresh_seconds,
        store=resources["feast"].store(problem),
    )


def serve(
    problem: Problem,
    root: Path,
    host: str,
    port: int,
    refresh_seconds: float = 0.5,
    workers: int = 1,
) -> None:
    """Serve until interrupted (uvicorn handles SIGINT/SIGTERM), then flush the log.

    With ``workers`` > 1, uvicorn forks that many processes, each with its own runtime
    (models, Feast connection, prediction log files, registry follower).
    """
    import os

    import uvicorn

    from mlplatform.serving.app import create_app

    announced = announce(root, problem.name, f"http://{host}:{port}")
    try:
        if workers > 1:
            os.environ |= {
                WORKER_PROBLEM: problem.name,
                WORKER_REFRESH: str(refresh_seconds),
                "MLPLATFORM_DATA_DIR": str(root),
            }
            uvicorn.run(
                f"{__name__}:worker_app",
                factory=True,
                workers=workers,
                host=host,
                port=port,
                log_level="warning",
            )
            return
        # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so code after
        # run() may never execute: the app's shutdown hook flushes the log and the
        # announcement goes with it
        runtime = profile_runtime(problem, refresh_seconds).start()
        app = create_app(runtime, stop_on_shutdown=True, on_stop=lambda: announced.unlink(True))
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        announced.unlink(missing_ok=True)


WORKER_PROBLEM = "MLPLATFORM_SERVE_PROBLEM"
WORKER_REFRESH = "MLPLATFORM_SERVE_REFRESH"


def worker_app() -> Any:
    """The app of one uvicorn worker process (``serve(..., workers=N)``)."""
    import os

    from mlplatform.problems import get_problem
    from mlplatform.serving.app import create_app

    runtime = profile_runtime(
        get_problem(os.environ[WORKER_PROBLEM]), float(os.environ.get(WORKER_REFRESH, "0.5"))
    )
    return create_app(runtime.start(), stop_on_shutdown=True)


@dataclass
class Background:
    """A service running in a thread of this process (tests and benchmarks)."""

    runtime: Runtime
    server: Any
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        """Stop serving and flush the prediction log."""
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.runtime.stop()


def serve_in_background(runtime: Runtime, host: str = "127.0.0.1", port: int = 0) -> Background:
    """Start the real HTTP server on a free port in a thread; returns once it accepts."""
    import socket

    import uvicorn

    from mlplatform.serving.app import create_app

    if port == 0:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
    runtime.start()
    config = uvicorn.Config(create_app(runtime), host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the service did not start on {host}:{port}")
        time.sleep(0.02)
    return Background(runtime, server, thread, f"http://{host}:{port}")


def service_file(root: Path, problem: str) -> Path:
    """Where a running service announces its URL (written by ``mlplatform serve``)."""
    return root / "deployments" / problem / "service.json"


def announce(root: Path, problem: str, url: str) -> Path:
    """Record the service's URL and process for ``status`` and ``rollback``."""
    import json
    import os

    path = service_file(root, problem)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    return path


def service_url(root: Path, problem: str) -> str | None:
    """The URL a service announced, if any."""
    import json

    path = service_file(root, problem)
    if not path.exists():
        return None
    try:
        return str(json.loads(path.read_text())["url"])
    except (ValueError, KeyError):
        return None


def call(url: str, path: str, method: str = "GET", timeout: float = 2.0) -> dict[str, Any] | None:
    """One JSON call to a service; None when it does not answer."""
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url + path, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def service_status(root: Path, problem: str) -> dict[str, Any]:
    """The ``service`` block of ``mlplatform status``: its URL and whether it answers."""
    url = service_url(root, problem)
    health = call(url, "/health", timeout=1.0) if url else None
    return {"url": url, "up": bool(health and health.get("status") == "ok")}
