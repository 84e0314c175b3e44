"""Build and run the service: ``mlplatform serve`` and the tests start it through here."""

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.errors import PlatformError
from mlplatform.lib.process import process_alive

if TYPE_CHECKING:  # the rollout commands read the announcement without loading the service
    from mlplatform.lib.tracking import Tracking
    from mlplatform.problems import Problem
    from mlplatform.serving.runtime import Runtime


def build_runtime(
    problem: "Problem",
    root: Path,
    tracking: "Tracking",
    refresh_seconds: float = 0.5,
    flush_seconds: float = 0.5,
    flush_rows: int = 500,
    store: Any = None,
) -> "Runtime":
    """A runtime over the problem's Feast online store, registry and prediction log.

    ``store`` is the profile's Feast store; None opens the local one under ``root``.
    """
    from mlplatform.lib.deployment.prediction_log import PredictionLog
    from mlplatform.lib.deployment.scoring import OnlineScorer
    from mlplatform.lib.features.feature_store import open_store, service_of
    from mlplatform.serving.runtime import Runtime

    store = store if store is not None else open_store(problem, root)
    scorer = OnlineScorer(problem, store, service_of(problem, store, root))
    predictions = PredictionLog(root, problem.name, flush_rows, flush_seconds).start()
    return Runtime(problem, root, tracking, scorer, predictions, refresh_seconds)


def profile_runtime(problem: "Problem", refresh_seconds: float = 0.5) -> "Runtime":
    """A runtime on the active profile's resources (data folder, Feast store, registry)."""
    from mlplatform.resources import open_resources

    resources: Any = open_resources("lake", "mlflow", "feast")
    return build_runtime(
        problem,
        resources["lake"].lake().root,
        resources["mlflow"].tracking(),
        refresh_seconds=refresh_seconds,
        store=resources["feast"].store(problem),
    )


def serve(
    problem: "Problem",
    root: Path,
    host: str,
    port: int,
    refresh_seconds: float = 0.5,
    workers: int = 1,
) -> None:
    """Serve until interrupted (uvicorn handles SIGINT/SIGTERM), then flush the log.

    The port is bound before anything is announced, so a second ``serve`` on a busy port
    fails without touching the running service's state. With ``workers`` > 1, uvicorn
    forks that many processes over the bound socket, each with its own runtime (models,
    Feast connection, prediction log files, registry follower).

    Raises:
        ServeError: The port cannot be bound (names the service holding it, if announced).
    """
    import os

    import uvicorn

    from mlplatform.serving.app import create_app

    sock = listen(root, problem.name, host, port)
    announcement = announce(root, problem.name, http_url(host, port))
    try:
        if workers > 1:
            from uvicorn.supervisors import Multiprocess

            os.environ |= {
                WORKER_PROBLEM: problem.name,
                WORKER_REFRESH: str(refresh_seconds),
                WORKER_TOKEN: announcement.token,
                "MLPLATFORM_DATA_DIR": str(root),
            }
            config = uvicorn.Config(
                f"{__name__}:worker_app",
                factory=True,
                workers=workers,
                host=host,
                port=port,
                log_level="warning",
            )
            Multiprocess(config, sockets=[sock]).run()
            return
        # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so code after
        # run() may never execute: the app's shutdown hook flushes the log and the
        # announcement goes with it
        runtime = profile_runtime(problem, refresh_seconds).start()
        app = create_app(
            runtime,
            stop_on_shutdown=True,
            on_stop=announcement.withdraw,
            transition_token=announcement.token,
        )
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
        if not server.started:
            raise SystemExit(3)  # uvicorn's startup failure code; it logged why
    finally:
        announcement.withdraw()
        sock.close()


class ServeError(PlatformError, ValueError):
    """The service cannot start as asked (the command prints the message, exits 2)."""


