"""Train/serve skew: the comparison itself, the daily asset on real stores, the rollout hold.

The asset tests serve real flights of the test lake through the service's own path
(``Runtime`` with an ``OnlineScorer`` over the Feast SQLite store, logged in the prediction
log) and rebuild them through the training path: once from an online store stale by a day
(ERROR), once from an online store brought up to each request's hour (no skew).
"""

import json
import math
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mlplatform.lib.monitoring.skew import (
    Tolerance,
    comparable,
    compare,
    hold_reason,
    sample,
    served_matrix,
    severity,
    traffic_days,
)
from mlplatform.problems import Problem
from mlplatform.spec import FeatureSpec
from mlplatform_tests.helpers import (
    FAST,
    STUMP,
    STUMP_TRAINING,
    Platform,
    failure_messages,
    fresh_instance,
    tuned_problem,
)

NAME = "flight_delay"
TZ = "America/New_York"


def _features() -> list[FeatureSpec]:
    return [
        FeatureSpec(name="temp", source="weather", kind="numeric", description="t"),
        FeatureSpec(name="carrier", source="flights", kind="categorical", description="c"),
        FeatureSpec(name="seats", source="planes", kind="numeric", description="s"),
    ]


def test_numbers_match_within_the_tolerance_nan_equals_nan_and_categories_exactly() -> None:
    index = pd.Index([10, 11, 12, 13])
    served = pd.DataFrame(
        {
            "temp": [50.0, 50.0 + 5e-7, 1e9, math.nan],
            "carrier": ["UA", "AA", None, "B6"],
            "seats": [math.nan, 100.0, 1.0, 2.0],
        },
        index=index,
    )
    offline = pd.DataFrame(
        {
            # 5e-7 apart: within 1e-6; 1e9 + 500 is within 1e-6 relative (1000)
            "temp": [50.0, 50.0, 1e9 + 500, math.nan],
            "carrier": ["UA", "DL", None, "B6"],
            # NaN vs 100 differs; 3e-6 apart differs (1e-6 + 1e-6 x 1); 2 and 2.0 agree
            "seats": [math.nan, math.nan, 1.000003, 2],
        },
        index=index,
    )
    keys = pd.Series(["a", "b", "c", "d"], index=index)

    result = compare(served, offline, keys, _features(), Tolerance(1e-6, 1e-6))

    assert result.rows == 4
    assert result.mismatch_rate == {"temp": 0.0, "carrier": 0.25, "seats": 0.5}
    assert result.mismatch_share == 0.5  # rows b and c
    assert result.worst_feature == "seats"
    # round-robin over the features, the highest rate first; missing vs present first
    assert result.worst == [
        {"key": "b", "feature": "seats", "served": 100.0, "offline": None},
        {"key": "b", "feature": "carrier", "served": "AA", "offline": "DL"},
        {"key": "c", "feature": "seats", "served": 1.0, "offline": 1.000003},
    ]
    looser = compare(served, offline, keys, _features(), Tolerance(1e-5, 0.0))
    assert looser.mismatch_rate["seats"] == 0.25  # 3e-6 now within; NaN vs 100 never


def test_a_category_read_as_a_number_by_one_path_is_the_same_category() -> None:
    features = [FeatureSpec(name="engines", source="planes", kind="categorical", description="e")]
    served = pd.DataFrame({"engines": [2, 2, None]}, dtype=object)
    offline = pd.DataFrame({"engines": [2.0, 3.0, math.nan]}, dtype=object)
    result = compare(served, offline, pd.Series(["x", "y", "z"]), features)
    assert result.mismatch_rate == {"engines": pytest.approx(1 / 3)}
    assert result.worst == [{"key": "y", "feature": "engines", "served": 2, "offline": 3.0}]


