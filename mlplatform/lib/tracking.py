"""MLflow tracking and registry for training runs: one run per training, never left open."""

import functools
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.errors import PlatformError

if TYPE_CHECKING:
    import lightgbm as lgb
    import pandas as pd
    from mlflow.types import Schema


@dataclass(frozen=True)
class Tracking:
    """Where runs, artifacts and registered models live.

    ``artifact_root`` is the folder new experiments keep their artifacts in (the embedded
    store), or ``None`` for a tracking server: the server then picks the location, which is
    ``mlflow-artifacts:/`` when it proxies artifacts (``mlflow server
    --artifacts-destination``), so a client needs nothing but the server's URL.
    """

    tracking_uri: str
    artifact_root: Path | None = None

    def client(self) -> Any:
        """A client bound to this store (no process-wide state), one per store and process.

        The service's registry follower asks every 0.5 s: building a client (and its
        store) each time would be repeated work on the serving process.
        """
        return _client(self.tracking_uri)

    def experiment_id(self, name: str) -> str:
        """The experiment ``name``; created under ``artifact_root``, or where the server says."""
        client = self.client()
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        if self.artifact_root is None:
            return client.create_experiment(name)
        location = (self.artifact_root / name).resolve().as_uri()
        return client.create_experiment(name, artifact_location=location)


@functools.cache
def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    if uri.startswith("sqlite:///"):
        _watch_sqlite(uri.removeprefix("sqlite:///"))
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# Registry files whose pooled connections must follow the file: MLflow keeps one
# SQLAlchemy engine per URI for the life of the process, and a pooled SQLite connection
# to a file that was emptied then restored keeps answering "no such table", or, to a file
# replaced by another, keeps reading the replaced one; only a restart recovered.
_WATCHED: set[str] = set()


def _watch_sqlite(path: str) -> None:
    import os

    _WATCHED.add(os.path.realpath(path))
    _listen()


@functools.cache
def _listen() -> None:
    """Once per process: watched SQLite files get fresh connections when needed.

    A failed read discards the pool; a file replaced by another (new inode) reconnects.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "handle_error", _discard_pool_on_error)
    event.listen(Engine, "connect", _remember_file)
    event.listen(Engine, "checkout", _check_file)


def _file_id(path: str) -> tuple[int, int] | None:
    import os

    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _remember_file(dbapi_connection: Any, record: Any) -> None:
    import os
    import sqlite3

    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    rows = dbapi_connection.execute("PRAGMA database_list").fetchall()
    path = next((os.path.realpath(r[2]) for r in rows if r[1] == "main" and r[2]), None)
    if path in _WATCHED:
        record.info["mlplatform_file"] = (path, _file_id(path))


def _check_file(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    from sqlalchemy.exc import DisconnectionError

    remembered = record.info.get("mlplatform_file")
    if remembered is not None and _file_id(remembered[0]) != remembered[1]:
        raise DisconnectionError(f"{remembered[0]} was replaced; reconnecting")  # pool retries


# what a pooled connection says once its file was emptied, replaced or damaged; not
# "database is locked" (the connection is fine) nor constraint errors, which MLflow
# expects and handles inside its sessions
_STALE_FILE = (
    "no such table",
    "file is not a database",
    "disk i/o error",
    "unable to open database file",
    "database disk image is malformed",
)


def _discard_pool_on_error(context: Any) -> None:
    import os
    import sqlite3

    url = context.engine.url if context.engine is not None else None
    error = context.original_exception
    if (
        url is not None
        and url.get_backend_name() == "sqlite"
        and url.database
        and os.path.realpath(url.database) in _WATCHED
        and isinstance(error, sqlite3.DatabaseError)
        and not isinstance(error, sqlite3.IntegrityError)
        and any(text in str(error).lower() for text in _STALE_FILE)
    ):
        context.is_disconnect = True  # SQLAlchemy then drops every pooled connection


class RegistryError(PlatformError, RuntimeError):
    """The registry could not be read (locked, unreachable, emptied, wrong schema).

    Not the same as an empty registry: callers must never take this for "no champion".
    """


def not_found(exc: Exception) -> bool:
    """The registry answered that the model or version does not exist."""
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def read_error(tracking: Tracking, what: str, exc: Exception) -> RegistryError:
    """A ``RegistryError`` naming the store, what was read and the cause's first line."""
    cause = (str(exc).strip().splitlines() or [""])[0][:300]
    return RegistryError(
        f"the model registry at {tracking.tracking_uri} could not be read ({what}): "
        f"{type(exc).__name__}: {cause}"
    )


