"""Serving benchmark: the HTTP service under fixed request rates, an alias swap, a rollback.

Setup: 2013-01-01..21 landed, validated and featurized; the feature store job and two
trainings (fixed parameters) through the platform's own Dagster jobs, so the registry
holds a champion and a second version. The service runs as its own process
(`mlplatform serve`); the load generator is an open-loop asyncio client on the same
machine (2 cores shared): each request is sent at its scheduled time and its latency is
counted from that time, so queueing shows.

1. p50/p99 and errors at 50, 200 and 500 requests per second (features included), beside
   a raw ``Booster.predict`` of one encoded row of the same model in this process; and
   200 rps against ``--workers 2``.
2. An alias swap under 200 rps: failed requests and p99 around the swap against steady.
3. ``mlplatform rollback`` under load: seconds from starting the command (a new Python
   process: its imports count) to the last response from the rolled-back version
   (``rollback_s``); and the command's own figure from its alias move to the service
   confirming the previous champion (``rollback_switch_s``).

Last line: one JSON object with p99_ms_at_200rps, raw_predict_p99_ms, swap_failed_requests,
swap_p99_ratio, rollback_s (and the figures per rate).
"""

import asyncio
import json
import os
import re
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
from mlplatform.lib.deployment import registry as reg
from mlplatform.lib.storage import DataLake
from mlplatform.lib.tracking import local_tracking, registered_versions
from mlplatform.problems import get_problem
from mlplatform.serving.client import sample_requests, wait_until_up

START, END = date(2013, 1, 1), date(2013, 1, 21)
RATES = (50, 200, 500)
SECONDS = 8
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
CLI = Path(sys.executable).with_name("mlplatform")


def setup(root: Path) -> tuple[DataLake, list[dict]]:
    problem = get_problem("flight_delay")
    lake = DataLake(root)
    prepare(lake, problem, START, END)
    defs = definitions(problem, root)
    with dg.instance_for_test() as instance:
        job = defs.resolve_job_def(feature_store_job_name(problem))
        assert job.execute_in_process(instance=instance, run_config=QUIET).success
        op = f"{problem.name}__model_candidate"
        for params in (
            {"learning_rate": 0.05, "num_leaves": 16},
            {"learning_rate": 0.1, "num_leaves": 31},
        ):
            config = {"params": params, "max_rounds": 200}
            run = defs.resolve_job_def(training_job_name(problem)).execute_in_process(
                instance=instance,
                run_config={**QUIET, "ops": {op: {"config": config}}},
                raise_on_error=False,
            )
            print(f"training run: {'ok' if run.success else 'stopped by a gate'}", file=sys.stderr)
    requests = [
        r
        for d in (date(2013, 1, 20), date(2013, 1, 21))
        for r in sample_requests(lake, problem, d, 600)
    ]
    return lake, requests


