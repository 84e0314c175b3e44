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
) -> Runtime:
    """A runtime over the problem's Feast online store, registry and prediction log."""
    from mlplatform.lib.feature_store import open_store, service_of
    from mlplatform.lib.prediction_log import PredictionLog
    from mlplatform.lib.scoring import OnlineScorer

    store = open_store(problem, root)
    scorer = OnlineScorer(problem, store, service_of(problem, store, root))
    predictions = PredictionLog(root, problem.name, flush_rows, flush_seconds).start()
    return Runtime(problem, root, tracking, scorer, predictions, refresh_seconds)


def serve(runtime: Runtime, host: str, port: int) -> None:
    """Serve until interrupted (uvicorn handles SIGINT/SIGTERM), then flush the log."""
    import uvicorn

    from mlplatform.serving.app import create_app

    runtime.start()
    try:
        uvicorn.run(create_app(runtime), host=host, port=port, log_level="warning")
    finally:
        runtime.stop()


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
