"""Latency gate benchmark: identical models judged while a CPU-bound load runs beside them.

Setup (``setup``): 2013-01-01..07 landed, validated and featurized (``common.prepare``), the
feature store job (online store, training and holdout sets, two holdout days) and two
trainings of the same fixed parameters with different seeds (versions 1 and 2), through the
platform's own Dagster jobs.

Each trial times the two versions as candidate and champion exactly as the evaluation asset
does (``lib.evaluation.metrics.time_interleaved``: the spec's requests per round, through
``lib.deployment.scoring.OnlineScorer``, interleaved, ``LATENCY_ROUNDS`` rounds) while one busy-loop
process per core spins, and asks the spec's ``p99_latency`` gate. Two seeds of the same fit
are the same model for latency: every refusal is a flip caused by the load.

``latency_gate_flips_under_load(trials)`` is that share (must be 0); ``bench/gates.py``
imports it. ``--data DIR`` reuses the data folder of an earlier run (printed on stderr).

Last line: one JSON object with latency_gate_flips_under_load, trials, the candidate's
per-round p99 (median over rounds) quiet and loaded (median over trials, the largest, and the
largest single round), its steady p99 (what the budget judges) quiet and loaded, the ratio
the gate judges (paired per request) quiet and loaded, the median of per-round p99 ratios
(shown in the metadata, not judged) loaded, the budget and the ratio limit.
"""

import argparse
import functools
import json
import multiprocessing
import os
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
from common import definitions, prepare

from mlplatform.defs.jobs import feature_store_job_name, training_job_name
from mlplatform.lib.storage import DataLake
from mlplatform.problems import get_problem
from mlplatform.resources import FeastResource, LakeResource

START, END = date(2013, 1, 1), date(2013, 1, 7)
HOLDOUT_DAYS = 2  # seven days: five to train on, two held out (as the tests do)
PARAMS = {"learning_rate": 0.05, "num_leaves": 8, "min_child_samples": 50}
SEEDS = (1, 2)  # two seeds of the same fit: versions 1 and 2
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def setup(root: Path) -> None:
    """A lake, an online store, a holdout and two versions of the same fit."""
    problem = get_problem("flight_delay")
    prepare(DataLake(root), problem, START, END)
    defs = definitions(problem, root)
    with dg.instance_for_test() as instance:
        op = f"{problem.name}__training_set"
        config = {**QUIET, "ops": {op: {"config": {"holdout_days": HOLDOUT_DAYS}}}}
        job = defs.resolve_job_def(feature_store_job_name(problem))
        assert job.execute_in_process(instance=instance, run_config=config).success
        op = f"{problem.name}__model_candidate"
        for seed in SEEDS:
            fit = {"params": PARAMS, "seed": seed, "validation_days": 2, "max_rounds": 120}
            run = defs.resolve_job_def(training_job_name(problem)).execute_in_process(
                instance=instance,
                run_config={**QUIET, "ops": {op: {"config": fit}}},
                op_selection=[op],
            )
            assert run.success, "training failed"


@functools.cache
def _prepared() -> Path:
    """A data folder set up once per process (for callers that pass none)."""
    root = Path(tempfile.mkdtemp(prefix="gates_latency_")) / "data"
    setup(root)
    print(f"data folder: {root}", file=sys.stderr)
    return root


def _spin() -> None:
    """A CPU-bound loop until terminated."""
    n = 0
    while True:
        n += 1


class Busy:
    """One busy-loop process per core while inside the ``with`` block."""

    def __init__(self, processes: int | None = None) -> None:
        self.processes = processes or os.cpu_count() or 2
        self._procs: list[Any] = []

    def __enter__(self) -> "Busy":
        ctx = multiprocessing.get_context("fork")  # the child runs only _spin
        self._procs = [ctx.Process(target=_spin, daemon=True) for _ in range(self.processes)]
        for p in self._procs:
            p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self._procs:
            p.kill()  # SIGKILL: the forked child inherited the parent's SIGTERM handler
        for p in self._procs:
            p.join()


