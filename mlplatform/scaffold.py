"""``mlplatform new-problem``: a new problem folder that loads, passes the contract and runs.

The skeleton is written from the ``*.tmpl`` files of ``mlplatform/scaffold_templates``
(``{{key}}`` placeholders). As written it describes a small seeded synthetic data source
(hourly readings of four sites), so a newcomer sees the whole pipeline work on it (land,
ingest, features, train, gates, serve) before replacing the example with their own data;
each file says in comments what to fill in. No ``feature_repo/``: the platform generates
the Feast repository from the spec and ``FEATURE_TABLES`` (``lib.features.feast_repo``).
"""

import keyword
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mlplatform.errors import UsageError

TEMPLATES = Path(__file__).parent / "scaffold_templates"
TASKS = ("binary", "regression")
PARTITIONS = ("daily", "hourly")
# The order the files are listed in, as a newcomer reads them.
_ORDER = [
    "spec.yaml",
    "schemas.py",
    "source.py",
    "feature_tables.py",
    "features.py",
    "request.py",
    "evaluation.py",
]
NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # the spec's problem name, a Python module name


def _yaml(*lines: tuple[str, str]) -> str:
    """YAML lines with their comments aligned as in the spec template (column 35)."""
    return "\n".join(f"{text:<34}# {note}" if note else text for text, note in lines)


# Per task: what the spec and the example's wording say.
_TASK_VALUES: dict[str, dict[str, str]] = {
    "binary": {
        "example_goal": "will a site's reading of the hour exceed 50?",
        "label_phrase": "share of readings above 50",
        "target_block": _yaml(
            ("  name: is_high", ""),
            ("  source: readings", ""),
            ("  column: outcome", ""),
            ('  operator: ">"', "binary: the label is outcome > 50 (0 or 1)"),
            ("  value: 50", ""),
            ('  description: "TODO (example: the hour\'s reading is above 50)"', ""),
        ),
        "metric_block": _yaml(
            ("  name: roc_auc", "or average_precision, log_loss, brier"),
            ("  direction: maximize", ""),
        ),
        "gates_block": _yaml(
            ("  min_metric: 0.65", "a floor against broken models"),
            ("  max_regression: 0.03", "roc_auc a candidate may lose against the champion"),
        ),
        "slice_tolerance": "0.05",
        "slice_positives": _yaml(("  min_slice_positives: 10", "positive labels a slice needs"))
        + "\n",
        "max_metric_drop": "0.03",
    },
    "regression": {
        "example_goal": "what will a site's reading of the hour be?",
        "label_phrase": "mean reading",
        "target_block": _yaml(
            ("  name: reading", ""),
            ("  source: readings", ""),
            ("  column: outcome", "regression: the outcome column itself"),
            ('  description: "TODO (example: the hour\'s reading)"', ""),
        ),
        "metric_block": _yaml(("  name: rmse", "or mae, r2"), ("  direction: minimize", "")),
        "gates_block": _yaml(
            ("  min_metric: 12", "rmse: a ceiling against broken models"),
            ("  max_regression: 0.5", "rmse a candidate may lose against the champion"),
        ),
        "slice_tolerance": "1.0",
        "slice_positives": "",
        "max_metric_drop": "1.0",
    },
}


class ScaffoldError(UsageError):
    """The new problem cannot be written (a bad name, an existing folder, an option)."""


@dataclass(frozen=True)
class Scaffold:
    """What ``new_problem`` wrote."""

    folder: Path
    files: list[Path]
    #: True when ``folder`` is outside the package's problems: MLPLATFORM_PROBLEMS_PATH needed
    needs_path: bool


def check_name(name: str) -> None:
    """Refuse a name that cannot be a problem, or is one already.

    Raises:
        ScaffoldError: the name is not lowercase letters, digits and underscores starting
            with a letter (at most 64), is a Python keyword, or names a known problem.
    """
    if not NAME.match(name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"invalid problem name {name!r}: use lowercase letters, digits and underscores, "
            "starting with a letter (at most 64; not a Python keyword), e.g. energy_demand"
        )
    from mlplatform.problems import problem_dirs

    taken = [d / name for d in problem_dirs() if (d / name).exists()]
    if taken:
        raise ScaffoldError(
            f"a problem folder {taken[0]} already exists: problem names are unique across "
            "the problem folders; choose another name"
        )


