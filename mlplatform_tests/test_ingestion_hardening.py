"""Data that used to get in silently: null spellings, naive timestamps, partial and inflated days.

And advisory checks that used to break the data step. Each case damages a real day the way
field exports went wrong (the files of ../shared/cases are copied into ``cases/``), runs the
platform's own ingestion job and asserts what a user must see.
"""

import json
import shutil
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mlplatform.cli import main
from mlplatform.lib.ingestion.ingest import check_batch, describe_rejection
from mlplatform.lib.ingestion.reading import read_batch
from mlplatform.lib.ingestion.validation import check_volume, localize_timestamps, validate_schema
from mlplatform.lib.monitoring.drift import column_drift
from mlplatform.lib.monitoring.outcomes import drift
from mlplatform.problems import Problem
from mlplatform.problems.flight_delay.schemas import FlightsSchema
from mlplatform.problems.flight_delay.source import export_day
from mlplatform_tests.helpers import (
    QUIET,
    Platform,
    checks,
    failure_messages,
    materialized,
    quarantine_reports,
    started_steps,
)

CASES = Path(__file__).parent / "cases"
NAIVE_CASE = CASES / "05_naive_local_time_hour_flights_2013-01-16.csv"
EMPTY_DEWP_CASE = CASES / "06_dewp_all_empty_weather_2013-01-16.csv"
DAY = "2013-01-07"  # the fixtures' lake: 01-01..01-06 ingested, 01-07 landed
CASE_DAY = "2013-01-16"
SPELLINGS = ["N/A", "NULL", "None", "nan"]


def _edit_csv(path: Path, edit) -> None:
    # read as the exporter wrote it: only the empty field is null
    frame = pd.read_csv(path, dtype="string", keep_default_na=False, na_values=[""])
    edit(frame).to_csv(path, index=False)


def _with_spec(problem: Problem, source: str, **fields: object) -> Problem:
    sources = dict(problem.spec.sources)
    sources[source] = sources[source].model_copy(update=fields)
    return replace(problem, spec=problem.spec.model_copy(update={"sources": sources}))


