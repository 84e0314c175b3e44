"""The latency gate: candidate and champion timed together, interleaved, over rounds.

One module-scoped lake with a trained, registered model (version 1) and its Feast online
store; every timing goes through the serving path (``lib.deployment.scoring.OnlineScorer``)
with real holdout flights as requests, as the evaluation asset times them.
"""

import functools
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlplatform.lib.deployment import registry as reg
from mlplatform.lib.deployment.scoring import OnlineScorer
from mlplatform.lib.evaluation import gates
from mlplatform.lib.evaluation import metrics as ev
from mlplatform.lib.tracking import local_tracking
from mlplatform.problems import Problem
from mlplatform_tests.helpers import STUMP, STUMP_TRAINING, Platform, fresh_instance, tuned_problem

Score = Callable[[dict[str, Any]], float]


class Served:
    """Version 1 loaded twice (two models, the same fit), the serving path, real requests."""

    def __init__(self, platform: Platform) -> None:
        problem, root = platform.problem, platform.lake.root
        tracking = local_tracking(root)
        self.champion = reg.load_version(tracking, problem.name, "1")
        self.candidate = reg.load_version(tracking, problem.name, "1")
        store = platform.feast.store(problem)
        self.scorer = OnlineScorer(problem, store, platform.feast.service(problem, store))
        latest = platform.lake.read_latest(problem.name, "holdout_set")
        assert latest is not None
        holdout = pd.read_parquet(latest["path"])
        seed = problem.spec.training.seed
        self.requests = ev.sample_records(holdout, problem.spec.gates.latency_requests, seed + 1)

    def score(self, model: reg.LoadedModel) -> Score:
        return functools.partial(self.scorer.score, model)

    def three_times_slower(self, model: reg.LoadedModel) -> Score:
        """A candidate whose serving path does the champion's whole work three times over:
        three feature reads and three predictions per request (a known factor, honestly spent)."""

        def score(request: dict[str, Any]) -> float:
            return [self.scorer.score(model, request) for _ in range(3)][-1]

        return score


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, featured_base: Path, problem: Problem
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("latency") / "data"
    shutil.copytree(featured_base, root)
    with fresh_instance() as instance:
        platform = Platform(tuned_problem(problem), root, instance)
        assert platform.run_training(params=STUMP, **STUMP_TRAINING).success
        yield Served(platform)


@pytest.fixture
def busy() -> Iterator[list[subprocess.Popen]]:
    """One CPU-bound process per core of the test machine (2), running until the test ends."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_identical_models_pass_the_latency_gate_beside_a_busy_process(
    served: Served, problem: Problem, busy: list[subprocess.Popen]
) -> None:
    timed = {"candidate": served.score(served.candidate), "champion": served.score(served.champion)}

    timing = ev.latency_summary(ev.time_interleaved(timed, served.requests))
    outcome = gates.p99_latency(timing, problem.spec.gates)

    assert all(p.poll() is None for p in busy)  # the load ran through the whole measurement
    assert outcome.passed, outcome.reason
    assert "within the ratio 1.5" in outcome.reason


def test_a_candidate_three_times_slower_than_the_champion_is_refused_by_the_ratio(
    served: Served, problem: Problem
) -> None:
    timed = {
        "candidate": served.three_times_slower(served.candidate),
        "champion": served.score(served.champion),
    }

    timing = ev.latency_summary(ev.time_interleaved(timed, served.requests))
    outcome = gates.p99_latency(timing, problem.spec.gates)

    assert not outcome.passed
    assert "within the budget of 20.0 ms" in outcome.reason  # the ratio alone refuses it
    assert "beyond the ratio 1.5" in outcome.reason
    assert outcome.details["ratio"] > 1.5


def test_the_bootstrap_path_applies_the_budget_alone(served: Served, problem: Problem) -> None:
    # no champion: even a slow candidate passes within the budget, and only the budget refuses
    timed = {"candidate": served.three_times_slower(served.candidate)}
    timing = ev.latency_summary(ev.time_interleaved(timed, served.requests))

    outcome = gates.p99_latency(timing, problem.spec.gates)
    strict = gates.p99_latency(timing, tuned_problem(problem, p99_latency_ms=0.05).spec.gates)

    assert outcome.passed, outcome.reason
    assert "bootstrap" in outcome.reason and "ratio" not in outcome.reason
    assert outcome.details["ratio"] is None and outcome.details["champion_p99_ms"] is None
    assert not strict.passed
    assert "over the budget of 0.05 ms" in strict.reason


def test_candidate_and_champion_are_timed_in_the_same_rounds_interleaved(
    served: Served, problem: Problem
) -> None:
    order: list[str] = []

    def recorded(name: str, fn: Score) -> Score:
        def call(request: dict[str, Any]) -> float:
            order.append(name)
            return fn(request)

        return call

    timed = {
        "candidate": recorded("candidate", served.score(served.candidate)),
        "champion": recorded("champion", served.score(served.champion)),
    }
    requests = served.requests

    took = ev.time_interleaved(timed, requests, rounds=4, warmup=10)
    outcome = gates.p99_latency(ev.latency_summary(took), problem.spec.gates)

    timed_calls = order[2 * 10 :]  # after the warm-up
    assert len(timed_calls) == 2 * 4 * len(requests)
    pairs = [tuple(timed_calls[i : i + 2]) for i in range(0, len(timed_calls), 2)]
    assert set(pairs) == {("candidate", "champion"), ("champion", "candidate")}  # both orders
    meta = outcome.details
    assert meta["rounds"] == 4 and meta["requests_per_round"] == len(requests)
    assert {n: len(v) for n, v in meta["round_p99_ms"].items()} == {"candidate": 4, "champion": 4}
    assert len(meta["round_ratios"]) == 4
    for key in ("p50_ms", "p99_ms", "steady_p99_ms", "champion_p99_ms", "ratio"):
        assert meta[key] > 0, key
