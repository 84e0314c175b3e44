"""Every plug-in contract is checked at load, and a broken problem never takes the others down.

Each test copies the flights' problem folder under another name into a temporary folder on
``MLPLATFORM_PROBLEMS_PATH``, breaks one contract, and checks the error names the problem,
the file and the fix, while flight_delay still loads and builds its Dagster definitions.
"""

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from mlplatform import problems as catalog
from mlplatform.errors import BrokenProblemError, ContractError
from mlplatform.lib.storage import DataLake
from mlplatform.problems import Problem, get_problem, problems

FLIGHTS = catalog.PROBLEMS_DIR / "flight_delay"


@pytest.fixture
def plug_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty problems folder on MLPLATFORM_PROBLEMS_PATH; the catalog re-read around it."""
    folder = tmp_path / "problems"
    folder.mkdir()
    monkeypatch.setenv(catalog.PROBLEMS_PATH_ENV, str(folder))
    problems.cache_clear()
    yield folder
    problems.cache_clear()


def _copy(folder: Path, name: str) -> Path:
    """The flights' problem, renamed ``name``."""
    target = folder / name
    shutil.copytree(FLIGHTS, target, ignore=shutil.ignore_patterns("__pycache__"))
    spec = target / "spec.yaml"
    spec.write_text(spec.read_text().replace("name: flight_delay", f"name: {name}"))
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} once in {path}"
    path.write_text(text.replace(old, new))


def _broken(name: str, file: str, *needles: str) -> str:
    """The problem is reported broken at ``file`` with ``needles``; the flights load and build."""
    found = problems()
    assert name not in found
    record = found.broken[name]
    assert record.file.name == Path(file).name, record
    with pytest.raises(BrokenProblemError) as raised:
        get_problem(name)
    message = str(raised.value)
    for needle in (name, file, *needles):
        assert needle in message, (needle, message)
    _flights_still_build()
    return message


def _flights_still_build() -> None:
    from mlplatform.definitions import defs

    assert "flight_delay" in problems()
    built = defs()
    assert isinstance(built, dg.Definitions)
    dg.Definitions.validate_loadable(built)
    keys = {k for a in built.assets or [] if isinstance(a, dg.AssetsDefinition) for k in a.keys}
    assert dg.AssetKey(["flight_delay", "training_set"]) in keys


def _broken_by(
    plug_ins: Path, name: str, breaks: Callable[[Path], None], file: str, *needles: str
) -> str:
    breaks(_copy(plug_ins, name))
    return _broken(name, file, *needles)


def test_an_unbroken_copy_loads_beside_the_flights(plug_ins: Path) -> None:
    _copy(plug_ins, "copy_ok")
    found = problems()
    assert {"flight_delay", "copy_ok"} <= set(found)
    assert "copy_ok" not in found.broken


def test_a_spec_that_does_not_parse_is_reported_with_its_field(plug_ins: Path) -> None:
    _broken_by(
        plug_ins,
        "bad_spec",
        lambda f: _edit(f / "spec.yaml", "training_window_days: 365", "training_window_days: -3"),
        "spec.yaml",
        "training_window_days",
    )
    assert problems().broken["bad_spec"].kind == "spec"


def test_a_module_that_does_not_import_is_reported_with_its_file(plug_ins: Path) -> None:
    message = _broken_by(
        plug_ins,
        "bad_import",
        lambda f: _edit(f / "features.py", "import pandas as pd\n", "import pandas_typo as pd\n"),
        "features.py",
        "ModuleNotFoundError",
        "pandas_typo",
    )
    assert problems().broken["bad_import"].kind == "code", message


def test_a_feature_table_named_like_a_source_is_refused(plug_ins: Path) -> None:
    def rename(folder: Path) -> None:
        with (folder / "feature_tables.py").open("a") as f:
            f.write(
                "\nimport dataclasses\n"
                "FEATURE_TABLES = [dataclasses.replace(t, name='weather') "
                "if t.name == 'origin_weather' else t for t in FEATURE_TABLES]\n"
            )

    _broken_by(
        plug_ins,
        "table_like_source",
        rename,
        "feature_tables.py",
        "named like the source 'weather'",
        "rename the table",
    )
    assert problems().broken["table_like_source"].kind == "contract"


def test_request_fields_the_target_source_lacks_are_refused(plug_ins: Path) -> None:
    _broken_by(
        plug_ins,
        "request_extra",
        lambda f: _edit(
            f / "request.py",
            "    time_hour: datetime",
            '    gate: str | None = Field(default=None, description="Departure gate")\n'
            "    time_hour: datetime",
        ),
        "request.py",
        "Request fields ['gate'] are not columns of the target source 'flights'",
    )


def test_an_entity_row_without_a_join_key_is_refused(plug_ins: Path) -> None:
    _broken_by(
        plug_ins,
        "no_route_key",
        lambda f: _edit(f / "features.py", '        "route": f"{origin}-{dest}",\n', ""),
        "features.py",
        "entity_row gives no ['route']",
    )


def test_spec_features_no_table_or_entity_row_serves_are_refused(plug_ins: Path) -> None:
    _broken_by(
        plug_ins,
        "no_temp",
        lambda f: _edit(f / "feature_tables.py", '("temp", "humid",', '("humid",'),
        "feature_tables.py",
        "spec features ['temp'] come from no feature table",
    )


def test_a_feature_of_an_unknown_type_is_refused(plug_ins: Path) -> None:
    _broken_by(
        plug_ins,
        "bad_type",
        lambda f: _edit(f / "feature_tables.py", '"plane_type": "string"', '"plane_type": "text"'),
        "feature_tables.py",
        "feature 'plane_type' has type 'text'",
    )


