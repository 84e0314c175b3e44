"""The spec reference: every field of ``spec.yaml`` in one table, generated from the model.

``spec_reference_markdown()`` walks ``mlplatform.spec.ProblemSpec`` (pydantic) and writes
one row per field: its path in the YAML file, its type with its bounds, its default and
its description, all read from the model, so the table cannot drift from what the loader
accepts. ``python -m mlplatform.spec_docs`` (``make spec-docs``) rewrites
``docs/spec-reference.md``; ``--check`` exits 1 when the committed file is not current.
"""

import argparse
import enum
import json
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from mlplatform.spec import ProblemSpec

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "spec-reference.md"
_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥"}
_BOUNDS_MAX = {"max_length": "length ≤"}


@dataclass(frozen=True)
class SpecField:
    """One row of the reference: where the field sits in ``spec.yaml`` and what it takes."""

    path: str
    type: str
    default: str
    description: str


def _constraints(metadata: list[Any]) -> list[str]:
    out = []
    for item in metadata:
        for attr, sign in {**_BOUNDS, **_BOUNDS_MAX}.items():
            value = getattr(item, attr, None)
            if value is not None:
                out.append(f"{sign} {value}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            out.append(f"matches `{pattern}`")
    return out


def _type_name(annotation: Any) -> str:
    """A YAML reader's name for a Python annotation: ``"a" | "b"``, ``list of int``..."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        bounds = _constraints([a for m in args[1:] for a in _field_metadata(m)])
        base = _type_name(args[0])
        return f"{base} ({', '.join(bounds)})" if bounds else base
    if origin is Literal:
        return " | ".join(f'"{a}"' for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (list, tuple):
        if origin is tuple and len(args) == 2 and args[1] is not Ellipsis:
            return f"[{_type_name(args[0])}, {_type_name(args[1])}]"
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if isinstance(annotation, type):
        return {"str": "string", "bool": "boolean", "date": "date (YYYY-MM-DD)"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _field_metadata(item: Any) -> list[Any]:
    return list(item.metadata) if isinstance(item, FieldInfo) else [item]


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()  # pyright: ignore[reportCallIssue]
    else:
        value = field.default
    if value is None or value is PydanticUndefined:
        return "null"
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, dict) and value and isinstance(next(iter(value.values())), BaseModel):
        return "see below"
    # as it is written in YAML: [0.8, 1.25], false, [""], plain strings unquoted
    text = value if isinstance(value, str) and value else json.dumps(value)
    return f"`{text}`"


def _models(annotation: Any) -> Iterator[tuple[str, type[BaseModel]]]:
    """Nested models of a field's type, with the path segment each sits under."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        yield from _models(args[0])
    elif origin in (Union, types.UnionType):
        for arg in args:
            yield from _models(arg)
    elif origin is list:
        for _, model in _models(args[0]):
            yield "[]", model
    elif origin is dict:
        for _, model in _models(args[1]):
            yield ".<name>", model
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield "", annotation


def _description(field: FieldInfo, annotation: Any) -> str:
    text = field.description or ""
    if not text:
        # a nested section: its model's docstring says what it is
        for _, model in _models(annotation):
            text = (model.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(text.split())


def spec_fields(model: type[BaseModel] = ProblemSpec, prefix: str = "") -> list[SpecField]:
    """Every field of ``model`` and of the models nested in it, depth first, in file order."""
    rows = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        path = f"{prefix}{key}"
        annotation = field.annotation
        bounds = _constraints(field.metadata)
        kind = _type_name(annotation)
        rows.append(
            SpecField(
                path=path,
                type=f"{kind} ({', '.join(bounds)})" if bounds else kind,
                default=_default(field),
                description=_description(field, annotation),
            )
        )
        for segment, nested in _models(annotation):
            rows += spec_fields(nested, f"{path}{segment}.")
    return rows


def spec_reference_markdown(model: type[BaseModel] = ProblemSpec) -> str:
    """The reference page: an introduction and one table of every field of ``model``."""
    lines = [
        "# Problem spec reference",
        "",
        "<!-- Generated from mlplatform/spec.py by `make spec-docs`"
        " (python -m mlplatform.spec_docs); do not edit by hand. -->",
        "",
        "Every field of a problem's `spec.yaml` (`mlplatform/problems/<name>/spec.yaml`),",
        "read from the pydantic model that validates it (`mlplatform.spec.ProblemSpec`).",
        "`<name>` stands for a key you choose (a source, an entity, a hyper-parameter);",
        "`[]` for each item of a list. Unknown keys are errors. `mlplatform new-problem`",
        "writes a spec that uses most of them, with comments.",
        "",
        "| field | type | default | description |",
        "|---|---|---|---|",
    ]
    for row in spec_fields(model):
        cells = [f"`{row.path}`", row.type, row.default, row.description]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, write: Callable[[str], object] = sys.stdout.write) -> int:
    """Write ``docs/spec-reference.md``, or with ``--check`` say whether it is current."""
    parser = argparse.ArgumentParser(prog="python -m mlplatform.spec_docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--out", type=Path, default=REFERENCE)
    args = parser.parse_args(argv)
    text = spec_reference_markdown()
    if args.check:
        current = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        if not current:
            write(f"{args.out} is not current: run `make spec-docs`\n")
        return 0 if current else 1
    args.out.write_text(text, encoding="utf-8")
    write(f"wrote {args.out} ({len(spec_fields())} fields)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