def listen(root: Path, problem: str, host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, bound before the service announces itself.

    Raises:
        ServeError: The address is taken or not available; the message names the port
            and the running service announced on it, if any.
    """
    import errno
    from urllib.parse import urlsplit

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # listening at once holds the port: Linux lets two SO_REUSEADDR sockets bind the
        # same port until one of them listens
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        holder = announced(root, problem)
        if (
            holder
            and urlsplit(str(holder["url"])).port == port
            and process_alive(holder.get("pid"))
        ):
            raise ServeError(
                f"port {port} is in use by the running {problem} service {holder['url']} "
                f"(pid {holder['pid']}); stop it first or choose another --port"
            ) from None
        raise ServeError(
            f"port {port} on {host} is in use by another process; choose another --port"
        ) from None
    sock.set_inheritable(True)  # uvicorn's worker processes serve on it
    return sock


WORKER_PROBLEM = "MLPLATFORM_SERVE_PROBLEM"
WORKER_REFRESH = "MLPLATFORM_SERVE_REFRESH"
WORKER_TOKEN = "MLPLATFORM_SERVE_TOKEN"  # the announcement's: workers take transitions with it


def worker_app() -> Any:
    """The app of one uvicorn worker process (``serve(..., workers=N)``)."""
    import os

    from mlplatform.problems import get_problem
    from mlplatform.serving.app import create_app

    runtime = profile_runtime(
        get_problem(os.environ[WORKER_PROBLEM]), float(os.environ.get(WORKER_REFRESH, "0.5"))
    )
    return create_app(
        runtime.start(), stop_on_shutdown=True, transition_token=os.environ.get(WORKER_TOKEN)
    )


@dataclass
class Background:
    """A service running in a thread of this process (tests and benchmarks)."""

    runtime: "Runtime"
    server: Any
    thread: threading.Thread
    url: str
    announcement: "Announcement | None" = None

    def stop(self) -> None:
        """Stop serving and flush the prediction log (and withdraw its announcement)."""
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.runtime.stop()
        if self.announcement is not None:
            self.announcement.withdraw()


def serve_in_background(
    runtime: "Runtime", host: str = "127.0.0.1", port: int = 0, announce_in: Path | None = None
) -> Background:
    """Start the real HTTP server on a free port in a thread; returns once it accepts.

    With ``announce_in`` (a data folder) it announces itself there as ``serve`` does, and
    takes rollout transitions from the commands that read the announcement's token.
    """
    import socket

    import uvicorn

    from mlplatform.serving.app import create_app

    if port == 0:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
    runtime.start()
    announcement = (
        announce(announce_in, runtime.problem.name, http_url(host, port)) if announce_in else None
    )
    app = create_app(runtime, transition_token=announcement.token if announcement else None)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the service did not start on {host}:{port}")
        time.sleep(0.02)
    return Background(runtime, server, thread, http_url(host, port), announcement)


def http_url(host: str, port: int) -> str:
    """The service's URL on ``host:port``; an IPv6 address in brackets (``http://[::1]:8000``)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def service_file(root: Path, problem: str) -> Path:
    """Where a running service announces its URL (written by ``mlplatform serve``)."""
    return root / "deployments" / problem / "service.json"


@dataclass(frozen=True)
class Announcement:
    """A service's announcement, as written by this process (its token proves it)."""

    path: Path
    token: str

    def withdraw(self) -> None:
        """Remove the announcement if it is still this process's: never another's.

        A service this one replaced and that still runs gets its announcement back, so
        stopping the newer of two services leaves the older one findable.
        """
        import json

        try:
            held = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if not (isinstance(held, dict) and held.get("token") == self.token):
            return
        earlier = held.get("replaced")
        while isinstance(earlier, dict) and not process_alive(earlier.get("pid")):
            earlier = earlier.get("replaced")
        if isinstance(earlier, dict):
            _write_json(self.path, earlier)
        else:
            self.path.unlink(missing_ok=True)


def _write_json(path: Path, body: dict[str, Any]) -> None:
    """Replace ``path`` whole (a reader never sees half of it)."""
    import json
    import os

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # owner-only: the token in it lets a command move the registry's aliases
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(json.dumps(body))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def announce(root: Path, problem: str, url: str) -> Announcement:
    """Record the service's URL and process for ``status`` and ``rollback``.

    The newest service of a problem holds the announcement; the file is replaced whole
    and carries a token, so each process removes only the announcement it wrote. The
    token also authorizes ``POST /deployment/transition`` on that service (the rollout
    commands send it); the file is readable by its owner only. A
    running service it replaces is kept inside it (``replaced``) and restored when this
    one withdraws.
    """
    import os
    import secrets
    from urllib.parse import urlsplit

    path = service_file(root, problem)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    body: dict[str, Any] = {
        "url": url,
        "port": urlsplit(url).port,
        "pid": os.getpid(),
        "token": token,
    }
    earlier = announced(root, problem)
    if earlier is not None and process_alive(earlier.get("pid")):
        body["replaced"] = earlier
    _write_json(path, body)
    return Announcement(path, token)


def announced(root: Path, problem: str) -> dict[str, Any] | None:
    """The announcement a service wrote (url, port, pid, token), if any."""
    import json

    try:
        held = json.loads(service_file(root, problem).read_text())
    except (OSError, ValueError):
        return None
    return held if isinstance(held, dict) and "url" in held else None


def service_url(root: Path, problem: str) -> str | None:
    """The URL a service announced, if any."""
    held = announced(root, problem)
    return str(held["url"]) if held else None


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
    """The ``service`` block of ``mlplatform status``: its URL and whether it answers.

    A service that answers adds ``prediction_log``: records written, pending (answered,
    not yet on disk) and lost, and the last write error (see ``PredictionLog.health``);
    while its writes fail or once records were lost, an alert says so.
    A degraded service adds ``alerts``: why it does not serve what the registry names (a
    champion deleted, an alias on a version the gates did not clear, an unreadable registry).
    """
    url = service_url(root, problem)
    health = call(url, "/health", timeout=1.0) if url else None
    out: dict[str, Any] = {"url": url, "up": bool(health and health.get("status") == "ok")}
    if health and "prediction_log" in health:
        out["prediction_log"] = health["prediction_log"]
    if health and health.get("degraded"):  # serving, but not what the registry says, or blind
        out["alerts"] = [a["reason"] for a in health.get("alerts", [])]
        if not health.get("registry", {}).get("ok", True):
            out["alerts"].append(f"registry unreadable: {health['registry'].get('error')}")
    written = out.get("prediction_log") or {}
    if written.get("failing") or written.get("lost"):  # answered requests without a record
        out.setdefault("alerts", []).append(
            f"prediction log: {written.get('lost', 0)} records lost, "
            f"{written.get('pending', 0)} waiting; last write error: {written.get('last_error')}"
        )
    return out
