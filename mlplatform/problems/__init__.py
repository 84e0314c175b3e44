"""Problems are plug-ins: one folder each, holding a spec, schemas and a data export.

A problem folder ``problems/<name>/`` contains
- ``spec.yaml``: the problem spec (see ``mlplatform.spec``);
- ``schemas.py``: one pandera ``DataFrameModel`` per source, named in the spec;
- ``source.py``: ``export_day(source, day)`` and ``export_reference(source)``, the daily
  export that ``mlplatform land`` writes into the landing zone. With
  ``partitioning.granularity: hourly`` one file lands per local hour: from the optional
  ``export_hour(source, start)`` (``start``: the hour's UTC start, a ``pd.Timestamp``) when
  ``source.py`` defines it, else the platform cuts ``export_day`` by the source's
  ``event_timestamp`` (rows whose time cannot be read or falls outside the day land with
  the day's first hour, whose checks then refuse them: nothing is dropped); for stream
  sources also
  ``stream_events(source, frame)`` (the events days of the export carry) and
  ``export_events(source, start, end)`` (the feed: events of ``[start, end)``, UTC);
- ``feature_tables.py``: ``FEATURE_TABLES``, the problem's feature tables (import-light);
- ``features.py``: one builder per feature table, and ``entity_row(request, timezone)``,
  the single mapping from a request (or a historical row) to its feature lookup;
- ``request.py``: ``Request``, the pydantic model of one prediction request (the HTTP
  service validates against it and publishes it in its OpenAPI schema);
- ``evaluation.py`` (optional): ``SLICES``, derived slice columns by name, and ``CASES``,
  the behavioural cases (``lib.evaluation.metrics.BehaviouralCase``) the spec's gates name;
- ``feature_repo/`` (optional): the Feast repository is generated from the spec and
  ``FEATURE_TABLES`` (``lib.features.feast_repo``); a problem may override it with its own
  ``feature_store*.yaml`` per profile and/or ``repo.py`` whose ``definitions(data_dir)``
  returns every Feast object by name, the feature service under ``"service"``.
The machinery finds problems here, and in the folders ``MLPLATFORM_PROBLEMS_PATH`` lists
(``os.pathsep``-separated: problems kept outside the package, e.g. in a team's own
repository), and never names one.
"""

import importlib
import os
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from mlplatform.errors import BrokenProblemError, ContractError, PlatformError, UnknownNameError
from mlplatform.spec import ProblemSpec, SpecError, load_spec

if TYPE_CHECKING:
    import pandas as pd
    import pandera.pandas as pa
    from pydantic import BaseModel

    from mlplatform.lib.evaluation.metrics import BehaviouralCase
    from mlplatform.lib.features.build import FeatureInputs
    from mlplatform.lib.features.tables import FeatureTable

PROBLEMS_DIR = Path(__file__).parent
PROBLEMS_PATH_ENV = "MLPLATFORM_PROBLEMS_PATH"


def problem_dirs() -> list[Path]:
    """The folders searched for problems: the package's own, then ``MLPLATFORM_PROBLEMS_PATH``.

    Each extra folder also joins this package's ``__path__``, so a problem there imports as
    ``mlplatform.problems.<name>`` like a bundled one (Dagster's step processes import the
    same names).
    """
    extra = [Path(p) for p in os.environ.get(PROBLEMS_PATH_ENV, "").split(os.pathsep) if p]
    for folder in extra:
        if str(folder) not in __path__:
            __path__.append(str(folder))
    return [PROBLEMS_DIR, *extra]


