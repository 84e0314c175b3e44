"""The verbs submit their runs to the instance: one backfill per range, failures named."""

from pathlib import Path

import dagster as dg
import pytest

from mlplatform.cli import main
from mlplatform.launch import RANGE_TAG
from mlplatform.runs import PID_TAG


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return tmp_path


def _landed_flights(home: Path, day: str) -> Path:
    return home / "data" / "landing" / "flight_delay" / "flights" / day / f"flights_{day}.csv"


def test_ingest_submits_one_backfill_and_names_the_failed_day(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--problem", "flight_delay", "--start", "2013-01-01", "--end", "2013-01-03"]
    assert main(["land", *args]) == 0
    bad = _landed_flights(home, "2013-01-02")
    bad.write_bytes(bad.read_bytes()[:5000])  # a truncated export: the schema check refuses it

    assert main(["ingest", *args]) == 1
    out = capsys.readouterr().out
    assert "3/4 runs succeeded" in out
    assert "failed: 2013-01-02" in out
    assert "ingestion 2013-01-02   FAILED" in out
    # the step's error as a user reads it: the message, without Dagster's class path
    assert "truncated" in out and "dagster._core" not in out

    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        runs = instance.get_runs()
        daily = [r for r in runs if r.job_name == "flight_delay_ingestion"]
        (reference,) = [r for r in runs if r.job_name != "flight_delay_ingestion"]
        # the three days are one backfill and one range; the reference run is apart
        assert sorted(r.tags["dagster/partition"] for r in daily) == [
            "2013-01-01",
            "2013-01-02",
            "2013-01-03",
        ]
        assert len({r.tags["dagster/backfill"] for r in daily}) == 1
        assert len({r.tags[RANGE_TAG] for r in daily}) == 1
        assert reference.tags[RANGE_TAG] != daily[0].tags[RANGE_TAG]
        # launched by the instance's run launcher, not executed in the command's process
        assert all(PID_TAG not in r.tags for r in runs)
        status = {r.tags["dagster/partition"]: r.status for r in daily}
        assert status == {
            "2013-01-01": dg.DagsterRunStatus.SUCCESS,
            "2013-01-02": dg.DagsterRunStatus.FAILURE,
            "2013-01-03": dg.DagsterRunStatus.SUCCESS,
        }


def test_in_process_keeps_executing_in_the_command(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--problem", "flight_delay", "--start", "2013-01-01", "--end", "2013-01-01"]
    assert main(["land", *args]) == 0
    assert main(["ingest", *args, "--in-process"]) == 0
    assert "2/2 runs succeeded" in capsys.readouterr().out
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2
        assert all(PID_TAG in r.tags and RANGE_TAG not in r.tags for r in runs)
