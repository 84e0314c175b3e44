"""Where the monitoring dashboards' Evidently workspace lives, as a resource."""

import dagster as dg

from mlplatform.resources.lake import LakeResource


class DashboardResource(dg.ConfigurableResource):
    """The Evidently workspace: a folder (or fsspec URL); empty means ``<data folder>/evidently``.

    In the production profile it is ``MLPLATFORM_EVIDENTLY_WORKSPACE``: a folder every worker
    and the ``evidently ui`` host see (the shared data volume by default).
    """

    lake: dg.ResourceDependency[LakeResource]
    workspace: str = ""

    def path(self) -> str:
        """The workspace's location (resolved at run time)."""
        return self.workspace or str(self.lake.lake().root / "evidently")
