"""`mlplatform new-problem`: a skeleton that loads, keeps the plug-in contract and runs.

A throwaway problem is scaffolded into a temporary folder outside the package, found
through ``MLPLATFORM_PROBLEMS_PATH`` and taken through the whole pipeline by the
``mlplatform`` command a newcomer types: land, ingest, features, train (evaluation, gates,
promotion), then one request to the HTTP service.
"""

import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

import mlplatform.problems as problems_package
from mlplatform.cli import main
from mlplatform.lib.contract import check_problem
from mlplatform.lib.tracking import local_tracking
from mlplatform.problems import PROBLEMS_PATH_ENV, Problem, get_problem, problems
from mlplatform.scaffold import ScaffoldError, new_problem
from mlplatform.serving.client import as_requests, post
from mlplatform.serving.server import build_runtime, serve_in_background

DAYS = ["--start", "2024-01-01", "--end", "2024-01-10"]
# (task, its metric): the scaffold's tasks that train and serve end to end
END_TO_END = [("binary", "roc_auc"), ("regression", "rmse")]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Data, Dagster home and a folder of problems in ``tmp_path``; forgets them after."""
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv(PROBLEMS_PATH_ENV, raising=False)
    folder = tmp_path / "problems"
    bundled = set(problems())
    yield folder
    # forget the throwaway problems: the cached list, the package path, imported modules
    problems.cache_clear()
    if str(folder) in problems_package.__path__:
        problems_package.__path__.remove(str(folder))
    for module in [m for m in sys.modules if m.startswith("mlplatform.problems.")]:
        if module.split(".")[2] not in bundled:
            del sys.modules[module]


def _found(folder: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> Problem:
    """The scaffolded problem as the platform loads it, with the path the CLI told us to set."""
    monkeypatch.setenv(PROBLEMS_PATH_ENV, str(folder))
    problems.cache_clear()
    return get_problem(name)


def check_contract(problem: Problem) -> None:
    """The platform's own contract check passes, and what the gates name resolves.

    ``lib.contract.check_problem`` (schemas, exports, builders, feature columns, request and
    entity-row contracts), then what it leaves to run time: a real row of the example's
    target source is a valid request, and the slices and behavioural cases the spec's gates
    name are defined.
    """
    assert problem.name not in problems().broken
    check_problem(problem)
    spec = problem.spec
    frame = problem.export_day(spec.target.source, spec.partitioning.start)
    assert len(as_requests(problem, frame.head(3))) == 3  # the request model takes them
    assert len(problem.behavioural_cases()) == len(spec.gates.known_failures)
    sliced = problem.slices(problem.entity_rows(frame))
    assert list(sliced.columns) == spec.gates.slices


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize(("task", "metric"), END_TO_END)
def test_a_scaffolded_problem_runs_end_to_end(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    task: str,
    metric: str,
) -> None:
    name = f"scaffolded_{task}"
    assert main(["new-problem", name, "--task", task, "--dir", str(home)]) == 0
    out = capsys.readouterr().out
    assert f"export {PROBLEMS_PATH_ENV}={home}" in out
    written = sorted(p.name for p in (home / name).iterdir())
    assert written == [
        "__init__.py",
        "evaluation.py",
        "feature_tables.py",
        "features.py",
        "request.py",
        "schemas.py",
        "source.py",
        "spec.yaml",
    ]  # no feature_repo/: the platform generates the Feast repository
    spec_file = home / name / "spec.yaml"
    # the example's budget is 10 trials; 2 keep this test short
    text = spec_file.read_text()
    assert "n_trials: 10 " in text
    spec_file.write_text(text.replace("n_trials: 10 ", "n_trials: 2  "))

    problem = _found(home, name, monkeypatch)
    assert problem.folder == home / name and problem.spec.task == task
    check_contract(problem)

    assert main(["land", "--problem", name, *DAYS]) == 0
    assert main(["ingest", "--problem", name, *DAYS, "--in-process"]) == 0
    assert main(["features", "--problem", name, *DAYS, "--in-process"]) == 0
    capsys.readouterr()
    assert main(["train", "--problem", name, "--in-process"]) == 0
    out = capsys.readouterr().out
    assert "verdict: version 1 PASSED against no champion (bootstrap)" in out, out
    assert f"pass  min_metric           holdout {metric} " in out, out
    assert "pass  behavioural_cases" in out, out
    assert "promoted: version 1 is now champion" in out, out

    # one request of the next day (not landed) to the service: the champion, its features
    data = home.parent / "data"
    frame = problem.export_day("readings", date(2024, 1, 11))
    (request,) = as_requests(problem, frame.head(1))
    service = serve_in_background(
        build_runtime(problem, data, local_tracking(data), refresh_seconds=0.2, flush_seconds=0.2)
    )
    try:
        answer = post(service.url + "/predict", request)
    finally:
        service.stop()
    assert answer["version"] == "1" and answer["route"] == "champion", answer
    assert answer["missing_features"] == [] and answer["defaulted_features"] == [], answer
    low, high = (0.0, 1.0) if task == "binary" else (0.0, 120.0)  # a probability, a reading
    assert low < answer["prediction"] < high, answer


def test_a_regression_skeleton_loads_and_keeps_the_contract(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "scaffolded_regression"
    assert main(["new-problem", name, "--task", "regression", "--dir", str(home)]) == 0
    problem = _found(home, name, monkeypatch)
    spec = problem.spec
    assert (spec.task, spec.metric.name, spec.metric.direction) == (
        "regression",
        "rmse",
        "minimize",
    )
    assert (spec.target.operator, spec.target.value) == (None, None)
    check_contract(problem)


def test_an_hourly_skeleton_loads_and_keeps_the_contract(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "scaffolded_hourly"
    assert main(["new-problem", name, "--partition", "hourly", "--dir", str(home)]) == 0
    problem = _found(home, name, monkeypatch)
    assert problem.spec.partitioning.granularity == "hourly"
    # an hour's batch holds 4 readings: one not measured yet must not refuse the hour
    assert problem.spec.sources["readings"].max_null_rate["outcome"] >= 0.25
    check_contract(problem)


def test_an_unknown_task_or_partition_is_refused(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:  # argparse's choices
        main(["new-problem", "energy", "--task", "multiclass", "--dir", str(home)])
    assert exc.value.code == 2 and "invalid choice: 'multiclass'" in capsys.readouterr().err
    with pytest.raises(ScaffoldError, match="--partition 'weekly': one of daily, hourly"):
        new_problem("energy", partition="weekly", directory=home)
    assert not home.exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("9lives", "invalid problem name '9lives'"),
        ("Energy", "invalid problem name 'Energy'"),
        ("energy-demand", "invalid problem name 'energy-demand'"),
        ("class", "invalid problem name 'class'"),
        ("flight_delay", "flight_delay already exists: problem names are unique"),
    ],
)
def test_a_bad_name_is_refused_and_nothing_is_written(
    home: Path, capsys: pytest.CaptureFixture[str], name: str, message: str
) -> None:
    assert main(["new-problem", name, "--dir", str(home)]) == 2
    assert message in capsys.readouterr().err
    assert not home.exists()


def test_an_existing_folder_is_refused_and_left_as_it_was(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / "energy").mkdir(parents=True)
    (home / "energy" / "notes.txt").write_text("mine")
    assert main(["new-problem", "energy", "--dir", str(home)]) == 2
    assert f"{home / 'energy'} already exists" in capsys.readouterr().err
    assert [p.name for p in (home / "energy").iterdir()] == ["notes.txt"]


def test_no_path_hint_when_the_folder_is_already_listed(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(PROBLEMS_PATH_ENV, str(home))
    assert main(["new-problem", "listed", "--dir", str(home)]) == 0
    out = capsys.readouterr().out
    assert PROBLEMS_PATH_ENV not in out and "mlplatform train --problem listed" in out


def test_by_default_the_problem_goes_into_the_package_and_needs_no_path(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the package's own problems folder (which is on the package's path), moved to a
    # temporary one for the test
    monkeypatch.setattr(problems_package, "PROBLEMS_DIR", home)
    monkeypatch.setattr(problems_package, "__path__", [*problems_package.__path__, str(home)])
    assert main(["new-problem", "bundled_example"]) == 0
    out = capsys.readouterr().out
    assert f"created {home / 'bundled_example'}:" in out and PROBLEMS_PATH_ENV not in out
    problems.cache_clear()
    assert get_problem("bundled_example").folder == home / "bundled_example"