@dataclass(frozen=True)
class Problem:
    """A problem found in ``PROBLEMS_DIR``; its code modules are imported on first use."""

    name: str
    spec: ProblemSpec
    folder: Path

    def _module(self, part: str):
        return self.module(part)

    def module(self, part: str) -> ModuleType:
        """The problem's module ``part`` (``schemas``, ``features``...), imported on first use."""
        return importlib.import_module(f"{__name__}.{self.name}.{part}")

    def schema(self, source: str) -> "type[pa.DataFrameModel]":
        """The pandera model that validates ``source``."""
        return self.schema_named(self.spec.sources[source].schema_name, f"sources.{source}")

    def schema_named(self, name: str, where: str = "schema") -> "type[pa.DataFrameModel]":
        """The pandera model called ``name`` in the problem's ``schemas.py``."""
        model = getattr(self._module("schemas"), name, None)
        if model is None:
            raise SpecError(
                f"{self.folder / 'spec.yaml'}: {where}.schema: no model {name!r} "
                f"in {self.folder / 'schemas.py'}"
            )
        return model

    def export_day(self, source: str, day: date) -> "pd.DataFrame":
        """One day of ``source`` as the upstream system exports it."""
        fn = cast("Callable[[str, date], pd.DataFrame]", self._module("source").export_day)
        return fn(source, day)

    def export_hour(self, source: str, start: "pd.Timestamp") -> "pd.DataFrame | None":
        """One hour of ``source`` (UTC start), or None when ``source.py`` has no ``export_hour``."""
        fn = getattr(self._module("source"), "export_hour", None)
        return None if fn is None else fn(source, start)

    def export_reference(self, source: str) -> "pd.DataFrame":
        """The current snapshot of a reference source."""
        fn = cast("Callable[[str], pd.DataFrame]", self._module("source").export_reference)
        return fn(source)

    def stream_events(self, source: str, frame: "pd.DataFrame") -> "pd.DataFrame":
        """The events of stream ``source`` carried by days of its validated table."""
        fn = cast(
            "Callable[[str, pd.DataFrame], pd.DataFrame]", self._module("source").stream_events
        )
        return fn(source, frame)

    def export_events(
        self, source: str, start: "pd.Timestamp", end: "pd.Timestamp"
    ) -> "pd.DataFrame":
        """The feed of stream ``source``: events with event time in ``[start, end)``, UTC."""
        fn = cast(
            "Callable[[str, pd.Timestamp, pd.Timestamp], pd.DataFrame]",
            self._module("source").export_events,
        )
        return fn(source, start, end)

    def feature_tables(self) -> "list[FeatureTable]":
        """The problem's feature tables, in declaration order."""
        return list(self._module("feature_tables").FEATURE_TABLES)

    def build_features(self, table: "FeatureTable", inputs: "FeatureInputs") -> "pd.DataFrame":
        """One day of a feature table, computed by the problem's builder."""
        fn = cast(
            "Callable[[FeatureInputs], pd.DataFrame]",
            getattr(self._module("features"), table.builder),
        )
        return fn(inputs)

    def _entity_row_fn(self) -> "Callable[[Mapping[Any, Any], str], dict[str, Any]]":
        fn = self._module("features").entity_row
        if not any(t.keyless for t in self.feature_tables()):
            return fn
        from mlplatform.lib.features.tables import GLOBAL_KEY, GLOBAL_VALUE

        # a keyless table is keyed by a constant column: every entity row carries it
        return lambda request, tz: {**fn(request, tz), GLOBAL_KEY: GLOBAL_VALUE}

    def entity_row(self, request: "Mapping[Any, Any]") -> dict[str, Any]:
        """Entity keys, event time and request features of one request."""
        return self._entity_row_fn()(request, self.spec.partitioning.timezone)

    def entity_rows(self, requests: "pd.DataFrame") -> "pd.DataFrame":
        """``entity_row`` of every row of ``requests``, as a frame with the same index."""
        import pandas as pd

        from mlplatform.lib.features.tables import EVENT_TS

        if requests.empty:
            raise ValueError(f"{self.name}: no requests to look features up for")
        fn, tz = self._entity_row_fn(), self.spec.partitioning.timezone
        rows = [fn(r, tz) for r in requests.to_dict("records")]
        frame = pd.DataFrame.from_records(rows, index=requests.index)
        frame[EVENT_TS] = pd.to_datetime(frame[EVENT_TS], utc=True)
        return frame

    def request_model(self) -> "type[BaseModel]":
        """The pydantic model of one prediction request, as the HTTP service validates it.

        The problem's ``Request`` held to the ingestion schema of the spec's target source
        for the fields they share (``lib.deployment.request_schema``): a value ingestion refuses is
        refused at the door too, and no number, string or time that passes can crash scoring.
        """
        from mlplatform.lib.deployment.request_schema import request_model

        return request_model(self._module("request").Request, self.schema(self.spec.target.source))

    def _evaluation(self) -> Any:
        if not (self.folder / "evaluation.py").exists():
            return None
        return self._module("evaluation")

    def slices(self, frame: "pd.DataFrame") -> "pd.DataFrame":
        """The spec's slice columns of ``frame``: its own columns or the problem's derived ones."""
        import pandas as pd

        derived = getattr(self._evaluation(), "SLICES", {})
        out = pd.DataFrame(index=frame.index)
        for name in self.spec.gates.slices:
            if name in derived:
                out[name] = derived[name](frame)
            elif name in frame.columns:
                out[name] = frame[name]
            else:
                raise SpecError(
                    f"{self.folder / 'spec.yaml'}: gates.slices: {name!r} is neither a column "
                    f"of the evaluation set nor in SLICES of {self.folder / 'evaluation.py'}"
                )
        return out

    def behavioural_cases(self) -> "list[BehaviouralCase]":
        """The cases the spec's ``gates.known_failures`` names, in that order."""
        cases = {c.name: c for c in getattr(self._evaluation(), "CASES", [])}
        unknown = [n for n in self.spec.gates.known_failures if n not in cases]
        if unknown:
            raise SpecError(
                f"{self.folder / 'spec.yaml'}: gates.known_failures: no case {unknown} in "
                f"CASES of {self.folder / 'evaluation.py'} (defined: {sorted(cases)})"
            )
        return [cases[n] for n in self.spec.gates.known_failures]

    @property
    def feature_repo(self) -> Path:
        """Folder of the problem's own Feast repository (optional: generated without it)."""
        return self.folder / "feature_repo"

    def feast_objects(self, data: Path) -> dict[str, object]:
        """Every Feast object of the problem by name, reading feature files under ``data``.

        Generated from the spec and ``FEATURE_TABLES`` (``lib.features.feast_repo``), unless
        the problem supplies ``feature_repo/repo.py``, whose ``definitions(data)`` then
        returns them (the feature service under ``"service"``; checked by
        ``lib.contract.check_feast_objects``, raising ``ContractError``). ``SERVICE_VERSION`` in
        ``feature_tables.py`` numbers the generated service (default: the spec's version).
        """
        if (self.feature_repo / "repo.py").exists():
            from mlplatform.lib.contract import check_feast_objects

            objects = self._module("feature_repo.repo").definitions(data)
            check_feast_objects(self, objects)
            return objects
        from mlplatform.lib.features.feast_repo import definitions

        version = getattr(self._module("feature_tables"), "SERVICE_VERSION", None)
        return definitions(self.spec, self.feature_tables(), data, version)

    def feast_config(self, config_file: str = "feature_store.yaml") -> str:
        """The text of the profile's ``feature_store*.yaml``: the problem's own, or generated."""
        own = self.feature_repo / config_file
        if own.exists():
            return own.read_text(encoding="utf-8")
        from mlplatform.lib.features.feast_repo import store_yaml

        return store_yaml(self.name, config_file)


