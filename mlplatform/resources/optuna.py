"""Where Optuna studies live, and how many processes run a search's trials."""

import dagster as dg

from mlplatform.resources.lake import LakeResource


class OptunaResource(dg.ConfigurableResource):
    """The study storage: a SQLite file per problem under the data folder by default.

    ``storage_url`` is an SQLAlchemy URL of a shared database (``postgresql+psycopg2://...``,
    production: ``MLPLATFORM_OPTUNA_STORAGE``); every problem's studies live there, so
    trials can run on several machines against one study. ``workers`` trial processes run
    each search at once (more than one needs a shared database: SQLite is one file on one
    machine); on a Dask cluster (``DaskResource``) they run as the cluster's tasks.
    """

    lake: dg.ResourceDependency[LakeResource]
    storage_url: str = ""
    workers: int = 1

    def storage(self, problem: str) -> str:
        """The study storage URL of ``problem`` (its SQLite file, or the shared database).

        Raises:
            ValueError: ``workers`` above 1 with a SQLite storage.
        """
        if self.storage_url:
            return self.storage_url
        if self.workers > 1:
            raise ValueError(
                f"{self.workers} search workers need a shared study database "
                "(OptunaResource.storage_url, MLPLATFORM_OPTUNA_STORAGE), not a SQLite file"
            )
        folder = self.lake.lake().root / "optuna"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / f'{problem}.db'}"
