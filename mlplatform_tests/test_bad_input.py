"""Bad input: each case gives the right check result or a clear failure, and loses nothing.

Each test corrupts the landed flights export of 2013-01-07 (a real day, after six ingested
days of history) the way real exports go wrong, then runs the day's ingestion job.
"""

import hashlib
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mlplatform_tests.helpers import (
    Platform,
    checks,
    failure_messages,
    materialized,
    quarantine_reports,
    started_steps,
)

DAY = "2013-01-07"
TYPED_STEP = "flight_delay__flights"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit_csv(path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    frame = pd.read_csv(path, dtype="string")
    edit(frame).to_csv(path, index=False)


def _assert_quarantined(platform: Platform, landed: Path, digest: str) -> dict:
    """The landing is untouched, and one quarantined copy with its report exists."""
    assert _sha(landed) == digest, "the landing zone must never be modified"
    (report,) = quarantine_reports(platform.lake.root, "flight_delay")
    assert report["source"] == "flights" and report["partition"] == DAY
    assert report["accepted"] is False
    copy = Path(report["quarantine"]) / landed.name
    assert _sha(copy) == digest
    return report


# -- files that cannot be read at all: the run fails with a message naming file and problem


@pytest.mark.parametrize(
    ("corrupt", "what"),
    [
        pytest.param(lambda b: b[: len(b) // 2], "truncated", id="truncated"),
        pytest.param(lambda b: b"", "file is empty", id="empty"),
        pytest.param(
            lambda b: b.replace(b"IAH", "Zürich".encode("latin-1"), 1),
            "not valid UTF-8",
            id="wrong-encoding",
        ),
        pytest.param(
            lambda b: b.replace(b"\n", b'\n"unterminated,', 1),
            "not a well-formed CSV",
            id="broken-quoting",
        ),
    ],
)
def test_unreadable_file_fails_naming_file_and_problem(
    platform: Platform, corrupt: Callable[[bytes], bytes], what: str
) -> None:
    landed = platform.landed_file("flights", DAY)
    landed.write_bytes(corrupt(landed.read_bytes()))
    digest = _sha(landed)

    result = platform.run_day(DAY)

    assert not result.success
    (message,) = failure_messages(result)
    assert str(landed) in message and what in message
    assert "flights" not in materialized(result)
    report = _assert_quarantined(platform, landed, digest)
    assert what in report["error"]


# -- readable files with bad content: the blocking check fails, downstream does not run


def _drop_carrier(f: pd.DataFrame) -> pd.DataFrame:
    return f.drop(columns=["carrier"])


def _extra_column(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(gate="B12")


def _unparseable(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[3, "dep_delay"] = "late"
    f.loc[5, "time_hour"] = "yesterday"
    return f


def _duplicates(f: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([f, f.head(3)], ignore_index=True)


def _outside_day(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[:4, "time_hour"] = "2013-01-09T15:00:00Z"
    return f


def _in_future(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[:1, "time_hour"] = "2099-01-07T15:00:00Z"
    return f


def _missing_planes(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[: len(f) // 2, "tailnum"] = pd.NA
    return f


def _tiny_batch(f: pd.DataFrame) -> pd.DataFrame:
    return f.head(5)


@pytest.mark.parametrize(
    ("edit", "check", "expect"),
    [
        pytest.param(_drop_carrier, "schema", "carrier", id="missing-column"),
        pytest.param(_extra_column, "schema", "gate", id="unexpected-column"),
        pytest.param(_unparseable, "schema", "dep_delay", id="unparseable-values"),
        pytest.param(_duplicates, "no_duplicate_keys", "6 rows share", id="duplicates"),
        pytest.param(_outside_day, "timestamps_in_partition", "5 time_hour", id="outside-day"),
        pytest.param(_in_future, "timestamps_in_partition", "2 in the future", id="future"),
        pytest.param(_missing_planes, "null_rates", "tailnum", id="null-rate"),
        pytest.param(_tiny_batch, "volume", "5 rows", id="extreme-volume"),
    ],
)
def test_bad_batch_is_blocked_by_its_check_and_quarantined(
    platform: Platform, edit: Callable[[pd.DataFrame], pd.DataFrame], check: str, expect: str
) -> None:
    landed = platform.landed_file("flights", DAY)
    _edit_csv(landed, edit)
    digest = _sha(landed)

    result = platform.run_day(DAY)

    evaluation = checks(result)[("raw_flights", check)]
    assert not evaluation.passed
    assert evaluation.severity.value == "ERROR"
    assert expect in (evaluation.description or "")
    # blocking: the typed table is not even attempted in this run; weather goes on
    assert TYPED_STEP not in started_steps(result)
    assert "flights" not in materialized(result)
    assert "weather" in materialized(result)
    report = _assert_quarantined(platform, landed, digest)
    assert check in [c["name"] for c in report["checks"] if not c["passed"]]


def test_schema_failure_cases_name_row_column_check_and_value(platform: Platform) -> None:
    _edit_csv(platform.landed_file("flights", DAY), _unparseable)

    evaluation = checks(platform.run_day(DAY))[("raw_flights", "schema")]

    table = evaluation.metadata["failure_cases"]
    assert isinstance(table, dg.TableMetadataValue)
    assert [c.name for c in table.schema.columns] == ["row", "column", "check", "value"]
    records = [r.data for r in table.records]
    assert {"row": "3", "column": "dep_delay", "check": "coerce_dtype('float64')"} | {
        "value": "late"
    } in records
    assert any(r["row"] == "5" and r["column"] == "time_hour" for r in records)
    assert any("yesterday" in str(r["value"]) for r in records)
    assert evaluation.metadata["failure_case_count"].value >= 2


def test_low_volume_only_warns_and_the_day_goes_through(platform: Platform) -> None:
    # 0.7 of a day is 0.74x its trailing median: a thin day warns; half a day blocks
    # (test_ingestion_hardening)
    _edit_csv(platform.landed_file("flights", DAY), lambda f: f.head(int(len(f) * 0.7)))

    result = platform.run_day(DAY)

    assert result.success
    evaluation = checks(result)[("raw_flights", "volume")]
    assert not evaluation.passed and evaluation.severity.value == "WARN"
    assert "flights" in materialized(result)
    assert quarantine_reports(platform.lake.root, "flight_delay") == []


def test_feed_in_wrong_units_warns_of_drift_without_blocking(platform: Platform) -> None:
    landed = platform.landed_file("weather", DAY)
    _edit_csv(landed, lambda f: f.assign(temp=(f["temp"].astype(float) - 32) / 1.8))

    result = platform.run_day(DAY)

    assert result.success
    drift = checks(result)[("weather", "ingestion_drift")]
    assert not drift.passed and drift.severity.value == "WARN"
    assert "temp" in (drift.description or "")
    assert Path(drift.metadata["report"].value).stat().st_size > 100_000


def test_relanding_a_corrected_file_recovers(platform: Platform) -> None:
    _edit_csv(platform.landed_file("flights", DAY), _duplicates)
    assert "flights" not in materialized(platform.run_day(DAY))

    platform.land(DAY, DAY)  # the corrected export replaces the bad one
    result = platform.run_day(DAY)

    assert result.success
    assert "flights" in materialized(result)
    assert bool(platform.lake.read_table("flight_delay", "flights", DAY)["carrier"].notna().all())
    # the rejected batch stays on record
    assert len(quarantine_reports(platform.lake.root, "flight_delay")) == 1


def test_typed_table_refuses_a_rejected_batch_in_a_later_run(platform: Platform) -> None:
    _edit_csv(platform.landed_file("flights", DAY), _duplicates)
    platform.run_day(DAY)

    job = platform.defs.resolve_job_def("flight_delay_ingestion")
    result = job.execute_in_process(
        instance=platform.instance,
        partition_key=DAY,
        raise_on_error=False,
        asset_selection=[dg.AssetKey(["flight_delay", "flights"])],
    )

    assert not result.success
    (message,) = failure_messages(result)
    assert "raw_flights 2013-01-07 was rejected by ['no_duplicate_keys']" in message
    assert "Re-land a corrected file" in message


def test_nothing_landed_fails_with_the_folder_it_looked_in(platform: Platform) -> None:
    result = platform.run_day("2013-01-08")

    assert not result.success
    messages = " ".join(failure_messages(result))
    assert "nothing landed for flight_delay/flights 2013-01-08" in messages
    assert str(platform.lake.landing_dir("flight_delay", "flights", "2013-01-08")) in messages
