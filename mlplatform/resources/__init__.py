"""Typed resources, and the one place that maps the active profile to them."""

import dagster as dg

from mlplatform.resources.lake import LakeResource
from mlplatform.settings import environment


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources of the active profile (``MLPLATFORM_ENV``, ``local`` by default)."""
    profile = environment()
    if profile == "local":
        return {"lake": LakeResource()}
    raise ValueError(f"no resources defined for profile {profile!r}")


__all__ = ["LakeResource", "build_resources"]
