"""Rollback benchmark: ``mlplatform rollback`` under load, applied by the service or by itself.

Setup: that of ``bench/serving.py`` (2013-01-01..21 landed, validated, featurized; the
feature store job and two trainings through the platform's own Dagster jobs), then
``mlplatform serve`` as its own process (it announces itself with its token). Each round
puts the champion alias on the second version and ``previous`` on the first, waits until
the service serves the second, then sends an open-loop load of ``RATE`` requests per second
(``--rate``; until ``TAIL`` s after the command exits) and, ``LEAD`` seconds in, starts
``mlplatform rollback`` as a new process (its imports count). Rounds alternate the two
paths on the same service:

- ``service``: the command asks the running service (``POST /deployment/transition`` with
  the announcement's token); the service applies the transition and serves it;
- ``cli``: ``MLPLATFORM_TRANSITION_VIA_SERVICE=0``, the command applies it itself (imports
  MLflow, moves the alias), then asks the service to re-read the registry (the old path).

Per round: seconds from the command's start to the last answer from the rolled-back version
(``rollback_s``: the answer's completion), to the first answer from the restored one, and to
the command's exit; requests that failed; and the command's own figure, from its start of
work (imports done) to the service confirming the restored champion (``switch_s_own``).
Medians over ``ROUNDS`` rounds per path.

Last line: one JSON object with rollback_s, rollback_s_cli_path, first_restored_s,
switch_s_own and command_s (each also _cli_path), failed_requests (both paths' rounds),
speedup, the rounds, rate and the 1-minute load average before each round.
"""

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from common import free_port, start_service
from serving import client_session, load, setup, summary

from mlplatform.lib.deployment import registry as reg
from mlplatform.lib.storage import DataLake
from mlplatform.lib.tracking import local_tracking, registered_versions
from mlplatform.problems import get_problem
from mlplatform.serving.client import sample_requests, wait_until_up
from mlplatform.serving.server import call

RATE = 100  # requests per second during each round (--rate; the client shares the cores)
LEAD = 2.0  # seconds of load before the command starts
SECONDS = 120.0  # the longest load of a round; it ends TAIL seconds after the command
TAIL = 2.0
ROUNDS = 3  # per path, alternating
NAME = "flight_delay"
CLI = Path(sys.executable).with_name("mlplatform")


def serve_version(url: str, version: str, timeout: float = 30.0) -> None:
    """Wait until the service's follower serves ``version`` as champion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = call(url, "/health") or {}
        if health.get("champion") == version and not health.get("alerts"):
            return
        time.sleep(0.1)
    raise AssertionError(f"the service does not serve version {version}: {call(url, '/health')}")


def one_round(url: str, bodies: list[bytes], env: dict, old: str, new: str) -> dict:
    """One rollback under load; figures in seconds from the command's start."""
    log: list = []
    marks: dict[str, float] = {}
    printed: list[str] = []
    stop = asyncio.Event()

    async def rollback() -> None:
        await asyncio.sleep(LEAD)
        marks["start"] = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            str(CLI),
            "rollback",
            "--problem",
            NAME,
            "--reason",
            "bench",
            "--by",
            "bench",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        marks["exit"] = time.perf_counter()
        printed.append(out.decode() + err.decode())
        await asyncio.sleep(TAIL)
        stop.set()
        assert proc.returncode == 0, printed[-1]

    async def under_load() -> None:
        async with client_session() as session:
            answers = load(session, url, bodies, RATE, SECONDS, stop)
            log.extend((await asyncio.gather(answers, rollback()))[0])

    asyncio.run(under_load())
    start = marks["start"]
    # (due, latency, ok, version, error): an answer completes at due + latency
    last_old = max((r[0] + r[1] for r in log if r[3] == old), default=float("nan"))
    first_new = min((r[0] + r[1] for r in log if r[3] == new), default=float("nan"))
    late = [r for r in log if r[3] == new]
    if not late:  # the load ended before the restored version answered: no figure
        last_old = float("nan")
    # the command's own figure: from its start of work (its imports done) to the service
    # confirming the restored champion
    found = re.search(r"serves champion \S+ after ([0-9.]+) s", printed[0])
    return {
        "rollback_s": round(last_old - start, 3),
        "switch_s_own": float(found.group(1)) if found else float("nan"),
        "first_restored_s": round(first_new - start, 3),
        "command_s": round(marks["exit"] - start, 3),
        "failed_requests": sum(1 for r in log if not r[2]),
        "load": summary(log),
        "output": printed[0].strip().splitlines(),
    }


