"""Serving benchmark: the HTTP service against floors measured in the same run.

Setup: 2013-01-01..21 landed, validated and featurized; the feature store job and two
trainings (fixed parameters) through the platform's own Dagster jobs, so the registry
holds a champion and a second version (``--data DIR`` keeps and reuses the folder).

Floors, in the same run on the same (shared, 2-core) machine:

- a bare FastAPI endpoint answering a constant (``bench/serving_bare.py``), started as
  the service is (its own process, the same uvicorn settings): the HTTP stack alone;
- the raw Feast online read of one request (``get_online_features``, as the service
  calls it) and the predict of one encoded row, ``Booster.predict`` and the service's
  single-row fast path side by side (alone, and from four threads at once), in this
  process; the two give the same floats (asserted).

The load generator is open-loop (aiohttp on uvloop, one session per target kept across
runs, as a client fleet keeps its connections): request i is due at start + i/rate and
its latency counts from then, so queueing shows. A pause of the generator counts as
latency too: its heap (Dagster, MLflow, Feast, the setup's jobs) is frozen after the
setup (``gc.freeze``), since one full collection of it took ~0.5 s in the first 200-rps
run, which was the "first-run stall" (``--no-freeze`` brings it back); each run reports
the generator's longest collector pause (``generator_gc_ms``). Measured:

1. The first 200-rps run after a warm-up (``first_run_p99_ms``), then 200 rps against
   the service, the bare endpoint and the service as it was before its single-row fast
   path (``before``: ``Booster.predict`` per request) in turn, 5 times (3 with
   ``--quick``): the p99 ratio to the bare endpoint of each run and their median
   (``p99_ratio_to_bare``, ``before_p99_ratio_to_bare``), and each server's CPU time per
   request (``cpu_ms_per_request``, from its process's counters: little moved by the
   machine's load, unlike the latencies).
2. A ladder of rates against the bare endpoint, the service and the service with
   ``--workers 2``: the highest rate each sustains with no errors and a p99 within
   ``P99_FACTOR`` times the bare endpoint's p99 at 200 rps (a failing rate is tried once
   more: the machine is shared); ``max_rps_share_of_bare`` = the service's / the bare
   endpoint's.
3. An alias swap under 200 rps (the alias moved by another process): failed requests and
   p99 within 1 s of the first answer of the new version, against the steady p99.

Last line: one JSON object (the keys of ``main``'s result, figures per run included).

    .venv/bin/python bench/serving.py [--quick] [--data DIR]
"""

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
from common import definitions, free_port, prepare, start_service

from mlplatform.defs.jobs import feature_store_job_name, training_job_name
from mlplatform.lib.deployment import registry as reg
from mlplatform.lib.storage import DataLake
from mlplatform.lib.tracking import local_tracking, registered_versions
from mlplatform.problems import get_problem
from mlplatform.serving.client import sample_requests, wait_until_up

START, END = date(2013, 1, 1), date(2013, 1, 21)
RATE = 200  # the headline rate
LADDER = (100, 200, 300, 400, 600, 800, 1000, 1200, 1600, 2000, 2400)
P99_FACTOR = 3.0  # a rate is sustained while p99 <= this x the bare endpoint's p99 at RATE
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
BARE = Path(__file__).with_name("serving_bare.py")
READY = "requests.json"  # written last by setup: the folder is complete
BEFORE = """
import math, sys
import numpy as np
import mlplatform.serving.runtime as runtime
def _score(model, values):
    row = model.encoding.row(values)
    out = model.booster.predict(np.asarray([row], dtype=float), num_threads=1)
    p = float(out[0]) + model.encoding.offset_row(row)
    if math.isnan(p):
        raise ValueError(f"version {model.version} returned NaN")
    return p
runtime._score = _score
from mlplatform.cli import main
sys.argv[0] = "mlplatform"
sys.exit(main())
"""


def setup(root: Path) -> list[dict]:
    """Prepare the lake, train two versions; the requests (two days' flights) to send."""
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
    (root / READY).write_text(json.dumps(requests))
    return requests


