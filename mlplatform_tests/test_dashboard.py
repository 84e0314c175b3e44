"""Monitoring history in Evidently: served days monitored, read back from the workspace.

A champion (the stump) serves real flights of three days of the test lake through the
service's own path (``Runtime``, Feast SQLite store, prediction log); each day's monitoring
job then writes its snapshots. The workspace is read back with Evidently's own API, and
``evidently ui`` (started by ``mlplatform monitor``) is asked over HTTP for the project.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mlplatform.lib.monitoring.dashboard import KINDS, snapshot_id
from mlplatform.problems import Problem
from mlplatform_tests.helpers import (
    STUMP,
    STUMP_TRAINING,
    Platform,
    failure_messages,
    fresh_instance,
)

NAME = "flight_delay"
TZ = "America/New_York"
DAYS = [date(2013, 1, 5), date(2013, 1, 6), date(2013, 1, 7)]
HOURS = (8, 12, 17)  # local departure hours served each day: ~160 flights, three hour bands


def _serve(platform: Platform, runtime: Any, day: date) -> int:
    from mlplatform.serving.client import as_requests

    flights = platform.lake.read_days(NAME, "flights", [day])
    local = pd.to_datetime(flights["time_hour"], utc=True).dt.tz_convert(TZ).dt.hour
    chosen = flights[local.isin(HOURS)]
    for request in as_requests(platform.problem, chosen):
        runtime.predict(request)
    runtime.predictions.flush()
    return len(chosen)


@pytest.fixture(scope="module")
def monitored(
    tmp_path_factory: pytest.TempPathFactory, featured_base: Path, problem: Problem
) -> Iterator[tuple[Platform, dict[date, dg.ExecuteInProcessResult]]]:
    """Three served days, each through the monitoring job; the platform and the runs."""
    from mlplatform.lib.tracking import local_tracking
    from mlplatform.serving.server import build_runtime
    from mlplatform_tests.helpers import tuned_problem

    root = tmp_path_factory.mktemp("dashboard") / "data"
    shutil.copytree(featured_base, root)
    with fresh_instance() as instance:
        platform = Platform(tuned_problem(problem), root, instance)
        assert platform.run_feature_store().success
        result = platform.run_gated_training(params=STUMP, **STUMP_TRAINING)
        assert result.success, failure_messages(result)
        runtime = build_runtime(platform.problem, root, local_tracking(root), flush_seconds=0.2)
        runtime.refresh()
        try:
            for day in DAYS:
                assert _serve(platform, runtime, day) > 100
        finally:
            runtime.stop()
        runs = {}
        for day in DAYS:
            runs[day] = platform.run_monitoring(day.isoformat())
            assert runs[day].success, failure_messages(runs[day])
        yield platform, runs


def _meta(result: dg.ExecuteInProcessResult, name: str) -> dict[str, Any]:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key and e.asset_key.path[-1] == name
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _values(model: Any, metric: str) -> dict[str, float]:
    """A snapshot's single values of ``metric`` (Evidently type name), by their labels."""
    out = {}
    for result in model.metric_results.values():
        params = result.metric_value_location.metric.params
        if params["type"] != f"evidently:metric_v2:{metric}":
            continue
        if hasattr(result, "value"):
            label = params.get("label", params.get("column", ""))
            out[str(label)] = float(result.value)
        else:  # a count and a share
            out["count"], out["share"] = float(result.count.value), float(result.share.value)
    return out


def test_each_monitored_day_is_one_snapshot_per_kind_stamped_with_its_day(
    monitored: tuple[Platform, dict[date, dg.ExecuteInProcessResult]],
) -> None:
    from evidently.ui.workspace import Workspace

    platform, _ = monitored
    workspace = Workspace(str(platform.lake.root / "evidently"))
    (project,) = workspace.search_project(NAME)
    runs_stored = {str(s) for s in workspace.list_runs(project.id)}
    expected = {str(snapshot_id(NAME, k, d)): (k, d) for k in KINDS for d in DAYS}
    assert runs_stored == set(expected)
    for sid, (kind, day) in expected.items():
        model = workspace.get_run(project.id, sid)
        assert model is not None
        assert model.timestamp == datetime(day.year, day.month, day.day)
        assert model.tags == [kind] and model.metadata["day"] == day.isoformat()

    panels = [p.title for p in workspace.get_dashboard(project.id).panels]
    assert panels[:3] == [
        "Online roc_auc per model version",
        "Share of is_delayed: observed and predicted",  # named after the spec's target
        "Drift share",
    ]
    assert {f"Online roc_auc by {s}" for s in platform.problem.spec.gates.slices} <= set(panels)
    assert {"Prediction distribution", "Train/serve skew", "Drifted features"} <= set(panels)

    # a day monitored again replaces its snapshots: still one per day and kind
    again = platform.run_monitoring(DAYS[-1].isoformat())
    assert again.success, failure_messages(again)
    assert {str(s) for s in workspace.list_runs(project.id)} == set(expected)