def test_examples_are_capped_and_empty_input_compares_nothing() -> None:
    n = 50
    served = pd.DataFrame({"temp": np.arange(n, dtype=float), "carrier": ["UA"] * n})
    offline = pd.DataFrame({"temp": np.arange(n, dtype=float) + 1, "carrier": ["AA"] * n})
    features = _features()[:2]
    result = compare(served, offline, pd.Series([str(i) for i in range(n)]), features, worst=7)
    assert len(result.worst) == 7
    assert result.mismatch_share == 1.0
    empty = compare(served.iloc[:0], offline.iloc[:0], pd.Series([], dtype=str), features)
    assert (empty.rows, empty.mismatch_share, empty.worst_feature) == (0, 0.0, None)
    with pytest.raises(ValueError, match="one index"):
        compare(served, offline.iloc[::-1], pd.Series(["k"] * n), features)


def test_severity_thresholds_and_a_seeded_sample_of_at_least_a_thousand() -> None:
    assert [severity(s, 0.01, 0.1) for s in (0.0, 0.01, 0.011, 0.1, 0.5)] == [
        "ok",
        "ok",
        "warn",
        "warn",
        "error",
    ]
    frame = pd.DataFrame({"v": range(3000)})
    assert len(sample(frame, 10, seed=0)) == 1000  # never below 1,000
    assert sample(frame, 1500, seed=3).equals(sample(frame, 1500, seed=3))
    assert sample(frame.iloc[:900], 1000, seed=0).equals(frame.iloc[:900])
    assert sample(frame, 1500, seed=3).index.is_monotonic_increasing


def test_logged_vectors_of_another_length_or_errors_are_not_compared(problem: Problem) -> None:
    spec = problem.spec
    width = len(spec.features)
    vector: list[Any] = [1.0] * width
    vector[[f.name for f in spec.features].index("carrier")] = "UA"
    log = pd.DataFrame(
        {
            "status": ["ok", "ok", "error", "ok"],
            "features": [
                json.dumps(vector),
                json.dumps(vector[:-1]),  # logged by a model with other inputs
                None,
                json.dumps([math.nan] * width),
            ],
        }
    )
    kept = comparable(log, spec)
    assert list(kept.index) == [0, 3]
    matrix = served_matrix(kept, spec)
    assert matrix.shape == (2, width) and pd.isna(matrix.loc[3, "temp"])
    assert matrix.loc[0, "carrier"] == "UA"


def test_the_hold_names_the_error_days_of_the_challengers_traffic() -> None:
    log = pd.DataFrame(
        {
            "event_time": pd.to_datetime(
                ["2013-01-06T15:00Z", "2013-01-07T03:00Z", "2013-01-08T15:00Z"], utc=True
            ),
            "challenger_version": ["2", "2", "3"],
        }
    )
    # 03:00 UTC on the 7th is the evening of the 6th in New York
    assert traffic_days(log, "2", TZ) == ["2013-01-06"]
    by_day = {
        "2013-01-06": {"severity": "error", "skew_share": 0.9, "worst_feature": "temp"},
        "2013-01-08": {"severity": "warn", "skew_share": 0.05, "worst_feature": "temp"},
    }
    reason = hold_reason(by_day, ["2013-01-06"])
    assert reason is not None and "2013-01-06 (share 0.900, worst temp)" in reason
    assert hold_reason(by_day, traffic_days(log, "3", TZ)) is None  # WARN never holds
    assert hold_reason(by_day, []) is None


# -- the asset and the rollout hold, on real stores --------------------------------------
# shadow and canary judged on the few requests served here; the metric never rolls back
ROLLOUT = {
    "shadow_requests": 30,
    "canary_share": 0.5,
    "canary_requests": 20,
    "min_outcomes": 30,
    "max_metric_drop": 1.0,
}
HOURS = (10, 11, 12)  # local departure hours served each day (~60 flights an hour)
SKEW_OPS = [f"{NAME}__served_predictions", f"{NAME}__serving_skew"]