# moves the champion alias when told (stdin), from its own process
MOVER = """
import sys
from pathlib import Path
from mlplatform.lib.deployment import registry as reg
from mlplatform.lib.tracking import local_tracking
tracking = local_tracking(Path(sys.argv[1]))
reg.aliases(tracking, "flight_delay")  # connected
print("ready", flush=True)
sys.stdin.readline()
reg.set_alias(tracking, "flight_delay", reg.CHAMPION, sys.argv[2])
print("moved", flush=True)
"""


# -- the load generator -----------------------------------------------------------------
async def load(
    session: Any,
    url: str,
    bodies: list[bytes],
    rate: int,
    seconds: float,
    stop: asyncio.Event | None = None,
) -> list:
    """Open loop: request i is due at start + i/rate; latency counts from when it was due.

    Returns one ``(due, latency_s, ok, version, error)`` per request (``perf_counter``
    seconds; ``error`` names a failure: ``HTTP 503``, ``TimeoutError``, ...). Sending
    stops early once ``stop`` is set.
    """
    import aiohttp

    log: list = []
    headers = {"content-type": "application/json"}

    async def one(i: int, due: float) -> None:
        try:
            async with session.post(
                url + "/predict", data=bodies[i % len(bodies)], headers=headers
            ) as response:
                text = await response.read()
                ok = response.status == 200
                error = None if ok else f"HTTP {response.status}"
            version = json.loads(text).get("version") if ok else None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            ok, version, error = False, None, type(exc).__name__
        log.append((due, time.perf_counter() - due, ok, version, error))

    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        if stop is not None and stop.is_set():
            break
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    return log


def summary(log: list) -> dict[str, Any]:
    """Requests, errors (and their kinds), p50 and p99 (ms) and the slowest request of one run."""
    lat = np.array([r[1] for r in log]) * 1000
    kinds = collections.Counter(r[4] for r in log if not r[2])
    return {
        "requests": len(log),
        "errors": sum(kinds.values()),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 1),
    } | ({"error_kinds": dict(kinds)} if kinds else {})


def client_session() -> Any:
    """The generator's ``aiohttp.ClientSession``: connections kept, as a client fleet keeps
    them; a request not answered in 10 s counts as failed."""
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, force_close=False),
        timeout=aiohttp.ClientTimeout(total=10),
    )


