"""Serving benchmark: single requests alone, then while three clients send batches of 1,000.

Setup: 2013-01-01..21 landed, validated and featurized (``common.prepare``), the feature
store job and one training with fixed parameters through the platform's own Dagster jobs
(its p99-latency gate overridden, with the reason recorded: this machine is shared, and
the latency under load is what this benchmark measures). The service runs as its own
process (``mlplatform serve``, one worker); the load generator is an open-loop asyncio
client on the same machine (2 cores): single request i is due at start + i/rate and its
latency counts from then, so queueing behind a batch shows.

1. Singles alone at ``RATE`` requests per second for ``SECONDS``.
2. The same singles while ``BATCH_CLIENTS`` clients each send batches of ``BATCH`` back to
   back (the issue's case: three concurrent batches of 1,000 made a single wait 18.6 s).

``--data DIR`` reuses the data folder of an earlier run (printed on stderr), skipping the
setup: the same folder can then be served by another version of the code, side by side.

Last line: one JSON object with single_p50_ms_alone, single_p99_ms_alone,
single_p50_ms_with_batches, single_p99_ms_with_batches, ratio (p99 with / alone),
budget_ms (the spec's latency budget), batch_items_per_s and batches.
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import dagster as dg
import httpx
import numpy as np
from common import definitions, free_port, prepare, start_service

from mlplatform.defs.jobs import feature_store_job_name, training_job_name
from mlplatform.lib.storage import DataLake
from mlplatform.problems import get_problem
from mlplatform.serving.client import sample_requests, wait_until_up

START, END = date(2013, 1, 1), date(2013, 1, 21)
RATE = 50
SECONDS = 8
BATCH, BATCH_CLIENTS = 1000, 3
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def setup(root: Path) -> None:
    """A lake, an online store and one champion."""
    problem = get_problem("flight_delay")
    lake = DataLake(root)
    prepare(lake, problem, START, END)
    defs = definitions(problem, root)
    with dg.instance_for_test() as instance:
        job = defs.resolve_job_def(feature_store_job_name(problem))
        assert job.execute_in_process(instance=instance, run_config=QUIET).success
        ops = {
            f"{problem.name}__model_candidate": {
                "config": {"params": {"learning_rate": 0.1, "num_leaves": 31}, "max_rounds": 200}
            },
            f"{problem.name}__evaluation_report": {
                "config": {
                    "override_gates": ["p99_latency"],
                    "override_by": "bench/serving_batches.py",
                    "override_reason": "shared benchmark machine; latency is measured here",
                }
            },
        }
        run = defs.resolve_job_def(training_job_name(problem)).execute_in_process(
            instance=instance, run_config={**QUIET, "ops": ops}, raise_on_error=False
        )
        assert run.success, "the training job did not promote a champion"


def sample(root: Path) -> list[dict]:
    """Real flights of the last two days, as requests."""
    lake, problem = DataLake(root), get_problem("flight_delay")
    return [r for d in (date(2013, 1, 20), END) for r in sample_requests(lake, problem, d, 500)]


async def singles(url: str, requests: list[dict], log: list) -> None:
    """Open loop: request i is due at start + i/RATE; latency counts from when it was due."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        start = time.perf_counter()
        tasks = []

        async def one(i: int, due: float) -> None:
            try:
                ok = (await client.post("/predict", json=requests[i])).status_code == 200
            except httpx.HTTPError:
                ok = False
            log.append((time.perf_counter() - due, ok))

        for i in range(int(RATE * SECONDS)):
            due = start + i / RATE
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i % len(requests), due)))
        await asyncio.gather(*tasks)


async def batches(url: str, body: dict, stop: asyncio.Event, done: list) -> None:
    """One client sending batches back to back until ``stop``."""
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        while not stop.is_set():
            response = await client.post("/predict", json=body)
            done.append(response.status_code)


async def with_batches(url: str, requests: list[dict], log: list, done: list) -> float:
    """Singles while the batch clients run; returns the seconds the batch clients ran."""
    body = {"instances": (requests * (BATCH // len(requests) + 1))[:BATCH]}
    stop = asyncio.Event()
    started = time.perf_counter()
    clients = [asyncio.create_task(batches(url, body, stop, done)) for _ in range(BATCH_CLIENTS)]
    await asyncio.sleep(1.0)  # the batches are being scored before the first single
    await singles(url, requests, log)
    stop.set()
    await asyncio.gather(*clients)
    return time.perf_counter() - started


def summary(log: list) -> dict:
    lat = np.array([r[0] for r in log]) * 1000
    return {
        "requests": len(log),
        "errors": sum(1 for r in log if not r[1]),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="single-request latency while batches run")
    parser.add_argument("--data", type=Path, help="data folder of an earlier run")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-batches-"))
    root = args.data or tmp / "data"
    if args.data is None:
        setup(root)
    print(f"data folder: {root}", file=sys.stderr)
    requests = sample(root)
    port = free_port()
    server = start_service(root, tmp / "dh", port)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until_up(url, 120), "service did not start"
        asyncio.run(singles(url, requests, []))  # warm-up
        alone: list = []
        asyncio.run(singles(url, requests, alone))
        print(f"singles alone: {summary(alone)}", file=sys.stderr)
        loaded: list = []
        done: list = []
        seconds = asyncio.run(with_batches(url, requests, loaded, done))
        print(f"singles with batches: {summary(loaded)}", file=sys.stderr)
        print(
            f"batches: {len(done)} answered {sorted(set(done))} in {seconds:.1f} s", file=sys.stderr
        )
    finally:
        server.terminate()
        server.wait(timeout=20)
    a, b = summary(alone), summary(loaded)
    print(
        json.dumps(
            {
                "single_p50_ms_alone": a["p50_ms"],
                "single_p99_ms_alone": a["p99_ms"],
                "single_p50_ms_with_batches": b["p50_ms"],
                "single_p99_ms_with_batches": b["p99_ms"],
                "single_max_ms_with_batches": b["max_ms"],
                "ratio": round(b["p99_ms"] / a["p99_ms"], 2),
                "budget_ms": get_problem("flight_delay").spec.latency_budget_ms,
                "single_errors": a["errors"] + b["errors"],
                "batches": len(done),
                "batch_items_per_s": round(len(done) * BATCH / seconds, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
