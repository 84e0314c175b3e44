"""The problem spec: the shipped one is valid, and every kind of mistake is named clearly."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlplatform.problems import PROBLEMS_DIR, Problem, problems
from mlplatform.spec import SpecError, load_spec

SPEC = PROBLEMS_DIR / "flight_delay" / "spec.yaml"


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "flight_delay" / "spec.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def raw() -> dict[str, Any]:
    return yaml.safe_load(SPEC.read_text())


def test_flight_delay_spec_is_found_and_valid(problem: Problem) -> None:
    assert "flight_delay" in problems()
    spec = problem.spec
    assert set(spec.daily_sources()) == {"flights", "weather"}
    assert spec.target.column == "arr_delay"
    assert spec.metric.name == "roc_auc"
    assert spec.gates.p99_latency_ms == spec.latency_budget_ms


def test_every_source_names_an_existing_schema(problem: Problem) -> None:
    for source in problem.spec.sources:
        assert problem.schema(source).__name__ == problem.spec.sources[source].schema_name


def test_unknown_key_is_named_with_file_and_path(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["sources"]["flights"]["colour"] = "blue"
    path = _write(tmp_path, raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert "sources.flights.colour: unknown key" in str(err.value)


def test_wrong_type_is_named(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["latency_budget_ms"] = "fast"
    with pytest.raises(SpecError, match=r"latency_budget_ms: Input should be a valid number"):
        load_spec(_write(tmp_path, raw))


def test_missing_target_is_named(tmp_path: Path, raw: dict[str, Any]) -> None:
    del raw["target"]
    with pytest.raises(SpecError, match=r"target: Field required"):
        load_spec(_write(tmp_path, raw))


def test_unknown_feature_source_is_named(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["features"][7]["source"] = "wether"
    with pytest.raises(SpecError) as err:
        load_spec(_write(tmp_path, raw))
    assert "features.7.source: unknown source 'wether'" in str(err.value)
    assert "temp" in str(err.value)


def test_outcome_column_as_feature_is_rejected_as_leakage(
    tmp_path: Path, raw: dict[str, Any]
) -> None:
    raw["features"].append(
        {"name": "dep_delay", "source": "flights", "kind": "numeric", "description": "x"}
    )
    with pytest.raises(SpecError, match=r"'dep_delay' is an outcome.*leakage"):
        load_spec(_write(tmp_path, raw))


def test_daily_source_without_timestamp_is_rejected(tmp_path: Path, raw: dict[str, Any]) -> None:
    del raw["sources"]["weather"]["event_timestamp"]
    with pytest.raises(SpecError, match=r"sources.weather: .*needs event_timestamp"):
        load_spec(_write(tmp_path, raw))


def test_spec_name_must_match_its_folder(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["name"] = "flights_late"
    with pytest.raises(SpecError, match=r"must match its folder 'flight_delay'"):
        load_spec(_write(tmp_path, raw))


def test_unreadable_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "flight_delay" / "spec.yaml"
    path.parent.mkdir()
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=rf"{path}: cannot read problem spec"):
        load_spec(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"task": "regression"},  # the target still compares, the metric is binary
            "target: a regression target is the column itself: drop operator and value",
        ),
        (
            {"task": "regression", "target_comparison": None},
            "metric.name: roc_auc is a binary metric; a regression problem uses one of "
            "['mae', 'r2', 'rmse']",
        ),
        (
            {"target_comparison": None},
            "target: a binary target is a comparison: give operator and value",
        ),
        (
            {"metric": {"name": "rmse", "direction": "minimize"}},
            "metric.name: rmse is a regression metric; a binary problem uses one of",
        ),
        (
            {"metric": {"name": "log_loss", "direction": "maximize"}},
            "metric: direction: log_loss improves when it is minimized, not maximized",
        ),
    ],
)
def test_task_target_and_metric_must_agree(
    tmp_path: Path, raw: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    change = dict(change)
    if "target_comparison" in change:
        del change["target_comparison"]
        del raw["target"]["operator"], raw["target"]["value"]
    raw |= change
    with pytest.raises(SpecError) as err:
        load_spec(_write(tmp_path, raw))
    assert message in str(err.value)


def test_a_regression_spec_with_its_metric_is_valid(tmp_path: Path, raw: dict[str, Any]) -> None:
    del raw["target"]["operator"], raw["target"]["value"]
    raw |= {"task": "regression", "metric": {"name": "rmse", "direction": "minimize"}}
    spec = load_spec(_write(tmp_path, raw))
    assert spec.is_regression and spec.target.operator is None


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    # the YAML parser named '<unicode string>' instead of the file a new user had edited
    path = tmp_path / "flight_delay" / "spec.yaml"
    path.parent.mkdir()
    path.write_text("name: flight_delay\nsources:\n  flights:\n kind: stream\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert f'in "{path}", line 4' in str(caught.value)