@pytest.fixture(scope="module")
def serving(
    tmp_path_factory: pytest.TempPathFactory, featured_base: Path, problem: Problem
) -> Iterator[tuple[Platform, Any]]:
    """Champion 1 (stump) and challenger 2 (better) through the gates; a Runtime over them."""
    from mlplatform.lib.deployment import registry as reg
    from mlplatform.lib.tracking import local_tracking
    from mlplatform.serving.server import build_runtime
    from mlplatform_tests.helpers import BETTER

    root = tmp_path_factory.mktemp("skew") / "data"
    shutil.copytree(featured_base, root)
    with fresh_instance() as instance:
        platform = Platform(tuned_problem(problem, rollout=ROLLOUT), root, instance)
        # the gates read the training set's checks from this instance
        assert platform.run_feature_store().success
        for params, training in ((STUMP, STUMP_TRAINING), (BETTER, FAST)):
            result = platform.run_gated_training(params=params, **training)
            assert result.success, failure_messages(result)
        tracking = local_tracking(root)
        assert reg.aliases(tracking, NAME) == {"champion": "1", "challenger": "2"}
        runtime = build_runtime(platform.problem, root, tracking, flush_seconds=0.2)
        runtime.refresh()
        yield platform, runtime
        runtime.stop()


def _online_store_until(runtime: Any, ends: list[datetime]) -> None:
    """Empty the SQLite online store, then materialize every view up to each of ``ends``."""
    store = runtime.scorer.store
    prefix = f"{store.config.project}_"
    with sqlite3.connect(store.config.online_store.path) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        for table in (t for t in tables if t.startswith(prefix)):
            db.execute(f'delete from "{table}"')
    start = datetime(2012, 12, 30, tzinfo=ends[0].tzinfo)
    for end in ends:
        store.materialize(start_date=start, end_date=end)
        start = end


def _serve(platform: Platform, runtime: Any, day: str, hours: tuple[int, ...]) -> int:
    """Serve the day's flights scheduled at ``hours`` (local) through the Runtime; flush."""
    from mlplatform.serving.client import as_requests

    flights = platform.lake.read_days(NAME, "flights", [date.fromisoformat(day)])
    local = pd.to_datetime(flights["time_hour"], utc=True).dt.tz_convert(TZ).dt.hour
    chosen = flights[local.isin(hours)]
    for request in as_requests(platform.problem, chosen):
        runtime.predict(request)
    runtime.predictions.flush()
    return len(chosen)


def _serve_hourly(platform: Platform, runtime: Any, day: str) -> int:
    """Each hour's flights served from the online store brought up to that hour."""
    served = 0
    for i, hour in enumerate(HOURS):
        at = datetime.fromisoformat(f"{day}T{hour:02d}:00").replace(tzinfo=_tz())
        if i == 0:
            _online_store_until(runtime, [at])
        else:
            runtime.scorer.store.materialize(start_date=at - timedelta(hours=1), end_date=at)
        served += _serve(platform, runtime, day, (hour,))
    return served


def _tz() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(TZ)


def _skew_run(platform: Platform, day: str) -> tuple[dict[str, Any], Any]:
    """Run served_predictions and serving_skew for ``day``: (metadata, check evaluation)."""
    from mlplatform.defs.jobs import monitoring_job_name
    from mlplatform_tests.helpers import QUIET, checks

    job = platform.defs.resolve_job_def(monitoring_job_name(platform.problem))
    result = job.execute_in_process(
        instance=platform.instance,
        partition_key=day,
        raise_on_error=False,
        run_config=QUIET,
        op_selection=SKEW_OPS,
    )
    assert result.success, failure_messages(result)
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key and e.asset_key.path[-1] == "serving_skew"
    ]
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    return meta, checks(result)[("serving_skew", "skew_within_threshold")]


def _tick(platform: Platform) -> tuple[list[Any], str | None]:
    """One evaluation of the rollout sensor: (run requests, skip message)."""
    from mlplatform.defs.deployment.sensors import rollout_sensor_name

    sensor = platform.defs.resolve_sensor_def(rollout_sensor_name(platform.problem))
    resources = {"lake": platform.feast.lake, "mlflow": platform.mlflow}
    with dg.build_sensor_context(instance=platform.instance, resources=resources) as context:
        data = sensor.evaluate_tick(context)
    return list(data.run_requests or []), data.skip_message


