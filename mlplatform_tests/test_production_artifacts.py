"""Production without shared folders: MLflow proxies artifacts, Optuna studies in PostgreSQL.

A real ``mlflow server`` on a PostgreSQL database (created and dropped here) writes every
artifact under its own ``--artifacts-destination``; the clients (training, evaluation,
serving) get only its URL and folders that share nothing with it.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from mlplatform.definitions import build_definitions
from mlplatform.lib.deployment import registry as reg
from mlplatform.lib.storage import DataLake
from mlplatform.lib.tracking import Tracking
from mlplatform.problems import Problem
from mlplatform.resources import FeastResource, LakeResource, MlflowResource, OptunaResource
from mlplatform.spec import TrainingSpec
from mlplatform_tests.helpers import Platform, failure_messages
from mlplatform_tests.services import mlflow_server, pg_database, pg_url, require_services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST: dict[str, Any] = {
    "validation_days": 2,
    "n_trials": 3,
    "max_rounds": 60,
    "early_stopping_rounds": 10,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, str]]:
    """(URL, artifact folder) of an MLflow server on PostgreSQL, and an Optuna database URL."""
    require_services()
    tmp = tmp_path_factory.mktemp("mlflow_server")
    with (
        pg_database("mlflow") as mlflow_db,
        pg_database("optuna") as optuna_db,
        mlflow_server(
            pg_url(mlflow_db, "postgresql+psycopg2"), tmp / "artifacts", tmp / "server.log"
        ) as uri,
    ):
        yield uri, tmp / "artifacts", pg_url(optuna_db, "postgresql+psycopg2")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_training_evaluation_and_serving_need_only_the_tracking_servers_url(
    server: tuple[str, Path, str],
    tmp_path: Path,
    featured_base: Path,
    problem: Problem,
    instance: dg.DagsterInstance,
) -> None:
    uri, artifacts, optuna_url = server
    client_data = tmp_path / "client"  # the training machine's lake: no MLflow folder
    shutil.copytree(featured_base, client_data)
    shutil.rmtree(client_data / "mlflow", ignore_errors=True)
    before = _files(client_data)
    lake = LakeResource(root=str(client_data))
    platform = Platform(problem, client_data, instance)
    platform.defs = build_definitions(
        [problem],
        {
            "lake": lake,
            "feast": FeastResource(lake=lake),
            "mlflow": MlflowResource(lake=lake, tracking_uri=uri),
            "optuna": OptunaResource(lake=lake, storage_url=optuna_url),
        },
    )

    result = platform.run_gated_training(**FAST)

    evaluated = [e for e in result.all_events if e.step_key and "evaluation" in e.step_key]
    assert evaluated and not [m for m in failure_messages(result) if "model files" in m]
    (trained,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["flight_delay", "model_candidate"])
    ]
    version = str(trained.materialization.metadata["registered_version"].value)
    assert str(trained.materialization.metadata["model_uri"].value).startswith("models:/")
    tracking = Tracking(uri)
    model_version = tracking.client().get_model_version("flight_delay", version)
    run = tracking.client().get_run(model_version.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    # the model, its plots and the evaluation's model card went to the server's folder ...
    stored = _files(artifacts)
    assert any(p.endswith("model.lgb") for p in stored)
    assert any(p.endswith("optimization_history.csv") for p in stored)
    assert any(p.endswith("model_card.md") for p in stored), "the evaluation logged no card"
    # ... and none to the client's: it gained its reports and the training lock, no MLflow
    gained = _files(client_data) - before
    assert not [p for p in gained if "mlflow" in p or p.endswith((".lgb", "MLmodel"))], gained
    assert not (client_data / "optuna" / "flight_delay.db").exists()  # the study: PostgreSQL

    # serving on another machine: an empty folder, and the server's URL
    empty = tmp_path / "serving"
    empty.mkdir()
    script = (
        "import json, sys\n"
        "from mlplatform.lib.deployment.registry import load_version\n"
        "from mlplatform.lib.tracking import Tracking\n"
        "m = load_version(Tracking(sys.argv[1]), 'flight_delay', sys.argv[2])\n"
        "row = [0.0] * len(m.encoding.features)\n"
        "print(json.dumps({'version': m.version, 'p': m.predict_row(row)}))\n"
    )
    env = {**os.environ, "MLPLATFORM_DATA_DIR": str(empty), "MLPLATFORM_ENV": "local"}
    done = subprocess.run(
        [sys.executable, "-c", script, uri, version],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads(done.stdout.strip().splitlines()[-1])
    assert served["version"] == version and 0.0 < served["p"] < 1.0
    assert not list(empty.iterdir())


def test_a_version_whose_artifacts_are_gone_from_the_server_fails_by_version_and_location(
    server: tuple[str, Path, str], tmp_path: Path, featured_base: Path, problem: Problem
) -> None:
    uri, artifacts, _ = server
    tracking = Tracking(uri)
    versions = tracking.client().search_model_versions("name='flight_delay'")
    assert versions, "runs after the training test"
    version = str(max(int(v.version) for v in versions))
    location = tracking.client().get_model_version_download_uri("flight_delay", version)
    assert location.startswith("mlflow-artifacts:/")
    model_files = artifacts / location.removeprefix("mlflow-artifacts:/")
    assert (model_files / "model.lgb").exists()
    aside = tmp_path / "aside"
    shutil.move(model_files, aside)  # e.g. a bucket emptied by a lifecycle rule
    try:
        with pytest.raises(reg.ModelFilesError) as failed:
            reg.load_version(tracking, "flight_delay", version)
    finally:
        shutil.move(aside, model_files)

    message = str(failed.value)
    assert f"flight_delay version {version} is registered" in message
    assert location in message
    assert "restore them, or move its alias" in message
    assert "\n" not in message and "Traceback" not in message
    assert reg.load_version(tracking, "flight_delay", version).version == version  # restored


def test_a_study_in_postgres_runs_its_trials_on_two_workers_at_once(
    server: tuple[str, Path, str], featured_base: Path, problem: Problem
) -> None:
    from mlplatform.lib.features.feature_store import feature_matrix
    from mlplatform.lib.training import model as tr

    _, _, optuna_url = server
    spec = problem.spec
    latest = DataLake(featured_base).read_latest(problem.name, "training_set")
    assert latest is not None
    training = pd.read_parquet(latest["path"])
    cfg = TrainingSpec.model_validate({**spec.training.model_dump(), **FAST, "n_trials": 6})
    matrix = feature_matrix(training, spec)
    encoding = tr.fit_encoding(matrix, spec)
    train, valid = tr.time_split(training, cfg.validation_days, spec.partitioning.timezone)
    x, y = encoding.matrix(matrix), training[spec.target.name].to_numpy()
    data = tr.datasets(x, y, train, valid, encoding)

    result = tr.search(data, cfg, optuna_url, "two-workers", tr.monotone_constraints(spec), 2)

    trials = result.study.get_trials(deepcopy=False)
    assert result.counts["complete"] + result.counts["pruned"] == 6 == len(trials)
    by_worker: dict[str, list] = {}
    for t in trials:
        by_worker.setdefault(t.user_attrs["worker"], []).append(t)
    assert len(by_worker) == 2 and all(len(ts) == 3 for ts in by_worker.values())
    first, second = by_worker.values()
    # at once: some trial of one worker ran while a trial of the other did
    assert any(
        a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
        for a in first
        for b in second
    )
    again = tr.search(data, cfg, optuna_url, "two-workers", tr.monotone_constraints(spec), 2)
    assert len(again.study.get_trials(deepcopy=False)) == 6  # resumed: the budget was spent
