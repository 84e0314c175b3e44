"""What the deployment exposes: Dask on loopback only, the Dagster UI behind a login.

The Dask cluster is started with the very script ``deploy/local.sh`` uses, and the test
reads the listening sockets of its processes. The proxy is real nginx, run by
``deploy/proxy/proxy.sh`` from the configuration in ``deploy/proxy/``, in front of a real
HTTP server standing in for dagster-webserver (the proxy's rules do not depend on it).
"""

import base64
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlplatform_tests.services import REQUIRE_VAR, free_port

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
PASSWORD = "correct horse battery staple"


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process started in its own session, with its children."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the process and its children listen on."""
    import psutil

    root = psutil.Process(pid)
    out = []
    for proc in [root, *root.children(recursive=True)]:
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                out.append((conn.laddr.ip, conn.laddr.port))
    return out


# -- Dask ------------------------------------------------------------------------------------


# a shell line that runs `dask scheduler` or `dask worker` (continuation lines joined)
DASK_COMMAND = re.compile(
    r'^\s*(?:(?:setsid|exec)\s+)*"?[\w$./{}-]*dask"?\s+(?:scheduler|worker)\b.*$', re.M
)


def test_every_dask_command_in_deploy_and_docs_binds_processes_and_dashboards_to_loopback() -> None:
    local = (DEPLOY / "local.sh").read_text()
    assert re.findall(r"deploy/dask\.sh (scheduler|worker)", local) == ["scheduler", "worker"]
    sources = [*DEPLOY.rglob("*.sh"), REPO / "docs" / "deploy.md", REPO / "README.md"]
    commands = [
        (path.name, line)
        for path in sources
        for line in DASK_COMMAND.findall(path.read_text().replace("\\\n", " "))
    ]
    assert len(commands) >= 2  # the scheduler and the worker of deploy/dask.sh at least
    for where, line in commands:
        assert re.search(r'--host "?(127\.0\.0\.1|\$HOST)\b', line), (where, line)
        assert re.search(r'--dashboard-address "?(127\.0\.0\.1|\$HOST):', line), (where, line)


