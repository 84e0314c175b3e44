"""The `mlplatform` command as a user runs it: land, ingest, status."""

import json
from pathlib import Path

import pytest

from mlplatform.cli import main


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return tmp_path


def _status(capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_land_writes_one_folder_per_source_per_day(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["land", "--problem", "flight_delay", "--start", "2013-01-01", "--end", "2013-01-02"])
        == 0
    )
    landing = home / "data" / "landing" / "flight_delay"
    assert sorted(p.name for p in (landing / "flights").iterdir()) == ["2013-01-01", "2013-01-02"]
    assert [p.name for p in (landing / "weather" / "2013-01-02").iterdir()] == [
        "weather_2013-01-02.csv"
    ]
    assert (landing / "planes" / "snapshot" / "planes_snapshot.csv").exists()
    assert "flights" in capsys.readouterr().out
    status = _status(capsys)
    # every problem is listed; only the one landed has days
    assert set(status) == {"flight_delay", "city_temperature"}
    assert status["city_temperature"]["landed_days"] == 0
    assert status["city_temperature"]["broken"] is None
    assert status["flight_delay"] == {
        "broken": None,  # it loads (a problem that cannot load is listed with its error)
        "landed_days": 2,
        "ingested_partitions": 0,
        "quarantined": 0,
        "relanded_not_ingested": [],
        "rejected_days": [],
        "feature_views": [],
        "online_store_rows": 0,
        "training_set": None,
        "registered_versions": [],
        "aliases": {},
        "last_verdict": None,
        "deployment": {
            "stage": "none",
            "champion": None,
            "challenger": None,
            "canary_share": 0.0,
            "last_transition": None,
        },
        "service": {"url": None, "up": False},
        "monitoring": {"last_drift_partition": None, "retrains": 0, "rollbacks": 0},
        "timeline": None,
        "skew": None,
        "dashboard": {
            "workspace": str(home / "data" / "evidently"),
            "command": "mlplatform monitor --problem flight_delay",
            "snapshots": None,
            "days": None,
            "damaged_snapshots": 0,
        },
        "alerts": {
            "sent": 0,
            "by_kind": {},
            "webhook_delivered": 0,
            "webhook_failed": 0,
            "last": None,
            "log": str(home / "data" / "alerts" / "flight_delay" / "alerts.jsonl"),
        },
    }


def test_ingest_then_status_counts_partitions(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--problem", "flight_delay", "--start", "2013-01-01", "--end", "2013-01-02"]
    assert main(["land", *args]) == 0
    assert main(["ingest", *args]) == 0
    out = capsys.readouterr().out
    assert "3/3 runs succeeded" in out and str(home / "dagster_home") in out
    status = _status(capsys)["flight_delay"]
    assert (status["landed_days"], status["ingested_partitions"], status["quarantined"]) == (
        2,
        2,
        0,
    )
    assert (home / "dagster_home" / "dagster.yaml").is_symlink()


def test_ingest_reports_a_rejected_day_and_status_counts_it(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--problem", "flight_delay", "--start", "2013-01-01", "--end", "2013-01-01"]
    assert main(["land", *args]) == 0
    landed = (
        home
        / "data"
        / "landing"
        / "flight_delay"
        / "flights"
        / "2013-01-01"
        / "flights_2013-01-01.csv"
    )
    landed.write_bytes(landed.read_bytes()[:5000])

    assert main(["ingest", *args]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "truncated" in out
    assert _status(capsys)["flight_delay"]["quarantined"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["land", "--problem", "nope", "--start", "2013-01-01", "--end", "2013-01-01"],
            "unknown problem 'nope' (known: city_temperature, flight_delay; searched ",
        ),
        (
            ["land", "--problem", "flight_delay", "--start", "2012-12-31", "--end", "2013-01-01"],
            "flight_delay has data for 2013-01-01..2013-12-31",
        ),
    ],
)
def test_bad_arguments_get_a_clear_message(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
