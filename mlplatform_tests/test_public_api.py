"""The package stays on Dagster's public API: no private module is imported anywhere.

Private modules (``dagster._core``, ``dagster._utils``, ``dagster_celery._...``) change
without notice between releases; what the package needs from Dagster it takes from ``dg``
or records in its own assets' metadata.
"""

import ast
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

import mlplatform
from mlplatform.replay import schedule_ticks

PACKAGE = Path(mlplatform.__file__).resolve().parent
PRIVATE = re.compile(r"^dagster(_\w+)?\._")  # dagster._core, dagster_celery._x, ...


def private_dagster_imports(root: Path) -> list[str]:
    """``file:line: module`` of every import of a private Dagster module under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        nodes = ast.walk(ast.parse(path.read_text(), str(path)))
        for node in sorted(nodes, key=lambda n: getattr(n, "lineno", 0)):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from dagster import _check` is as private as `import dagster._check`
                modules = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for module in modules:
                if PRIVATE.match(module):
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {module}")
                    break
    return found


def test_no_module_of_the_package_imports_a_private_dagster_module() -> None:
    found = private_dagster_imports(PACKAGE)
    assert not found, "private Dagster imports:\n" + "\n".join(found)


def test_the_search_finds_every_form_of_private_import(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text(
        "import dagster as dg\n"
        "from dagster import AssetKey\n"
        "def f():\n"
        "    from dagster._utils.schedules import cron_string_iterator\n"
        "import dagster._core.storage\n"
        "from dagster import _check\n"
        "from dagster_celery._x import y\n"
    )
    assert private_dagster_imports(package) == [
        "pkg/a.py:4: dagster._utils.schedules",
        "pkg/a.py:5: dagster._core.storage",
        "pkg/a.py:6: dagster._check",
        "pkg/a.py:7: dagster_celery._x",
    ]


@pytest.mark.parametrize(
    "cron", ["0 6 * * 1", "0 6 * * 1,4", "0 * * * *", "30 2 * * *", "0 1 * * *"]
)
def test_the_replay_ticks_a_schedule_when_dagsters_scheduler_would(cron: str) -> None:
    # Dagster's own iterator, private, is the reference here only (never in the package):
    # 2013 in New York, both changes of summer time included
    from dagster._utils.schedules import cron_string_iterator

    since, until = datetime(2013, 1, 1, tzinfo=UTC), datetime(2014, 1, 1, tzinfo=UTC)
    expected = []
    for tick in cron_string_iterator(since.timestamp(), cron, "America/New_York"):
        if tick > until:
            break
        if tick > since:
            expected.append(tick.timestamp())
    ticks = schedule_ticks(cron, "America/New_York", since, until)
    assert [t.timestamp() for t in ticks] == expected
