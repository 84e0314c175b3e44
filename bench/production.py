"""Production-profile benchmark, measured side by side on real 2013 data.

1. Distributed training: one 60-day training set (2013-01-01..03-01), the same parameters
   and early-stopping rule, fitted by LightGBM on this machine (two threads) and through
   ``lightgbm.dask`` on a LocalCluster of two single-threaded workers: wall time of the
   fit (cluster already up) and validation AUC.
2. The daily pipeline (the ingestion job, then the features job, for one day) through the
   Celery executor with a real worker against in-process execution, both on the same
   PostgreSQL instance (a fresh database on 127.0.0.1:5432, Redis on 127.0.0.1:6379).

Last line: one JSON object with dask_time_ratio, dask_metric_delta, celery_time_ratio.
"""

import json
import os
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
from common import training_frame

from mlplatform import production
from mlplatform.defs.jobs import daily_job_name, features_job_name
from mlplatform.lib.features.feature_store import (
    feature_matrix,
)
from mlplatform.lib.storage import DataLake
from mlplatform.lib.training import model as tr
from mlplatform.lib.training.distributed import fit_dask
from mlplatform.problems import get_problem
from mlplatform.resources import DaskResource
from mlplatform_tests.services import missing_services, pg_database, pg_url, redis_db

START, END = date(2013, 1, 1), date(2013, 3, 1)
PARAMS = {"learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 50}
DAYS = ["2013-02-26", "2013-02-27", "2013-02-28"]
ROOT = Path(__file__).resolve().parents[1]
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def dask_side_by_side(training: pd.DataFrame) -> dict:
    problem = get_problem("flight_delay")
    spec = problem.spec
    cfg = spec.training
    matrix = feature_matrix(training, spec)
    encoding = tr.fit_encoding(matrix, spec)
    x, y = encoding.matrix(matrix), training[spec.target.name].to_numpy()
    train, valid = tr.time_split(training, cfg.validation_days, spec.partitioning.timezone)
    data = tr.datasets(x, y, train, valid, encoding)
    params = {**tr.base_params(cfg.seed, tr.monotone_constraints(spec)), **PARAMS}

    t0 = time.perf_counter()
    single = tr.fit(data, params, cfg)
    single_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with DaskResource(scheduler_address="local", local_workers=2).client() as client:
        assert client is not None
        startup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        dist = fit_dask(client, data, params, cfg)
        dask_s = time.perf_counter() - t0
    log(
        f"single machine: {single_s:.2f} s, AUC {single.auc:.4f}, {single.booster.best_iteration}"
        f" rounds kept of {single.rounds}; lightgbm.dask: {dask_s:.2f} s (+{startup_s:.1f} s "
        f"cluster start), AUC {dist.auc:.4f}, {dist.booster.best_iteration} rounds kept of "
        f"{dist.rounds}"
    )
    return {
        "dask_time_ratio": round(dask_s / single_s, 2),
        "dask_metric_delta": round(dist.auc - single.auc, 4),
        "dask_fit_s": round(dask_s, 2),
        "single_fit_s": round(single_s, 2),
        "dask_cluster_start_s": round(startup_s, 1),
        "dask_auc": round(dist.auc, 4),
        "single_auc": round(single.auc, 4),
        "dask_rounds": dist.booster.best_iteration,
        "single_rounds": single.booster.best_iteration,
        # lightgbm.dask has no early stopping: it boosts max_rounds, then is cut
        "dask_rounds_boosted": dist.rounds,
        "single_rounds_boosted": single.rounds,
        "training_rows": len(training),
    }


def celery_side_by_side(lake: DataLake, tmp: Path) -> dict:
    missing = missing_services()
    if missing:
        raise SystemExit("the Celery comparison needs the servers: " + "; ".join(missing))
    problem = get_problem("flight_delay")
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    with pg_database("bench") as db, redis_db() as number:
        redis_url = f"redis://127.0.0.1:6379/{number}"
        env = {
            "MLPLATFORM_ENV": "production",
            "DAGSTER_HOME": str(home),
            "MLPLATFORM_DATA_DIR": str(lake.root),
            "MLPLATFORM_DAGSTER_PG_URL": pg_url(db, "postgresql+psycopg2"),
            "MLPLATFORM_CELERY_BROKER": redis_url,
            "MLPLATFORM_CELERY_BACKEND": redis_url,
        }
        os.environ.update(env)
        worker = production.start_worker(dict(os.environ), tmp / "worker.log")
        try:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                jobs = [daily_job_name(problem), features_job_name(problem)]
                # warm-up: the worker's pool processes import the code location once
                for name in jobs:
                    assert production.run_job(instance, name, DAYS[0]).success
                celery_s = inproc_s = 0.0
                for day in DAYS:
                    t0 = time.perf_counter()
                    for name in jobs:
                        job = production.load_job(name)
                        result = job.execute_in_process(
                            instance=instance, partition_key=day, run_config=QUIET
                        )
                        assert result.success
                    inproc_s += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    for name in jobs:
                        assert production.run_job(instance, name, day).success
                    celery_s += time.perf_counter() - t0
        finally:
            production.stop_worker(worker)
    log(
        f"daily pipeline ({len(DAYS)} days, ingestion + features): Celery {celery_s:.1f} s, "
        f"in-process {inproc_s:.1f} s"
    )
    return {
        "celery_time_ratio": round(celery_s / inproc_s, 2),
        "celery_s": round(celery_s, 1),
        "in_process_s": round(inproc_s, 1),
        "celery_days": len(DAYS),
    }


def main() -> None:
    problem = get_problem("flight_delay")
    with tempfile.TemporaryDirectory() as tmp:
        lake = DataLake(Path(tmp) / "data")
        t0 = time.perf_counter()
        training = training_frame(lake, problem, START, END)
        log(f"training set of {len(training)} rows ready in {time.perf_counter() - t0:.0f} s")
        dask = dask_side_by_side(training)
        celery = celery_side_by_side(lake, Path(tmp))
    print(json.dumps({**dask, **celery}))


if __name__ == "__main__":
    main()