@pytest.mark.slow
def test_the_dask_cluster_of_local_sh_listens_on_loopback_only(tmp_path: Path) -> None:
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, "MLPLATFORM_DASK_SCHEDULER": address}
    started = []
    try:
        for args in (["scheduler"], ["worker", "2"]):
            log = (tmp_path / f"{args[0]}.log").open("w")
            started.append(
                subprocess.Popen(
                    [str(DEPLOY / "dask.sh"), *args],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            info = client.scheduler_info()
        dashboards = [info["services"]["dashboard"]] + [
            w["services"]["dashboard"] for w in info["workers"].values()
        ]
        scheduler, workers = (_listening(p.pid) for p in started)
    finally:
        for proc in started:
            _stop(proc)

    assert len(scheduler) >= 2 and len(workers) >= 6  # comms, nannies and dashboards
    assert {ip for ip, _ in scheduler + workers} == {"127.0.0.1"}, scheduler + workers
    assert set(dashboards) <= {port for _, port in scheduler + workers}


# -- the Dagster UI behind nginx -------------------------------------------------------------


def _require(binary: str, package: str) -> str:
    """The binary's path; else skip (or fail, where the services must exist) saying why."""
    found = shutil.which(binary) or next(
        (str(p) for p in (Path("/usr/sbin") / binary,) if p.exists()), None
    )
    if found:
        return found
    message = f"{binary} is not installed (Debian: apt-get install {package})"
    if os.environ.get(REQUIRE_VAR) == "1":
        pytest.fail(f"{message} ({REQUIRE_VAR}=1: it must be here)")
    pytest.skip(message)


class Upstream(http.server.ThreadingHTTPServer):
    """A real HTTP server standing in for dagster-webserver: it records what reaches it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        upstream = self.server
        assert isinstance(upstream, Upstream)
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        upstream.seen.append({"method": self.command, "path": self.path, **self.headers})
        body = json.dumps({"data": "from dagster"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Upstream]]:
    _require("nginx", "nginx")
    _require("openssl", "openssl")
    home = tmp_path_factory.mktemp("proxy")
    upstream = Upstream()
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    env = {
        **os.environ,
        "MLPLATFORM_PROXY_HOME": str(home),
        "MLPLATFORM_PROXY_LISTEN": f"127.0.0.1:{port}",
        "MLPLATFORM_PROXY_UPSTREAM": f"127.0.0.1:{upstream.server_address[1]}",
    }
    script = str(DEPLOY / "proxy" / "proxy.sh")
    subprocess.run([script, "htpasswd", "alice"], input=PASSWORD, env=env, check=True, text=True)
    log = (home / "proxy.log").open("w")
    proc = subprocess.Popen(
        [script, "run"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((home / "proxy.log").read_text()) from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", upstream
    finally:
        _stop(proc)
        upstream.shutdown()
        upstream.server_close()


def _auth(password: str = PASSWORD) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()}


@pytest.mark.integration
def test_the_ui_proxy_refuses_requests_without_valid_credentials(
    proxy: tuple[str, Upstream],
) -> None:
    url, upstream = proxy
    before = len(upstream.seen)

    anonymous = httpx.get(url + "/runs")
    wrong = httpx.get(url + "/runs", headers=_auth("not the password"))
    mutation = httpx.post(url + "/graphql", json={"query": "mutation { terminateRun }"})

    assert (anonymous.status_code, wrong.status_code, mutation.status_code) == (401, 401, 401)
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert len(upstream.seen) == before  # nothing reached the webserver


@pytest.mark.integration
def test_the_ui_proxy_passes_an_authenticated_request_without_the_password(
    proxy: tuple[str, Upstream],
) -> None:
    url, upstream = proxy

    page = httpx.get(url + "/runs", headers=_auth())
    query = httpx.post(url + "/graphql", json={"query": "{ version }"}, headers=_auth())

    assert (page.status_code, query.status_code) == (200, 200)
    assert query.json() == {"data": "from dagster"}
    seen = {(s["method"], s["path"]): s for s in upstream.seen}
    forwarded = seen[("POST", "/graphql")]
    assert "Authorization" not in forwarded and forwarded["X-Forwarded-User"] == "alice"


@pytest.mark.integration
def test_the_ui_proxy_refuses_what_another_site_can_make_a_signed_in_browser_send(
    proxy: tuple[str, Upstream],
) -> None:
    url, upstream = proxy
    before = len(upstream.seen)
    # Dagster runs a mutation sent by GET: a link or an <img> on any page would carry it
    by_get = httpx.get(
        url + "/graphql", params={"query": "mutation { launchRun }"}, headers=_auth()
    )
    # a cross-site form or fetch carries the browser's cached credentials and its Origin
    cross_site = httpx.post(
        url + "/graphql",
        json={"query": "mutation { deletePipelineRun }"},
        headers={**_auth(), "origin": "https://attacker.example"},
    )
    refused_count = len(upstream.seen)
    same_site = httpx.post(
        url + "/graphql", json={"query": "{ version }"}, headers={**_auth(), "origin": url}
    )

    assert (by_get.status_code, cross_site.status_code) == (405, 403)
    assert refused_count == before
    assert same_site.status_code == 200


def test_a_proxy_user_needs_a_real_password(tmp_path: Path) -> None:
    _require("openssl", "openssl")
    env = {**os.environ, "MLPLATFORM_PROXY_HOME": str(tmp_path)}
    script = str(DEPLOY / "proxy" / "proxy.sh")

    short = subprocess.run(
        [script, "htpasswd", "bob"], input="short", env=env, capture_output=True, text=True
    )
    ok = subprocess.run([script, "htpasswd", "bob"], input=PASSWORD, env=env, check=True, text=True)

    assert short.returncode == 2 and "12 characters" in short.stderr
    assert ok.returncode == 0
    (line,) = (tmp_path / "htpasswd").read_text().splitlines()
    assert line.startswith("bob:$6$") and PASSWORD not in line  # salted SHA-512 crypt
    assert (tmp_path / "htpasswd").stat().st_mode & 0o077 == 0  # readable by its owner only
