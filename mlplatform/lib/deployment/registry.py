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

from mlplatform.errors import PlatformError
from mlplatform.lib.tracking import RegistryError as RegistryError  # raised by the readers here
from mlplatform.lib.tracking import Tracking, not_found, read_error

if TYPE_CHECKING:
    import lightgbm as lgb
    import numpy as np

    from mlplatform.lib.training.model import Encoding

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
        """The model's output for an encoded matrix, float64, one per row.

        The booster's own transformation of its raw score: the probability of the positive
        class for a binary objective, the predicted value (the raw score itself, in the
        target's units, unbounded) for a regression objective, plus the feature it boosts
        from (``Encoding.offset``, ``training.boost_from``) if any.
        """
        out = self.booster.predict(x)
        start = self.encoding.offset(x)
        return out if start is None else out + start  # type: ignore[return-value]

    def predict_row(self, row: list[float]) -> float:
        """``predict_matrix`` of one encoded row (None or NaN: missing), as a float.

        Through LightGBM's single-row fast path (``row_predictor``): the same float as
        ``predict_matrix``, one thread, one call into LightGBM; serving and the latency
        gate both score here.
        """
        from mlplatform.lib.deployment.row_predictor import row_predictor

        return row_predictor(self.booster)(row) + self.encoding.offset_row(row)

    def contributions_row(self, row: list[float]) -> tuple[list[float], float]:
        """Per-feature contributions to one encoded row's raw score, and the base value.

        LightGBM's built-in SHAP values (``Booster.predict(pred_contrib=True)``, the
        TreeSHAP of Lundberg et al. 2020): one float per input in ``encoding.features``
        order, in raw-score units, plus the expected raw score; contributions + base value
        = the row's raw score: its log-odds for a binary model, the predicted value itself
        for a regression model. A model boosting from a feature (``training.boost_from``)
        adds what it starts from to that feature's contribution. Runs on one thread.
        """
        import numpy as np

        out = self.booster.predict(np.asarray([row], dtype=float), pred_contrib=True, num_threads=1)
        values = [float(v) for v in np.asarray(out, dtype=float).ravel()]
        if self.encoding.boost_from is not None:
            values[self.encoding.features.index(self.encoding.boost_from)] += (
                self.encoding.offset_row(row)
            )
        return values[:-1], values[-1]


def load_version(tracking: Tracking, name: str, version: str) -> LoadedModel:
    """Download a registered version's native model file and encoding, and load them.

    The files come from wherever the registry says (a ``file:`` folder, or the tracking
    server's proxied ``mlflow-artifacts:`` store): a client needs no folder of its own.

    Raises:
        ModelFilesError: the files are gone or unreadable; one line naming the version,
            its location and what to do (the cause stays chained for logs).
    """
    import lightgbm as lgb
    from mlflow.artifacts import download_artifacts

    from mlplatform.lib.training.model import Encoding

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
                f"cannot be read ({_why(exc)}); restore them, or move its "
                "alias to a version whose files exist"
            ) from exc
    return LoadedModel(name, str(version), booster, encoding)


# how artifact stores say "nothing there": a local folder, the server's proxy (HTTP 404),
# MLflow's own error code
_GONE = ("No such file", "No such artifact", "RESOURCE_DOES_NOT_EXIST", "404 Client Error")


def _why(exc: Exception) -> str:
    """The cause in one line: MLflow's download errors list every file, over many lines."""
    text = str(exc)
    if isinstance(exc, FileNotFoundError) or any(s in text for s in _GONE):
        return "the artifact store has no files there"
    return f"{type(exc).__name__}: {' '.join(text.split())[:300]}"


class ModelFilesError(PlatformError, RuntimeError):
    """A registered version's model files are missing or unreadable."""


def aliases(tracking: Tracking, name: str) -> dict[str, str]:
    """Alias → version of a registered model; empty only when the model is not registered.

    Raises:
        RegistryError: the registry could not be read (an outage is not "no champion").
    """
    try:
        model = tracking.client().get_registered_model(name)
    except Exception as exc:
        if not_found(exc):
            return {}
        raise read_error(tracking, f"aliases of {name}", exc) from exc
    return {alias: str(version) for alias, version in model.aliases.items()}


