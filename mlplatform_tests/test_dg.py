"""`dg` sees the project from the repository root as a Dagster user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlplatform.definitions import defs

ROOT = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).with_name("dg")


def run_dg(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``dg <args>`` in the repository root, on an empty instance folder and user home."""
    env = {
        "DAGSTER_HOME": str(home / "dagster_home"),
        "HOME": str(home),  # no user-level dg config or telemetry state
        "VIRTUAL_ENV": sys.prefix,  # as from the activated venv
        "PATH": os.defpath,
    }
    (home / "dagster_home").mkdir(exist_ok=True)
    return subprocess.run(
        [str(DG), *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    out = run_dg("list", "defs", "--json", home=tmp_path_factory.mktemp("dg"))
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_dg_lists_every_asset_check_job_sensor_and_schedule_of_the_code_location(
    listed: dict[str, list[dict]],
) -> None:
    d = defs()
    assert {a["asset_key"] for a in listed["assets"]} == {
        k.to_user_string() for k in d.resolve_all_asset_keys()
    }
    assert {c["key"] for c in listed["asset_checks"]} == {
        f"{k.asset_key.to_user_string()}:{k.name}" for k in d.resolve_asset_graph().asset_check_keys
    }
    assert {j["name"] for j in listed["jobs"]} == {
        j.name for j in d.resolve_all_job_defs() if not j.name.startswith("__")
    }
    assert {s["name"] for s in listed["sensors"]} == {s.name for s in d.sensors or []}
    assert {s["name"] for s in listed["schedules"]} == {s.name for s in d.schedules or []}
    assert {r["name"] for r in listed["resources"]} >= {"lake", "feast", "mlflow"}


def test_dg_lists_what_a_user_looks_for_by_name(listed: dict[str, list[dict]]) -> None:
    assets = {a["asset_key"]: a for a in listed["assets"]}
    for key in ("raw_flights", "training_set", "model_candidate", "deployment", "drift_report"):
        assert f"flight_delay/{key}" in assets
    assert assets["flight_delay/model_candidate"]["group_name"] == "training"
    assert "flight_delay/evaluation_report:min_metric" in {c["key"] for c in listed["asset_checks"]}
    assert {"automation", "flight_delay_landing", "flight_delay_drift"} <= {
        s["name"] for s in listed["sensors"]
    }
    assert "flight_delay_retrain_schedule" in {s["name"] for s in listed["schedules"]}
    assert "flight_delay_training" in {j["name"] for j in listed["jobs"]}


def test_dg_check_defs_passes(tmp_path: Path) -> None:
    out = run_dg("check", "defs", home=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "All definitions loaded successfully" in out.stdout + out.stderr
    assert "does not match" not in out.stdout + out.stderr  # the venv warning
