"""The platform's files (landing zone, quarantine, warehouse, reports) as a resource."""

from pathlib import Path

import dagster as dg

from mlplatform.lib.storage import DataLake
from mlplatform.settings import data_dir


class LakeResource(dg.ConfigurableResource):
    """Root folder of the platform's data; empty means the project's ``data/`` folder."""

    root: str = ""

    def lake(self) -> DataLake:
        """The file layout under the configured root (resolved at run time)."""
        return DataLake(Path(self.root) if self.root else data_dir())