def _spell_90_labels_as_null(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame.index[frame["arr_delay"].notna()][:90]
    frame.loc[rows, "arr_delay"] = [SPELLINGS[i % len(SPELLINGS)] for i in range(len(rows))]
    return frame


# -- 1. null spellings: only what the spec declares null may be null


def test_null_spellings_of_90_labels_are_a_schema_failure_not_90_lost_labels(
    platform: Platform,
) -> None:
    landed = platform.landed_file("flights", DAY)
    _edit_csv(landed, _spell_90_labels_as_null)

    result = platform.run_day(DAY)

    schema = checks(result)[("raw_flights", "schema")]
    assert not schema.passed and schema.severity.value == "ERROR"
    assert schema.metadata["failure_case_count"].value == 90
    assert "90 bad value(s) in arr_delay" in (schema.description or "")
    table = schema.metadata["failure_cases"]
    assert isinstance(table, dg.TableMetadataValue)
    shown = {(r.data["column"], r.data["value"]) for r in table.records}
    for spelling in SPELLINGS:
        assert ("arr_delay", spelling) in shown
    assert "flights" not in materialized(result)
    (report,) = quarantine_reports(platform.lake.root, "flight_delay")
    assert report["partition"] == DAY and not report["accepted"]


def test_only_the_declared_spellings_read_as_null(tmp_path: Path, problem: Problem) -> None:
    real = export_day("flights", date(2013, 1, 7))
    cancelled = real.index[real["arr_delay"].isna()]
    path = tmp_path / "flights_2013-01-07.csv"
    real.assign(arr_delay=real["arr_delay"].astype(object)).to_csv(path, index=False)
    spec = problem.spec.sources["flights"]

    frame = read_batch([path], spec.null_values)
    # the empty field is the spec's null: every cancelled flight keeps its null label
    assert frame["arr_delay"].isna().sum() == len(cancelled) > 0
    typed, outcome = validate_schema(frame, FlightsSchema)
    assert outcome.passed and typed is not None

    frame.loc[cancelled[:3], "arr_delay"] = "NA"
    assert not validate_schema(frame, FlightsSchema)[1].passed
    # a source whose exporter writes NA for null declares it, and only then is it null
    path.write_text(frame.fillna("").to_csv(index=False))
    declared = read_batch([path], ["", "NA"])
    assert validate_schema(declared, FlightsSchema)[1].passed


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_null_spelled_out_as_a_tail_number_is_refused(spelling: str) -> None:
    frame = export_day("flights", date(2013, 1, 7)).head(20).astype("string")
    frame.loc[2, "tailnum"] = spelling

    typed, outcome = validate_schema(frame, FlightsSchema)

    assert typed is None
    (case,) = outcome.details["failure_cases"]
    assert (case["row"], case["column"], case["value"]) == ("2", "tailnum", spelling)


@pytest.mark.parametrize("text", ["nan", "NaN", "-nan", "inf", "-Infinity"])
def test_text_that_coerces_to_nan_or_infinity_is_refused(text: str) -> None:
    frame = export_day("flights", date(2013, 1, 7)).head(20).astype("string")
    frame.loc[4, "arr_delay"] = text

    typed, outcome = validate_schema(frame, FlightsSchema)

    assert typed is None and not outcome.passed
    (case,) = outcome.details["failure_cases"]
    assert case == {"row": "4", "column": "arr_delay", "check": "finite_number", "value": text}


# -- 2. timestamps without an offset are refused unless the spec declares their zone


def test_naive_local_time_hour_is_refused_and_the_parts_show_the_shift(
    platform: Platform,
) -> None:
    """05_naive_local_time_hour_flights_2013-01-16: local times written without an offset."""
    platform.land(CASE_DAY, CASE_DAY)
    shutil.copyfile(NAIVE_CASE, platform.landed_file("flights", CASE_DAY))

    result = platform.run_day(CASE_DAY)

    evaluations = checks(result)
    schema = evaluations[("raw_flights", "schema")]
    assert not schema.passed
    assert schema.metadata["failure_case_count"].value == 901
    assert "timestamps without a UTC offset" in (schema.description or "")
    table = schema.metadata["failure_cases"]
    assert isinstance(table, dg.TableMetadataValue)
    assert {"row": "0", "column": "time_hour", "check": "utc_offset"} | {
        "value": "2013-01-16 21:00:00"
    } in [r.data for r in table.records]
    parts = evaluations[("raw_flights", "timestamp_parts_agree")]
    assert not parts.passed and parts.severity.value == "ERROR"
    assert "time_hour is typically 5 h behind hour" in (parts.description or "")
    assert "flights" not in materialized(result)
    assert "weather" in materialized(result)


def test_naive_time_hour_is_read_in_the_zone_the_spec_declares(
    platform: Platform, problem: Problem
) -> None:
    declared = _with_spec(problem, "flights", naive_timezone="America/New_York")
    local = Platform(declared, platform.lake.root, platform.instance)
    local.land(CASE_DAY, CASE_DAY)
    shutil.copyfile(NAIVE_CASE, local.landed_file("flights", CASE_DAY))

    result = local.run_day(CASE_DAY)

    assert result.success, failure_messages(result)
    typed = local.lake.read_table("flight_delay", "flights", CASE_DAY)
    real = export_day("flights", date(2013, 1, 16))
    expected = pd.to_datetime(real["time_hour"], utc=True)
    assert typed["time_hour"].tolist() == expected.tolist()


def test_a_local_time_marked_utc_is_caught_by_the_restated_hour(platform: Platform) -> None:
    """The other member of the kind: an offset that lies. Every stamp is inside the day."""

    def local_clock_as_utc(frame: pd.DataFrame) -> pd.DataFrame:
        local = pd.to_datetime(frame["time_hour"], utc=True).dt.tz_convert("America/New_York")
        return frame.assign(time_hour=local.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))

    _edit_csv(platform.landed_file("flights", DAY), local_clock_as_utc)

    evaluations = checks(platform.run_day(DAY))

    assert evaluations[("raw_flights", "schema")].passed
    assert evaluations[("raw_flights", "timestamps_in_partition")].passed
    parts = evaluations[("raw_flights", "timestamp_parts_agree")]
    assert not parts.passed
    assert parts.metadata["typical_shift_hours"].value == 5


