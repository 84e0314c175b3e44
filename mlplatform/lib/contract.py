"""The plug-in contract of a problem, checked when the problem loads.

What the machinery assumes of a problem folder, each check naming the file and the fix:

- ``feature_tables.py``: ``FEATURE_TABLES`` is a list of ``FeatureTable`` with unique names;
  no table is named like a source (both would be the asset ``<problem>/<name>``) or like
  the problem's feature-store assets; a table reads daily sources, reference sources and a
  stream source that is also one of its sources; each declares its features with a known
  type; no feature is declared twice or named like a key or time column; with a generated
  Feast repository (no ``feature_repo/repo.py``) each join key is one spec entity's only
  join key;
- ``schemas.py``: a model per source and per stream, as the spec names them;
- ``source.py``: ``export_day`` (daily sources), ``export_reference`` (reference sources),
  ``stream_events`` and ``export_events`` (stream sources);
- ``features.py``: each table's builder and ``entity_row``; ``entity_row`` of a request gives
  ``event_timestamp``, every table's join keys and each spec feature no table holds;
- ``request.py``: ``Request``, whose fields are columns of the target source's schema
  (training maps historical rows of that source through ``entity_row``, serving maps
  requests: both must carry the same fields);
- every spec feature comes from a feature table or from ``entity_row``.

The sample request ``entity_row`` is called with is the first of ``Request``'s JSON-schema
``examples`` when it declares some (``model_config = ConfigDict(json_schema_extra=
{"examples": [...]})``), else one value per field built from its type and bounds.
"""

import types
import typing
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.errors import ContractError
from mlplatform.lib.features.tables import DTYPES, EVENT_TS, FeatureTable

if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic.fields import FieldInfo

    from mlplatform.problems import Problem

# asset names of a problem's feature stage besides its tables (defs/features/assets.py)
RESERVED_TABLE_NAMES = ("feature_registry", "online_features")


