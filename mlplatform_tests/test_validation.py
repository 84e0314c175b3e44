"""The pure checks, table-driven, on real days and on hand-made edge cases."""

from datetime import UTC, date, datetime

import pandas as pd
import pytest

from mlplatform.lib.ingestion.validation import (
    check_null_rates,
    check_timestamps,
    check_volume,
    day_bounds,
)
from mlplatform.lib.monitoring.drift import DriftMethodError, column_drift, drift_run
from mlplatform.problems.flight_delay.source import export_day

RULE = {"min_history": 3, "warn_range": (0.5, 2.0), "error_range": (0.1, 10.0)}


@pytest.mark.parametrize(
    ("rows", "history", "passed", "severity"),
    [
        (950, [900, 1000, 980], True, "WARN"),
        (400, [900, 1000, 980], False, "WARN"),
        (2500, [900, 1000, 980], False, "WARN"),
        (50, [900, 1000, 980], False, "ERROR"),
        (20000, [900, 1000, 980], False, "ERROR"),
        (5, [900, 1000], True, "WARN"),  # too little history to judge
    ],
)
def test_volume_warns_then_errors_as_the_ratio_grows_extreme(
    rows: int, history: list[int], passed: bool, severity: str
) -> None:
    outcome = check_volume(rows, history, **RULE)
    assert (outcome.passed, outcome.severity) == (passed, severity)


def test_partition_day_is_local_midnight_to_midnight() -> None:
    start, end = day_bounds(date(2013, 7, 4), "America/New_York")
    assert start == pd.Timestamp("2013-07-04T04:00:00Z")  # EDT, UTC-4
    assert end == pd.Timestamp("2013-07-05T04:00:00Z")


def test_every_real_flight_of_a_day_is_inside_its_partition() -> None:
    flights = export_day("flights", date(2013, 3, 10))  # the day clocks go forward
    outcome = check_timestamps(
        flights, "time_hour", date(2013, 3, 10), "America/New_York", datetime.now(UTC)
    )
    assert outcome.passed, outcome.reason


def test_null_rate_limit_is_per_column() -> None:
    frame = pd.DataFrame({"a": [1.0, None, None, 4.0], "b": [1.0, 2.0, 3.0, None]})
    outcome = check_null_rates(frame, {"a": 0.3, "b": 0.3})
    assert not outcome.passed and "a 50.0% > 30.0%" in outcome.reason and "b " not in outcome.reason


def test_drift_flags_a_unit_change_but_not_an_ordinary_day() -> None:
    reference = pd.concat([export_day("weather", date(2013, 2, d)) for d in range(1, 15)])
    today = export_day("weather", date(2013, 2, 15))
    celsius = today.assign(temp=(today["temp"] - 32) / 1.8)

    ordinary = column_drift(today, reference, ["temp", "humid"], "wasserstein", 3.5)
    changed = column_drift(celsius, reference, ["temp", "humid"], "wasserstein", 3.5)

    assert [d.drifted for d in ordinary] == [False, False]
    assert [(d.column, d.drifted) for d in changed] == [("temp", True), ("humid", False)]
    assert changed[0].score > 3.5 > ordinary[0].score


def test_a_numbers_only_drift_test_scores_categoricals_with_its_cat_method() -> None:
    # wasserstein cannot score a categorical column (city_temperature's city failed its
    # drift report in the replay): categoricals take cat_method, and without one the error
    # names the columns and the spec field to set, instead of Evidently's bare type error
    reference = pd.concat([export_day("weather", date(2013, 2, d)) for d in range(1, 15)])
    today = export_day("weather", date(2013, 2, 15))
    only_jfk = today.assign(origin="JFK")

    with pytest.raises(DriftMethodError, match=r"\['origin'\].*monitoring\.cat_stattest"):
        drift_run(today, reference, ["temp", "origin"], "wasserstein", 3.5)
    ordinary = drift_run(
        today,
        reference,
        ["temp", "origin"],
        "wasserstein",
        3.5,
        cat_method="jensenshannon",
        cat_threshold=0.1,
    )
    changed = drift_run(
        only_jfk,
        reference,
        ["temp", "origin"],
        "wasserstein",
        3.5,
        cat_method="jensenshannon",
        cat_threshold=0.1,
    )
    assert [(d.column, d.drifted) for d in ordinary.columns] == [("temp", False), ("origin", False)]
    assert [(d.column, d.drifted) for d in changed.columns] == [("temp", False), ("origin", True)]
    # the numeric column keeps its own test: the same score either way
    assert changed.columns[0].score == ordinary.columns[0].score
