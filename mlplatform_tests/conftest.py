"""Shared fixtures: a real Dagster instance, a data lake in a temporary folder, real data."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from mlplatform.problems import Problem, get_problem
from mlplatform_tests.helpers import Platform


@pytest.fixture(scope="session")
def problem() -> Problem:
    return get_problem("flight_delay")


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(scope="session")
def ingested_base(tmp_path_factory: pytest.TempPathFactory, problem: Problem) -> Path:
    """A lake with 2013-01-01..01-06 landed and ingested (history for the volume check)."""
    root = tmp_path_factory.mktemp("base") / "data"
    with dg.instance_for_test() as inst:
        platform = Platform(problem, root, inst)
        platform.land("2013-01-01", "2013-01-07")
        assert platform.run_reference().success
        for day in range(1, 7):
            assert platform.run_day(f"2013-01-{day:02d}").success
    return root


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
    root = tmp_path_factory.mktemp("featured") / "data"
    shutil.copytree(ingested_base, root)
    with dg.instance_for_test() as inst:
        platform = Platform(problem, root, inst)
        assert platform.run_day("2013-01-07").success
        for day in range(1, 8):
            assert platform.run_features(f"2013-01-{day:02d}").success
        assert platform.run_feature_store().success
    return root


@pytest.fixture
def featured(
    tmp_path: Path, featured_base: Path, problem: Problem, instance: dg.DagsterInstance
) -> Platform:
    """A fresh copy of the featured lake, for tests that change it."""
    root = tmp_path / "data"
    shutil.copytree(featured_base, root)
    return Platform(problem, root, instance)
