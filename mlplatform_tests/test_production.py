"""The production profile on real servers: Postgres instance, Celery workers, Redis, MLflow.

Integration tests run against PostgreSQL and Redis on 127.0.0.1 (``services.py``): one
module-scoped set of databases, a real Celery worker and a real MLflow server, torn down
afterwards. Without the servers they skip and say what is missing; in CI they must run.
"""

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mlplatform import production
from mlplatform.definitions import build_definitions
from mlplatform.errors import UsageError
from mlplatform.lib.features.feature_store import online_row_counts
from mlplatform.lib.storage import DataLake
from mlplatform.problems import Problem, problems
from mlplatform.resources import (
    PRODUCTION_SETTINGS,
    FeastResource,
    LakeResource,
    MlflowResource,
    build_executor,
    build_resources,
    open_resources,
)
from mlplatform_tests.helpers import HOLDOUT_DAYS, Platform, fresh_instance
from mlplatform_tests.services import (
    free_port,
    mlflow_server,
    pg_database,
    pg_url,
    redis_db,
    require_services,
)

ROOT = Path(__file__).resolve().parents[1]
FAST = {"validation_days": 2, "n_trials": 3, "max_rounds": 60, "early_stopping_rounds": 10}


PRODUCTION_VARS = PRODUCTION_SETTINGS  # every setting the profile reads


def test_the_production_profile_maps_to_postgres_redis_celery_and_dask(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLPLATFORM_ENV", "production")
    for name in PRODUCTION_VARS:
        monkeypatch.delenv(name, raising=False)
    # nothing is read while the definitions are built: every setting is an EnvVar
    resources = build_resources()
    feast = resources["feast"]
    assert isinstance(feast, FeastResource)
    assert feast.config_file == "feature_store.production.yaml"
    assert isinstance(feast.registry_url, dg.EnvVar)
    assert feast.registry_url.env_var_name == "MLPLATFORM_FEAST_REGISTRY"
    assert isinstance(resources["mlflow"], MlflowResource)
    assert isinstance(resources["mlflow"].tracking_uri, dg.EnvVar)
    executor = build_executor()
    assert executor is not None and executor.name == "celery"
    dg.Definitions.validate_loadable(
        build_definitions(problems().values(), build_resources(), build_executor())
    )
    with pytest.raises(UsageError, match="needs MLPLATFORM_MLFLOW_URI in the environment"):
        open_resources("mlflow")

    # ... and read when a run (here: a command) opens them
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MLPLATFORM_MLFLOW_URI", "http://mlflow.example:5000")
    monkeypatch.setenv("MLPLATFORM_FEAST_REGISTRY", "postgresql+psycopg://pg.example/feast")
    monkeypatch.setenv("MLPLATFORM_FEAST_REDIS", "redis.example:6379,db=1")
    monkeypatch.setenv("MLPLATFORM_DASK_SCHEDULER", "tcp://dask.example:8786")
    monkeypatch.setenv("MLPLATFORM_EVIDENTLY_WORKSPACE", "")
    monkeypatch.setenv("MLPLATFORM_OPTUNA_STORAGE", "postgresql+psycopg2://pg.example/optuna")
    monkeypatch.setenv("MLPLATFORM_OPTUNA_WORKERS", "2")
    opened = open_resources()
    assert opened["mlflow"].tracking_uri == "http://mlflow.example:5000"
    assert opened["feast"].registry_url == "postgresql+psycopg://pg.example/feast"
    assert opened["feast"].redis == "redis.example:6379,db=1"
    assert opened["lake"].lake().root == tmp_path
    assert opened["dask"].scheduler_address == "tcp://dask.example:8786"
    assert opened["dashboard"].path() == str(tmp_path / "evidently")  # empty: the volume's
    assert opened["optuna"].storage("flight_delay") == "postgresql+psycopg2://pg.example/optuna"
    assert opened["optuna"].workers == 2

    monkeypatch.setenv("MLPLATFORM_ENV", "local")
    assert build_executor() is None
    assert not build_resources()["dask"].enabled


@dataclass
class Services:
    """The module's servers: environment of the profile, instance, data folder."""

    env: dict[str, str]
    instance: dg.DagsterInstance
    data: Path
    redis_db: int
    mlflow_uri: str


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory, featured_base: Path) -> Iterator[Services]:
    """Fresh databases, a Redis db, an MLflow server and a Celery worker for this module."""
    require_services()
    tmp = tmp_path_factory.mktemp("production")
    data = tmp / "data"
    shutil.copytree(featured_base, data)
    shutil.rmtree(data / "feast")  # the local profile's registry and online store
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    with (
        pg_database("dagster") as dagster_db,
        pg_database("feast") as feast_db,
        pg_database("mlflow") as mlflow_db,
        pg_database("optuna") as optuna_db,
        redis_db() as number,
        mlflow_server(
            pg_url(mlflow_db, "postgresql+psycopg2"), tmp / "mlflow_artifacts", tmp / "mlflow.log"
        ) as mlflow_uri,
        pytest.MonkeyPatch.context() as mp,
    ):
        redis_url = f"redis://127.0.0.1:6379/{number}"
        env = {
            "MLPLATFORM_ENV": "production",
            "DAGSTER_HOME": str(home),
            "MLPLATFORM_DATA_DIR": str(data),
            "MLPLATFORM_DAGSTER_PG_URL": pg_url(dagster_db, "postgresql+psycopg2"),
            "MLPLATFORM_FEAST_REGISTRY": pg_url(feast_db, "postgresql+psycopg"),
            "MLPLATFORM_FEAST_REDIS": f"127.0.0.1:6379,db={number}",
            "MLPLATFORM_CELERY_BROKER": redis_url,
            "MLPLATFORM_CELERY_BACKEND": redis_url,
            "MLPLATFORM_MLFLOW_URI": mlflow_uri,
            "MLPLATFORM_DASK_SCHEDULER": "local",
            "MLPLATFORM_OPTUNA_STORAGE": pg_url(optuna_db, "postgresql+psycopg2"),
            "MLPLATFORM_OPTUNA_WORKERS": "1",
        }
        for key, value in env.items():
            mp.setenv(key, value)
        worker = production.start_worker({**os.environ, **env}, tmp / "worker.log")
        try:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                yield Services(env, instance, data, number, mlflow_uri)
        finally:
            production.stop_worker(worker)


