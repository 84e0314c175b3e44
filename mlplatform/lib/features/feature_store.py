"""The Feast feature store of a problem: apply, materialize, and the one lookup path.

``feature_vectors`` is the only way a request becomes model inputs: the problem's
``entity_rows`` maps requests to entity keys and request features, then Feast joins the
feature views point-in-time (offline, for training) or reads the online store (serving).
"""

import functools
import math
import os
import sqlite3
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from mlplatform.errors import PlatformError
from mlplatform.lib.features.tables import EVENT_TS, GLOBAL_KEY, FeatureTable
from mlplatform.lib.names import features_table
from mlplatform.lib.storage import DataLake
from mlplatform.problems import Problem
from mlplatform.settings import DATA_VAR
from mlplatform.spec import ProblemSpec

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

_ROW = "__row"
_T = TypeVar("_T")


def open_store(
    problem: Problem,
    data: Path,
    config_file: str = "feature_store.yaml",
    variables: Mapping[str, str] | None = None,
) -> "FeatureStore":
    """The problem's feature store over the data folder ``data``.

    ``feature_store.yaml`` (the problem's own, or generated: ``Problem.feast_config``) names
    its registry and online store under ``${MLPLATFORM_DATA_DIR}``; setting it here keeps one
    configuration for the platform and the ``feast`` CLI. Another profile's file
    (``config_file``) reads its servers from ``variables``, set here the same way.
    """
    from feast import FeatureStore

    from mlplatform.lib.features.feast_repo import repo_config

    # feast's import resets warning filters; this one is ibis talking to itself, every query
    warnings.filterwarnings("ignore", message="fetch_arrow_table", category=DeprecationWarning)
    os.environ[DATA_VAR] = str(data)
    os.environ.update(variables or {})
    (data / "feast" / problem.name).mkdir(parents=True, exist_ok=True)
    repo = problem.feature_repo if problem.feature_repo.is_dir() else data / "feast" / problem.name
    return FeatureStore(
        repo_path=str(repo), config=repo_config(problem.feast_config(config_file), repo)
    )


def cli_repo(problem: Problem, data: Path) -> Path:
    """A repository folder for the ``feast`` CLI: ``<data>/feast/<problem>/repo``.

    Holds every profile's ``feature_store*.yaml`` and a ``repo.py`` defining the problem's
    objects (generated, or from its own ``feature_repo/repo.py``); rewritten on each call.
    """
    from mlplatform.lib.features.feast_repo import LOCAL_FILE, PRODUCTION_FILE, write_cli_repo

    configs = {f: problem.feast_config(f) for f in (LOCAL_FILE, PRODUCTION_FILE)}
    return write_cli_repo(data / "feast" / problem.name / "repo", problem.name, configs)


def service_of(problem: Problem, store: "FeatureStore", data: Path) -> "FeatureService":
    """The feature service the problem's model reads, as registered."""
    from feast import FeatureService

    defined = problem.feast_objects(data)["service"]
    assert isinstance(defined, FeatureService), "repo.definitions()['service'] is the service"
    return store.get_feature_service(defined.name)


def apply(store: "FeatureStore", objects: dict[str, Any]) -> dict[str, list[str]]:
    """Register the objects and remove registered ones no longer defined (like `feast apply`)."""
    from feast import Entity, FeatureService, FeatureView

    wanted = {(type(o).__name__, o.name) for o in objects.values()}
    registered = [
        *store.list_entities(),
        *store.list_feature_views(),
        *store.list_feature_services(),
    ]
    stale = [o for o in registered if (type(o).__name__, o.name) not in wanted]
    store.apply(list(objects.values()), objects_to_delete=stale, partial=False)
    kinds = {"entities": Entity, "feature_views": FeatureView, "feature_services": FeatureService}
    summary = {
        k: sorted(o.name for o in objects.values() if isinstance(o, t)) for k, t in kinds.items()
    }
    return {**summary, "deleted": sorted(o.name for o in stale)}


@dataclass(frozen=True)
class Materialized:
    """One feature view's materialization into the online store."""

    view: str
    start: datetime
    end: datetime