class _Report:
    """Collects the broken contracts of one problem: (file, message with its fix)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.items: list[tuple[str, str]] = []

    def add(self, file: str, message: str) -> None:
        self.items.append((str(self.folder / file), message))


def check_problem(problem: "Problem") -> None:
    """Check every contract of ``problem``; imports its modules (pandas, pandera, pydantic).

    Raises:
        ContractError: one line per broken contract, each naming the file and the fix.
        Exception: whatever importing one of the problem's modules raises (a syntax error,
            a missing import): the caller reports it as the problem's error.
    """
    report = _Report(problem.folder)
    tables = _tables(problem, report)
    if tables is not None:
        _check_tables(problem, tables, report)
    _check_schemas(problem, report)
    _check_source_module(problem, report)
    request = _check_request(problem, report)
    if tables is not None:
        _check_features_module(problem, tables, request, report)
    if report.items:
        raise ContractError(problem.name, report.items)


def _tables(problem: "Problem", report: _Report) -> list[FeatureTable] | None:
    module = problem.module("feature_tables")
    declared = getattr(module, "FEATURE_TABLES", None)
    if not isinstance(declared, list | tuple) or not all(
        isinstance(t, FeatureTable) for t in declared
    ):
        report.add(
            "feature_tables.py",
            "FEATURE_TABLES must be a list of mlplatform.lib.features.tables.FeatureTable",
        )
        return None
    return list(declared)


def _check_tables(problem: "Problem", tables: list[FeatureTable], report: _Report) -> None:
    spec, file = problem.spec, "feature_tables.py"
    names = [t.name for t in tables]
    for name in sorted({n for n in names if names.count(n) > 1}):
        report.add(file, f"two feature tables are named {name!r}: rename one")
    daily, streams = set(spec.daily_sources()), set(spec.stream_sources())
    reference = set(spec.sources) - daily
    generated = not (problem.feature_repo / "repo.py").exists()
    keys = {e.join_keys[0]: n for n, e in spec.entities.items() if len(e.join_keys) == 1}
    owner: dict[str, str] = {}
    for t in tables:
        if t.name in spec.sources:
            report.add(
                file,
                f"feature table {t.name!r} is named like the source {t.name!r} (both would be "
                f"the asset {problem.name}/{t.name}): rename the table, e.g. {t.name}_features",
            )
        if t.name in RESERVED_TABLE_NAMES:
            report.add(file, f"feature table {t.name!r}: the name is the platform's; rename it")
        for s in t.sources:
            if s not in daily:
                report.add(
                    file,
                    f"feature table {t.name!r}: sources lists {s!r}, not a daily or stream "
                    f"source of spec.yaml (those: {sorted(daily)}; reference ones go in "
                    "`reference`)",
                )
        for s in t.reference:
            if s not in reference:
                report.add(
                    file,
                    f"feature table {t.name!r}: reference lists {s!r}, not a reference source "
                    f"of spec.yaml (those: {sorted(reference)})",
                )
        if t.stream and (t.stream not in streams or t.stream not in t.sources):
            report.add(
                file,
                f"feature table {t.name!r}: stream {t.stream!r} must be a stream source of "
                f"spec.yaml (those: {sorted(streams)}) and listed in its sources",
            )
        if generated:
            _check_generated(problem, t, keys, report)
        reserved = {EVENT_TS, t.ts_column, *t.join_keys}
        for feature, dtype in t.features.items():
            if feature in reserved:
                report.add(
                    file,
                    f"feature table {t.name!r}: feature {feature!r} is a key or time column; "
                    "rename the feature",
                )
            if dtype not in DTYPES:
                report.add(
                    file,
                    f"feature table {t.name!r}: feature {feature!r} has type {dtype!r}; use "
                    f"one of {list(DTYPES)}",
                )
            if feature in owner:
                report.add(
                    file,
                    f"feature {feature!r} is declared by tables {owner[feature]!r} and "
                    f"{t.name!r}: the service would read it twice; rename one",
                )
            owner.setdefault(feature, t.name)


def _check_generated(
    problem: "Problem", table: FeatureTable, keys: dict[str, str], report: _Report
) -> None:
    """What the generated Feast repository needs of a table (``lib.features.feast_repo``)."""
    if not table.features:
        report.add(
            "feature_tables.py",
            f"feature table {table.name!r} declares no features: give "
            "features={column: type, ...} (the Feast view is generated from them), or supply "
            "feature_repo/repo.py",
        )
    for key in table.join_keys if not table.keyless else ():
        if key not in keys:
            report.add(
                "spec.yaml",
                f"entities: no entity has the join key {key!r} of feature table "
                f"{table.name!r}: add `entities: {{{key}: {{join_keys: [{key}], description: "
                "...}}` (one join key per entity)",
            )


def _check_schemas(problem: "Problem", report: _Report) -> None:
    module = problem.module("schemas")
    for name, source in problem.spec.sources.items():
        wanted = [(f"sources.{name}.schema", source.schema_name)]
        if source.stream:
            wanted.append((f"sources.{name}.stream.schema", source.stream.schema_name))
        for where, model in wanted:
            if getattr(module, model, None) is None:
                report.add(
                    "schemas.py",
                    f"no model {model!r}, which spec.yaml {where} names: define it, or fix "
                    "the name in spec.yaml",
                )


def _check_source_module(problem: "Problem", report: _Report) -> None:
    module = problem.module("source")
    kinds = {s.kind for s in problem.spec.sources.values()}
    needed = {
        "export_day": bool(kinds & {"daily", "stream"}),
        "export_reference": "reference" in kinds,
        "stream_events": "stream" in kinds,
        "export_events": "stream" in kinds,
    }
    for name, required in needed.items():
        if required and not callable(getattr(module, name, None)):
            report.add("source.py", f"define {name}(...): the spec has a source that needs it")


def _check_request(problem: "Problem", report: _Report) -> "type[BaseModel] | None":
    from pydantic import BaseModel

    model = getattr(problem.module("request"), "Request", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        report.add("request.py", "define Request, a pydantic BaseModel of one prediction request")
        return None
    target = problem.spec.target.source
    try:
        schema = problem.schema(target)
    except Exception:  # reported by _check_schemas
        return model
    columns = set(schema.to_schema().columns)
    extra = sorted(set(model.model_fields) - columns)
    if extra:
        report.add(
            "request.py",
            f"Request fields {extra} are not columns of the target source {target!r} "
            f"({schema.__name__} in schemas.py): training maps that source's rows through "
            "entity_row, so a request can carry only its columns; drop the fields or add the "
            "columns to the source",
        )
    return model


def _check_features_module(
    problem: "Problem",
    tables: list[FeatureTable],
    request: "type[BaseModel] | None",
    report: _Report,
) -> None:
    module, file = problem.module("features"), "features.py"
    for t in tables:
        if not callable(getattr(module, t.builder, None)):
            report.add(file, f"no function {t.builder!r}, the builder of feature table {t.name!r}")
    entity_row = getattr(module, "entity_row", None)
    if not callable(entity_row):
        report.add(file, "define entity_row(request, timezone) -> dict (the lookup of a request)")
        return
    from_tables = {f for t in tables for f in t.features}
    if request is None:
        return
    sample = sample_request(request, problem)
    try:
        row = entity_row(sample, problem.spec.partitioning.timezone)
    except Exception as exc:
        report.add(
            file,
            f"entity_row raised {type(exc).__name__}: {exc} on the sample request {sample}: "
            "make it accept any request Request accepts, or give Request an example "
            '(model_config = ConfigDict(json_schema_extra={"examples": [{...}]}))',
        )
        return
    if not isinstance(row, dict):
        report.add(file, f"entity_row must return a dict, not {type(row).__name__}")
        return
    keys = sorted({k for t in tables if not t.keyless for k in t.join_keys})
    wanted = [EVENT_TS, *keys]
    missing = [k for k in wanted if k not in row]
    if missing:
        report.add(
            file,
            f"entity_row gives no {missing}: every entity row needs {EVENT_TS} (the "
            "prediction time) and the join keys of the feature tables; add them",
        )
    unserved = [
        f.name for f in problem.spec.features if f.name not in from_tables and f.name not in row
    ]
    # a problem's own Feast repository may serve features its tables do not declare
    undeclared = any(not t.features for t in tables)
    if unserved and not (undeclared and (problem.feature_repo / "repo.py").exists()):
        report.add(
            "feature_tables.py",
            f"spec features {unserved} come from no feature table (their features=) "
            "and not from entity_row in features.py: compute them in one of the two, or "
            "drop them from spec.yaml",
        )


def sample_request(model: "type[BaseModel]", problem: "Problem") -> dict[str, Any]:
    """A request ``model`` accepts: its first JSON-schema example, else one built per field."""
    extra = model.model_config.get("json_schema_extra")
    examples = extra.get("examples") if isinstance(extra, dict) else None
    if isinstance(examples, list) and examples and isinstance(examples[0], dict):
        return dict(examples[0])
    when = datetime.combine(problem.spec.partitioning.start, time(12), tzinfo=UTC)
    return {name: _value(info, when) for name, info in model.model_fields.items()}


def _value(info: "FieldInfo", when: datetime) -> Any:
    """One value of the field's type within its bounds (``annotated_types`` metadata)."""
    import annotated_types as at

    kind = _base_type(info.annotation)
    bounds: dict[str, Any] = {}
    for item in info.metadata:
        for name in ("ge", "gt", "le", "lt"):
            if isinstance(item, getattr(at, name.capitalize())):
                bounds[name] = getattr(item, name)
    builders: dict[Any, Callable[[], Any]] = {
        datetime: lambda: when,
        date: when.date,
        bool: lambda: False,
        int: lambda: int(bounds.get("ge", bounds.get("gt", 0) + 1)),
        float: lambda: float(bounds.get("ge", bounds.get("gt", 0.0) + 1.0)),
    }
    return builders.get(kind, lambda: "A")()