PASSED, OVERRIDDEN = "passed", "overridden"


@dataclass(frozen=True)
class Clearance:
    """Whether a version may take traffic: its recorded verdict passed, or was overridden.

    ``exists`` is False for a version deleted from (or never in) the registry.
    """

    version: str
    cleared: bool
    reason: str
    exists: bool = True


def clearance(tracking: Tracking, name: str, version: str) -> Clearance:
    """Read ``version``'s recorded verdict: passed, or overridden with who and why, clears it.

    Raises:
        RegistryError: the registry could not be read.
    """
    try:
        tags = dict(tracking.client().get_model_version(name, version).tags)
    except Exception as exc:
        if not_found(exc):
            return Clearance(
                version, False, f"version {version} is not in the registry (deleted)", exists=False
            )
        raise read_error(tracking, f"{name} version {version}", exc) from exc
    verdict = tags.get("verdict")
    if verdict == PASSED:
        return Clearance(version, True, f"version {version} passed the gates")
    if verdict == OVERRIDDEN:
        by, why = tags.get("override_by", ""), tags.get("override_reason", "")
        if by and why:
            return Clearance(version, True, f"version {version}: gates overridden by {by} ({why})")
        return Clearance(
            version,
            False,
            f"version {version} is marked overridden without "
            "who and why (override_by, override_reason)",
        )
    if verdict is None:
        return Clearance(
            version,
            False,
            f"version {version} was never evaluated (no recorded "
            "verdict); only a version that passed the gates takes traffic",
        )
    failed = tags.get("failed_gates", "")
    return Clearance(
        version,
        False,
        f"version {version}'s recorded verdict is {verdict!r}"
        + (f" (failed gates: {failed})" if failed else ""),
    )


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


EVALUATION_SEQ = "evaluation_seq"  # 1, 2, 3... in the order evaluations were recorded


def record_verdict(
    tracking: Tracking, name: str, version: str, tags: dict[str, Any]
) -> dict[str, str]:
    """Write an evaluation's verdict tags on ``version``, numbered after every earlier one.

    The number orders evaluations whatever clock stamped ``evaluated_at`` (a replay
    runs on simulated time, a person on wall-clock time). Returns the tags written.
    """
    versions = tracking.client().search_model_versions(f"name='{name}'")
    seq = 1 + max((_seq(v.tags) for v in versions), default=0)
    written = {k: str(v) for k, v in tags.items()} | {EVALUATION_SEQ: str(seq)}
    set_version_tags(tracking, name, version, written)
    return written


def _seq(tags: dict[str, str]) -> int:
    try:
        return int(tags.get(EVALUATION_SEQ, 0))
    except ValueError:
        return 0


def last_verdict(tracking: Tracking, name: str) -> dict[str, Any] | None:
    """The newest evaluation verdict recorded on any version of ``name``; None if none.

    Newest by evaluation number, then by version number (verdicts recorded before the
    numbering): never by ``evaluated_at``, whose clock may be a replay's.

    Raises:
        RegistryError: the registry could not be read.
    """
    try:
        versions = tracking.client().search_model_versions(f"name='{name}'")
    except Exception as exc:
        if not_found(exc):
            return None
        raise read_error(tracking, f"versions of {name}", exc) from exc
    judged = [v for v in versions if "verdict" in v.tags]
    if not judged:
        return None
    newest = max(judged, key=lambda v: (_seq(v.tags), int(v.version)))
    failed = newest.tags.get("failed_gates", "")
    return {
        "version": str(newest.version),
        "passed": newest.tags["verdict"] in (PASSED, OVERRIDDEN),
        "verdict": newest.tags["verdict"],
        "failed_gates": [g for g in failed.split(",") if g],
        "evaluated_at": newest.tags.get("evaluated_at"),
    }