def test_snapshots_hold_the_days_figures_per_version_and_per_slice(
    monitored: tuple[Platform, dict[date, dg.ExecuteInProcessResult]],
) -> None:
    from evidently.ui.workspace import Workspace
    from sklearn.metrics import roc_auc_score

    from mlplatform.lib.monitoring.dashboard import MIN_GROUP_ROWS

    platform, runs = monitored
    workspace = Workspace(str(platform.lake.root / "evidently"))
    (project,) = workspace.search_project(NAME)
    day = DAYS[-1]

    def snapshot(kind: str) -> Any:
        return workspace.get_run(project.id, snapshot_id(NAME, kind, day))

    performance = _meta(runs[day], "online_performance")
    online = _values(snapshot("performance"), "OnlineMetric")
    assert online[""] == pytest.approx(performance["online_roc_auc"])
    by_group = _values(snapshot("performance"), "GroupByMetric")
    assert by_group["1"] == pytest.approx(performance["online_roc_auc"])  # the one version
    # each origin's own AUC (Evidently's GroupBy of RocAuc would give each the overall one)
    joined = platform.lake.read_days(NAME, "monitoring/online_outcomes", [day])
    joined = joined[joined["label"].notna()]
    origins = joined["request"].map(lambda r: json.loads(r)["origin"])
    expected = {
        o: roc_auc_score(rows["label"], rows["prediction"])
        for o, rows in joined.groupby(origins)
        if len(rows) >= MIN_GROUP_ROWS and rows["label"].nunique() == 2
    }
    assert len(expected) >= 2 and len(set(np.round(list(expected.values()), 6))) > 1
    for origin, auc in expected.items():
        assert by_group[origin] == pytest.approx(auc)
    assert {"morning", "afternoon"} <= set(by_group)  # hour_band, a derived slice

    drift = _meta(runs[day], "drift_report")
    counted = _values(snapshot("drift"), "DriftedColumnsCount")
    assert counted["share"] == pytest.approx(drift["drift_share"])
    assert counted["count"] == drift["drifted_count"] == len(drift["drifted_features"])
    scores = _values(snapshot("drift"), "ValueDrift")
    assert scores["prediction"] == pytest.approx(drift["prediction_drift_score"])

    skew = _meta(runs[day], "serving_skew")
    means = _values(snapshot("skew"), "MeanValue")
    assert means["any_feature"] == pytest.approx(skew["skew_share"])

    served = _values(snapshot("serving"), "RowCount")
    assert served[""] == _meta(runs[day], "served_predictions")["dagster/row_count"]