def _step_workers(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    """Celery worker host names that executed the run's steps (from engine events)."""
    hosts = set()
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        data = event.engine_event_data if event else None
        if data and "Celery worker" in data.metadata:
            hosts.add(str(data.metadata["Celery worker"].value))
    return hosts


@pytest.mark.integration
@pytest.mark.slow
def test_a_day_is_ingested_by_celery_workers_on_the_postgres_instance(
    services: Services,
) -> None:
    assert services.instance.run_retries_enabled and services.instance.run_monitoring_enabled
    assert type(services.instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    run = production.run_job(services.instance, "flight_delay_ingestion", "2013-01-07")

    assert run.success
    stored = services.instance.get_run_by_id(run.run_id)
    assert stored is not None and stored.status == dg.DagsterRunStatus.SUCCESS
    assert stored.tags["dagster/partition"] == "2013-01-07"
    assert _step_workers(services.instance, run.run_id), "no step ran in a Celery worker"
    flights = dg.AssetKey(["flight_delay", "flights"])
    assert services.instance.get_latest_materialization_event(flights) is not None
    day = DataLake(services.data).read_days("flight_delay", "flights", [date(2013, 1, 7)])
    assert len(day) > 800


@pytest.mark.integration
@pytest.mark.slow
def test_the_feature_store_job_fills_redis_through_celery_and_features_read_back(
    services: Services, problem: Problem
) -> None:
    op = "flight_delay__training_set"
    config = {"ops": {op: {"config": {"holdout_days": HOLDOUT_DAYS}}}}
    run = production.run_job(services.instance, "flight_delay_feature_store", None, config)

    assert run.success
    assert _step_workers(services.instance, run.run_id)
    checks = {
        e.check_name: e.passed
        for e in (
            r.dagster_event.event_specific_data
            for r in services.instance.all_logs(
                run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            )
            if r.dagster_event
        )
        if isinstance(e, dg.AssetCheckEvaluation)
    }
    assert checks["online_parity"] and checks["point_in_time"], checks

    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=services.redis_db)
    assert int(client.dbsize()) > 100  # type: ignore[arg-type]  # the sync client returns int
    lake = LakeResource(root=str(services.data))
    feast = open_resources("feast")["feast"]  # the profile's settings, read now
    assert isinstance(feast, FeastResource)
    store = FeastResource(
        lake=lake, config_file=feast.config_file, registry_url=feast.registry_url, redis=feast.redis
    ).store(problem)
    assert getattr(store.config.online_store, "type", None) == "redis"
    assert {v.name for v in store.list_feature_views()} >= {"origin_weather_fv", "plane_fv"}
    held = online_row_counts(store)
    assert set(held) == {t.view for t in problem.feature_tables()}
    assert held["carrier_delays_fv"] >= 10
    online = store.get_online_features(
        features=[
            "carrier_delays_fv:carrier_delay_rate_7d",
            "carrier_delays_fv:carrier_flights_7d",
        ],
        entity_rows=[{"carrier": c} for c in ("UA", "AA", "B6")],
    ).to_df()
    newest = (
        pd.read_parquet(services.data / "warehouse/flight_delay/features/carrier_delays")
        .sort_values("event_timestamp")
        .groupby("carrier")
        .last()
    )
    expected = newest.to_dict("index")
    for row in online.to_dict("records"):
        want = expected[row["carrier"]]
        assert row["carrier_flights_7d"] == want["carrier_flights_7d"]
        assert np.isclose(float(row["carrier_delay_rate_7d"]), float(want["carrier_delay_rate_7d"]))


@pytest.mark.integration
@pytest.mark.slow
def test_training_runs_through_lightgbm_dask_and_is_tracked_on_the_mlflow_server(
    services: Services, problem: Problem
) -> None:
    from mlflow import MlflowClient

    assert DataLake(services.data).read_latest("flight_delay", "training_set") is not None
    resources = build_resources()  # the production profile, its Dask: a LocalCluster
    with fresh_instance() as instance:
        platform = Platform(problem, services.data, instance)
        platform.defs = production_definitions(problem, resources)
        result = platform.run_training(**FAST)

    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert str(meta["trainer"].value).startswith("lightgbm.dask")
    client = MlflowClient(tracking_uri=services.mlflow_uri)
    run = client.get_run(str(meta["mlflow_run_id"].value))
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer"].startswith("lightgbm.dask")
    assert run.data.metrics["valid_auc"] > 0.55
    (version,) = client.search_model_versions("name='flight_delay'")
    assert version.run_id == run.info.run_id
    # the server holds the artifacts; the workers' data folder has no MLflow store
    assert str(run.info.artifact_uri).startswith("mlflow-artifacts:/")
    assert not (services.data / "mlflow").exists()


def production_definitions(problem: Problem, resources: dict) -> dg.Definitions:
    from mlplatform.definitions import build_definitions

    return build_definitions([problem], resources)


def test_a_missing_server_skips_with_its_address_and_fails_when_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlplatform_tests import services as svc

    monkeypatch.setattr(svc, "PG_PORT", free_port())  # nothing listens there
    monkeypatch.delenv(svc.REQUIRE_VAR, raising=False)
    with pytest.raises(pytest.skip.Exception, match=rf"PostgreSQL on 127.0.0.1:{svc.PG_PORT}"):
        require_services()
    monkeypatch.setenv(svc.REQUIRE_VAR, "1")
    with pytest.raises(pytest.fail.Exception, match="MLPLATFORM_REQUIRE_SERVICES=1"):
        require_services()