def local_tracking(data: Path) -> Tracking:
    """The embedded store under a data folder: SQLite backend, local artifact folder."""
    root = data / "mlflow"
    return Tracking(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root=root / "artifacts"
    )


def registered_versions(tracking: Tracking, model: str) -> list[dict[str, str]]:
    """Every version of a registered model with its lineage tags, oldest first.

    Raises:
        RegistryError: the registry could not be read (not "no versions").
    """
    try:
        versions = tracking.client().search_model_versions(f"name='{model}'")
    except Exception as exc:
        if not_found(exc):
            return []
        raise read_error(tracking, f"versions of {model}", exc) from exc
    return [
        {
            "version": str(v.version),
            "mlflow_run_id": v.run_id,
            "data_version": v.tags.get("data_version", ""),
            "git_commit": v.tags.get("git_commit", ""),
        }
        for v in sorted(versions, key=lambda v: int(v.version))
    ]


MACHINERY = Path(__file__).resolve().parents[1]  # the mlplatform package


def git_commit(root: Path, problem_folder: Path | None = None, machinery: Path = MACHINERY) -> str:
    """The checkout's commit, ``<sha>-dirty`` when it does not pin the code, or ``unknown``.

    The commit pins the code that trained only when nothing differs from it: a modified
    tracked file anywhere in the checkout, or an untracked (not ignored) file under the
    machinery (the ``mlplatform`` package) or under ``problem_folder``, makes it dirty. A
    machinery or problem folder outside the checkout (a problem on
    ``MLPLATFORM_PROBLEMS_PATH`` kept elsewhere) is not pinned by it either: dirty.

    Args:
        root: A folder of the checkout (``settings.project_root()``).
        problem_folder: The trained problem's folder (``Problem.folder``).
        machinery: The platform's code (the ``mlplatform`` package this module is in).

    Returns:
        The 40-hex commit, with ``-dirty`` as above; ``unknown`` when ``root`` is not in a
        git checkout with a commit, or git cannot run.
    """

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10
        )
        return out.stdout.strip()

    try:
        sha, top = git("rev-parse", "HEAD"), Path(git("rev-parse", "--show-toplevel")).resolve()
        watched = [machinery.resolve(), *([problem_folder.resolve()] if problem_folder else [])]
        outside = [w for w in watched if not w.is_relative_to(top)]
        inside = [str(w) for w in watched if w.is_relative_to(top)]
        changed = git("status", "--porcelain", "--untracked-files=no")
        untracked = (
            git("status", "--porcelain", "--untracked-files=all", "--", *inside) if inside else ""
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if changed or untracked or outside else sha


@dataclass(frozen=True)
class Logged:
    """What a training run left in MLflow."""

    run_id: str
    experiment_id: str
    model_uri: str
    version: str


# pandas' inferred kinds of an object column whose values are all of one type (or missing)
PLAIN = {"string", "bytes", "empty", "date", "datetime", "decimal", "boolean"}


def dataset_schema(frame: "pd.DataFrame") -> "Schema | None":
    """The MLflow schema of ``frame``, as ``mlflow.data.from_pandas`` would log it.

    MLflow infers a column's type and whether it is required (no None/NaN/NaT) by visiting
    every value in Python: 2.4 s for a 60-day flights training set (51k rows, 79 columns),
    most of the training asset's overhead over a plain fit. Both depend only on the set of
    a column's values, so the same inference (``PandasDataset.schema``'s,
    ``mlflow.types.utils._infer_schema``) runs here on each column's distinct values (one
    NaN kept; in an object column, distinct by value and type): the same schema, in
    ~0.2 s. A column whose values cannot be hashed is inferred whole;
    None where MLflow would infer none (mixed types in a column).
    """
    import pandas as pd
    from mlflow.types import Schema
    from mlflow.types.utils import _infer_schema

    specs = []
    for name in frame.columns:
        column = frame[[name]]
        try:
            values = column[name]
            # 1 and 1.0, True and 1 are equal: in a column of mixed types, keep each type
            if values.dtype == object and pd.api.types.infer_dtype(values) not in PLAIN:
                kinds = values.map(type).astype(str)
                column = column[~pd.DataFrame({"v": values, "k": kinds}).duplicated()]
            else:
                column = column.drop_duplicates()
        except TypeError:  # lists, dicts: visited all, as MLflow does
            pass
        try:
            specs += _infer_schema(column.reset_index(drop=True)).inputs
        except Exception:  # PandasDataset.schema gives None then, and logs no schema
            return None
    return Schema(specs)


def log_training(
    tracking: Tracking,
    *,
    experiment: str,
    run_name: str,
    registered_model: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    booster: "lgb.Booster",
    encoding_json: str,
    example: "pd.DataFrame",
    dataset: "pd.DataFrame",
    dataset_source: str,
    dataset_digest: str,
    dataset_name: str,
    history: "pd.DataFrame",
    figures: dict[str, bytes],
    version_tags: dict[str, str],
) -> Logged:
    """Log one training run and register its model as a new version (no alias moves).

    ``figures``: artifact name (without ``.png``) → PNG bytes, rendered once by the caller
    (which shows the same images in its own metadata). The model is logged as an MLflow
    LightGBM model with an explicit signature and input example, ``encoding.json`` as an
    extra file. The fluent API is used inside a ``with`` block so the run always ends:
    FINISHED when everything is logged, FAILED if anything raises.
    """
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.entities import Metric, Param
    from mlflow.lightgbm import get_default_pip_requirements, log_model
    from mlflow.models import infer_signature

    # MLflow's hints on inferring dataset sources and integer schemas are about its own
    # guesses, which are right here; keep them out of the run's output
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
    experiment_id = tracking.experiment_id(experiment)
    mlflow.set_tracking_uri(tracking.tracking_uri)
    mlflow.set_registry_uri(tracking.tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        run_id = run.info.run_id
        # one request (one store transaction) for every param and metric
        now = int(time.time() * 1000)
        tracking.client().log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)[:500]) for k, v in params.items()],
        )
        data = from_pandas(dataset, source=dataset_source, name=dataset_name, digest=dataset_digest)
        # ``schema`` is a cached property MLflow fills on first use: filled here, cheaply
        data.__dict__["schema"] = dataset_schema(dataset)
        mlflow.log_input(data, context="training")
        with tempfile.TemporaryDirectory() as tmp:
            # the run's own artifacts in one copy: the trials and the figures
            files = Path(tmp) / "run"
            files.mkdir()
            history.to_csv(files / "optimization_history.csv", index=False)
            for name, png in figures.items():
                (files / f"{name}.png").write_bytes(png)
            mlflow.log_artifacts(str(files))
            encoding_path = Path(tmp) / "encoding.json"
            encoding_path.write_text(encoding_json)
            signature = infer_signature(example, booster.predict(example.to_numpy()))
            info = log_model(
                booster,
                name="model",
                signature=signature,
                input_example=example,
                extra_files=[str(encoding_path)],
                # stated, not inferred: inference re-imports the model in a subprocess (~3 s)
                pip_requirements=get_default_pip_requirements(),
                # MLflow would load the model it just saved and score the example only to
                # warn if that fails; the registry's loader and the tests load it for real
                validate_serving_input=False,
            )
        # the embedded store creates a version READY: nothing to wait for
        version = mlflow.register_model(
            info.model_uri, registered_model, await_registration_for=0, tags=version_tags
        )
        return Logged(run_id, experiment_id, info.model_uri, str(version.version))