def materialize(
    store: "FeatureStore", views: list[str], first_start: datetime, end: datetime
) -> list[Materialized]:
    """Bring each view's online values up to ``end``, from where its last run stopped."""
    done = []
    for name in views:
        view = store.get_feature_view(name)
        start = view.most_recent_end_time or first_start
        if start >= end:
            continue
        store.materialize(start_date=start, end_date=end, feature_views=[name])
        done.append(Materialized(name, start, end))
    return done


def rows_between(frame: pd.DataFrame, start: datetime, end: datetime) -> int:
    """Rows of a feature table whose event time is within [start, end], as Feast reads them."""
    if frame.empty:
        return 0
    stamps = pd.to_datetime(frame[EVENT_TS], utc=True)
    return int(((stamps >= start) & (stamps <= end)).sum())


def online_row_counts(store: "FeatureStore") -> dict[str, int]:
    """Entities held per feature view in the SQLite or Redis online store."""
    if getattr(store.config.online_store, "type", "") == "redis":
        return _redis_row_counts(store)
    location = getattr(store.config.online_store, "path", None)
    path = Path(location) if location else None
    if path is None or not path.exists():
        return {}
    project = store.config.project
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return {
            t.removeprefix(f"{project}_"): db.execute(
                f'select count(distinct entity_key) from "{t}"'
            ).fetchone()[0]
            for t in tables
            if t.startswith(f"{project}_")
        }


