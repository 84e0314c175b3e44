"""MLflow tracking and registry as a typed resource.

dagster-mlflow's ``mlflow_tracking`` is a legacy-style resource: one MLflow run per
Dagster run, process-wide tracking state, and runs left RUNNING unless every job carries
its end hook. Assets here open and close their own run, so this resource only says where
the tracking store is; ``lib.tracking`` does the rest.
"""

import dagster as dg

from mlplatform.lib.tracking import Tracking, local_tracking
from mlplatform.resources.lake import LakeResource


class MlflowResource(dg.ConfigurableResource):
    """The MLflow store: SQLite backend and local artifacts under the data folder by default.

    With ``tracking_uri`` (a tracking server), nothing is kept locally: the server stores
    runs and registry, and proxies artifacts (``mlflow-artifacts:`` URIs) when it is started
    with ``--artifacts-destination``; clients need only its URL.
    """

    lake: dg.ResourceDependency[LakeResource]
    tracking_uri: str = ""
    ui_url: str = "http://127.0.0.1:5000"

    def tracking(self) -> Tracking:
        """The tracking and registry store."""
        if self.tracking_uri:
            return Tracking(tracking_uri=self.tracking_uri)
        local = local_tracking(self.lake.lake().root)
        assert local.artifact_root is not None
        local.artifact_root.parent.mkdir(parents=True, exist_ok=True)
        return local

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """Link to a run in the MLflow UI: the tracking server's, else `make mlflow`'s."""
        server = self.tracking_uri if self.tracking_uri.startswith("http") else ""
        return f"{server or self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"