@dataclass(frozen=True)
class BrokenProblem:
    """A problem folder that cannot load: its spec, a module or a contract is broken.

    ``name``: the folder's name; ``file``: the file at fault; ``kind``: spec, contract or
    code (a module that does not import); ``error``: what is wrong and the fix.
    """

    name: str
    folder: Path
    file: Path
    kind: str
    error: str

    def message(self) -> str:
        """One message naming the problem, the file and the error."""
        return f"problem {self.name!r} cannot load ({self.kind}, {self.file}): {self.error}"

    def to_dict(self) -> dict[str, str]:
        """JSON-able form."""
        return {"file": str(self.file), "kind": self.kind, "error": self.error}


class Problems(dict[str, Problem]):
    """The problems that load, by name; ``broken``: the folders that cannot, by name."""

    def __init__(self, found: dict[str, Problem], broken: dict[str, BrokenProblem]) -> None:
        super().__init__(found)
        self.broken = broken


def _broken(name: str, spec_file: Path, exc: Exception) -> BrokenProblem:
    folder = spec_file.parent
    if isinstance(exc, ContractError):
        return BrokenProblem(name, folder, Path(exc.violations[0][0]), "contract", str(exc))
    if isinstance(exc, SpecError):
        return BrokenProblem(name, folder, spec_file, "spec", str(exc))
    # the innermost frame in the problem's folder, or the file a syntax error names
    frames = [Path(f.f_code.co_filename) for f, _ in traceback.walk_tb(exc.__traceback__)]
    if isinstance(exc, SyntaxError) and exc.filename:
        frames.append(Path(exc.filename))
    mine = [f for f in frames if f.is_relative_to(folder)]
    error = str(exc) if isinstance(exc, PlatformError) else f"{type(exc).__name__}: {exc}"
    return BrokenProblem(name, folder, mine[-1] if mine else spec_file, "code", error)


def _load(spec_file: Path) -> Problem:
    from mlplatform.lib.contract import check_problem

    spec = load_spec(spec_file)
    problem = Problem(name=spec.name, spec=spec, folder=spec_file.parent)
    check_problem(problem)
    return problem


@cache
def problems() -> Problems:
    """Every problem folder with a ``spec.yaml`` that loads, by name.

    Each is loaded on its own: its spec parsed, its modules imported and its contracts
    checked (``mlplatform.lib.contract``). A folder that fails any of these is left out and
    kept in ``problems().broken`` with its file and error; the others load as if it were
    not there.
    """
    found: dict[str, Problem] = {}
    broken: dict[str, BrokenProblem] = {}
    for spec_file in [f for d in problem_dirs() for f in sorted(d.glob("*/spec.yaml"))]:
        name = spec_file.parent.name
        if name in found or name in broken:
            first = found[name].folder if name in found else broken[name].folder
            broken[f"{name}@{spec_file.parent}"] = BrokenProblem(
                name,
                spec_file.parent,
                spec_file,
                "spec",
                f"a problem named {name!r} was already loaded from {first}: rename the folder",
            )
            continue
        try:
            found[name] = _load(spec_file)
        except Exception as exc:  # one broken problem never takes the others down
            broken[name] = _broken(name, spec_file, exc)
    return Problems(found, broken)


def get_problem(name: str) -> Problem:
    """The problem called ``name``; the error lists the known ones.

    Raises:
        BrokenProblemError: the problem's folder exists but cannot load (the message says why).
        UnknownNameError: no such problem.
    """
    known = problems()
    if name in known.broken:
        raise BrokenProblemError(known.broken[name].message())
    if name not in known:
        listed = ", ".join(sorted(known)) or "none"
        raise UnknownNameError(
            f"unknown problem {name!r} (known: {listed}; searched "
            f"{', '.join(str(d) for d in problem_dirs())}: a problem kept elsewhere needs its "
            f"folder in {PROBLEMS_PATH_ENV})"
        )
    return known[name]
