"""Shared fixtures: a real Dagster instance, a data lake in a temporary folder, real data.

``make test`` runs the suite on every core with pytest-xdist (``-n auto --dist loadfile
--no-loadscope-reorder``): a file's tests stay together, in order, on one worker. Nothing a
test uses is shared between workers but the two base lakes below, built once per run and
only ever copied.
"""

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from mlplatform.problems import Problem, get_problem
from mlplatform_tests.helpers import Platform, fresh_instance

# Under xdist, files are handed to the workers in this order, each to the first worker free:
# the longest first, so that none starts last and keeps one core busy alone at the end;
# files that build their own lakes early, while a worker builds the shared base lakes.
# The files not named follow in collection order. Plain `pytest` keeps collection order.
LONGEST_FIRST = [
    "test_replay.py",
    "test_city_temperature.py",
    "test_scaffold.py",
    "test_hourly.py",
    "test_production.py",
    "test_serving_durability.py",
    "test_training_faults.py",
    "test_relanding.py",
    "test_training.py",
    "test_evaluation.py",
    "test_serving_requests.py",
    "test_serving.py",
    "test_serving_registry.py",
    "test_skew.py",
    "test_concurrency.py",
    "test_small_faults.py",
    "test_regression.py",
    "test_regression_serving.py",
    "test_gates_noise.py",
    "test_stream.py",
    "test_dashboard.py",
    "test_alerts.py",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept


def _built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """``<folder>/data`` built by ``build``, once per test run.

    Under xdist the first worker that needs it builds it in the run's temporary folder,
    which all workers share, while the others wait on a lock; a build that failed half-way
    is started again by the next worker. Tests only copy it.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        root = factory.mktemp(name) / "data"
        build(root)
        return root
    folder = factory.getbasetemp().parent / f"shared_{name}"
    done = folder / "built"
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not done.exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                build(folder / "data")
                done.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return folder / "data"


@pytest.fixture(autouse=True)
def _platform_clock_restored() -> Iterator[None]:
    """The platform clock (``MLPLATFORM_NOW``) as it was before each test, after it.

    A test that drives a ``Replay`` step by step (``land_hours``, ``at``) leaves the clock
    where the replay left it, as a replay's own loop does until its end; the next test on
    the same worker then stamped its evaluations in 2013 (seen when ``test_hourly.py`` ran
    before ``test_serving_registry.py``).
    """
    from mlplatform.settings import CLOCK_VAR

    saved = os.environ.get(CLOCK_VAR)
    yield
    if saved is None:
        os.environ.pop(CLOCK_VAR, None)
    else:
        os.environ[CLOCK_VAR] = saved


@pytest.fixture(scope="session")
def problem() -> Problem:
    return get_problem("flight_delay")


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with fresh_instance() as inst:
        yield inst


@pytest.fixture(scope="session")
def ingested_base(tmp_path_factory: pytest.TempPathFactory, problem: Problem) -> Path:
    """A lake with 2013-01-01..01-06 landed and ingested (history for the volume check)."""

    def build(root: Path) -> None:
        with fresh_instance() as inst:
            platform = Platform(problem, root, inst)
            platform.land("2013-01-01", "2013-01-07")
            assert platform.run_reference().success
            for day in range(1, 7):
                assert platform.run_day(f"2013-01-{day:02d}").success

    return _built_once(tmp_path_factory, "base", build)


@pytest.fixture
def platform(
    tmp_path: Path, ingested_base: Path, problem: Problem, instance: dg.DagsterInstance
) -> Platform:
    """A fresh copy of the ingested base lake; 2013-01-07 is landed but not ingested."""
    root = tmp_path / "data"
    shutil.copytree(ingested_base, root)
    return Platform(problem, root, instance)


@pytest.fixture(scope="session")
def featured_base(
    tmp_path_factory: pytest.TempPathFactory, ingested_base: Path, problem: Problem
) -> Path:
    """The ingested base, plus 01-07, features of 01-01..01-07, registry, online, training set."""

    def build(root: Path) -> None:
        shutil.copytree(ingested_base, root)
        with fresh_instance() as inst:
            platform = Platform(problem, root, inst)
            assert platform.run_day("2013-01-07").success
            for day in range(1, 8):
                assert platform.run_features(f"2013-01-{day:02d}").success
            assert platform.run_feature_store().success

    return _built_once(tmp_path_factory, "featured", build)


@pytest.fixture
def featured(
    tmp_path: Path, featured_base: Path, problem: Problem, instance: dg.DagsterInstance
) -> Platform:
    """A fresh copy of the featured lake, for tests that change it."""
    root = tmp_path / "data"
    shutil.copytree(featured_base, root)
    return Platform(problem, root, instance)