def measure(trials: int, root: Path | None = None) -> dict[str, Any]:
    """Time the two versions quiet once, then ``trials`` times under load; the gate decides.

    Returns:
        The figures of the last JSON line (see the module docstring).
    """
    import pandas as pd

    from mlplatform.lib.deployment import registry as reg
    from mlplatform.lib.deployment.scoring import OnlineScorer
    from mlplatform.lib.evaluation import gates
    from mlplatform.lib.evaluation import metrics as ev
    from mlplatform.lib.tracking import local_tracking

    root = root or _prepared()
    problem = get_problem("flight_delay")
    spec = problem.spec
    tracking = local_tracking(root)
    models = {
        "champion": reg.load_version(tracking, problem.name, "1"),
        "candidate": reg.load_version(tracking, problem.name, "2"),
    }
    feast = FeastResource(lake=LakeResource(root=str(root)))
    fs = feast.store(problem)
    scorer = OnlineScorer(problem, fs, feast.service(problem, fs))
    latest = DataLake(root).read_latest(problem.name, "holdout_set")
    assert latest is not None, "no holdout set"
    holdout = pd.read_parquet(latest["path"])
    requests = ev.sample_records(holdout, spec.gates.latency_requests, spec.training.seed + 1)
    timed = {n: functools.partial(scorer.score, m) for n, m in models.items()}

    def judge(seed: int) -> dict[str, Any]:
        latency = ev.latency_summary(ev.time_interleaved(timed, requests, seed=seed))
        outcome = gates.p99_latency(latency, spec.gates)
        return {"passed": outcome.passed, "reason": outcome.reason, **latency}

    quiet = judge(0)
    print(f"quiet: {quiet['reason']}", file=sys.stderr)
    loaded = []
    with Busy():
        for trial in range(trials):
            loaded.append(judge(trial + 1))
            print(f"loaded {trial + 1}/{trials}: {loaded[-1]['reason']}", file=sys.stderr)
    p99s = [t["p99_ms"] for t in loaded]
    ratios = [t["ratio"] for t in loaded]
    return {
        "latency_gate_flips_under_load": sum(not t["passed"] for t in loaded) / trials,
        "trials": trials,
        "quiet_passed": quiet["passed"],
        "candidate_p99_ms_quiet": round(quiet["p99_ms"], 3),
        "champion_p99_ms_quiet": round(quiet["champion_p99_ms"], 3),
        "ratio_quiet": round(quiet["ratio"], 3),
        "candidate_p99_ms_loaded": round(float(np.median(p99s)), 3),
        "candidate_p99_ms_loaded_max": round(max(p99s), 3),
        "steady_p99_ms_quiet": round(quiet["steady_p99_ms"], 3),
        "steady_p99_ms_loaded": round(float(np.median([t["steady_p99_ms"] for t in loaded])), 3),
        "steady_p99_ms_loaded_max": round(max(t["steady_p99_ms"] for t in loaded), 3),
        "round_p99_ms_loaded_max": round(
            max(max(t["round_p99_ms"]["candidate"]) for t in loaded), 3
        ),
        "ratio_loaded": round(float(np.median(ratios)), 3),
        "ratio_loaded_max": round(max(ratios), 3),
        "round_ratio_median_loaded_max": round(max(t["round_ratio_median"] for t in loaded), 3),
        "round_ratio_loaded_range": [
            round(min(min(t["round_ratios"]) for t in loaded), 3),
            round(max(max(t["round_ratios"]) for t in loaded), 3),
        ],
        "rounds": quiet["rounds"],
        "requests_per_round": quiet["requests_per_round"],
        "budget_ms": spec.gates.p99_latency_ms,
        "max_latency_ratio": spec.gates.max_latency_ratio,
        "busy_processes": os.cpu_count() or 2,
    }


def latency_gate_flips_under_load(trials: int = 10, root: Path | None = None) -> float:
    """Share of identical models (two seeds of the same fit) the latency gate refuses while
    one CPU-bound process per core runs beside the measurement; must be 0.

    Args:
        trials: gate decisions under load (each: the spec's rounds of requests, both models).
        root: a data folder made by ``setup``; None sets one up in a temporary folder.
    """
    return measure(trials, root)["latency_gate_flips_under_load"]


def main() -> None:
    parser = argparse.ArgumentParser(description="latency gate flips under a CPU-bound load")
    parser.add_argument("--data", type=Path, help="data folder of an earlier run")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 trials")
    args = parser.parse_args()
    root = args.data
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="gates_latency_")) / "data"
        setup(root)
        print(f"data folder: {root}", file=sys.stderr)
    figures = measure(3 if args.quick else args.trials, root)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
