"""Typed resources, and the one place that maps the active profile to them."""

import os
from typing import Any

import dagster as dg

from mlplatform.resources.dashboard import DashboardResource
from mlplatform.resources.dask import DaskResource
from mlplatform.resources.feast import FeastResource
from mlplatform.resources.lake import LakeResource
from mlplatform.resources.mlflow import MlflowResource
from mlplatform.settings import environment

# The production profile's services, each overridable by an environment variable
# (docs/deploy.md says what each one is). Defaults are the servers of a development
# machine: PostgreSQL and Redis on 127.0.0.1, MLflow and a Dask scheduler started there.
PRODUCTION_DEFAULTS = {
    "MLPLATFORM_MLFLOW_URI": "http://127.0.0.1:5000",
    "MLPLATFORM_FEAST_REGISTRY": "postgresql+psycopg://postgres@127.0.0.1:5432/mlplatform_feast",
    "MLPLATFORM_FEAST_REDIS": "127.0.0.1:6379,db=1",
    "MLPLATFORM_CELERY_BROKER": "redis://127.0.0.1:6379/2",
    "MLPLATFORM_CELERY_BACKEND": "redis://127.0.0.1:6379/3",
    "MLPLATFORM_DASK_SCHEDULER": "tcp://127.0.0.1:8786",
    # the Evidently workspace of the dashboards; empty: evidently/ on the shared data volume
    "MLPLATFORM_EVIDENTLY_WORKSPACE": "",
}


def production_setting(name: str) -> str:
    """A production setting: the environment variable ``name``, else its default."""
    return os.environ.get(name) or PRODUCTION_DEFAULTS[name]


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources of the active profile (``MLPLATFORM_ENV``, ``local`` by default)."""
    profile = environment()
    lake = LakeResource()
    if profile == "local":
        return {
            "lake": lake,
            "feast": FeastResource(lake=lake),
            "mlflow": MlflowResource(lake=lake),
            "dask": DaskResource(),
            "dashboard": DashboardResource(lake=lake),
        }
    if profile == "production":
        return {
            "lake": lake,
            "feast": FeastResource(
                lake=lake,
                config_file="feature_store.production.yaml",
                registry_url=production_setting("MLPLATFORM_FEAST_REGISTRY"),
                redis=production_setting("MLPLATFORM_FEAST_REDIS"),
            ),
            "mlflow": MlflowResource(
                lake=lake, tracking_uri=production_setting("MLPLATFORM_MLFLOW_URI")
            ),
            "dask": DaskResource(scheduler_address=production_setting("MLPLATFORM_DASK_SCHEDULER")),
            "dashboard": DashboardResource(
                lake=lake, workspace=production_setting("MLPLATFORM_EVIDENTLY_WORKSPACE")
            ),
        }
    raise ValueError(f"no resources defined for profile {profile!r}")


def build_executor() -> Any:  # dagster's ExecutorDefinition, or None for its default
    """The executor of the active profile: Dagster's default locally, Celery in production."""
    if environment() != "production":
        return None
    return celery_executor(
        production_setting("MLPLATFORM_CELERY_BROKER"),
        production_setting("MLPLATFORM_CELERY_BACKEND"),
    )


def celery_executor(broker: str, backend: str) -> Any:
    """dagster-celery's executor over a Redis broker; steps go to the ``dagster`` queue."""
    from dagster_celery import celery_executor as executor

    return executor.configured({"broker": broker, "backend": backend}, name="celery")


__all__ = [
    "DashboardResource",
    "DaskResource",
    "FeastResource",
    "LakeResource",
    "MlflowResource",
    "build_executor",
    "build_resources",
]
