"""Where LightGBM trains: on this machine, or through ``lightgbm.dask`` on a Dask cluster."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:
    from distributed import Client

    from mlplatform.lib.training.model import Data, Fit
    from mlplatform.spec import TrainingSpec

LOCAL_CLUSTER = "local"


class DaskResource(dg.ConfigurableResource):
    """The Dask cluster training runs on; empty means single-machine LightGBM.

    ``scheduler_address`` is a scheduler (``tcp://host:8786``), or ``local`` for a
    ``LocalCluster`` of ``local_workers`` single-threaded worker processes started for
    the fit and stopped after it.
    """

    scheduler_address: str = ""
    local_workers: int = 2

    @property
    def enabled(self) -> bool:
        """Whether training goes through ``lightgbm.dask``."""
        return bool(self.scheduler_address)

    @contextmanager
    def client(self) -> Iterator["Client | None"]:
        """A client of the cluster for the duration of a fit (``None`` when disabled)."""
        if not self.enabled:
            yield None
            return
        from distributed import Client, LocalCluster

        if self.scheduler_address == LOCAL_CLUSTER:
            with (
                LocalCluster(
                    n_workers=self.local_workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",  # any free port; never a fixed one
                ) as cluster,
                Client(cluster) as client,
            ):
                yield client
        else:
            with Client(self.scheduler_address) as client:
                yield client

    def fit(self, data: "Data", params: dict[str, Any], cfg: "TrainingSpec") -> "Fit":
        """The final fit through ``lightgbm.dask``, on a client held only for the fit."""
        from mlplatform.lib.training.distributed import fit_dask

        with self.client() as client:
            if client is None:
                raise ValueError("DaskResource.fit needs a scheduler_address")
            return fit_dask(client, data, params, cfg)
