"""TTL means the same online and offline: a value older than its view's TTL is missing on both.

A real Feast store over the test lake (2013-01-01..07 featured). Requests are real flights of
2013-01-07 moved to later prediction times: a day after the newest weather report the weather
(TTL 6 h) has expired while the delay statistics (TTL 2 days, stamped at the end of 01-07) have
not; at exactly 6 h the weather is still served, one second later it is not.
"""

import math
import shutil
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pytest

from mlplatform.lib.deployment.scoring import OnlineScorer
from mlplatform.lib.features.feature_store import (
    feature_matrix,
    feature_vector,
    feature_vectors,
    online_vector,
)
from mlplatform.lib.features.tables import EVENT_TS, FeatureTable, local_midnight
from mlplatform.lib.features.training_set import asof_reference
from mlplatform.lib.names import features_table
from mlplatform.problems import Problem
from mlplatform_tests.helpers import Platform, fresh_instance

TZ = "America/New_York"
WEATHER = ["temp", "humid", "wind_speed", "precip", "visib", "pressure"]  # pressure: no default


def _table(problem: Problem, name: str) -> FeatureTable:
    (table,) = [t for t in problem.feature_tables() if t.name == name]
    return table


@pytest.fixture(scope="module")
def lake(
    tmp_path_factory: pytest.TempPathFactory, featured_base: Path, problem: Problem
) -> Iterator[Platform]:
    """The featured lake, its online store holding the newest row of every entity."""
    root = tmp_path_factory.mktemp("ttl") / "data"
    shutil.copytree(featured_base, root)
    with fresh_instance() as instance:
        platform = Platform(problem, root, instance)
        store = platform.feast.store(problem)
        # past the newest event (rows stamped at the end of 01-07 included, whatever
        # materialize's end bound), so both paths see the same newest rows
        store.materialize(
            start_date=local_midnight(date(2013, 1, 6), TZ),
            end_date=local_midnight(date(2013, 1, 10), TZ),
        )
        yield platform


def _flights(platform: Platform) -> pd.DataFrame:
    """One real flight of 2013-01-07 per origin airport, with a known tail number."""
    flights = platform.lake.read_table("flight_delay", "flights", "2013-01-07")
    flights = flights[flights["tailnum"].notna()]
    return flights.groupby("origin").head(1).reset_index(drop=True)


def _stored(platform: Platform, problem: Problem, view: str, key: str, value: str) -> dict:
    """What the online store holds for one entity of one view, as stored."""
    store = platform.feast.store(problem)
    fields = [f.name for f in store.get_feature_view(view).features]
    got = store.get_online_features(
        features=[f"{view}:{f}" for f in fields], entity_rows=[{key: value}]
    ).to_dict()
    return {f: got[f][0] for f in fields}


def _at(flights: pd.DataFrame, moments: Sequence[datetime]) -> pd.DataFrame:
    return flights.assign(time_hour=pd.to_datetime(moments, utc=True)).reset_index(drop=True)


def _both_paths(
    platform: Platform, problem: Problem, requests: pd.DataFrame
) -> tuple[pd.DataFrame, list[list[Any]], pd.DataFrame]:
    """Model inputs offline (point-in-time join), online one by one, and online as a frame."""
    store = platform.feast.store(problem)
    service = platform.feast.service(problem, store)
    offline = feature_matrix(
        feature_vectors(problem, store, service, requests, online=False), problem.spec
    )
    singles = [
        feature_vector(online_vector(problem, store, service, r), problem.spec)
        for r in requests.to_dict("records")
    ]
    online = feature_matrix(
        feature_vectors(problem, store, service, requests, online=True), problem.spec
    )
    return offline, singles, online


def _defaults(problem: Problem) -> dict[str, Any]:
    return {f.name: f.default for f in problem.spec.features if f.default is not None}


def _same(a: list[Any], b: list[Any]) -> bool:
    """Equal element by element, NaN equal to NaN."""
    nan = lambda v: isinstance(v, float) and math.isnan(v)  # noqa: E731
    return len(a) == len(b) and all(
        (nan(x) and nan(y)) or x == y for x, y in zip(a, b, strict=True)
    )