def test_localizing_keeps_offsets_and_refuses_times_the_zone_does_not_have() -> None:
    frame = pd.DataFrame(
        {
            "time_hour": pd.array(
                [
                    "2013-01-16T21:00:00-05:00",  # an offset: kept
                    "2013-01-17T02:00:00Z",  # an offset: kept
                    "2013-01-16 21:00:00",  # naive
                    "2013-03-10 02:30:00",  # skipped when New York's clocks went forward
                    "yesterday",  # pandera's to report
                ],
                dtype="string",
            )
        }
    )
    frame = pd.concat(
        [frame, export_day("flights", date(2013, 1, 16)).drop(columns="time_hour").head(5)],
        axis=1,
    )

    refused, cases = localize_timestamps(frame, FlightsSchema, None)
    assert [(c["index"], c["check"]) for c in cases] == [(2, "utc_offset"), (3, "utc_offset")]
    assert refused is frame

    local, cases = localize_timestamps(frame, FlightsSchema, "America/New_York")
    assert [(c["index"], c["check"]) for c in cases] == [(3, "local_time_exists")]
    assert local["time_hour"][2] == "2013-01-16T21:00:00-05:00"
    assert local["time_hour"][0] == frame["time_hour"][0]
    assert local["time_hour"][4] == "yesterday"


# -- 3. partial and inflated days block; a real day can be released (who, why)


