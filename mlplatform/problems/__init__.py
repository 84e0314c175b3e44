"""Problems are plug-ins: one folder each, holding a spec, schemas and a data export.

A problem folder ``problems/<name>/`` contains
- ``spec.yaml``: the problem spec (see ``mlplatform.spec``);
- ``schemas.py``: one pandera ``DataFrameModel`` per source, named in the spec;
- ``source.py``: ``export_day(source, day)`` and ``export_reference(source)``, the daily
  export that ``mlplatform land`` writes into the landing zone.
The machinery finds problems here and never names one.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, cast

from mlplatform.spec import ProblemSpec, SpecError, load_spec

if TYPE_CHECKING:
    import pandas as pd
    import pandera.pandas as pa

PROBLEMS_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Problem:
    """A problem found in ``PROBLEMS_DIR``; its code modules are imported on first use."""

    name: str
    spec: ProblemSpec
    folder: Path

    def _module(self, part: str):
        return importlib.import_module(f"{__name__}.{self.name}.{part}")

    def schema(self, source: str) -> "type[pa.DataFrameModel]":
        """The pandera model that validates ``source``."""
        name = self.spec.sources[source].schema_name
        model = getattr(self._module("schemas"), name, None)
        if model is None:
            raise SpecError(
                f"{self.folder / 'spec.yaml'}: sources.{source}.schema: no model {name!r} "
                f"in {self.folder / 'schemas.py'}"
            )
        return model

    def export_day(self, source: str, day: date) -> "pd.DataFrame":
        """One day of ``source`` as the upstream system exports it."""
        fn = cast("Callable[[str, date], pd.DataFrame]", self._module("source").export_day)
        return fn(source, day)

    def export_reference(self, source: str) -> "pd.DataFrame":
        """The current snapshot of a reference source."""
        fn = cast("Callable[[str], pd.DataFrame]", self._module("source").export_reference)
        return fn(source)


@cache
def problems() -> dict[str, Problem]:
    """Every problem folder with a ``spec.yaml``, by name."""
    found = {}
    for spec_file in sorted(PROBLEMS_DIR.glob("*/spec.yaml")):
        spec = load_spec(spec_file)
        found[spec.name] = Problem(name=spec.name, spec=spec, folder=spec_file.parent)
    return found


def get_problem(name: str) -> Problem:
    """The problem called ``name``; the error lists the known ones."""
    known = problems()
    if name not in known:
        raise KeyError(f"unknown problem {name!r} (known: {', '.join(sorted(known)) or 'none'})")
    return known[name]