def test_status_names_the_workspace_its_days_and_the_command(
    monitored: tuple[Platform, dict[date, dg.ExecuteInProcessResult]],
) -> None:
    from mlplatform.status import problem_status

    platform, _ = monitored
    status = problem_status(platform.problem, platform.lake, platform.instance)["dashboard"]
    assert status == {
        "workspace": str(platform.lake.root / "evidently"),
        "command": f"mlplatform monitor --problem {NAME}",
        "snapshots": dict.fromkeys(KINDS, len(DAYS)),
        "days": {"first": DAYS[0].isoformat(), "last": DAYS[-1].isoformat()},
        "damaged_snapshots": 0,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlplatform_monitor_serves_the_project_on_localhost(
    monitored: tuple[Platform, dict[date, dg.ExecuteInProcessResult]],
) -> None:
    platform, _ = monitored
    port = _free_port()
    env = {**os.environ, "MLPLATFORM_DATA_DIR": str(platform.lake.root), "MLPLATFORM_ENV": "local"}
    command = [sys.executable, "-m", "mlplatform.cli", "monitor", "--problem", NAME]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/api/projects"
    v2 = f"http://127.0.0.1:{port}/api/v2"
    try:
        started = time.monotonic()
        projects = None
        while time.monotonic() - started < 60 and process.poll() is None:
            try:
                with urllib.request.urlopen(base, timeout=2) as answer:
                    projects = json.load(answer)
                break
            except OSError:
                time.sleep(0.5)
        assert projects is not None, "evidently ui did not answer within 60 s"
        (project,) = [p for p in projects if p["name"] == NAME]
        with urllib.request.urlopen(f"{base}/{project['id']}/snapshots", timeout=5) as answer:
            snapshots = json.load(answer)
        assert len(snapshots) == len(KINDS) * len(DAYS)
        with urllib.request.urlopen(f"{v2}/dashboards/{project['id']}", timeout=5) as answer:
            panel = json.load(answer)["panels"][0]
        assert panel["title"] == "Online roc_auc per model version"
        # the panel's first line as the page asks for it: version 1's metric on each day
        wanted = {k: panel["values"][0][k] for k in ("tags", "metadata", "metric")}
        wanted["metric_labels"] = panel["values"][0]["metric_labels"]
        request = urllib.request.Request(
            f"{v2}/snapshots/{project['id']}/data_series_batch",
            data=json.dumps({"series_filter": [wanted]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            series = json.load(answer)
        assert [s["timestamp"][:10] for s in series["sources"]] == [d.isoformat() for d in DAYS]
        (version,) = series["series"]
        assert version["params"]["label"] == "1" and len(version["values"]) == len(DAYS)
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=20)
    first = (process.stdout.read() if process.stdout else b"").decode().splitlines()[0]
    assert first.startswith(f"{NAME}: http://127.0.0.1:{port}/projects/")


def test_the_workspace_is_under_the_data_folder_or_the_production_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlplatform.resources import DashboardResource, open_resources

    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(tmp_path))
    local = open_resources("dashboard")["dashboard"]
    assert isinstance(local, DashboardResource) and local.path() == str(tmp_path / "evidently")
    monkeypatch.setenv("MLPLATFORM_ENV", "production")
    monkeypatch.setenv("MLPLATFORM_EVIDENTLY_WORKSPACE", "")  # read at launch (a dg.EnvVar)
    shared = open_resources("dashboard")["dashboard"]  # the shared data volume, unless set
    assert isinstance(shared, DashboardResource) and shared.path() == str(tmp_path / "evidently")
    monkeypatch.setenv("MLPLATFORM_EVIDENTLY_WORKSPACE", "/srv/shared/evidently")
    shared = open_resources("dashboard")["dashboard"]
    assert isinstance(shared, DashboardResource) and shared.path() == "/srv/shared/evidently"


def test_a_snapshot_cut_short_is_moved_aside_and_monitoring_goes_on(
    monitored: tuple[Platform, dict[date, dg.ExecuteInProcessResult]],
) -> None:
    """A process killed while Evidently wrote a snapshot (seen in a replay stopped by a
    timeout) left half a file: Evidently then failed to open the workspace, and every later
    day's monitoring failed with it. The day after runs; the damaged file is kept aside."""
    from evidently.ui.workspace import Workspace

    from mlplatform.lib.monitoring.dashboard import open_workspace, workspace_status

    platform, _ = monitored
    folder = platform.lake.root / "evidently"
    sid = snapshot_id(NAME, "drift", DAYS[0])
    (file,) = folder.glob(f"*/snapshots/{sid}.json")
    cut = file.read_bytes()[: file.stat().st_size // 2]
    file.write_bytes(cut)

    again = platform.run_monitoring(DAYS[-1].isoformat())
    assert again.success, failure_messages(again)
    # recording a day reads only the project's own files, never the stored snapshots
    assert file.read_bytes() == cut
    # opening the workspace (`mlplatform monitor`, the UI) moves the damaged one aside
    open_workspace(str(folder))
    kept = folder / "quarantine" / file.parent.parent.name / file.name
    assert kept.read_bytes() == cut and not file.exists()  # kept, not deleted
    assert workspace_status(str(folder), NAME, platform.problem.spec)["damaged_snapshots"] == 1
    assert not list(folder.glob("*/snapshots/.*.partial"))  # writes renamed into place
    workspace = Workspace(str(folder))
    (project,) = workspace.search_project(NAME)
    expected = {str(snapshot_id(NAME, k, d)) for k in KINDS for d in DAYS} - {str(sid)}
    assert {str(s) for s in workspace.list_runs(project.id)} == expected


def test_recording_finds_the_project_from_its_files_as_ensure_project_would(
    tmp_path: Path, problem: Problem
) -> None:
    """``known_project`` answers what ``ensure_project`` would, without opening the workspace
    (which parses every stored snapshot); where it cannot tell, it says None."""
    from evidently.sdk.models import ProjectModel

    from mlplatform.lib.monitoring.dashboard import (
        ensure_project,
        known_project,
        open_workspace,
        project_id,
    )

    spec = problem.spec
    folder = str(tmp_path / "evidently")
    assert known_project(folder, NAME, spec) is None  # no folder yet
    made = ensure_project(open_workspace(folder), NAME, spec)
    assert made == str(project_id(NAME))
    assert known_project(folder, NAME, spec) == made
    # a threshold changed: the dashboard must be laid out again, by ensure_project
    changed = spec.model_copy(
        update={"monitoring": spec.monitoring.model_copy(update={"threshold": 0.2})}
    )
    assert known_project(folder, NAME, changed) is None
    assert ensure_project(open_workspace(folder), NAME, changed) == made
    assert known_project(folder, NAME, changed) == made

    # a project of the problem's name made by hand (the UI) is adopted by both
    other = str(tmp_path / "by_hand")
    by_hand = open_workspace(other).add_project(ProjectModel(name=NAME))
    assert known_project(other, NAME, spec) is None  # its dashboard is not laid out yet
    assert ensure_project(open_workspace(other), NAME, spec) == str(by_hand.id)
    assert known_project(other, NAME, spec) == str(by_hand.id)
    # two of that name: which one ensure_project picks is the workspace's to say
    open_workspace(other).add_project(ProjectModel(name=NAME))
    assert known_project(other, NAME, spec) is None