def _redis_row_counts(store: "FeatureStore") -> dict[str, int]:
    """Entities per feature view in Redis.

    Feast's layout: one hash per entity key, with a ``_ts:<view>`` field per view that
    wrote it.
    """
    import redis

    connection = getattr(store.config.online_store, "connection_string", "")
    host_port, *options = str(connection).split(",")
    host, _, port = host_port.partition(":")
    kwargs = dict(o.split("=", 1) for o in options if "=" in o)
    client = redis.Redis(
        host=host,
        port=int(port or 6379),
        db=int(kwargs.get("db", 0)),
        password=kwargs.get("password"),
        ssl=kwargs.get("ssl", "false").lower() == "true",
    )
    counts: dict[str, int] = {}
    keys = list(client.scan_iter(match=f"*{store.config.project}", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hkeys(key)
    for fields in pipe.execute():
        for field in fields:
            name = field.decode("utf8", "replace")
            if name.startswith("_ts:"):
                counts[name[4:]] = counts.get(name[4:], 0) + 1
    client.close()
    return counts


class NotMaterializedError(PlatformError, RuntimeError):
    """A feature view has never been materialized into the online store."""


def parity_sample(
    store: "FeatureStore", lake: DataLake, problem: Problem, size: int
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Per table, ``size`` entities: their online values and their newest offline rows.

    Offline rows are those at or before the view's materialized end, read from the days
    just before it (TTL plus one); entities are spread evenly over the sorted keys. A
    stream view's entities whose online row was pushed after that end are left out: the
    offline batch holds them only once their day lands.
    """
    from mlplatform.lib.features.build import window
    from mlplatform.lib.features.training_set import entity_key, newest_offline

    tz = ZoneInfo(problem.spec.partitioning.timezone)
    online, newest = {}, {}
    for table in problem.feature_tables():
        view = store.get_feature_view(table.view)
        until = view.most_recent_end_time
        if until is None:
            raise NotMaterializedError(
                f"{table.view} was never materialized; materialize online_features"
            )
        days = window(until.astimezone(tz).date(), table.ttl.days + 1)
        latest = newest_offline(
            lake.read_days(problem.name, features_table(table), days), table, until
        )
        keys = sorted(latest.index)[:: max(1, len(latest) // size)][:size]
        newest[table.name] = latest.loc[keys]
        fields = [f.name for f in view.features]
        values = store.get_online_features(
            features=[f"{table.view}:{f}" for f in fields],
            entity_rows=[
                dict(zip(table.join_keys, k if isinstance(k, tuple) else (k,), strict=True))
                for k in keys
            ],
        ).to_df()
        if table.stream:
            # a stream view's online rows may have been pushed after the evening's batch
            # (this morning's hours): the offline side holds them from tonight on. A row
            # stamped at the end itself is the next day's first hour (a day's file holds
            # its hours [00:00, 24:00)), pushed at midnight
            stamps = pd.to_numeric(values[table.ts_column], errors="coerce")
            ahead = stamps >= until.timestamp()
            gone = [entity_key(row, table) for _, row in values[ahead].iterrows()]
            newest[table.name] = newest[table.name].drop(gone)
            values = values[~ahead].reset_index(drop=True)
        online[table.name] = values
    return online, newest


def _historical(
    store: "FeatureStore", service: "FeatureService", rows: pd.DataFrame
) -> pd.DataFrame:
    entity_df = rows.reset_index(drop=True).rename_axis(_ROW).reset_index()
    joined = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    joined = joined.sort_values(_ROW).set_index(_ROW)
    joined.index = rows.index
    return joined


class AuditColumnError(PlatformError, ValueError):
    """A served feature view lacks its ``<table>_ts`` column, so its TTL cannot apply online."""


@dataclass(frozen=True)
class ViewExpiry:
    """How one feature view's TTL applies to the service's online answer.

    ``names``: the view's output names in that answer, its audit column ``ts_column``
    (epoch seconds of the row's event time) included; ``ttl_seconds``: 0 for none (Feast
    reads a zero TTL as "never expires").
    """

    view: str
    ts_column: str
    ttl_seconds: float
    names: tuple[str, ...]


class _Same(Generic[_T]):
    """Hashes and compares an object by identity: a cache key for unhashable objects."""

    __slots__ = ("obj",)

    def __init__(self, obj: _T) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj


def view_expiries(problem: Problem, service: "FeatureService") -> tuple[ViewExpiry, ...]:
    """Per served feature table, its output names and TTL; built once per (problem, service).

    Raises:
        AuditColumnError: the service reads a table's view without its ``ts_column``.
    """
    return _view_expiries(_Same(problem), _Same(service))


# Keyed by identity (a Problem holds an unhashable spec; FeatureService hashes by name and
# compares deeply): the serving path reuses one problem and one service for every request.
@functools.lru_cache(maxsize=32)
def _view_expiries(
    problem: _Same[Problem], service: "_Same[FeatureService]"
) -> tuple[ViewExpiry, ...]:
    tables: dict[str, FeatureTable] = {t.view: t for t in problem.obj.feature_tables()}
    out = []
    for projection in service.obj.feature_view_projections:
        table = tables.get(projection.name)
        if table is None:
            continue  # not a feature table of the problem (e.g. an on-demand view): no TTL
        names = tuple(f.name for f in projection.features)
        if table.ts_column not in names:
            raise AuditColumnError(
                f"feature service {service.obj.name!r} reads {table.view} without its audit "
                f"column {table.ts_column!r}: its {table.ttl} TTL cannot be applied online; "
                f"serve the whole view (its schema declares {table.ts_column})"
            )
        out.append(ViewExpiry(table.view, table.ts_column, table.ttl.total_seconds(), names))
    return tuple(out)


def _epoch_seconds(moment: datetime) -> float:
    # Feast reads a naive entity timestamp as UTC; so does this.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def expire(values: dict[str, Any], when: datetime, views: tuple[ViewExpiry, ...]) -> list[str]:
    """Set to None, in place, the values of each view too old at ``when``; the views' names.

    The offline join's rule (Feast 0.67's DuckDB/ibis store: a row is joined when
    ``event_time <= when <= event_time + ttl``), so a value exactly TTL old is kept and
    one older is missing; a view with no ``ts_column`` value (no row) is missing too, and
    so is one stamped after ``when`` (the online store may hold values newer than a late
    request's prediction time; serving them would leak what was not yet known).
    ``ts_column`` holds whole seconds: event times must be whole seconds (the feature
    tables' are) for the two paths to agree to the second.
    """
    now = _epoch_seconds(when)
    expired = []
    for view in views:
        stamp = values.get(view.ts_column)
        # a value stamped after the prediction time (a request served after its hour, or
        # a store filled in hindsight) is one the offline join could never pick: missing too
        stale = view.ttl_seconds and stamp is not None and stamp + view.ttl_seconds < now
        if stamp is None or stamp != stamp or stale or stamp > now:
            expired.append(view.view)
            for name in view.names:
                values[name] = None
    return expired


def online_vector(
    problem: Problem, store: "FeatureStore", service: "FeatureService", request: Mapping[Any, Any]
) -> dict[str, Any]:
    """One request's entity row and its online feature values as of its prediction time.

    The online store keeps each entity's newest value whatever its age; a view's values
    older than its TTL at the request's prediction time (``event_timestamp`` of the
    entity row) are returned as None, as the offline point-in-time join leaves them
    missing (see ``expire``), so the spec's defaults apply alike on both paths.
    """
    row = problem.entity_row(request)
    keys = {k: row[k] for k in join_keys(problem.spec)}
    if GLOBAL_KEY in row:  # the problem has a keyless table
        keys[GLOBAL_KEY] = row[GLOBAL_KEY]
    values = store.get_online_features(features=service, entity_rows=[keys]).to_dict()
    found = {name: column[0] for name, column in values.items() if name not in keys}
    expire(found, row[EVENT_TS], view_expiries(problem, service))
    return {**row, **found}


def join_keys(spec: ProblemSpec) -> list[str]:
    """Every entity join key of the problem."""
    return sorted({k for entity in spec.entities.values() for k in entity.join_keys})


def feature_vectors(
    problem: Problem,
    store: "FeatureStore",
    service: "FeatureService",
    requests: pd.DataFrame,
    *,
    online: bool,
) -> pd.DataFrame:
    """Entity rows of ``requests`` joined with their features, in the requests' order.

    ``online=False`` joins point-in-time through the offline store (training);
    ``online=True`` reads each request's newest values from the online store (serving),
    one request at a time as the service does.
    """
    if online:
        records = [online_vector(problem, store, service, r) for r in requests.to_dict("records")]
        return pd.DataFrame.from_records(records, index=requests.index)
    return _historical(store, service, problem.entity_rows(requests))


def feature_vector(values: Mapping[str, Any], spec: ProblemSpec) -> list[Any]:
    """One request's model inputs, in spec order with the spec's defaults.

    The scalar twin of ``feature_matrix`` for serving one request without a DataFrame.
    """
    return list(feature_values(values, spec).values())


def feature_values(values: Mapping[str, Any], spec: ProblemSpec) -> dict[str, Any]:
    """``feature_vector`` by name: feature → value (float or category), in spec order.

    Raises:
        KeyError: a spec feature with no value source in ``values`` (names them).
    """
    missing = [f.name for f in spec.features if f.name not in values]
    if missing:
        raise KeyError(f"{spec.name}: no value source for feature(s) {missing}")
    out: dict[str, Any] = {}
    for feature in spec.features:
        value = values[feature.name]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = (
                feature.default
                if feature.default is not None
                else (math.nan if feature.kind == "numeric" else None)
            )
        elif feature.kind == "numeric":
            value = float(value)
        out[feature.name] = value
    return out


def feature_matrix(vectors: pd.DataFrame, spec: ProblemSpec) -> pd.DataFrame:
    """The model's inputs: the spec's features in spec order, with the spec's defaults."""
    missing = [f.name for f in spec.features if f.name not in vectors.columns]
    if missing:
        raise KeyError(
            f"{spec.name}: no value source for feature(s) {missing} in this set: a training "
            "or holdout set built before the spec had them; build the feature tables and "
            "the training set again (mlplatform features)"
        )
    out = pd.DataFrame(index=vectors.index)
    for feature in spec.features:
        column = vectors[feature.name]
        if feature.kind == "numeric":
            column = pd.to_numeric(column, errors="coerce").astype(float)
        else:
            column = column.astype(object).where(column.notna(), other=np.nan)
        if feature.default is not None:
            column = column.fillna(feature.default)
        out[feature.name] = column
    return out