def _base_type(annotation: Any) -> Any:
    """``X`` of ``X``, ``X | None``, ``Optional[X]`` or ``Annotated[X, ...]``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _base_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0]) if args else str
    return annotation


def check_feast_objects(problem: "Problem", objects: dict[str, object]) -> None:
    """What the platform reads of a problem's own Feast repository (``feature_repo/repo.py``).

    Checked when the objects are built (importing feast at load would cost every process
    7-14 s): the service under ``"service"``; per feature table its view ``<t>_fv`` whose
    schema holds the audit field ``<t>_ts`` and whose source's timestamp field is
    ``event_timestamp``.

    Raises:
        ContractError: one line per broken contract, naming ``repo.py`` and the fix.
    """
    from feast import FeatureService, FeatureView

    report, file = _Report(problem.folder), "feature_repo/repo.py"
    if not isinstance(objects.get("service"), FeatureService):
        report.add(file, 'definitions() must return the FeatureService under the key "service"')
    for t in problem.feature_tables():
        view = objects.get(t.view)
        if not isinstance(view, FeatureView):
            report.add(
                file, f"definitions() has no FeatureView {t.view!r} for feature table {t.name!r}"
            )
            continue
        if t.ts_column not in {f.name for f in view.features}:
            report.add(
                file,
                f"view {t.view!r} has no timestamp field {t.ts_column!r}: add "
                f"Field(name={t.ts_column!r}, dtype=Int64) to its schema (the row's event time "
                "in epoch seconds; without it the view's TTL cannot apply online)",
            )
        stamp = view.batch_source.timestamp_field if view.batch_source else None
        if stamp != EVENT_TS:
            report.add(
                file,
                f"view {t.view!r}: its source's timestamp_field is {stamp!r}; the feature "
                f"files carry {EVENT_TS!r}: set timestamp_field={EVENT_TS!r}",
            )
    if report.items:
        raise ContractError(problem.name, report.items)