def test_a_store_up_to_each_hour_shows_no_skew_then_a_stale_one_is_caught_and_holds_promotion(
    serving: tuple[Platform, Any],
) -> None:
    """One rollout, in order: a clean hourly day moves shadow to canary; a stale day holds full.

    One test, not two: the stale day's hold needs the canary the clean day promoted, and
    its status reads that day as the newest (a second test would pass only after the first).
    """
    from mlplatform.status import problem_status

    platform, runtime = serving
    assert platform.tick_rollout() is not None  # the challenger's shadow starts
    runtime.refresh()
    served = _serve_hourly(platform, runtime, "2013-01-07")

    meta, check = _skew_run(platform, "2013-01-07")

    assert meta["rows_compared"] == served > 100
    assert meta["skew_share"] == 0.0, meta["worst_examples"]
    assert set(meta["mismatch_rate"].values()) == {0.0}  # type: ignore[union-attr]
    assert (meta["worst_feature"], meta["worst_examples"], meta["severity"]) == ("", [], "ok")
    assert meta["challenger_versions"] == ["2"]
    assert check.passed
    # nothing held: the shadow scored enough requests within every criterion
    transition = platform.tick_rollout()
    assert transition is not None and transition[0] == "canary"

    # a stale online store, caught at ERROR
    runtime.refresh()  # canary now
    # the store as it stood the evening before: the 5th's values served on the 6th
    _online_store_until(runtime, [datetime(2013, 1, 6, tzinfo=_tz())])
    served = _serve(platform, runtime, "2013-01-06", HOURS)

    meta, check = _skew_run(platform, "2013-01-06")

    assert meta["rows_compared"] == served
    share, rates = meta["skew_share"], meta["mismatch_rate"]
    assert isinstance(share, float) and share > 0.9
    assert isinstance(rates, dict)
    # request features come from the request on both paths; stored ones were a day old
    assert {rates[f] for f in ("month", "day_of_week", "dep_hour", "carrier", "distance")} == {0.0}
    # the hours-old weather is what differs; the 5th's evening rates are the 6th's own
    assert min(rates[f] for f in ("temp", "humid", "wind_speed")) > 0.9
    assert rates["carrier_delay_rate_1d"] == rates["route_delay_rate_28d"] == 0.0
    assert meta["worst_feature"] in rates and meta["severity"] == "error"
    shown = meta["skewed_features"]  # a table on the asset page, the worst feature first
    assert isinstance(shown, dg.TableMetadataValue)
    records = [r.data for r in shown.records]
    assert {r["feature"]: r["mismatch_rate"] for r in records} == {
        f: v for f, v in rates.items() if v > 0
    }
    assert records[0]["mismatch_rate"] == max(rates.values())
    worst = meta["worst_examples"]
    assert isinstance(worst, list) and 0 < len(worst) <= 10
    assert set(worst[0]) == {"key", "feature", "served", "offline"}
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    status = problem_status(platform.problem, platform.lake, platform.instance)["skew"]
    assert (status["day"], status["severity"]) == ("2013-01-07", "ok")  # the newest day
    assert status["error_days"] == ["2013-01-06"]

    # canary -> full is due (answered, judged, within every criterion) but waits
    requests, skipped = _tick(platform)
    assert requests == []
    assert skipped is not None and "full held" in skipped and "2013-01-06 (share" in skipped

    # a rollback is never held: a latency budget no answer meets rolls the canary back
    from mlplatform_tests.helpers import tuned_problem as tuned

    strict = Platform(
        tuned(platform.problem, rollout={"max_p99_latency_ms": 1e-6}),
        platform.lake.root,
        platform.instance,
    )
    transition = strict.tick_rollout()
    assert transition is not None and transition[0] == "rolled_back"


def test_serving_skew_follows_the_days_feature_tables_by_automation(problem: Problem) -> None:
    from mlplatform.definitions import defs
    from mlplatform.defs.automation import ANY_DAY

    specs = {s.key: s for s in defs().resolve_all_asset_specs()}
    skew = specs[dg.AssetKey([NAME, "serving_skew"])]
    deps = {d.asset_key for d in skew.deps}
    tables = {dg.AssetKey([NAME, t.name]) for t in problem.feature_tables()}
    assert deps == {dg.AssetKey([NAME, "served_predictions"]), *tables}
    assert skew.automation_condition == ANY_DAY  # as the other monitoring assets
    assert skew.group_name == "monitoring" and skew.partitions_def is not None
