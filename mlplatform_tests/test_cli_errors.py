"""The command refuses what it cannot do in one line, before any run starts."""

import os
from pathlib import Path

import dagster as dg
import pytest

from mlplatform.cli import main
from mlplatform.serving.server import announce, announced
from mlplatform_tests.helpers import fresh_instance


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return tmp_path


def _runs(home: Path) -> int:
    home.joinpath("dagster_home").mkdir(exist_ok=True)
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        return len(instance.get_run_records())


@pytest.mark.parametrize(
    "argv",
    [
        ["ingest", "--start", "2012-12-30", "--end", "2013-01-02"],
        ["ingest", "--start", "2013-12-30", "--end", "2014-01-02"],
        ["features", "--start", "2012-12-31", "--end", "2013-01-01"],
        ["ingest", "--start", "2013-01-03", "--end", "2013-01-02"],
    ],
)
def test_days_outside_the_data_are_refused_before_any_run(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code = main([argv[0], "--problem", "flight_delay", *argv[1:]])
    err = capsys.readouterr().err
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"mlplatform {argv[0]}: ")
    assert "has data for 2013-01-01..2013-12-31" in line or "is before start" in line
    assert _runs(home) == 0  # not even the reference run


def test_evaluate_refuses_an_unknown_version_and_an_override_without_who_and_why(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--problem", "flight_delay", "--version", "99"]) == 2
    assert "has no registered version 99 (registered: none)" in capsys.readouterr().err
    argv = ["evaluate", "--problem", "flight_delay", "--override-gate", "no_regression"]
    assert main(argv) == 2
    assert "--override-gate needs --by (who) and --reason (why)" in capsys.readouterr().err
    assert _runs(home) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--problem", "flight_delay", "--port", "99999"],
        ["serve", "--problem", "flight_delay", "--port", "-1"],
        ["serve", "--problem", "flight_delay", "--workers", "0"],
        ["rollout", "canary", "--problem", "flight_delay", "--reason", "r", "--share", "1.5"],
        ["rollout", "canary", "--problem", "flight_delay", "--reason", "r", "--share", "nan"],
    ],
)
def test_out_of_range_options_are_usage_errors(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_rollout_refusal_is_one_line_on_stderr(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rollback", "--problem", "flight_delay", "--reason", "r"]) == 1
    out = capsys.readouterr()
    # (a fresh MLflow store logs its table creation first: MLflow's lines, not ours)
    (line,) = [x for x in out.err.splitlines() if x.startswith("mlplatform")]
    assert line.startswith("mlplatform rollback: flight_delay: nothing to roll back to")
    assert out.out == "" and "Traceback" not in out.err


def test_stopping_the_newer_of_two_services_gives_the_older_its_announcement_back(
    tmp_path: Path,
) -> None:
    # the kind of 19_second_serve_removes_announcement on another port: the newer service
    # replaced the older's announcement and, when it stopped, left the older unfindable
    first = announce(tmp_path, "flight_delay", "http://127.0.0.1:18555")
    second = announce(tmp_path, "flight_delay", "http://127.0.0.1:18558")
    assert (announced(tmp_path, "flight_delay") or {})["url"] == "http://127.0.0.1:18558"
    second.withdraw()
    held = announced(tmp_path, "flight_delay") or {}
    assert held["url"] == "http://127.0.0.1:18555" and held["pid"] == os.getpid()
    first.withdraw()
    assert announced(tmp_path, "flight_delay") is None


def test_a_failed_step_prints_the_error_the_op_raised_not_dagsters_wrapper(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # a new user saw only "Error occurred while executing op ..." and had to read the event
    # log for the KeyError that said which feature had no value source
    from mlplatform.cli import _report_run

    @dg.op
    def model_candidate() -> None:
        raise KeyError("energy_demand: no value source for feature(s) ['day_of_week']")

    @dg.job
    def energy_demand_training() -> None:
        model_candidate()

    with fresh_instance() as instance:
        result = energy_demand_training.execute_in_process(instance=instance, raise_on_error=False)
    _report_run("energy_demand_training", None, result)

    out = capsys.readouterr().out
    assert "FAILED" in out
    assert (
        "model_candidate: \"energy_demand: no value source for feature(s) ['day_of_week']\"" in out
    )
    assert "Error occurred while executing" not in out
