"""The real PostgreSQL and Redis servers the production profile's tests use.

Each test gets its own PostgreSQL database (created and dropped here) and its own Redis
database number (flushed after). Without the servers the tests skip and say what is
missing; with ``MLPLATFORM_REQUIRE_SERVICES=1`` (CI) a missing server fails them.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REQUIRE_VAR = "MLPLATFORM_REQUIRE_SERVICES"
CLAIM = "mlplatform:test:claim"


def missing_services() -> list[str]:
    """Servers the integration tests need that do not answer."""
    missing = []
    try:
        import psycopg

        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3
        ):
            pass
    except Exception as exc:
        missing.append(f"PostgreSQL on {PG_HOST}:{PG_PORT} (user {PG_USER}): {exc}".strip())
    try:
        import redis

        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=3).ping()
    except Exception as exc:
        missing.append(f"Redis on {REDIS_HOST}:{REDIS_PORT}: {exc}")
    return missing


def require_services() -> None:
    """Skip (or, in CI, fail) the calling test when a server is missing."""
    missing = missing_services()
    if not missing:
        return
    message = "production-profile servers missing: " + "; ".join(missing)
    if os.environ.get(REQUIRE_VAR) == "1":
        pytest.fail(f"{message} ({REQUIRE_VAR}=1: they must run here)")
    pytest.skip(message)


def pg_url(database: str, driver: str = "postgresql") -> str:
    """URL of a database on the test server (``driver`` e.g. ``postgresql+psycopg``)."""
    return f"{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


@contextmanager
def pg_database(purpose: str) -> Iterator[str]:
    """A fresh, uniquely named database, dropped (with its connections) afterwards."""
    import psycopg
    from psycopg import sql

    name = f"mlp_test_{purpose}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@contextmanager
def redis_db() -> Iterator[int]:
    """An empty Redis database number, claimed by a key and flushed afterwards."""
    import redis

    for number in range(15, 3, -1):  # 1-3 are the production defaults; leave 0 alone
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
        claimed = client.set(CLAIM, uuid.uuid4().hex, nx=True)
        if claimed and client.dbsize() == 1:
            try:
                yield number
            finally:
                client.flushdb()
                client.close()
            return
        if claimed:  # someone else's data is here: leave it as it was
            client.delete(CLAIM)
        client.close()
    raise RuntimeError(f"no empty Redis database among 4..15 on {REDIS_HOST}:{REDIS_PORT}")


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(backend: str, artifacts: Path, log: Path) -> Iterator[str]:
    """A real ``mlflow server`` on a free port of 127.0.0.1, proxying its artifacts.

    Runs and the registry go to ``backend`` (e.g. a PostgreSQL URL); artifacts are written
    by the server alone under ``artifacts`` (``--artifacts-destination``), and clients see
    ``mlflow-artifacts:`` URIs: they need only the yielded URL. Stopped with its children.
    """
    from mlplatform.production import stop_worker

    port = free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(artifacts),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with log.open("ab") as out:
        server = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):  # a server on a fresh database runs its migrations first
            if server.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"mlflow server did not answer on {uri}: {log.read_text()[-2000:]}")
        yield uri
    finally:
        stop_worker(server)