def main() -> None:
    global RATE, ROUNDS
    parser = argparse.ArgumentParser(description="mlplatform rollback under load, two paths")
    parser.add_argument("--rate", type=int, default=RATE, help="requests per second")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds per path")
    parser.add_argument("--reuse", help="a folder an earlier run set up (DIR/data)")
    args = parser.parse_args()
    RATE, ROUNDS = args.rate, args.rounds
    if args.reuse:
        tmp = Path(args.reuse)
        root = tmp / "data"
        lake = DataLake(root)
        problem = get_problem(NAME)
        days = (date(2013, 1, 20), date(2013, 1, 21))
        requests = [r for d in days for r in sample_requests(lake, problem, d, 600)]
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench-rollback-"))
        root = tmp / "data"
        made = setup(root)  # bench/serving.py's: the lake, the feature store, two versions
        # (an older setup answered (lake, requests))
        requests = list(made[1] if isinstance(made, tuple) else made)  # pyright: ignore
    tracking = local_tracking(root)
    versions = [v["version"] for v in registered_versions(tracking, NAME)]
    first, second = versions[0], versions[1]
    if not reg.clearance(tracking, NAME, second).cleared:
        # the second training may stop at a gate (not better than the first): a recorded
        # override lets it take traffic, as a person would give it with who and why
        reg.set_version_tags(
            tracking,
            NAME,
            second,
            {
                "verdict": reg.OVERRIDDEN,
                "override_by": "bench",
                "override_reason": "rollback benchmark: both versions take traffic",
            },
        )
    reg.delete_alias(tracking, NAME, reg.CHALLENGER)
    reg.set_alias(tracking, NAME, reg.CHAMPION, second)
    port = free_port()
    server = start_service(root, tmp / "dh", port)
    env = {**os.environ, "MLPLATFORM_DATA_DIR": str(root), "DAGSTER_HOME": str(tmp / "dh")}
    url = f"http://127.0.0.1:{port}"
    rounds: dict[str, list[dict]] = {"service": [], "cli": []}
    loads = []
    try:
        assert wait_until_up(url, 120), "service did not start"
        bodies = [json.dumps(r).encode() for r in requests]

        async def warm_up() -> None:
            async with client_session() as session:
                await load(session, url, bodies, 50, 3)

        asyncio.run(warm_up())
        for i in range(ROUNDS * 2):
            path = ("service", "cli")[i % 2]
            reg.set_alias(tracking, NAME, reg.CHAMPION, second)
            reg.set_alias(tracking, NAME, reg.PREVIOUS, first)
            serve_version(url, second)
            run_env = env | ({"MLPLATFORM_TRANSITION_VIA_SERVICE": "0"} if path == "cli" else {})
            loads.append(os.getloadavg()[0])
            figures = one_round(url, bodies, run_env, old=second, new=first)
            rounds[path].append(figures)
            shown = {k: v for k, v in figures.items() if k != "output"}
            print(f"{path:>7}: {shown} (load {loads[-1]:.2f})", file=sys.stderr)
            for line in figures["output"]:
                print(f"         | {line}", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=20)

    def median(path: str, key: str) -> float:
        return round(statistics.median(r[key] for r in rounds[path]), 3)

    fast, slow = median("service", "rollback_s"), median("cli", "rollback_s")
    print(
        json.dumps(
            {
                "rollback_s": fast,
                "rollback_s_cli_path": slow,
                "speedup": round(slow / fast, 2),
                "first_restored_s": median("service", "first_restored_s"),
                "first_restored_s_cli_path": median("cli", "first_restored_s"),
                "switch_s_own": median("service", "switch_s_own"),
                "switch_s_own_cli_path": median("cli", "switch_s_own"),
                "command_s": median("service", "command_s"),
                "command_s_cli_path": median("cli", "command_s"),
                "failed_requests": sum(r["failed_requests"] for p in rounds.values() for r in p),
                "rollback_s_rounds": [r["rollback_s"] for r in rounds["service"]],
                "rollback_s_cli_path_rounds": [r["rollback_s"] for r in rounds["cli"]],
                "p99_ms_rounds": [r["load"]["p99_ms"] for p in rounds.values() for r in p],
                "rate_rps": RATE,
                "rounds_per_path": ROUNDS,
                "loadavg_1m": [round(x, 2) for x in loads],
            }
        )
    )


if __name__ == "__main__":
    main()
