"""Concurrency pools: one training and one feature store write per problem at a time.

The limits live in the instance configuration (``dagster.yaml`` and the production
profile's ``deploy/dagster.yaml``, current keys only); the pools are declared by the
assets. Two trainings submitted together to a real instance run one after the other.
"""

import os
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mlplatform.definitions import defs
from mlplatform.defs.features.assets import feature_store_pool
from mlplatform.defs.training.model import model_key, training_pool
from mlplatform.problems import Problem
from mlplatform_tests.helpers import STUMP, STUMP_TRAINING, Platform
from mlplatform_tests.services import pg_database, pg_url, require_services

ROOT = Path(__file__).resolve().parents[1]
STEP = "flight_delay__model_candidate"
# One training run: its heavy imports first, then it waits for its start file, so the test
# decides when each run begins.
TRAIN = """
import sys, time
from pathlib import Path
import dagster as dg
import lightgbm, mlflow, optuna  # noqa: F401  (imported before the start, not inside it)
from mlplatform.problems import get_problem
from mlplatform_tests.helpers import Platform
root, start, config = Path(sys.argv[1]), Path(sys.argv[2]), eval(sys.argv[3])
with dg.DagsterInstance.get() as instance:
    platform = Platform(get_problem("flight_delay"), root, instance)
    while not start.exists():
        time.sleep(0.05)
    sys.exit(0 if platform.run_training(**config).success else 1)
"""


def test_training_and_feature_store_writes_declare_the_problems_pools(problem: Problem) -> None:
    pools = {
        key.path[-1]: asset.op.pool
        for asset in defs().assets or []
        if isinstance(asset, dg.AssetsDefinition)
        for key in asset.keys
        if key.path[0] == problem.name  # other problems have assets of the same names
    }
    assert pools["model_candidate"] == training_pool(problem) == "flight_delay_training"
    assert pools["feature_registry"] == feature_store_pool(problem)
    assert pools["online_features"] == feature_store_pool(problem) == "flight_delay_feature_store"
    # daily feature tables write their own partition's file: they run side by side
    assert pools["origin_weather"] is None and pools["training_set"] is None


@pytest.mark.parametrize("config", ["dagster.yaml", "deploy/dagster.yaml"])
def test_the_instance_limits_use_the_current_keys_and_load_without_warnings(
    config: str, tmp_path: Path
) -> None:
    settings = yaml.safe_load((ROOT / config).read_text())
    assert "run_queue" not in settings and "run_coordinator" not in settings
    assert "default_op_concurrency_limit" not in settings["concurrency"]
    pools = settings["concurrency"]["pools"]
    assert pools == {"default_limit": 1, "granularity": "op"}
    assert settings["concurrency"]["runs"]["max_concurrent_runs"] >= 1

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(ROOT / config)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    if config.startswith("deploy/"):
        require_services()
    with pg_database("instance") if config.startswith("deploy/") else nullcontext() as database:
        if database:
            env["MLPLATFORM_DAGSTER_PG_URL"] = pg_url(database, "postgresql+psycopg2")
        info = subprocess.run(
            [str(Path(sys.executable).parent / "dagster"), "instance", "info"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert info.returncode == 0, info.stderr[-2000:]
    assert "    default_limit: 1\n" in info.stdout and "    granularity: op\n" in info.stdout
    assert "deprecat" not in (info.stdout + info.stderr).lower()


def _train(root: Path, start: Path, home: Path, config: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN, str(root), str(start), repr(config)],
        cwd=ROOT,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def test_two_trainings_of_one_problem_never_run_at_once(
    featured: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(ROOT / "dagster.yaml")  # the project's limits
    root = featured.lake.root
    # the first searches a little (seconds), the second fits fixed parameters
    first_config = {**STUMP_TRAINING, "n_trials": 3}
    second_config = {**STUMP_TRAINING, "params": STUMP}
    go_first, go_second = tmp_path / "go-first", tmp_path / "go-second"
    first = _train(root, go_first, home, first_config)
    second = _train(root, go_second, home, second_config)
    try:
        go_first.touch()
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:
            pool = training_pool(featured.problem)
            deadline = time.monotonic() + 180
            # the second run starts only once the first holds the problem's training slot
            while time.monotonic() < deadline and first.poll() is None:
                info = instance.event_log_storage.get_concurrency_info(pool)
                if info.active_slot_count == 1:
                    break
                time.sleep(0.1)
            assert first.poll() is None, "the first training is running"
            go_second.touch()
            first_err = first.communicate(timeout=300)[1]
            second_err = second.communicate(timeout=300)[1]
            assert first.returncode == 0, first_err.decode()[-3000:]
            assert second.returncode == 0, second_err.decode()[-3000:]

            spans, blocked = {}, {}
            for run in instance.get_runs():
                events = [
                    (entry.timestamp, entry.dagster_event)
                    for entry in instance.all_logs(run.run_id)
                    if entry.step_key == STEP and entry.dagster_event
                ]
                times = {event.event_type_value: at for at, event in events}
                spans[run.run_id] = (times["STEP_START"], times["STEP_SUCCESS"])
                blocked[run.run_id] = any(
                    f"blocked by limit for pool {pool}" in (event.message or "")
                    for _, event in events
                    if event.event_type_value == "ENGINE_EVENT"
                )
            info = instance.event_log_storage.get_concurrency_info(pool)
            records = instance.fetch_materializations(model_key(featured.problem), limit=10)
            versions = {
                str(r.asset_materialization.metadata["registered_version"].value)
                for r in records.records
                if r.asset_materialization
            }
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    (a, a_end), (b, b_end) = sorted(spans.values())
    assert a_end <= b, f"the trainings overlapped: {a}..{a_end} and {b}..{b_end}"
    # the second did not merely come later: it asked for the slot and waited for it
    assert sorted(blocked.values()) == [False, True]
    assert info.slot_count == 1 and info.active_slot_count == 0
    assert versions == {"1", "2"}  # both registered, one after the other
