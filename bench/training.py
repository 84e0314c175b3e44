"""Training benchmark on a real 60-day training set (2013-01-01..03-01), side by side.

1. Overhead: the model_candidate asset (Dagster run, reading the training set, the final
   fit, MLflow tracking and registration), materialized again with its study already
   finished, against a plain script that reads the same training set and calls
   ``lightgbm.train`` with the chosen parameters.
2. Pruning: the same trial budget with Hyperband pruning and without; total boosting
   rounds of each study and the difference of their best validation AUCs.

Last line: one JSON object with overhead_ratio, pruned_rounds_ratio, pruned_metric_delta.
"""

import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
from common import training_frame

from mlplatform.definitions import build_definitions
from mlplatform.defs.jobs import training_job_name
from mlplatform.lib.features.feature_store import (
    feature_matrix,
)
from mlplatform.lib.features.training_set import data_version
from mlplatform.lib.storage import DataLake
from mlplatform.lib.training import model as tr
from mlplatform.problems import get_problem
from mlplatform.resources import FeastResource, LakeResource, MlflowResource

START, END = date(2013, 1, 1), date(2013, 3, 1)
TRIALS = 16
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    problem = get_problem("flight_delay")
    spec = problem.spec
    cfg = spec.training.model_copy(update={"n_trials": TRIALS})
    with tempfile.TemporaryDirectory() as tmp:
        lake = DataLake(Path(tmp) / "data")
        t0 = time.perf_counter()
        training = training_frame(lake, problem, START, END)
        version = data_version(training)
        path = lake.write_table(problem.name, "training_set", version, training)
        lake.write_latest(
            problem.name,
            "training_set",
            {"data_version": version, "rows": len(training), "path": str(path)},
        )
        log(f"training set of {len(training)} rows ready in {time.perf_counter() - t0:.0f} s")

        # 1. the asset, twice: the first run searches, the second finds its study finished
        lake_resource = LakeResource(root=str(lake.root))
        defs = build_definitions(
            [problem],
            {
                "lake": lake_resource,
                "feast": FeastResource(lake=lake_resource),
                "mlflow": MlflowResource(lake=lake_resource),
            },
        )
        job = defs.resolve_job_def(training_job_name(problem))
        run_config = {
            **QUIET,
            "ops": {"flight_delay__model_candidate": {"config": {"n_trials": TRIALS}}},
        }
        with dg.instance_for_test() as instance:
            t0 = time.perf_counter()
            first = job.execute_in_process(instance=instance, run_config=run_config)
            full_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = job.execute_in_process(instance=instance, run_config=run_config)
            asset_s = time.perf_counter() - t0
        assert first.success and again.success
        meta = again.get_asset_materialization_events()[0].materialization.metadata
        best = meta["best_params"].value
        assert isinstance(best, dict)

        t0 = time.perf_counter()
        plain = pd.read_parquet(path)
        matrix = feature_matrix(plain, spec)
        encoding = tr.fit_encoding(matrix, spec)
        train, valid = tr.time_split(plain, cfg.validation_days, spec.partitioning.timezone)
        data = tr.datasets(
            encoding.matrix(matrix), plain[spec.target.name].to_numpy(), train, valid, encoding
        )
        tr.fit(data, {**tr.base_params(cfg.seed), **best}, cfg)
        plain_s = time.perf_counter() - t0
        log(
            f"asset with its study finished {asset_s:.2f} s, plain lightgbm.train {plain_s:.2f} s"
            f" (first run, search included: {full_s:.1f} s)"
        )

        # 2. pruning's saving at the same budget
        results = {}
        for pruner in ("hyperband", "none"):
            pcfg = cfg.model_copy(update={"pruner": pruner})
            t0 = time.perf_counter()
            result = tr.search(data, pcfg, f"sqlite:///{Path(tmp) / f'{pruner}.db'}", pruner)
            results[pruner] = (result, time.perf_counter() - t0)
            log(
                f"{pruner}: {result.rounds} rounds, best AUC {result.study.best_value:.4f}, "
                f"{result.counts}, {results[pruner][1]:.1f} s"
            )
    pruned, full = results["hyperband"][0], results["none"][0]
    print(
        json.dumps(
            {
                "overhead_ratio": round(asset_s / plain_s, 2),
                "asset_s": round(asset_s, 2),
                "plain_s": round(plain_s, 2),
                "first_run_with_search_s": round(full_s, 1),
                "pruned_rounds_ratio": round(pruned.rounds / full.rounds, 3),
                "pruned_metric_delta": round(pruned.study.best_value - full.study.best_value, 4),
                "rounds_pruned": pruned.rounds,
                "rounds_unpruned": full.rounds,
                "search_s_pruned": round(results["hyperband"][1], 1),
                "search_s_unpruned": round(results["none"][1], 1),
                "trials": TRIALS,
                "training_rows": len(training),
            }
        )
    )


if __name__ == "__main__":
    main()