def test_a_value_older_than_its_ttl_is_the_spec_default_on_both_paths(
    lake: Platform, problem: Problem
) -> None:
    flights = _flights(lake)
    weather = _table(problem, "origin_weather")
    newest = [
        _stored(lake, problem, weather.view, "origin", o)[weather.ts_column]
        for o in flights["origin"]
    ]
    # a day after the newest report anywhere: weather 24 h+ old (TTL 6 h), the delay
    # statistics (stamped at the end of 01-07, TTL 2 days) about a day old
    moment = pd.Timestamp(max(newest), unit="s", tz="UTC") + timedelta(days=1)
    requests = _at(flights, [moment] * len(flights))

    offline, singles, online = _both_paths(lake, problem, requests)

    pd.testing.assert_frame_equal(online, offline)
    for i, vector in enumerate(singles):
        assert _same(vector, offline.iloc[i].tolist()), (vector, offline.iloc[i].tolist())
    weather_defaults = {n: d for n, d in _defaults(problem).items() if n in WEATHER}
    assert sorted(weather_defaults) == sorted(n for n in WEATHER if n != "pressure")
    for name, default in weather_defaults.items():
        assert (offline[name] == default).all(), name
    assert offline["pressure"].isna().all()  # expired, and no default: missing on both paths
    # the carrier statistics are within their TTL: served exactly as stored
    for i, carrier in enumerate(requests["carrier"]):
        stored = _stored(lake, problem, "carrier_delays_fv", "carrier", carrier)
        assert stored["carrier_delay_rate_7d"] is not None
        assert offline.at[i, "carrier_delay_rate_7d"] == stored["carrier_delay_rate_7d"]

    store = lake.feast.store(problem)
    scorer = OnlineScorer(problem, store, lake.feast.service(problem, store))
    for request in cast("list[dict[str, Any]]", requests.to_dict("records")):
        values = online_vector(problem, store, scorer.service, request)
        assert values[weather.ts_column] is None  # the audit column expires with its view
        features = scorer.features(request)
        assert features.defaulted == sorted(weather_defaults)
        assert "pressure" in features.missing
        assert "carrier_delay_rate_7d" not in features.missing


def test_a_value_exactly_ttl_old_is_served_and_one_second_older_is_not(
    lake: Platform, problem: Problem
) -> None:
    """Feast's offline rule (kept while event time + TTL >= prediction time), online and audit."""
    flights = _flights(lake)
    weather = _table(problem, "origin_weather")
    stored = [_stored(lake, problem, weather.view, "origin", o) for o in flights["origin"]]
    edges = [pd.Timestamp(s[weather.ts_column], unit="s", tz="UTC") + weather.ttl for s in stored]
    kept = _at(flights, edges)
    dropped = _at(flights, [e + timedelta(seconds=1) for e in edges])

    kept_offline, kept_singles, kept_online = _both_paths(lake, problem, kept)
    dropped_offline, dropped_singles, dropped_online = _both_paths(lake, problem, dropped)

    pd.testing.assert_frame_equal(kept_online, kept_offline)
    pd.testing.assert_frame_equal(dropped_online, dropped_offline)
    for i in range(len(flights)):
        assert _same(kept_singles[i], kept_offline.iloc[i].tolist())
        assert _same(dropped_singles[i], dropped_offline.iloc[i].tolist())
        assert [kept_offline.at[i, c] for c in WEATHER] == [stored[i][c] for c in WEATHER]
        assert dropped_offline.at[i, "temp"] == _defaults(problem)["temp"]
        assert pd.isna(dropped_offline.at[i, "pressure"])
    # the point-in-time audit's reference join draws the same line
    days = lake.lake.partitions("flight_delay", features_table(weather))
    rows = pd.concat([problem.entity_rows(kept), problem.entity_rows(dropped)], ignore_index=True)
    offline_rows = lake.lake.read_days("flight_delay", features_table(weather), days)
    picked = asof_reference(rows, weather, offline_rows)
    n = len(flights)
    assert picked[:n].tolist() == [s[weather.ts_column] for s in stored]
    assert picked[n:].isna().all()
    assert (
        (rows[EVENT_TS][:n] - pd.to_datetime(picked[:n], unit="s", utc=True)).eq(weather.ttl).all()
    )
