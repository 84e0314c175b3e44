"""Optuna search on a shared PostgreSQL study: one worker against two, side by side.

A real 31-day training set (2013-01-01..01-31). The same trial budget of the spec's search
(its pruner) runs twice on fresh studies in a scratch PostgreSQL database (created here,
dropped after): one worker (this process, LightGBM on ``THREADS`` threads per trial, what a
one-machine search does) and two spawned worker processes (one thread each, the same two
cores), both through ``lib.training.search``. Trials differ between the two (parallel trials
see each other's results in another order), so boosting rounds per second is reported
beside the wall-clock ratio.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust). Last line: one JSON object.
"""

import json
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

from common import prepare

from mlplatform.lib import training as tr
from mlplatform.lib.feature_store import (
    apply,
    feature_matrix,
    feature_vectors,
    open_store,
    service_of,
)
from mlplatform.lib.landing import days
from mlplatform.lib.storage import DataLake
from mlplatform.lib.training_set import assemble, labelled
from mlplatform.problems import get_problem

START, END = date(2013, 1, 1), date(2013, 1, 31)
TRIALS = 12
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
        prepare(lake, problem, START, END)
        store = open_store(problem, lake.root)
        apply(store, problem.feast_objects(lake.root))
        requests = labelled(lake.read_days(problem.name, "flights", list(days(START, END))), spec)
        vectors = feature_vectors(
            problem, store, service_of(problem, store, lake.root), requests, online=False
        )
        training = assemble(requests, vectors, spec)
        matrix = feature_matrix(training, spec)
        encoding = tr.fit_encoding(matrix, spec)
        train, valid = tr.time_split(training, cfg.validation_days, spec.partitioning.timezone)
        data = tr.datasets(
            encoding.matrix(matrix), training[spec.target.name].to_numpy(), train, valid, encoding
        )
        monotone = tr.monotone_constraints(spec)
        log(f"training set of {len(training)} rows ready in {time.perf_counter() - t0:.0f} s")

    database = f"mlp_bench_optuna_{uuid.uuid4().hex[:8]}"
    admin(f"create database {database}")
    runs = {}
    try:
        for workers in (1, 2):
            t0 = time.perf_counter()
            result = tr.search(data, cfg, PG + database, f"w{workers}", monotone, workers)
            seconds = time.perf_counter() - t0
            hosts = {t.user_attrs.get("worker") for t in result.study.get_trials(deepcopy=False)}
            runs[workers] = (result, seconds, len(hosts))
            log(
                f"{workers} worker(s): {seconds:.1f} s, {result.rounds} rounds, best AUC "
                f"{result.study.best_value:.4f}, {result.counts}, {len(hosts)} process(es)"
            )
    finally:
        admin(f"drop database if exists {database} with (force)")
    (one, one_s, _), (two, two_s, procs) = runs[1], runs[2]
    print(
        json.dumps(
            {
                "speedup_2_workers": round(one_s / two_s, 2),
                "rounds_per_s_ratio": round((two.rounds / two_s) / (one.rounds / one_s), 2),
                "search_s_1_worker": round(one_s, 1),
                "search_s_2_workers": round(two_s, 1),
                "rounds_1_worker": one.rounds,
                "rounds_2_workers": two.rounds,
                "best_auc_1_worker": round(one.study.best_value, 4),
                "best_auc_2_workers": round(two.study.best_value, 4),
                "worker_processes": procs,
                "trials": TRIALS,
                "train_rows": int(train.sum()),
                "pruner": cfg.pruner,
            }
        )
    )


if __name__ == "__main__":
    main()
