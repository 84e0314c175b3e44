"""Typed resources, and the one place that maps the active profile to them."""

import dagster as dg

from mlplatform.resources.feast import FeastResource
from mlplatform.resources.lake import LakeResource
from mlplatform.resources.mlflow import MlflowResource
from mlplatform.settings import environment


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources of the active profile (``MLPLATFORM_ENV``, ``local`` by default)."""
    profile = environment()
    if profile == "local":
        lake = LakeResource()
        return {
            "lake": lake,
            "feast": FeastResource(lake=lake),
            "mlflow": MlflowResource(lake=lake),
        }
    raise ValueError(f"no resources defined for profile {profile!r}")


__all__ = ["FeastResource", "LakeResource", "MlflowResource", "build_resources"]
