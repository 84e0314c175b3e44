"""The code location loads, stays light, and every asset carries what a user looks for."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

from mlplatform.definitions import defs

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"ingestion", "features", "training", "evaluation", "deployment", "monitoring"}
HEAVY = ("feast", "evidently", "mlflow", "lightgbm", "optuna", "sklearn")


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs())


def test_asset_keys_snapshot() -> None:
    keys = {k.to_user_string() for k in defs().resolve_all_asset_keys()}
    names = (
        "raw_flights", "flights", "raw_weather", "weather", "raw_planes", "planes",
        "raw_airports", "airports",
        "origin_weather", "carrier_delays", "route_delays", "origin_delays", "plane",
        "feature_registry", "online_features", "training_set", "holdout_set", "model_candidate",
        "evaluation_report", "promotion", "deployment",
        "served_predictions", "online_outcomes", "online_performance", "drift_report",
        "serving_skew", "origin_ops", "carrier_ops", "plane_ops",
        "flights_stream", "weather_stream",
        "batch_predictions",
    )  # fmt: skip
    assert {k for k in keys if k.startswith("flight_delay/")} == {
        f"flight_delay/{name}" for name in names
    }
    # the second problem: hourly observations of two cities, no reference source
    city = (
        "raw_observations", "observations", "raw_forecasts", "forecasts", "observations_stream",
        "city_recent", "city_daily",
        "feature_registry", "online_features", "training_set", "holdout_set", "model_candidate",
        "evaluation_report", "promotion", "deployment",
        "served_predictions", "online_outcomes", "online_performance", "drift_report",
        "serving_skew", "batch_predictions",
    )  # fmt: skip
    assert {k for k in keys if k.startswith("city_temperature/")} == {
        f"city_temperature/{name}" for name in city
    }
    assert {k.split("/")[0] for k in keys} == {"flight_delay", "city_temperature"}


def test_jobs_snapshot() -> None:
    names = {j.name for j in defs().resolve_all_job_defs() if not j.name.startswith("__")}
    stages = (
        "ingestion", "reference", "features", "feature_store", "training", "evaluation",
        "deployment", "monitoring", "retraining", "scoring",
    )  # fmt: skip
    assert names == {f"{p}_{s}" for p in ("flight_delay", "city_temperature") for s in stages}


def test_every_asset_has_group_kinds_owner_and_description() -> None:
    specs = list(defs().resolve_all_asset_specs())
    assert specs
    for spec in specs:
        name = spec.key.to_user_string()
        assert spec.group_name in STAGES, name
        assert spec.kinds, name
        assert spec.owners == ["team:ml-platform"], name
        assert spec.description and len(spec.description) > 20, name


def test_raw_checks_are_blocking_and_drift_is_not() -> None:
    checks = {
        (s.asset_key.path[-1], s.name): s.blocking
        for a in defs().assets or []
        if isinstance(a, dg.AssetsDefinition)
        for s in a.check_specs
    }
    assert checks[("raw_flights", "schema")] is True
    assert checks[("raw_flights", "no_duplicate_keys")] is True
    assert checks[("raw_flights", "timestamps_in_partition")] is True
    assert checks[("raw_weather", "volume")] is True
    assert checks[("flights", "ingestion_drift")] is False
    assert checks[("serving_skew", "skew_within_threshold")] is False  # read by the rollout
    for name in ("point_in_time", "no_leakage", "online_parity"):
        assert checks[("training_set", name)] is True
    for name in ("point_in_time", "no_leakage"):
        assert checks[("holdout_set", name)] is True
    gates = {n: b for (asset, n), b in checks.items() if asset == "evaluation_report"}
    assert gates == {
        "min_metric": True,
        "no_regression": True,
        "no_slice_regression": True,
        "behavioural_cases": True,
        "p99_latency": True,
        "training_set_checks": True,
    }


def test_importing_definitions_does_not_import_the_heavy_stack() -> None:
    code = (
        "import sys, mlplatform.definitions as d; d.defs();"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == ""


def test_workspace_loads_with_the_dagster_cli(tmp_path: Path) -> None:
    dagster = Path(sys.executable).with_name("dagster")
    out = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"DAGSTER_HOME": str(tmp_path), "PATH": ""},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]


def test_sensors_and_schedules_are_on_by_default() -> None:
    d = defs()
    sensors = {s.name: s.default_status for s in d.sensors or []}
    kinds = ("rollout", "alerts", "landing", "labeled_volume", "drift")
    assert sensors == dict.fromkeys(
        [*(f"{p}_{k}" for p in ("flight_delay", "city_temperature") for k in kinds), "automation"],
        dg.DefaultSensorStatus.RUNNING,
    )
    schedules = {s.name: s for s in d.schedules or []}
    assert set(schedules) == {"flight_delay_retrain_schedule", "city_temperature_retrain_schedule"}
    for schedule in schedules.values():
        assert isinstance(schedule, dg.ScheduleDefinition)
        assert schedule.cron_schedule == "0 6 * * 1"
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_lib_features_does_not_import_the_problems_it_serves() -> None:
    # problems import lib.features.build (FeatureInputs); the reverse edge is for type checking only
    code = "import sys, mlplatform.lib.features.build; print('mlplatform.problems' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False"


def test_the_defs_folder_holds_exactly_what_tests_build_from_the_problem_factory() -> None:
    # tests and benchmarks call build_definitions (a changed spec, resources in tmp dirs);
    # the code location loads the defs folder: both must hold the same objects
    from mlplatform.definitions import build_definitions
    from mlplatform.problems import problems
    from mlplatform.resources import build_resources

    def names(d: dg.Definitions) -> dict[str, set[str]]:
        graph = d.resolve_asset_graph()
        return {
            "assets": {k.to_user_string() for k in graph.get_all_asset_keys()},
            "checks": {f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys},
            "jobs": {j.name for j in d.resolve_all_job_defs()},
            "sensors": {s.name for s in d.sensors or []},
            "schedules": {s.name for s in d.schedules or []},
        }

    assert names(defs()) == names(build_definitions(problems().values(), build_resources()))