def test_a_join_key_of_no_entity_is_refused(plug_ins: Path) -> None:
    _broken_by(
        plug_ins,
        "no_entity",
        lambda f: _edit(
            f / "spec.yaml",
            "  route:\n    join_keys: [route]\n    description: An origin-destination pair, "
            'as "EWR-IAH".\n',
            "",
        ),
        "spec.yaml",
        "no entity has the join key 'route'",
    )


def test_every_broken_contract_is_listed_at_once(plug_ins: Path) -> None:
    def breaks(folder: Path) -> None:
        _edit(folder / "feature_tables.py", '"plane_type": "string"', '"plane_type": "text"')
        _edit(folder / "features.py", '        "route": f"{origin}-{dest}",\n', "")

    message = _broken_by(plug_ins, "two_faults", breaks, "feature_tables.py", "'text'")
    assert "entity_row gives no ['route']" in message and "features.py" in message


def test_a_view_without_its_timestamp_field_is_refused_when_its_repository_is_built(
    plug_ins: Path, tmp_path: Path
) -> None:
    """A problem's own repo.py overrides the generated one; its views are checked."""
    folder = _copy(plug_ins, "own_repo")
    (folder / "feature_repo").mkdir()
    (folder / "feature_repo" / "__init__.py").write_text("")
    (folder / "feature_repo" / "repo.py").write_text(
        "from mlplatform.lib.features.feast_repo import definitions as generated\n"
        "from mlplatform.problems import get_problem\n\n\n"
        "def definitions(data):\n"
        "    problem = get_problem('own_repo')\n"
        "    objects = generated(problem.spec, problem.feature_tables(), data, 2)\n"
        "    view = objects['plane_fv']\n"
        "    view.features = [f for f in view.features if f.name != 'plane_ts']\n"
        "    return objects\n"
    )
    problem = get_problem("own_repo")  # loads: feast is not imported at load
    with pytest.raises(ContractError) as raised:
        problem.feast_objects(tmp_path)
    message = str(raised.value)
    assert "own_repo" in message and "feature_repo/repo.py" in message
    assert "view 'plane_fv' has no timestamp field 'plane_ts'" in message
    _flights_still_build()


def test_status_and_dagster_name_the_broken_problem(plug_ins: Path, tmp_path: Path) -> None:
    from mlplatform.definitions import defs
    from mlplatform.status import status

    _edit(
        _copy(plug_ins, "named_broken") / "features.py",
        '        "route": f"{origin}-{dest}",\n',
        "",
    )
    with dg.DagsterInstance.ephemeral() as instance:
        report = status(problems(), DataLake(tmp_path / "data"), instance)
    assert report["flight_delay"]["broken"] is None
    assert "landed_days" in report["flight_delay"]
    broken = report["named_broken"]["broken"]
    assert broken["kind"] == "contract" and broken["file"].endswith("features.py")
    assert "entity_row gives no ['route']" in broken["error"]

    built = defs()
    sensor = next(s for s in built.sensors or [] if s.name == "named_broken_cannot_load")
    assert isinstance(sensor, dg.SensorDefinition)
    assert "entity_row gives no ['route']" in (sensor.description or "")
    with pytest.raises(BrokenProblemError, match="named_broken"):
        sensor(dg.build_sensor_context())


def test_a_problem_found_twice_is_reported_once_broken(plug_ins: Path) -> None:
    shutil.copytree(
        FLIGHTS, plug_ins / "flight_delay", ignore=shutil.ignore_patterns("__pycache__")
    )
    found = problems()
    assert found["flight_delay"].folder == FLIGHTS
    (twin,) = [b for b in found.broken.values() if b.name == "flight_delay"]
    assert "already loaded" in twin.error


def test_the_bundled_problems_keep_their_contracts() -> None:
    problems.cache_clear()
    found = problems()
    assert "flight_delay" in found
    assert not [
        b.message() for b in found.broken.values() if b.folder.parent == catalog.PROBLEMS_DIR
    ]
    assert isinstance(found["flight_delay"], Problem)


def test_one_code_location_per_problem_fails_only_the_broken_one(
    plug_ins: Path, tmp_path: Path
) -> None:
    """``mlplatform.definitions.<problem>`` as locations: Dagster validates each on its own."""
    import subprocess
    import sys

    import mlplatform.definitions as definitions

    _edit(
        _copy(plug_ins, "loc_broken") / "features.py",
        "import pandas as pd\n",
        "import pandas_typo as pd\n",
    )
    with pytest.raises(BrokenProblemError, match="pandas_typo"):
        _ = definitions.loc_broken
    with pytest.raises(AttributeError):
        _ = definitions.no_such_problem
    root = Path(__file__).resolve().parents[1]
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        + "".join(
            f"  - python_module:\n      module_name: mlplatform.definitions\n"
            f"      attribute: {name}\n      working_directory: {root}\n"
            f"      location_name: {name}\n"
            for name in ("flight_delay", "loc_broken")
        )
    )
    (tmp_path / "home").mkdir()
    dagster = Path(sys.executable).with_name("dagster")
    out = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", str(workspace)],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PATH": "/usr/bin:/bin",
            "DAGSTER_HOME": str(tmp_path / "home"),
            catalog.PROBLEMS_PATH_ENV: str(plug_ins),
        },
        cwd=root,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 1, log[-3000:]
    assert "Validation successful for code location flight_delay" in log
    assert "Validation failed for code location loc_broken" in log
    assert "problem 'loc_broken' cannot load" in log and "features.py" in log