def _half(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.head(len(frame) // 2)  # cut at a row boundary


def _ten_times(frame: pd.DataFrame) -> pd.DataFrame:
    # ten times the day in unique fake flights: no duplicate key gives them away
    copies = [
        frame.assign(flight=(frame["flight"].astype(int) + 10000 * k).astype(str))
        for k in range(10)
    ]
    return pd.concat(copies, ignore_index=True)


@pytest.mark.parametrize(
    ("edit", "ratio"),
    [pytest.param(_half, 0.53, id="half"), pytest.param(_ten_times, 10.6, id="10x")],
)
def test_a_partial_or_inflated_day_is_blocked_by_volume(
    platform: Platform, edit, ratio: float
) -> None:
    _edit_csv(platform.landed_file("flights", DAY), edit)

    result = platform.run_day(DAY)

    volume = checks(result)[("raw_flights", "volume")]
    assert not volume.passed and volume.severity.value == "ERROR"
    assert volume.metadata["ratio"].value == pytest.approx(ratio, abs=0.05)
    assert "override the volume check" in (volume.description or "")
    assert "flight_delay__flights" not in started_steps(result)
    assert "weather" in materialized(result)
    (report,) = quarantine_reports(platform.lake.root, "flight_delay")
    assert "volume" in [c["name"] for c in report["checks"] if not c["passed"]]


def test_a_blocked_day_is_released_by_an_explicit_override(platform: Platform) -> None:
    _edit_csv(platform.landed_file("flights", DAY), _half)
    assert "flights" not in materialized(platform.run_day(DAY))

    job = platform.defs.resolve_job_def("flight_delay_ingestion")
    release = {"override_checks": ["volume"], "override_by": "ana", "override_reason": "strike"}
    result = job.execute_in_process(
        instance=platform.instance,
        partition_key=DAY,
        raise_on_error=False,
        run_config={**QUIET, "ops": {"flight_delay__raw_flights": {"config": release}}},
    )

    assert result.success, failure_messages(result)
    volume = checks(result)[("raw_flights", "volume")]
    assert not volume.passed and volume.severity.value == "WARN"
    assert (volume.description or "").startswith("OVERRIDDEN by ana (strike)")
    assert volume.metadata["override_by"].value == "ana"
    assert volume.metadata["override_reason"].value == "strike"
    assert "flights" in materialized(result)
    report = platform.lake.read_batch_report("flight_delay", "raw_flights", DAY)
    assert report is not None and report["accepted"]
    assert report["override"] == {"checks": ["volume"], "by": "ana", "reason": "strike"}


def test_an_override_cannot_release_the_schema(platform: Platform) -> None:
    _edit_csv(platform.landed_file("flights", DAY), _spell_90_labels_as_null)
    job = platform.defs.resolve_job_def("flight_delay_ingestion")
    release = {"override_checks": ["schema"], "override_by": "ana", "override_reason": "why"}

    result = job.execute_in_process(
        instance=platform.instance,
        partition_key=DAY,
        raise_on_error=False,
        run_config={**QUIET, "ops": {"flight_delay__raw_flights": {"config": release}}},
    )

    assert not result.success
    assert any("['schema'] cannot be overridden" in m for m in failure_messages(result))
    assert "flights" not in materialized(result)


def _daily_counts(source: str) -> dict[date, int]:
    start = date(2013, 1, 1)
    return {
        start + timedelta(days=n): len(export_day(source, start + timedelta(days=n)))
        for n in range(365)
    }


@pytest.mark.parametrize("source", ["flights", "weather"])
def test_no_real_2013_day_blocks_and_every_half_or_tenfold_day_does(
    problem: Problem, source: str
) -> None:
    """The spec's bands over the whole real year, accepted day after day from an empty lake.

    Jan 1 (no history), weekends, July 4, Thanksgiving and Christmas must pass; the same
    days cut in half or inflated tenfold must block once there is history to judge.
    """
    rule = problem.spec.sources[source].volume
    assert rule is not None
    counts, accepted = _daily_counts(source), {}
    blocked, warned, judged, caught = [], [], 0, 0
    for day, rows in counts.items():
        window = [day - timedelta(days=b) for b in range(1, rule.trailing_days + 1)]
        history = [accepted[d] for d in window if d in accepted]
        same = [accepted[d] for d in window if d in accepted and d.weekday() == day.weekday()]

        def judge(n: int, history=history, same=same):
            return check_volume(
                n,
                history,
                min_history=rule.min_history,
                warn_range=rule.warn_range,
                error_range=rule.error_range,
                same_weekday=same,
            )

        outcome = judge(rows)
        blocked += [day] if outcome.blocks else []
        warned += [day] if not outcome.passed else []
        if len(history) >= rule.min_history:
            judged += 1
            caught += judge(rows // 2).blocks and judge(rows * 10).blocks
        if not outcome.blocks:
            accepted[day] = rows

    # the package has no weather for Dec 31: an empty day, rightly blocked (README)
    assert blocked == ([date(2013, 12, 31)] if source == "weather" else [])
    assert len(warned) <= 10  # flights: early-January Saturdays and holidays
    assert caught == judged > 350
    if source == "flights":
        assert date(2013, 11, 28) in warned  # Thanksgiving, 0.64x: a warning, not a block


# -- 6. advisory checks never break the data step


def test_an_all_empty_column_leaves_drift_not_evaluated_and_the_day_built(
    platform: Platform,
) -> None:
    """06_dewp_all_empty_weather_2013-01-16: Evidently raised on the empty dewp column."""
    platform.land(CASE_DAY, CASE_DAY)
    shutil.copyfile(EMPTY_DEWP_CASE, platform.landed_file("weather", CASE_DAY))

    result = platform.run_day(CASE_DAY)

    assert result.success, failure_messages(result)
    assert {"weather", "flights"} <= materialized(result)
    drift_check = checks(result)[("weather", "ingestion_drift")]
    assert drift_check.severity.value == "WARN" and not drift_check.passed
    assert "not evaluated: dewp has no values" in (drift_check.description or "")
    assert drift_check.metadata["not_evaluated"].value == {"dewp": "dewp has no values"}
    assert "drift/temp" in drift_check.metadata and "drift/dewp" not in drift_check.metadata
    typed = platform.lake.read_table("flight_delay", "weather", CASE_DAY)
    assert len(typed) == 72 and typed["dewp"].isna().all()


def test_column_drift_scores_what_it_can_and_says_what_it_cannot() -> None:
    reference = pd.concat([export_day("weather", date(2013, 1, d)) for d in range(2, 16)])
    current = pd.read_csv(EMPTY_DEWP_CASE)
    columns = ["temp", "dewp", "humid"]

    drifts = {d.column: d for d in column_drift(current, reference, columns, "wasserstein", 3.5)}
    assert drifts["dewp"].note == "dewp has no values" and not drifts["dewp"].drifted
    assert np.isnan(drifts["dewp"].score)
    assert drifts["temp"].evaluated and drifts["humid"].evaluated

    empty_reference = reference.assign(dewp=np.nan)
    (only,) = column_drift(current, empty_reference, ["dewp"], "wasserstein", 3.5)
    assert only.note == "dewp has no values" and not only.evaluated


def test_monitoring_drift_reports_a_feature_without_values_instead_of_raising(
    problem: Problem, tmp_path: Path
) -> None:
    """The monitoring drift report shares lib.monitoring.drift: a feature served all-missing."""
    spec = problem.spec
    flights = export_day("flights", date(2013, 2, 15))
    weather = export_day("weather", date(2013, 2, 15))
    rng = np.random.default_rng(0)

    def features(n: int, shift: float) -> pd.DataFrame:
        cols = {}
        for f in spec.features:
            if f.kind == "categorical":
                cols[f.name] = rng.choice(flights["carrier"].to_numpy(), n)
            elif f.name in weather.columns:
                cols[f.name] = rng.choice(weather[f.name].dropna().to_numpy(), n) + shift
            else:
                cols[f.name] = rng.choice(flights["distance"].to_numpy(), n).astype(float)
        return pd.DataFrame(cols)

    current = features(300, 0.0).assign(pressure=np.nan)
    reference = features(600, 0.0)

    result = drift(
        current, reference, rng.random(300), rng.random(600), spec, tmp_path / "drift.html"
    )

    assert result["not_evaluated"] == {"pressure": "pressure has no values"}
    assert "pressure" not in result["scores"] and len(result["scores"]) == len(spec.features) - 1
    assert 0.0 <= result["drift_share"] <= 1.0


# -- 7. a failed ingestion says which file, which check, why, and where it went


def test_describe_rejection_names_file_check_cases_and_quarantine(
    tmp_path: Path, problem: Problem
) -> None:
    spec = problem.spec.sources["flights"]
    frame = _spell_90_labels_as_null(
        export_day("flights", date(2013, 1, 7)).astype("string").astype(object)
    )
    outcomes = check_batch(
        frame.astype("string"),
        spec,
        FlightsSchema,
        date(2013, 1, 7),
        "America/New_York",
        [],
        datetime.now(UTC),
    )
    report = {
        "source": "flights",
        "partition": DAY,
        "files": ["/landing/flights_2013-01-07.csv"],
        "accepted": False,
        "checks": [o.to_dict() for o in outcomes],
        "quarantine": "/quarantine/flights/2013-01-07/x",
    }

    lines = describe_rejection(report, max_cases=2)

    assert lines[0] == f"flights {DAY}: rejected"
    assert "  file: /landing/flights_2013-01-07.csv" in lines
    assert any(line.startswith("  check schema: 90 bad value(s) in arr_delay") for line in lines)
    assert any("column=arr_delay" in line and "value=N/A" in line for line in lines)
    assert "    ... 88 more in the report" in lines
    assert lines[-1] == "  quarantined at: /quarantine/flights/2013-01-07/x"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return tmp_path


def test_cli_ingest_explains_a_rejected_day_and_releases_it_with_who_and_why(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--problem", "flight_delay", "--start", "2013-01-01", "--end", "2013-01-01"]
    assert main(["land", *args]) == 0
    landed = home / "data/landing/flight_delay/flights/2013-01-01/flights_2013-01-01.csv"
    _edit_csv(landed, lambda f: f.assign(tailnum=f["tailnum"].where(f.index % 2 == 0)))
    capsys.readouterr()

    assert main(["ingest", *args]) == 1
    out = capsys.readouterr().out
    assert "flights 2013-01-01: rejected" in out
    assert f"file: {landed}" in out
    assert "check null_rates: null rate over limit: tailnum" in out
    (report,) = quarantine_reports(home / "data", "flight_delay")
    assert f"quarantined at: {report['quarantine']}" in out

    assert (
        main(["ingest", *args, "--override-check", "schema", "--by", "ana", "--reason", "x"]) == 2
    )
    assert "cannot be overridden" in capsys.readouterr().err
    assert main(["ingest", *args, "--override-check", "null_rates"]) == 2
    assert "needs --by (who) and --reason (why)" in capsys.readouterr().err

    release = ["--override-check", "null_rates", "--by", "ana", "--reason", "half the tails"]
    assert main(["ingest", *args, *release]) == 0
    out = capsys.readouterr().out
    assert "flights 2013-01-01: null_rates OVERRIDDEN by ana (half the tails)" in out
    stored = home / "data/warehouse/flight_delay/raw_flights"
    reports = [json.loads(p.read_text()) for p in stored.rglob("*.json")]
    assert [r["override"]["by"] for r in reports if r.get("override")] == ["ana"]
