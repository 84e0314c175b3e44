"""The MLflow model registry as the single source of truth for which version does what.

Aliases (``champion``, ``challenger``, ``previous``) name the versions that may take
traffic; version tags carry lineage and the evaluation verdict. Models load from their
native LightGBM files (no pickle), with the encoding stored beside them.
"""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.lib.tracking import Tracking

if TYPE_CHECKING:
    import lightgbm as lgb
    import numpy as np

    from mlplatform.lib.training import Encoding

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"


@dataclass(frozen=True)
class LoadedModel:
    """One registered version in memory, ready to score."""

    name: str
    version: str
    booster: "lgb.Booster"
    encoding: "Encoding"

    def predict_matrix(self, x: "np.ndarray") -> "np.ndarray":
        """Probabilities for an encoded matrix."""
        return self.booster.predict(x)  # type: ignore[return-value]

    def predict_row(self, row: list[float]) -> float:
        """Probability for one encoded row: numpy in, one thread, no DataFrame."""
        import numpy as np

        out = self.booster.predict(np.asarray([row], dtype=float), num_threads=1)
        return float(np.asarray(out).ravel()[0])


def load_version(tracking: Tracking, name: str, version: str) -> LoadedModel:
    """Download a registered version's native model file and encoding, and load them."""
    import lightgbm as lgb
    from mlflow.artifacts import download_artifacts

    from mlplatform.lib.training import Encoding

    # resolved through this store's client: a ``models:/`` URI would use the process's
    # global registry URI, whatever store this tracking points at
    location = tracking.client().get_model_version_download_uri(name, version)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # not a terminal job
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(
                download_artifacts(
                    artifact_uri=location, dst_path=tmp, tracking_uri=tracking.tracking_uri
                )
            )
            booster = lgb.Booster(model_file=str(local / "model.lgb"))
            encoding = Encoding.from_json((local / "extra_files" / "encoding.json").read_text())
        except Exception as exc:  # a registry row whose files are gone or unreadable
            raise ModelFilesError(
                f"{name} version {version} is registered, but its model files at {location} "
                f"cannot be read ({type(exc).__name__}: {exc}); restore them, or move its "
                "alias to a version whose files exist"
            ) from exc
    return LoadedModel(name, str(version), booster, encoding)


class ModelFilesError(RuntimeError):
    """A registered version's model files are missing or unreadable."""


def aliases(tracking: Tracking, name: str) -> dict[str, str]:
    """Alias → version of a registered model; empty when the model is not registered."""
    from mlflow.exceptions import MlflowException

    try:
        model = tracking.client().get_registered_model(name)
    except MlflowException:
        return {}
    return {alias: str(version) for alias, version in model.aliases.items()}


def set_alias(tracking: Tracking, name: str, alias: str, version: str) -> None:
    """Point ``alias`` at ``version`` (one registry write)."""
    tracking.client().set_registered_model_alias(name, alias, version)


def delete_alias(tracking: Tracking, name: str, alias: str) -> None:
    """Remove ``alias`` if it is set."""
    if alias in aliases(tracking, name):
        tracking.client().delete_registered_model_alias(name, alias)


def version_tags(tracking: Tracking, name: str, version: str) -> dict[str, str]:
    """Tags of one version."""
    return dict(tracking.client().get_model_version(name, version).tags)


def set_version_tags(tracking: Tracking, name: str, version: str, tags: dict[str, Any]) -> None:
    """Add or replace tags on one version."""
    client = tracking.client()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def last_verdict(tracking: Tracking, name: str) -> dict[str, Any] | None:
    """The newest evaluation verdict recorded on any version of ``name``."""
    from mlflow.exceptions import MlflowException

    try:
        versions = tracking.client().search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    judged = [v for v in versions if "verdict" in v.tags and "evaluated_at" in v.tags]
    if not judged:
        return None
    newest = max(judged, key=lambda v: (v.tags["evaluated_at"], int(v.version)))
    failed = newest.tags.get("failed_gates", "")
    return {
        "version": str(newest.version),
        "passed": newest.tags["verdict"] in ("passed", "overridden"),
        "verdict": newest.tags["verdict"],
        "failed_gates": [g for g in failed.split(",") if g],
    }