class Target:
    """One server under load: its URL and the generator's session (connections kept)."""

    def __init__(self, name: str, url: str, bodies: list[bytes], pid: int) -> None:
        self.name, self.url, self.bodies, self.pid = name, url, bodies, pid
        self.session = client_session()

    async def run(self, rate: int, seconds: float, label: str = "") -> dict[str, Any]:
        """One open-loop run; its summary with the generator's longest collector pause."""
        COLLECTOR.longest()
        cpu = cpu_seconds(self.pid)
        log = await load(self.session, self.url, self.bodies, rate, seconds)
        out = summary(log) | {
            "cpu_ms_per_request": round((cpu_seconds(self.pid) - cpu) * 1000 / len(log), 3),
            "generator_gc_ms": COLLECTOR.longest(),
        }
        print(f"{self.name:>10} {rate:>5} rps {label}: {out}", file=sys.stderr)
        return out

    async def warm_up(self) -> None:
        """What a service meets after its start: traffic, from low to the headline rate."""
        await load(self.session, self.url, self.bodies, 50, 2)
        await load(self.session, self.url, self.bodies, RATE, 2)

    async def ladder(self, limit: float, seconds: float) -> tuple[int, dict[str, Any]]:
        """The highest rate of ``LADDER`` with no errors and p99 <= ``limit`` ms."""
        best, runs = 0, {}
        for rate in LADDER:
            for attempt in range(2):  # one more try: a neighbour's burst is not our limit
                out = await self.run(rate, seconds, f"ladder try {attempt + 1}")
                runs[f"{rate}" + ("" if attempt == 0 else "_retry")] = out
                if out["errors"] == 0 and out["p99_ms"] <= limit:
                    break
            else:
                return best, runs
            best = rate
        return best, runs


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """A server process, terminated on the way out."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@contextlib.contextmanager
def service_process(
    root: Path, home: Path, port: int, workers: int = 1, predict_row: bool = False
) -> Iterator[tuple[str, int]]:
    """``mlplatform serve`` (``workers`` uvicorn workers) on ``port``; yields URL and pid.

    ``predict_row``: the service as it was before its single-row fast path, scoring with
    ``Booster.predict``: the same command, ``_score`` replaced before it runs, for a
    side-by-side comparison.
    """
    if predict_row:
        env = {**os.environ, "MLPLATFORM_DATA_DIR": str(root), "DAGSTER_HOME": str(home)}
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                BEFORE,
                "serve",
                "--problem",
                "flight_delay",
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    else:
        server = start_service(root, home, port, workers=workers)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_until_up(url, 300), "service did not start"  # a loaded machine: slow
        yield url, server.pid
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()  # its workers go with it (uvicorn's supervisor's group)
            server.wait(timeout=10)


# -- floors in this process ---------------------------------------------------------------
def raw_floors(root: Path, requests: list[dict]) -> dict[str, float]:
    """p99 of the raw Feast online read and of one encoded row's predict, in this process.

    The read is the service's own call (``get_online_features`` of the feature service
    for one entity row). The predict takes rows encoded as the service encodes them, two
    ways side by side: ``Booster.predict`` (the service before) and the single-row fast
    path (``LoadedModel.predict_row``, the service now); each alone, then from the service's
    four request threads at once beside a busy Python thread (the event loop's share).
    """
    import threading

    from mlplatform.lib.deployment.scoring import OnlineScorer
    from mlplatform.lib.features.feature_store import join_keys, open_store, service_of
    from mlplatform.lib.features.tables import GLOBAL_KEY

    problem = get_problem("flight_delay")
    tracking = local_tracking(root)
    model = reg.load_version(
        tracking, problem.name, reg.aliases(tracking, problem.name)["champion"]
    )
    store = open_store(problem, root)
    service = service_of(problem, store, root)
    scorer = OnlineScorer(problem, store, service)
    names = join_keys(problem.spec)
    keys = []
    for r in requests:  # the entity keys as online_vector builds them
        row = problem.entity_row(r)
        keys.append({k: row[k] for k in [*names, GLOBAL_KEY] if k in row})
    took = []
    for key in keys[:100] + keys:  # the first 100 warm up
        t = time.perf_counter()
        store.get_online_features(features=service, entity_rows=[key]).to_dict()
        took.append((time.perf_counter() - t) * 1000)
    out = {"feast_online_p99_ms": round(float(np.percentile(took[100:], 99)), 3)}
    rows = [model.encoding.row(scorer.features(r).values) for r in requests[:500]]

    def booster_predict(row: list[float]) -> float:
        out = model.booster.predict(np.asarray([row], dtype=float), num_threads=1)
        return float(np.asarray(out).ravel()[0]) + model.encoding.offset_row(row)

    fast = model.predict_row
    assert [fast(r) for r in rows] == [booster_predict(r) for r in rows], (
        "the fast path differs from Booster.predict"
    )
    for name, predict in (("raw_predict", booster_predict), ("fast_predict", fast)):
        took = []
        for _ in range(4):
            for row in rows:
                t = time.perf_counter()
                predict(row)
                took.append((time.perf_counter() - t) * 1000)
        out[f"{name}_p99_ms"] = round(float(np.percentile(took[500:], 99)), 3)
        stop = threading.Event()

        def busy(stop: threading.Event = stop) -> None:
            while not stop.is_set():
                sum(range(1000))

        def score(into: list[float], predict: Any = predict) -> None:
            for row in rows:
                t = time.perf_counter()
                predict(row)
                into.append((time.perf_counter() - t) * 1000)

        spinner = threading.Thread(target=busy)
        spinner.start()
        took = [[] for _ in range(4)]
        threads = [threading.Thread(target=score, args=(t,)) for t in took]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        spinner.join()
        out[f"{name}_4_threads_p99_ms"] = round(
            float(np.percentile([x for t in took for x in t], 99)), 3
        )
    return out


class CollectorPauses:
    """This process's garbage-collection pauses (ms), as ``gc.callbacks`` report them.

    The generator's own pause delays every request due meanwhile, and an open-loop
    generator counts that delay as latency: a full collection over this process's heap
    (Dagster, MLflow, Feast, the setup's jobs) took ~0.5 s, once, in the first 200-rps run
    after the warm-up. ``gc.freeze()`` after the setup leaves the collector only the
    objects made since; the pauses are kept so a run can show its generator was not the
    cause.
    """

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], (time.perf_counter() - self._started) * 1e3))

    def longest(self) -> float:
        """The longest pause since the last call, ms."""
        out = max((p for _, p in self.pauses), default=0.0)
        self.pauses.clear()
        return round(out, 1)


COLLECTOR = CollectorPauses()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (uvicorn's workers)."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def load_avg() -> float:
    """The 1-minute load average (the machine is shared: noted beside each figure)."""
    return round(os.getloadavg()[0], 2)


def main() -> None:
    """Run the benchmark; print the figures, then one JSON line."""
    import uvloop

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs")
    parser.add_argument("--data", type=Path, help="keep (and reuse) the prepared folder here")
    parser.add_argument(
        "--no-freeze", action="store_true", help="leave the generator's heap to the collector"
    )
    args = parser.parse_args()
    runs, seconds, ladder_seconds = (3, 4, 3) if args.quick else (5, 8, 5)

    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    root = args.data or tmp / "data"
    if (root / READY).exists():
        requests = json.loads((root / READY).read_text())
    else:
        requests = setup(root)
    tracking = local_tracking(root)
    versions = sorted(
        (v["version"] for v in registered_versions(tracking, "flight_delay")), key=int
    )
    reg.set_alias(tracking, "flight_delay", reg.CHAMPION, versions[0])
    reg.delete_alias(tracking, "flight_delay", reg.CHALLENGER)
    floors = raw_floors(root, requests)
    print(f"floors: {floors} (load {load_avg()})", file=sys.stderr)
    bodies = [json.dumps(r).encode() for r in requests]
    home = tmp / "dh"
    gc.callbacks.append(COLLECTOR)
    if not args.no_freeze:  # the generator's heap, built above, is not collected again
        gc.collect()
        gc.freeze()
    out: dict[str, Any] = {}

    async def one_worker(*specs: tuple[str, str, int]) -> None:
        bare, service, before = (Target(name, url, bodies, pid) for name, url, pid in specs)
        try:
            for target in (bare, service, before):
                await target.warm_up()
            runs_of: dict[str, list[dict[str, Any]]] = {"bare": [], "service": [], "before": []}
            for i in range(runs):  # side by side: the same minute's load on each
                for key, target in (("service", service), ("bare", bare), ("before", before)):
                    runs_of[key].append(await target.run(RATE, seconds, f"run {i + 1}"))
            p99 = {k: [r["p99_ms"] for r in v] for k, v in runs_of.items()}
            ratios = [round(s / b, 2) for s, b in zip(p99["service"], p99["bare"], strict=True)]
            before_ratios = [
                round(s / b, 2) for s, b in zip(p99["before"], p99["bare"], strict=True)
            ]
            limit = P99_FACTOR * statistics.median(p99["bare"])
            cpu = {
                k: statistics.median(r["cpu_ms_per_request"] for r in v) for k, v in runs_of.items()
            }
            out.update(
                first_run_p99_ms=p99["service"][0],
                p99_ms_at_200rps=statistics.median(p99["service"]),
                bare_p99_ms_at_200rps=statistics.median(p99["bare"]),
                p99_ratio_to_bare=statistics.median(ratios),
                p99_ratio_to_bare_runs=ratios,
                p99_ms_at_200rps_runs=p99["service"],
                bare_p99_ms_at_200rps_runs=p99["bare"],
                before_p99_ms_at_200rps_runs=p99["before"],
                before_p99_ratio_to_bare=statistics.median(before_ratios),
                before_p99_ratio_to_bare_runs=before_ratios,
                cpu_ms_per_request=cpu,
                generator_gc_max_ms=max(r["generator_gc_ms"] for v in runs_of.values() for r in v),
                p99_limit_ms=round(limit, 2),
                load_at_200rps=load_avg(),
            )
            out["max_rps_bare"], out["ladder_bare"] = await bare.ladder(limit, ladder_seconds)
            out["max_rps_1w"], out["ladder_1w"] = await service.ladder(limit, ladder_seconds)
            out["load_at_ladders"] = load_avg()
            out.update(await swap(service, seconds))
        finally:
            for target in (bare, service, before):
                await target.session.close()

    async def swap(service: Target, seconds: float) -> dict[str, Any]:
        """The champion alias moves to the other version halfway through a 200-rps run."""

        # The alias moves in another process, as a user's command or the rollout run moves
        # it; started and connected to the registry before the run. (Moved from a thread of
        # this process, MLflow's call held the generator's GIL: its pause counted as the
        # service's latency.)
        mover = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            MOVER,
            str(root),
            versions[1],
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert mover.stdin is not None and mover.stdout is not None
        assert (await mover.stdout.readline()).strip() == b"ready"

        async def move() -> None:
            await asyncio.sleep(seconds / 2)
            assert mover.stdin is not None and mover.stdout is not None
            mover.stdin.write(b"go\n")
            await mover.stdin.drain()
            assert (await mover.stdout.readline()).strip() == b"moved"

        log, _ = await asyncio.gather(
            load(service.session, service.url, bodies, RATE, seconds), move()
        )
        await mover.wait()
        changed = [r for r in log if r[3] == versions[1]]
        first_new = min(r[0] for r in changed) if changed else float("inf")
        around = [r for r in log if abs(r[0] - first_new) <= 1.0]
        swap_p99 = summary(around)["p99_ms"] if around else float("nan")
        print(f"swap: {summary(log)}, p99 within 1 s of it {swap_p99} ms", file=sys.stderr)
        return {
            "swap_failed_requests": sum(1 for r in log if not r[2]),
            "swap_p99_ms": swap_p99,
            "swap_p99_ratio": round(swap_p99 / out["p99_ms_at_200rps"], 2),
            "swap_switched": bool(changed),
        }

    async def two_workers(url: str, pid: int) -> None:
        service = Target("service 2w", url, bodies, pid)
        try:
            await service.warm_up()
            out["max_rps_2w"], out["ladder_2w"] = await service.ladder(
                out["p99_limit_ms"], ladder_seconds
            )
        finally:
            await service.session.close()

    bare_port = free_port()
    with (
        process([sys.executable, str(BARE), "--port", str(bare_port)]) as bare_proc,
        service_process(root, home, free_port()) as (url, pid),
        service_process(root, home, free_port(), predict_row=True) as (before_url, before_pid),
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        bare_url = f"http://127.0.0.1:{bare_port}"
        assert wait_until_up(bare_url, 60), "bare endpoint did not start"
        runner.run(
            one_worker(
                ("bare", bare_url, bare_proc.pid),
                ("service", url, pid),
                ("before", before_url, before_pid),
            )
        )
    reg.set_alias(tracking, "flight_delay", reg.CHAMPION, versions[0])
    try:
        with (
            service_process(root, home, free_port(), workers=2) as (url, pid),
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
        ):
            runner.run(two_workers(url, pid))
    except AssertionError as exc:  # did not start: the other figures still stand
        out["max_rps_2w"], out["ladder_2w"] = None, {"error": str(exc)}
    out["max_rps_share_of_bare"] = round(out["max_rps_1w"] / max(out["max_rps_bare"], 1), 2)
    for ladder in ("ladder_bare", "ladder_1w", "ladder_2w"):  # the last line: p99 per rate
        out[ladder] = {k: v.get("p99_ms", v) for k, v in out[ladder].items()}
    out.update(floors)
    out["load_end"] = load_avg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
