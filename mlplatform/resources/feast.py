"""The problems' Feast feature stores as a resource."""

from typing import TYPE_CHECKING

import dagster as dg

from mlplatform.problems import Problem
from mlplatform.resources.lake import LakeResource

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore


class FeastResource(dg.ConfigurableResource):
    """Opens a problem's Feast repository over the platform's data folder.

    ``config_file`` names the repository's ``feature_store*.yaml``; the production file
    reads its SQL registry (``registry_url``) and Redis online store (``redis``) from the
    fields below.
    """

    lake: dg.ResourceDependency[LakeResource]
    config_file: str = "feature_store.yaml"
    registry_url: str = ""
    redis: str = ""

    def store(self, problem: Problem) -> "FeatureStore":
        """The problem's feature store (registry and online store under the data folder)."""
        from mlplatform.lib.features.feature_store import open_store

        variables = {
            "MLPLATFORM_FEAST_REGISTRY": self.registry_url,
            "MLPLATFORM_FEAST_REDIS": self.redis,
        }
        return open_store(
            problem,
            self.lake.lake().root,
            self.config_file,
            {k: v for k, v in variables.items() if v},
        )

    def objects(self, problem: Problem) -> dict[str, object]:
        """Every Feast object of the problem, reading feature files under the data folder."""
        return problem.feast_objects(self.lake.lake().root)

    def service(self, problem: Problem, store: "FeatureStore") -> "FeatureService":
        """The feature service the problem's model reads, as registered in ``store``."""
        from mlplatform.lib.features.feature_store import service_of

        return service_of(problem, store, self.lake.lake().root)
