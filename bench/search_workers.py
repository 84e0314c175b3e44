"""Optuna search on a shared PostgreSQL study: one worker against two, side by side.

A real 31-day training set (2013-01-01..01-31). The same trial budget of the spec's search
(its pruner) runs on a fresh study, each in a scratch PostgreSQL database (created here,
dropped after), three ways: one worker (this process) with LightGBM on 2 threads per trial
(what a one-machine search does), one worker on 1 thread, and two spawned worker processes
on 1 thread each (the same two cores; their start-up, imports included, is timed). The last
two run twice, alternating; the faster counts (the machine is shared: the load average is
reported). Parallel trials see each other's results in another order, so their trials
differ: boosting rounds per second and best AUC are reported beside the times.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust). Last line: one JSON object.
"""

import json
import os
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

from common import training_frame

from mlplatform.lib.features.feature_store import (
    feature_matrix,
)
from mlplatform.lib.storage import DataLake
from mlplatform.lib.training import model as tr
from mlplatform.problems import get_problem

START, END = date(2013, 1, 1), date(2013, 1, 31)
TRIALS = 24
# name: workers of lib.training.model.search (each trial on 2 // workers LightGBM threads)
CONFIGS = {
    "1 worker x 2 threads": 1,
    "1 worker x 1 thread": 1,
    "2 workers x 1 thread": 2,
}
# the two that compare are run twice, alternating; the slow one once
PLAN = [
    "1 worker x 1 thread",
    "2 workers x 1 thread",
    "1 worker x 2 threads",
    "2 workers x 1 thread",
    "1 worker x 1 thread",
]
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def admin(statement: str) -> None:
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=5432, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(statement)  # type: ignore[arg-type]  # a fixed statement of this script


def main() -> None:
    problem = get_problem("flight_delay")
    spec = problem.spec
    cfg = spec.training.model_copy(update={"n_trials": TRIALS})
    with tempfile.TemporaryDirectory() as tmp:
        lake = DataLake(Path(tmp) / "data")
        t0 = time.perf_counter()
        training = training_frame(lake, problem, START, END)
        matrix = feature_matrix(training, spec)
        encoding = tr.fit_encoding(matrix, spec)
        train, valid = tr.time_split(training, cfg.validation_days, spec.partitioning.timezone)
        data = tr.datasets(
            encoding.matrix(matrix), training[spec.target.name].to_numpy(), train, valid, encoding
        )
        monotone = tr.monotone_constraints(spec)
        log(f"training set of {len(training)} rows ready in {time.perf_counter() - t0:.0f} s")

    import optuna

    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for name in PLAN:
        # a fresh database per run, the study always named alike: Hyperband assigns
        # brackets by study name and trial number, so one-worker runs repeat exactly
        database = f"mlp_bench_optuna_{uuid.uuid4().hex[:8]}"
        admin(f"create database {database}")
        url = PG + database
        try:
            optuna.storages.RDBStorage(url)  # its tables: not part of any search's time
            t0 = time.perf_counter()
            if name == "1 worker x 1 thread":  # the same per-trial threads as 2 workers
                tr.search_worker(tr.portable(data), cfg, url, "search", monotone, TRIALS, 1)
                result = tr.search(data, cfg, url, "search", monotone)  # nothing left: reads
            else:
                result = tr.search(data, cfg, url, "search", monotone, CONFIGS[name])
            seconds = time.perf_counter() - t0
            trials = result.study.get_trials(deepcopy=False)
            starts = min(t.datetime_start for t in trials if t.datetime_start)
            ends = max(t.datetime_complete for t in trials if t.datetime_complete)
            run = {
                "s": round(seconds, 1),
                "trials_s": round((ends - starts).total_seconds(), 1),
                "rounds": result.rounds,
                "rounds_per_s": round(result.rounds / seconds, 1),
                "best_auc": round(result.study.best_value, 4),
                "processes": len({t.user_attrs.get("worker") for t in trials}),
                "trials": len(trials),
                "load_average": round(os.getloadavg()[0], 1),
            }
        finally:
            admin(f"drop database if exists {database} with (force)")
        runs[name].append(run)
        log(f"{name}: {run}")
    best = {name: min(r["s"] for r in found) for name, found in runs.items()}
    rate = {name: max(r["rounds_per_s"] for r in found) for name, found in runs.items()}
    two = "2 workers x 1 thread"
    print(
        json.dumps(
            {
                "speedup_2_workers_vs_1_worker_1_thread": round(
                    best["1 worker x 1 thread"] / best[two], 2
                ),
                "speedup_2_workers_vs_1_worker_2_threads": round(
                    best["1 worker x 2 threads"] / best[two], 2
                ),
                "rounds_per_s_ratio_vs_1_worker_1_thread": round(
                    rate[two] / rate["1 worker x 1 thread"], 2
                ),
                "best_search_s": best,
                "runs": runs,
                "trials": TRIALS,
                "train_rows": int(train.sum()),
                "pruner": cfg.pruner,
                "cores": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
