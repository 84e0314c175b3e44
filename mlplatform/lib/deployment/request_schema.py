"""The serving request model, held to the ingestion schema of the same fields.

A problem's ``request.py`` declares what a request carries (field names, types,
descriptions and request-only bounds). Every check the ingestion schema (pandera) puts on a
column of the same name applies to the field too, read from that schema rather than
written again: a value ingestion would reject (an origin the problem never serves) is
refused with 422 naming the field, never scored.

On top, the rules for what a JSON body can carry that a typed table cannot, so that no
accepted value can crash scoring, the prediction log or the error answer:

- numbers are finite (Python's ``json`` reads ``NaN``, ``Infinity`` and ``1e309`` as floats);
- numbers in an integer column fit its 64 bits;
- strings are printable text: no control characters, no lone surrogates;
- a timestamp column's value carries a UTC offset (a naive time is ambiguous) and lies
  within what its nanosecond timestamps hold (1677-09-22 to 2262-04-10, UTC).
"""

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    import pandera.pandas as pa

INT64 = 2**63
# a day inside pandas' nanosecond range on either side, so any offset still converts
EARLIEST = datetime(1677, 9, 22, tzinfo=UTC)
LATEST = datetime(2262, 4, 10, tzinfo=UTC)

# pandera's built-in checks as tests of one value: name -> (test(value, stats), wording)
_SCALAR: dict[str, tuple[Callable[[Any, dict[str, Any]], bool], str]] = {
    "greater_than": (lambda v, s: v > s["min_value"], "greater than {min_value}"),
    "greater_than_or_equal_to": (
        lambda v, s: v >= s["min_value"],
        "greater than or equal to {min_value}",
    ),
    "less_than": (lambda v, s: v < s["max_value"], "less than {max_value}"),
    "less_than_or_equal_to": (
        lambda v, s: v <= s["max_value"],
        "less than or equal to {max_value}",
    ),
    "in_range": (
        lambda v, s: (
            (v >= s["min_value"] if s.get("include_min", True) else v > s["min_value"])
            and (v <= s["max_value"] if s.get("include_max", True) else v < s["max_value"])
        ),
        "between {min_value} and {max_value}",
    ),
    "equal_to": (lambda v, s: v == s["value"], "equal to {value}"),
    "not_equal_to": (lambda v, s: v != s["value"], "not equal to {value}"),
    "isin": (lambda v, s: v in s["allowed_values"], "one of {allowed_values}"),
    "notin": (lambda v, s: v not in s["forbidden_values"], "none of {forbidden_values}"),
    "str_matches": (
        lambda v, s: re.match(s["pattern"], v) is not None,
        "text matching {pattern}",
    ),
    "str_contains": (
        lambda v, s: re.search(s["pattern"], v) is not None,
        "text containing {pattern}",
    ),
    "str_startswith": (lambda v, s: v.startswith(s["string"]), "text starting with {string}"),
    "str_endswith": (lambda v, s: v.endswith(s["string"]), "text ending with {string}"),
    "str_length": (
        lambda v, s: (
            (s.get("min_value") is None or len(v) >= s["min_value"])
            and (s.get("max_value") is None or len(v) <= s["max_value"])
        ),
        "text of length {min_value} to {max_value}",
    ),
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def request_model(declared: type[BaseModel], schema: "type[pa.DataFrameModel]") -> type[BaseModel]:
    """``declared`` (same name, fields and OpenAPI entry) with ``schema``'s checks on its fields.

    Args:
        declared: the problem's pydantic ``Request``.
        schema: the pandera model of the source whose rows requests describe (the spec's
            target source): its columns of the same names lend their checks, nullability
            and dtype.

    Returns:
        A subclass of ``declared`` named like it; validation errors are pydantic's, with the
        field in ``loc`` and the schema's check in ``ctx``. Cached per (declared, schema).
    """
    return _derived(declared, schema)


@cache
def _derived(declared: type[BaseModel], schema: "type[pa.DataFrameModel]") -> type[BaseModel]:
    columns = schema.to_schema().columns
    rules = {name: _Column.of(columns[name]) for name in declared.model_fields if name in columns}

    def check(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
        name = info.field_name or "?"
        _plain(value)
        column = rules.get(name)
        if column is not None:
            column.validate(value)
        return value

    namespace = {
        "__module__": declared.__module__,
        "__qualname__": declared.__qualname__,
        "__doc__": declared.__doc__,
        # inherited config (extra="forbid"...) is merged with this
        "model_config": ConfigDict(
            allow_inf_nan=False,
            json_schema_extra=lambda js, _: _document(js, rules),  # pyright: ignore[reportArgumentType]
        ),
        "_schema_checks": field_validator("*", mode="after")(check),  # pyright: ignore[reportArgumentType]
    }
    return type(declared.__name__, (declared,), namespace)


class _Column:
    """What one pandera column demands of a scalar."""

    def __init__(
        self, nullable: bool, kind: str, checks: list[tuple[str, dict[str, Any], Any]]
    ) -> None:
        self.nullable, self.kind, self.checks = nullable, kind, checks

    @classmethod
    def of(cls, column: Any) -> "_Column":
        dtype = str(column.dtype)
        kind = (
            "timestamp"
            if dtype.startswith("datetime64")
            else "int"
            if re.fullmatch(r"u?int\d*", dtype.lower())
            else "other"
        )
        checks = [(c.name, dict(c.statistics or {}), c) for c in column.checks]
        return cls(bool(column.nullable), kind, checks)

    def validate(self, value: Any) -> None:
        if value is None:
            if not self.nullable:
                raise PydanticCustomError("null_not_allowed", "Input should not be null")
            return
        if self.kind == "int" and isinstance(value, int | float) and not -INT64 <= value < INT64:
            raise PydanticCustomError(
                "int64_range", "Input should fit a 64-bit integer", {"max": INT64 - 1}
            )
        if self.kind == "timestamp" and isinstance(value, datetime):
            _timestamp(value)
        for name, stats, check in self.checks:
            _apply(name, stats, check, value)


def _apply(name: str, stats: dict[str, Any], check: Any, value: Any) -> None:
    known = _SCALAR.get(name)
    try:
        passed = known[0](value, stats) if known else _series_check(check, value)
    except (TypeError, ValueError, re.error):
        passed = False
    if not passed:
        wording = known[1].format(**{**stats, **_shown(stats)}) if known else name
        raise PydanticCustomError(
            "schema_check",
            "Input should be {expected} (ingestion schema check {check})",
            {"expected": wording, "check": name},
        )


def _series_check(check: Any, value: Any) -> bool:
    """A check with no scalar form (a custom one), run as pandera runs it, on one row."""
    import pandas as pd

    return bool(check(pd.Series([value])).check_passed)


def _shown(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: ", ".join(map(str, v)) for k, v in stats.items() if isinstance(v, list | tuple)}


def _timestamp(value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError(
            "timezone_aware",
            "Input should carry a UTC offset, e.g. 2013-01-28T15:00:00Z (a naive time is "
            "ambiguous)",
        )
    try:
        inside = EARLIEST <= value <= LATEST
    except OverflowError:
        inside = False
    if not inside:
        raise PydanticCustomError(
            "timestamp_range",
            "Input should be between {earliest} and {latest}",
            {"earliest": EARLIEST.isoformat(), "latest": LATEST.isoformat()},
        )


def _plain(value: Any) -> None:
    """Every string printable and encodable; every number finite (also inside containers)."""
    if isinstance(value, str):
        if _CONTROL.search(value):
            raise PydanticCustomError(
                "string_control_characters", "Input should not contain control characters"
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise PydanticCustomError(
                "string_unicode", "Input should be valid Unicode text (no lone surrogates)"
            ) from None
    elif isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError("finite_number", "Input should be a finite number")
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _plain(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _plain(key)
            _plain(item)


def _document(js: dict[str, Any], rules: dict[str, _Column]) -> None:
    """Publish the schema's allowed values and patterns in the OpenAPI schema too."""
    for name, column in rules.items():
        prop = js.get("properties", {}).get(name)
        if prop is None:
            continue
        target = next((b for b in prop.get("anyOf", []) if b.get("type") != "null"), prop)
        for check, stats, _ in column.checks:
            if check == "isin":
                target["enum"] = list(stats["allowed_values"])
            elif check == "str_matches" and "pattern" not in target:
                target["pattern"] = stats["pattern"]