def render(template: str, values: dict[str, str]) -> str:
    """``template`` with every ``{{key}}`` replaced by ``values[key]``.

    Raises:
        KeyError: a placeholder without a value (a bug of the templates).
    """

    def value(match: re.Match[str]) -> str:
        return values[match.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", value, template)


def new_problem(
    name: str, task: str = "binary", partition: str = "daily", directory: Path | None = None
) -> Scaffold:
    """Write the skeleton of problem ``name`` into ``directory / name``.

    Args:
        name: the problem's name (its folder, its module, its spec's ``name``).
        task: ``binary`` or ``regression``.
        partition: ``daily`` or ``hourly`` (the spec's ``partitioning.granularity``).
        directory: the folder of problems; default the package's ``mlplatform/problems``.

    Returns:
        The folder, the files written, and whether it lies outside the package's problems.

    Raises:
        ScaffoldError: an invalid name or option, or an existing folder (nothing written).
    """
    from mlplatform.problems import PROBLEMS_DIR
    from mlplatform.spec import load_spec

    if task not in TASKS:
        raise ScaffoldError(f"--task {task!r}: one of {', '.join(TASKS)}")
    if partition not in PARTITIONS:
        raise ScaffoldError(f"--partition {partition!r}: one of {', '.join(PARTITIONS)}")
    check_name(name)
    parent = (directory or PROBLEMS_DIR).resolve()
    folder = parent / name
    if folder.exists():
        raise ScaffoldError(f"{folder} already exists; choose another name or --dir")
    values = {"name": name, "task": task, "partition": partition, **_TASK_VALUES[task]}
    # the share of outcomes not measured yet a batch may have: an hour's batch holds 4 rows,
    # so one unmeasured reading is 25% of it
    values["outcome_null_rate"] = (
        "0.5                # not measured yet (an hour's batch holds 4 rows)"
        if partition == "hourly"
        else "0.1                # outcomes not measured yet"
    )
    written = [folder / "__init__.py"]
    folder.mkdir(parents=True)
    try:
        written[0].write_text("", encoding="utf-8")
        for template in sorted(TEMPLATES.glob("*.tmpl")):
            out = folder / template.name.removesuffix(".tmpl")
            out.write_text(render(template.read_text(encoding="utf-8"), values), encoding="utf-8")
            written.append(out)
        load_spec(folder / "spec.yaml")  # the skeleton's own spec always validates
    except BaseException:
        shutil.rmtree(folder)  # nothing half-written is left behind
        raise
    written.sort(key=lambda p: (_ORDER.index(p.name) if p.name in _ORDER else len(_ORDER), p))
    return Scaffold(folder=folder, files=written, needs_path=parent != PROBLEMS_DIR.resolve())


def next_steps(made: Scaffold) -> list[str]:
    """What ``mlplatform new-problem`` prints: the files, then how to run and change them."""
    import os

    from mlplatform.problems import PROBLEMS_PATH_ENV

    name, parent = made.folder.name, made.folder.parent
    lines = [f"created {made.folder}:"]
    lines += [f"  {path.relative_to(made.folder)}" for path in made.files]
    listed = [
        Path(p).resolve() for p in os.environ.get(PROBLEMS_PATH_ENV, "").split(os.pathsep) if p
    ]
    if made.needs_path and parent not in listed:
        lines += [
            f"{parent} is outside mlplatform/problems: list it in {PROBLEMS_PATH_ENV} so the "
            "platform finds the problem:",
            f"  export {PROBLEMS_PATH_ENV}={parent}",
        ]
    days = "--start 2024-01-01 --end 2024-01-10"
    lines += [
        "It runs as written on a seeded synthetic example source (source.py):",
        f"  mlplatform land --problem {name} {days}",
        f"  mlplatform ingest --problem {name} {days}",
        f"  mlplatform features --problem {name} {days}",
        f"  mlplatform train --problem {name}",
        "Then replace the example with your data: each file says what to fill in (TODO);",
        "every spec field is described in docs/spec-reference.md.",
    ]
    return lines