async def load(url: str, requests: list[dict], rate: int, seconds: float, log: list) -> None:
    """Open loop: request i is due at start + i/rate; latency counts from when it was due."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:
        start = time.perf_counter()
        tasks = []

        async def one(i: int, due: float) -> None:
            try:
                response = await client.post("/predict", json=requests[i % len(requests)])
                ok = response.status_code == 200
                version = response.json().get("version") if ok else None
            except httpx.HTTPError:
                ok, version = False, None
            log.append((due, time.perf_counter() - due, ok, version))

        for i in range(int(rate * seconds)):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)


def summary(log: list) -> dict:
    lat = np.array([r[1] for r in log]) * 1000
    return {
        "requests": len(log),
        "errors": sum(1 for r in log if not r[2]),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
    }


def raw_predict_p99(lake: DataLake, requests: list[dict]) -> float:
    """The same model's one-row predict, on rows encoded as the service encodes them."""
    from mlplatform.lib.deployment.scoring import OnlineScorer
    from mlplatform.lib.features.feature_store import open_store, service_of

    problem = get_problem("flight_delay")
    tracking = local_tracking(lake.root)
    model = reg.load_version(
        tracking, problem.name, reg.aliases(tracking, problem.name)["champion"]
    )
    store = open_store(problem, lake.root)
    scorer = OnlineScorer(problem, store, service_of(problem, store, lake.root))
    rows = [np.asarray([model.encoding.row(scorer.features(r).values)]) for r in requests[:500]]
    took = []
    for _ in range(4):
        for row in rows:
            t = time.perf_counter()
            model.booster.predict(row, num_threads=1)
            took.append((time.perf_counter() - t) * 1000)
    return round(float(np.percentile(took[500:], 99)), 3)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    root = tmp / "data"
    lake, requests = setup(root)
    tracking = local_tracking(root)
    versions = [v["version"] for v in registered_versions(tracking, "flight_delay")]
    reg.set_alias(tracking, "flight_delay", reg.CHAMPION, versions[0])
    reg.delete_alias(tracking, "flight_delay", reg.CHALLENGER)
    port = free_port()
    server = start_service(root, tmp / "dh", port)
    env = {**os.environ, "MLPLATFORM_DATA_DIR": str(root), "DAGSTER_HOME": str(tmp / "dh")}
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until_up(url, 120), "service did not start"
        asyncio.run(load(url, requests, 50, 3, []))  # warm-up
        rates = {}
        repeats: list[float] = []
        for rate in RATES:
            # 200 rps, the headline, three times: one stall (GC, a flush) moves a p99 of
            # 1,600 requests, so the median of three runs is reported, and all three
            for _ in range(3 if rate == 200 else 1):
                log: list = []
                asyncio.run(load(url, requests, rate, SECONDS, log))
                rates[rate] = summary(log)
                print(f"{rate:>4} rps: {rates[rate]}", file=sys.stderr)
                if rate == 200:
                    repeats.append(rates[rate]["p99_ms"])
        rates[200]["p99_ms"] = sorted(repeats)[1]

        # alias swap under 200 rps: the champion alias moves to the other version mid-run
        log = []

        async def swap() -> None:
            await asyncio.sleep(SECONDS / 2)
            reg.set_alias(tracking, "flight_delay", reg.CHAMPION, versions[1])

        async def both() -> None:
            await asyncio.gather(load(url, requests, 200, SECONDS, log), swap())

        asyncio.run(both())
        changed = [r for r in log if r[3] == versions[1]]
        first_new = min(r[0] for r in changed) if changed else float("inf")
        around = [r for r in log if abs(r[0] - first_new) <= 1.0]
        swap_p99 = summary(around)["p99_ms"] if around else float("nan")
        swap_failed = sum(1 for r in log if not r[2])
        print(f"swap: {summary(log)}, p99 within 1 s of the switch {swap_p99} ms", file=sys.stderr)

        # rollback under 200 rps: versions[1] is champion, versions[0] previous
        reg.set_alias(tracking, "flight_delay", reg.PREVIOUS, versions[0])
        log = []
        started: list[float] = []
        printed: list[str] = []

        async def rollback() -> None:
            await asyncio.sleep(2)
            started.append(time.perf_counter())
            proc = await asyncio.create_subprocess_exec(
                str(CLI),
                "rollback",
                "--problem",
                "flight_delay",
                "--reason",
                "bench",
                env=env,
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await proc.communicate()
            printed.append(out.decode())

        async def under_load() -> None:
            await asyncio.gather(load(url, requests, 200, SECONDS + 4, log), rollback())

        asyncio.run(under_load())
        last_old = max((r[0] + r[1] for r in log if r[3] == versions[1]), default=started[0])
        rollback_s = round(last_old - started[0], 3)
        # the command's own figure: from its start of work (imports done) to the service
        # confirming the previous champion
        found = re.search(r"serves champion \S+ after ([0-9.]+) s", printed[0] if printed else "")
        rollback_switch_s = float(found.group(1)) if found else float("nan")
        print(
            f"rollback: {summary(log)}, last old answer {rollback_s} s after the command",
            file=sys.stderr,
        )
    finally:
        server.terminate()
        server.wait(timeout=20)
    # the same 200 rps against two uvicorn workers (each with its own runtime)
    two = start_service(root, tmp / "dh", port, workers=2)
    try:
        assert wait_until_up(url, 120), "two-worker service did not start"
        asyncio.run(load(url, requests, 50, 3, []))  # warm-up (both workers)
        log = []
        asyncio.run(load(url, requests, 200, SECONDS, log))
        two_workers = summary(log)
        print(f" 200 rps, 2 workers: {two_workers}", file=sys.stderr)
    finally:
        two.terminate()
        two.wait(timeout=20)
    raw = raw_predict_p99(lake, requests)
    steady = rates[200]["p99_ms"]
    print(
        json.dumps(
            {
                "p99_ms_at_200rps": steady,
                "raw_predict_p99_ms": raw,
                "swap_failed_requests": swap_failed,
                "swap_p99_ratio": round(swap_p99 / steady, 2),
                "rollback_s": rollback_s,
                "rollback_switch_s": rollback_switch_s,
                "rates": {str(k): v for k, v in rates.items()},
                "p99_ms_at_200rps_2_workers": two_workers["p99_ms"],
                "p99_ms_at_200rps_runs": repeats,
            }
        )
    )


if __name__ == "__main__":
    main()
