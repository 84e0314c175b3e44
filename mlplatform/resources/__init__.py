"""Typed resources, and the one place that maps the active profile to them.

The profile (``MLPLATFORM_ENV``) decides which resources and executor exist, so it is read
when the definitions are built. Every setting of the production profile is a ``dg.EnvVar``:
Dagster reads it when a run launches (and the UI shows which variable a field comes from),
never when the code location is imported. The local profile needs no variable at all.
"""

from typing import Any

import dagster as dg

from mlplatform.errors import UsageError
from mlplatform.resources.dashboard import DashboardResource
from mlplatform.resources.dask import DaskResource
from mlplatform.resources.feast import FeastResource
from mlplatform.resources.lake import LakeResource
from mlplatform.resources.mlflow import MlflowResource
from mlplatform.resources.optuna import OptunaResource
from mlplatform.settings import DATA_VAR, environment

# The production profile's settings, each an environment variable read at launch (what each
# one is: docs/deploy.md). All must be set (the workspace may be empty: the data volume's);
# deploy/local.sh sets a development machine's servers for any that is unset.
PRODUCTION_SETTINGS = (
    DATA_VAR,
    "MLPLATFORM_MLFLOW_URI",
    "MLPLATFORM_FEAST_REGISTRY",
    "MLPLATFORM_FEAST_REDIS",
    "MLPLATFORM_CELERY_BROKER",
    "MLPLATFORM_CELERY_BACKEND",
    "MLPLATFORM_DASK_SCHEDULER",
    "MLPLATFORM_EVIDENTLY_WORKSPACE",
    "MLPLATFORM_OPTUNA_STORAGE",
    "MLPLATFORM_OPTUNA_WORKERS",
)


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources of the active profile (``MLPLATFORM_ENV``, ``local`` by default).

    Production fields are ``dg.EnvVar``s, resolved by Dagster at launch; outside a run use
    ``open_resources()``, which resolves them the same way.
    """
    profile = environment()
    if profile == "local":
        lake = LakeResource()  # the project's data/ (or MLPLATFORM_DATA_DIR), read at run time
        return {
            "lake": lake,
            "feast": FeastResource(lake=lake),
            "mlflow": MlflowResource(lake=lake),
            "optuna": OptunaResource(lake=lake),
            "dask": DaskResource(),
            "dashboard": DashboardResource(lake=lake),
        }
    if profile == "production":
        lake = LakeResource(root=dg.EnvVar(DATA_VAR))  # the volume every worker mounts
        return {
            "lake": lake,
            "feast": FeastResource(
                lake=lake,
                config_file="feature_store.production.yaml",
                registry_url=dg.EnvVar("MLPLATFORM_FEAST_REGISTRY"),
                redis=dg.EnvVar("MLPLATFORM_FEAST_REDIS"),
            ),
            "mlflow": MlflowResource(lake=lake, tracking_uri=dg.EnvVar("MLPLATFORM_MLFLOW_URI")),
            # the studies in a shared database: trials run on several workers at once
            "optuna": OptunaResource(
                lake=lake,
                storage_url=dg.EnvVar("MLPLATFORM_OPTUNA_STORAGE"),
                workers=dg.EnvVar.int("MLPLATFORM_OPTUNA_WORKERS"),
            ),
            "dask": DaskResource(scheduler_address=dg.EnvVar("MLPLATFORM_DASK_SCHEDULER")),
            "dashboard": DashboardResource(
                lake=lake, workspace=dg.EnvVar("MLPLATFORM_EVIDENTLY_WORKSPACE")
            ),
        }
    raise ValueError(f"no resources defined for profile {profile!r}")


def open_resources(*names: str) -> dict[str, Any]:
    """The active profile's resources ``names`` (all by default), settings read now.

    For use outside a run: commands and the HTTP service call resources directly, and
    Dagster resolves each ``EnvVar`` here as it does at launch (only for the resources
    asked for, as a run only for those its steps use). Raises ``UsageError`` naming a
    variable that is not set.
    """
    profile = build_resources()
    resources = {name: profile[name] for name in names or profile}
    try:
        with dg.build_resources(resources) as built:
            return {name: getattr(built, name) for name in resources}
    except dg.DagsterInvalidConfigError as exc:
        missing = [name for name in PRODUCTION_SETTINGS if f'variable "{name}"' in str(exc)]
        if not missing:
            raise
        raise UsageError(
            f"the {environment()} profile needs {', '.join(missing)} in the environment "
            "(docs/deploy.md, Settings; deploy/local.sh sets a development machine's)"
        ) from None


def build_executor() -> Any:  # dagster's ExecutorDefinition, or None for its default
    """The executor of the active profile: Dagster's default locally, Celery in production.

    The broker and backend are read from ``MLPLATFORM_CELERY_BROKER`` / ``_BACKEND`` when a
    run launches.
    """
    if environment() != "production":
        return None
    return celery_executor(
        {"env": "MLPLATFORM_CELERY_BROKER"}, {"env": "MLPLATFORM_CELERY_BACKEND"}
    )


def celery_executor(broker: str | dict[str, str], backend: str | dict[str, str]) -> Any:
    """dagster-celery's executor over a Redis broker; steps go to the ``dagster`` queue.

    ``broker`` and ``backend`` are URLs, or ``{"env": NAME}`` to read them at launch.
    """
    from dagster_celery import celery_executor as executor

    return executor.configured({"broker": broker, "backend": backend}, name="celery")


__all__ = [
    "DashboardResource",
    "DaskResource",
    "FeastResource",
    "LakeResource",
    "MlflowResource",
    "OptunaResource",
    "build_executor",
    "build_resources",
    "open_resources",
]
