"""Feature tables on real days: what each value knows, and when it became known."""

from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from mlplatform.lib.names import features_table
from mlplatform.lib.storage import DataLake
from mlplatform.problems import Problem
from mlplatform_tests.helpers import Platform, materialized

DAY = date(2013, 1, 6)


def _table(root: Path, name: str, day: date = DAY) -> pd.DataFrame:
    return DataLake(root).read_table("flight_delay", f"features/{name}", day)


def test_delay_rates_use_only_that_day_and_earlier_and_are_stamped_at_its_end(
    featured_base: Path,
) -> None:
    stats = _table(featured_base, "carrier_delays").set_index("carrier")
    week = [DAY - timedelta(days=d) for d in range(7)]  # 2012-12-31 is before the data
    flights = DataLake(featured_base).read_days("flight_delay", "flights", week)
    known = flights.dropna(subset=["arr_delay"])
    late = (known["arr_delay"] > 15).groupby(known["carrier"]).mean()
    today = known[known["day"] == DAY.day]
    late_today = (today["arr_delay"] > 15).groupby(today["carrier"]).mean()

    pd.testing.assert_series_equal(
        stats["carrier_delay_rate_7d"].sort_index(), late.sort_index(), check_names=False
    )
    pd.testing.assert_series_equal(
        stats["carrier_delay_rate_1d"].dropna().sort_index(),
        late_today.sort_index(),
        check_names=False,
    )
    # known at the end of the day described: local midnight, 05:00 UTC in January
    assert set(stats["event_timestamp"]) == {pd.Timestamp("2013-01-07T05:00:00Z")}


def test_weather_is_stamped_when_its_report_goes_out(featured_base: Path) -> None:
    weather = DataLake(featured_base).read_table("flight_delay", "weather", DAY)
    features = _table(featured_base, "origin_weather")
    observed = pd.to_datetime(weather["time_hour"], utc=True)
    # reported at :55, before the next hour's flights: a 14:00 flight reads 13:00's weather
    assert sorted(features["event_timestamp"]) == sorted(observed + timedelta(minutes=55))
    assert (
        features["origin_weather_ts"] == features["event_timestamp"].astype("int64") // 10**6
    ).all()


def test_plane_age_is_counted_from_the_flight_year(featured_base: Path) -> None:
    planes = _table(featured_base, "plane").set_index("tailnum")
    registry = (
        DataLake(featured_base).read_table("flight_delay", "planes", None).set_index("tailnum")
    )
    sample = planes.index[:20]
    expected = 2013 - registry.loc[sample, "year"]
    pd.testing.assert_series_equal(planes.loc[sample, "plane_age"], expected, check_names=False)
    assert set(planes["event_timestamp"]) == {pd.Timestamp("2013-01-06T05:00:00Z")}


def test_a_day_reads_only_its_own_trailing_window(featured: Platform) -> None:
    result = featured.run_features("2013-01-07")
    events = {
        e.asset_key.path[-1]: e for e in result.get_asset_materialization_events() if e.asset_key
    }
    assert (
        events["carrier_delays"].materialization.metadata["input_days"].value
        == "2012-12-11..2013-01-07"
    )
    assert (
        events["origin_weather"].materialization.metadata["input_days"].value
        == "2013-01-07..2013-01-07"
    )


def test_feature_views_declare_exactly_the_columns_the_tables_hold(
    featured_base: Path, problem: Problem
) -> None:
    objects = problem.feast_objects(featured_base)
    for table in problem.feature_tables():
        view = objects[table.view]
        frame = _table(featured_base, table.name)
        declared = {f.name for f in view.features}  # type: ignore[attr-defined]
        assert declared == set(frame.columns) - {*table.join_keys, "event_timestamp"}, table.name
        assert view.ttl == table.ttl  # type: ignore[attr-defined]


def test_every_spec_feature_has_a_source_in_the_service_or_the_request(
    featured_base: Path, problem: Problem
) -> None:
    objects = problem.feast_objects(featured_base)
    served = {f.name for fv in objects["service"].feature_view_projections for f in fv.features}  # type: ignore[attr-defined]
    requests = DataLake(featured_base).read_table("flight_delay", "flights", DAY).head(3)
    from_request = set(problem.entity_rows(requests).columns)
    missing = {f.name for f in problem.spec.features} - served - from_request
    assert missing == set()


def test_a_missing_input_day_fails_with_what_to_do(featured: Platform) -> None:
    result = featured.run_features("2013-01-08")
    assert not result.success
    assert "materialized" not in materialized(result)
    assert any(
        "the validated flights of that day is missing"
        in (
            e.step_failure_data.error.message
            if e.step_failure_data and e.step_failure_data.error
            else ""
        )
        for e in result.all_events
        if e.is_step_failure
    )
    assert (
        featured.lake.table_path(
            "flight_delay", features_table(featured.problem.feature_tables()[1]), "2013-01-08"
        ).exists()
        is False
    )
