"""Monitoring history: each day's monitoring as Evidently snapshots, one project per problem.

An Evidently workspace (a folder, or an fsspec URL) holds one project per problem, named
after it, whose dashboard plots the snapshots over their timestamps. Each daily monitoring
asset writes one snapshot of its own kind, stamped with the partition day (midnight, naive,
as Evidently stamps its own runs), so a replayed week is a week of the data's own dates:

- ``serving`` (``served_predictions``): answered requests, prediction distribution and the
  inputs the online store had no value for (Evidently's missing-value counts);
- ``performance`` (``online_performance``): the spec's metric on the day's labelled answers,
  overall, per model version that answered and per slice of ``gates.slices`` (Evidently's
  ``GroupBy``), with the mean label and the mean prediction (the observed and predicted share
  of the target for a binary problem, its observed and predicted mean for a regression);
- ``drift`` (``drift_report``): Evidently's ``DataDriftPreset`` (drift share, drifted-feature
  count, per-feature scores) and the prediction's drift (``lib.monitoring.drift``);
- ``skew`` (``serving_skew``): the share of compared requests with any mismatching feature,
  and each feature's mismatch rate.

A snapshot's id is derived from (problem, kind, day): running a day again overwrites its
file instead of adding a second point (``Workspace.add_run`` would draw a new random id).
A running ``evidently ui`` reads new files on its project's reload (or a restart).
"""

import json
import os
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlplatform.spec import ProblemSpec

if TYPE_CHECKING:
    from evidently.core.report import Snapshot
    from evidently.sdk.models import DashboardModel
    from evidently.ui.workspace import Workspace

KINDS = ("serving", "performance", "drift", "skew")
QUANTILES = (0.1, 0.5, 0.9)
# a group of a day's labelled answers is plotted from this many rows (and both classes, or
# two distinct values for a regression) up: a metric on fewer rows swings by more than the
# differences the panel is there to show
MIN_GROUP_ROWS = 50
NAMESPACE = uuid.UUID("6d1f4a52-33c8-4a8e-9c7e-0b7e3f0e2a11")  # of the snapshot ids
MONITOR_COMMAND = "mlplatform monitor --problem {problem}"
SNAPSHOTS = "snapshots"  # Evidently's folder of a project's snapshots (LocalState's layout)
QUARANTINE = "quarantine"  # snapshot files Evidently could not read, moved aside


def snapshot_id(problem: str, kind: str, day: date) -> uuid.UUID:
    """The id of ``problem``'s ``kind`` snapshot of ``day``: the same on every run of the day."""
    return uuid.uuid5(NAMESPACE, f"{problem}/{kind}/{day.isoformat()}")


def stamp(day: date) -> datetime:
    """A snapshot's timestamp: the day's midnight (naive, as Evidently's own)."""
    return datetime(day.year, day.month, day.day)


def open_workspace(path: str) -> "Workspace":
    """The Evidently workspace at ``path`` (a folder, created if missing, or an fsspec URL).

    Evidently reads every snapshot when it opens a workspace and fails on the first file it
    cannot parse, so one snapshot cut short (a process killed while writing it) would stop
    every later day's monitoring. In a folder such files are moved aside to
    ``<path>/quarantine/<project>/`` (kept, logged, counted by ``damaged_snapshots``) and
    the workspace opened again.

    Raises:
        ValueError: a workspace at a URL holds a file Evidently cannot read.
    """
    from evidently.ui.workspace import Workspace

    if "://" in path:
        return Workspace(path)
    Path(path).mkdir(parents=True, exist_ok=True)
    try:
        return Workspace(path)
    except ValueError:  # json's and pydantic's errors both are
        if not quarantine_damaged(Path(path)):
            raise
        return Workspace(path)


def quarantine_damaged(folder: Path) -> list[Path]:
    """Move the snapshot files of ``folder`` that are not JSON into its ``quarantine/``.

    Returns:
        Where each moved file now is (``quarantine/<project id>/<snapshot id>.json``).
    """
    import logging

    moved = []
    for file in sorted(folder.glob(f"*/{SNAPSHOTS}/*.json")):
        try:
            json.loads(file.read_bytes())
        except ValueError as exc:
            target = folder / QUARANTINE / file.parent.parent.name / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, target)
            moved.append(target)
            logging.getLogger(__name__).warning(
                "Evidently snapshot %s cannot be read (%s): moved to %s", file, exc, target
            )
    return moved


def damaged_snapshots(path: str) -> int:
    """How many unreadable snapshot files ``open_workspace`` moved aside under ``path``."""
    return sum(1 for _ in (Path(path) / QUARANTINE).glob("*/*.json")) if "://" not in path else 0


def project_id(problem: str) -> uuid.UUID:
    """The id of ``problem``'s project: derived, so concurrent first writers make one project."""
    return uuid.uuid5(NAMESPACE, f"project/{problem}")


def ensure_project(workspace: "Workspace", problem: str, spec: ProblemSpec) -> str:
    """The id of ``problem``'s project; created, and its dashboard laid out, when missing.

    The project has a derived id (``project_id``); a project of the problem's name made
    otherwise is used instead, when there is one.

    A dashboard whose panels differ from today's (a spec threshold changed, another release
    of this module) is laid out again in one write; the snapshots stay.
    """
    from evidently.sdk.models import DashboardModel, DashboardTabModel, ProjectModel

    pid = project_id(problem)
    if workspace.get_project(pid) is None:
        named = workspace.search_project(problem)  # made by hand in the UI, say: adopted
        if named:
            pid = named[0].id
        else:
            description = f"{spec.description.strip()} (mlplatform)"
            workspace.add_project(ProjectModel(id=pid, name=problem, description=description))
    panels = dashboard_panels(spec)
    if not _laid_out(workspace.get_dashboard(pid), panels):
        tab = DashboardTabModel(title="Monitoring", panels=[p.id for p in panels])
        workspace.save_dashboard(pid, DashboardModel(tabs=[tab], panels=panels))
    return str(pid)


def _laid_out(current: "DashboardModel", panels: list) -> bool:
    """Whether a stored dashboard has today's panels (their ids aside)."""
    return [p.dict(exclude={"id"}) for p in current.panels] == [
        p.dict(exclude={"id"}) for p in panels
    ]


def known_project(path: str, problem: str, spec: ProblemSpec) -> str | None:
    """``problem``'s project id in a local folder, if it and today's dashboard are there.

    Read from their own files; None otherwise (``ensure_project`` makes them).
    ``ensure_project`` needs the workspace open, and Evidently opens one by parsing every
    stored snapshot (1.1 to 2.5 s at 30 days, growing with the days kept: four times an
    evening). The answer is the same project ``ensure_project`` would give: the derived id,
    else the only project of that name.
    """
    from evidently.ui.storage.local.base import LocalState

    if "://" in path or not Path(path).is_dir():
        return None
    state = LocalState(path)
    named = []
    for pid in state.list_projects():
        try:
            if state.read_project(pid).name == problem:
                named.append(str(pid))
        except (OSError, ValueError):  # a project folder without readable metadata
            continue
    derived = str(project_id(problem))
    pid = derived if derived in named else (named[0] if len(named) == 1 else None)
    if pid is None:
        return None
    try:
        current = state.read_dashboard(pid)
    except (OSError, ValueError):
        return None
    return pid if _laid_out(current, dashboard_panels(spec)) else None


def put(
    workspace: "Workspace | str",
    project_id: str,
    problem: str,
    kind: str,
    day: date,
    run: "Snapshot",
) -> str:
    """Store ``run`` as ``problem``'s ``kind`` snapshot of ``day``, replacing an earlier one.

    ``workspace``: an open workspace, or the path of a local workspace folder (no need to
    open it: the snapshot is a file of its own).

    Returns:
        The snapshot's id.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown snapshot kind {kind!r} (known: {KINDS})")
    sid = snapshot_id(problem, kind, day)
    # add_run without its random id: the same write, at the id of (problem, kind, day)
    model = run.to_snapshot_model()
    path = workspace if isinstance(workspace, str) else workspace.path
    if "://" in path:
        assert not isinstance(workspace, str), "a workspace at a URL is written through Evidently"
        workspace.state.write_snapshot(project_id, sid, model)
        return str(sid)
    from evidently.legacy.utils import NumpyEncoder

    folder = Path(path) / project_id / SNAPSHOTS
    # Evidently's own write (LocalState.write_snapshot) opens the file in place: a process
    # killed mid-write leaves half a snapshot. Written beside it and renamed, a reader sees
    # the old file or the new one, never a part.
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{sid}.{os.getpid()}.partial"
    partial.write_text(json.dumps(model.dict(), cls=NumpyEncoder))
    os.replace(partial, folder / f"{sid}.json")
    return str(sid)


def record(
    path: str, problem: str, spec: ProblemSpec, kind: str, day: date, run: "Snapshot"
) -> str:
    """Make sure of the project, store ``run``; returns the snapshot id.

    In a local folder whose project and dashboard are there already (``known_project``),
    the snapshot is written without opening the workspace; otherwise the workspace is
    opened (``open_workspace``: unreadable snapshots are moved aside then) to make them.
    """
    known = known_project(path, problem, spec)
    if known is not None:
        return put(path, known, problem, kind, day, run)
    workspace = open_workspace(path)
    return put(workspace, ensure_project(workspace, problem, spec), problem, kind, day, run)


def _run(metrics: list, frame: pd.DataFrame, definition: Any, kind: str, problem: str, day: date):
    from evidently import Dataset, Report

    return Report(metrics).run(
        Dataset.from_pandas(frame, data_definition=definition),
        None,
        timestamp=stamp(day),
        tags=[kind],
        metadata={"problem": problem, "kind": kind, "day": day.isoformat()},
        name=f"{problem} {kind} {day.isoformat()}",
    )


def serving_snapshot(served: pd.DataFrame, spec: ProblemSpec, problem: str, day: date):
    """The day's answered requests: volume, prediction distribution, inputs missing.

    Args:
        served: The day's prediction-log rows (``lib.deployment.prediction_log.COLUMNS``).
        spec: The problem's spec (its features, in order).
        problem: The problem's name (snapshot metadata).
        day: The partition day (the snapshot's timestamp).

    Returns:
        An Evidently ``Snapshot`` (tag ``serving``), or None when no request was answered.
        A feature counts as missing on a request when the online store had no value for it
        (the log's ``missing`` list), whether or not the spec's default stood in.
    """
    from evidently import DataDefinition
    from evidently.metrics import MeanValue, MissingValueCount, QuantileValue, RowCount

    from mlplatform.lib.monitoring.outcomes import served_features
    from mlplatform.lib.monitoring.skew import comparable

    # answered with a vector of the spec's width (a model with other inputs logs another)
    ok = comparable(served, spec).reset_index(drop=True)
    if ok.empty:
        return None
    inputs = served_features(ok, spec)
    numeric = [f.name for f in spec.features if f.kind == "numeric"]
    names = [f.name for f in spec.features]
    if "missing" in ok.columns:
        for i, listed in enumerate(ok["missing"]):
            absent = [
                n for n in (json.loads(listed) if isinstance(listed, str) else []) if n in names
            ]
            inputs.loc[i, absent] = None
    frame = inputs.assign(
        prediction=ok["prediction"].astype(float), latency_ms=ok["latency_ms"].astype(float)
    )
    definition = DataDefinition(
        numerical_columns=[*numeric, "prediction", "latency_ms"],
        categorical_columns=[n for n in names if n not in numeric],
    )
    metrics = [
        RowCount(),
        MeanValue(column="prediction"),
        *(QuantileValue(column="prediction", quantile=q) for q in QUANTILES),
        QuantileValue(column="latency_ms", quantile=0.99),
        # per feature: DatasetMissingValueCount's "share" is missing cells per row, not a share
        *(MissingValueCount(column=n) for n in names),
    ]
    return _run(metrics, frame, definition, "serving", problem, day)


def _label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # month 1.0 -> "1"
    return str(value)


def judgeable(
    frame: pd.DataFrame, column: str, target: str = "label", regression: bool = False
) -> list[str]:
    """Values of ``column`` with at least ``MIN_GROUP_ROWS`` rows and a judgeable target.

    Binary: both classes among the group's labels (AUC is undefined otherwise); regression:
    at least two distinct observed values (R² is undefined on a constant).
    """
    out = []
    for value, rows in frame.groupby(column):
        distinct = rows[target].nunique()
        if len(rows) >= MIN_GROUP_ROWS and (distinct >= 2 if regression else distinct == 2):
            out.append(str(value))
    return sorted(out)


def performance_frame(joined: pd.DataFrame, spec: ProblemSpec, slices: Any) -> pd.DataFrame:
    """The day's labelled answers: ``label``, ``prediction``, ``served_version``, slices.

    Args:
        joined: The day's answered requests with their ``label`` (``online_outcomes``).
        spec: The problem's spec.
        slices: ``frame -> slice columns`` (``Problem.slices``), applied to the requests'
            logged model inputs.

    Returns:
        One row per labelled answer with a logged vector of the spec's width; slice values
        as text (``month`` 1 as "1").
    """
    from mlplatform.lib.monitoring.outcomes import served_features
    from mlplatform.lib.monitoring.skew import comparable

    labelled = comparable(joined[joined["label"].notna()], spec).reset_index(drop=True)
    frame = pd.DataFrame(
        {
            "label": labelled["label"].astype(float),
            "prediction": labelled["prediction"].astype(float),
            "served_version": labelled["served_version"].fillna("none").astype(str),
        }
    )
    if labelled.empty:
        return frame
    cut = slices(served_features(labelled, spec))
    for column in cut.columns:
        frame[column] = cut[column].map(_label).to_numpy()
    return frame


def performance_snapshot(frame: pd.DataFrame, spec: ProblemSpec, problem: str, day: date):
    """The spec's metric on the day's labelled answers: overall, per version, per slice.

    Args:
        frame: ``performance_frame``'s rows.
        spec: The problem's spec (its metric and ``gates.slices``).
        problem: The problem's name (snapshot metadata).
        day: The partition day (the snapshot's timestamp).

    Returns:
        An Evidently ``Snapshot`` (tag ``performance``), or None without two distinct labels
        among the day's (both classes, or two observed values for a regression). Groups
        (versions, slice values) are Evidently ``GroupBy`` metrics of ``OnlineMetric``, for
        the judgeable values only (``judgeable``). ``MeanValue`` of ``label`` and of
        ``prediction``: the observed and predicted share of the target (binary) or its
        observed and predicted mean (regression, in the target's units).
    """
    from evidently import DataDefinition
    from evidently.metrics import GroupBy, MeanValue, RowCount

    from mlplatform.lib.monitoring.evidently_metrics import OnlineMetric

    regression = spec.is_regression
    if frame.empty or frame["label"].nunique() < 2:
        return None
    online = OnlineMetric(name=spec.metric.name, target="label", prediction="prediction")
    groups = ["served_version", *(c for c in spec.gates.slices if c in frame.columns)]
    metrics: list = [RowCount(), online, MeanValue(column="label"), MeanValue(column="prediction")]
    for column in groups:
        by = GroupBy(online, column)
        metrics += [by.label_metric(v) for v in judgeable(frame, column, "label", regression)]
    definition = DataDefinition(
        numerical_columns=["label", "prediction"], categorical_columns=groups
    )
    return _run(metrics, frame, definition, "performance", problem, day)


def skew_snapshot(flags: pd.DataFrame, problem: str, day: date):
    """Train/serve skew of the day: share of requests with any mismatch, rate per feature.

    Args:
        flags: One row per compared request, one boolean column per feature (True: the
            served value differs from its point-in-time rebuild; ``SkewResult.flags``).
        problem: The problem's name (snapshot metadata).
        day: The partition day (the snapshot's timestamp).

    Returns:
        An Evidently ``Snapshot`` (tag ``skew``), or None when nothing was compared.
    """
    from evidently import DataDefinition
    from evidently.metrics import MeanValue, RowCount

    if flags.empty:
        return None
    frame = flags.astype(float).reset_index(drop=True)
    frame.insert(0, "any_feature", flags.any(axis=1).astype(float).to_numpy())
    columns = list(frame.columns)
    definition = DataDefinition(numerical_columns=columns)
    metrics = [RowCount(), *(MeanValue(column=c) for c in columns)]
    return _run(metrics, frame, definition, "skew", problem, day)


def observed_title(spec: ProblemSpec) -> str:
    """Title of the panel of the mean label beside the mean prediction, named after the target."""
    if spec.is_regression:
        return f"Mean {spec.target.name}: observed and predicted"
    return f"Share of {spec.target.name}: observed and predicted"


def dashboard_panels(spec: ProblemSpec) -> list:
    """The dashboard's panels, in order (Evidently ``DashboardPanelPlot``)."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import bar_plot_panel, line_plot_panel

    name, target = spec.metric.name, spec.target.name

    def value(metric: str, kind: str, legend: str, **labels: str) -> PanelMetric:
        return PanelMetric(metric=metric, tags=[kind], legend=legend, metric_labels=labels)

    group = "GroupByMetric"
    panels = [
        line_plot_panel(
            title=f"Online {name} per model version",
            description="The spec's metric on each day's labelled answers, per version that "
            "answered them, and over all answers.",
            size="half",
            values=[
                value(group, "performance", "version {{label}}", column_name="served_version"),
                value("OnlineMetric", "performance", "all answers"),
            ],
        ),
        line_plot_panel(
            title=observed_title(spec),
            description=(
                f"Mean observed {target} and mean predicted {target} of the day's labelled "
                "answers, in the target's units."
                if spec.is_regression
                else f"Share of the day's labelled answers with {target} = 1, and their mean "
                "predicted probability."
            ),
            size="half",
            values=[
                value("MeanValue", "performance", "observed", column="label"),
                value("MeanValue", "performance", "predicted", column="prediction"),
            ],
        ),
        line_plot_panel(
            title="Drift share",
            description=f"Share of features drifted against the champion's training set "
            f"({spec.monitoring.stattest} >= {spec.monitoring.threshold:g}; retraining "
            f"considers {spec.monitoring.drift_share:g} and up).",
            size="half",
            values=[value("DriftedColumnsCount", "drift", "drift share", value_type="share")],
        ),
        bar_plot_panel(
            title="Drifted features",
            description="How many features drifted, per day.",
            size="half",
            values=[value("DriftedColumnsCount", "drift", "drifted features", value_type="count")],
        ),
        line_plot_panel(
            title="Drift score per feature",
            description=f"{spec.monitoring.stattest} of each feature and of the prediction "
            f"over the {spec.monitoring.window_days} day(s) ending on the day.",
            size="full",
            values=[value("ValueDrift", "drift", "{{column}}")],
        ),
    ]
    for column in spec.gates.slices:
        panels.append(
            line_plot_panel(
                title=f"Online {name} by {column}",
                description=f"Per {column} with at least {MIN_GROUP_ROWS} labelled answers "
                "that day (Evidently GroupBy).",
                size="half",
                values=[value(group, "performance", "{{label}}", column_name=column)],
            )
        )
    panels += [
        line_plot_panel(
            title="Prediction distribution",
            description="Quantiles and mean of the day's answered predictions.",
            size="half",
            values=[
                *(
                    value(
                        "QuantileValue",
                        "serving",
                        f"p{int(q * 100)}",
                        column="prediction",
                        quantile=str(q),
                    )
                    for q in QUANTILES
                ),
                value("MeanValue", "serving", "mean", column="prediction"),
            ],
        ),
        line_plot_panel(
            title="Inputs missing in the online store",
            description="Share of answered requests per feature whose value the store lacked "
            "(a default may have stood in).",
            size="half",
            values=[value("MissingValueCount", "serving", "{{column}}", value_type="share")],
        ),
        line_plot_panel(
            title="Train/serve skew",
            description=f"Share of compared requests with any feature off its point-in-time "
            f"rebuild (WARN above {spec.monitoring.skew.warn_share:g}, ERROR above "
            f"{spec.monitoring.skew.error_share:g}), and per feature.",
            size="half",
            values=[value("MeanValue", "skew", "{{column}}")],
        ),
        bar_plot_panel(
            title="Answered requests",
            description="Requests answered per day.",
            size="half",
            values=[value("RowCount", "serving", "answered")],
        ),
    ]
    return panels


def workspace_status(path: str, problem: str, spec: ProblemSpec) -> dict[str, Any]:
    """Where ``problem``'s dashboard lives and how to open it; no Evidently import.

    Returns:
        ``{workspace, command, snapshots, days, damaged_snapshots}``: the snapshot count
        per kind and the first and last day, read from a local workspace's files (None for
        a URL), and how many unreadable snapshots were moved to ``quarantine/``.
    """
    out: dict[str, Any] = {
        "workspace": path,
        "command": MONITOR_COMMAND.format(problem=problem),
        "snapshots": None,
        "days": None,
        "damaged_snapshots": damaged_snapshots(path),
    }
    root = Path(path)
    if "://" in path or not root.is_dir():
        return out
    for meta in root.glob("*/metadata.json"):
        try:
            if json.loads(meta.read_text()).get("name") != problem:
                continue
        except (OSError, ValueError):
            continue
        counts = dict.fromkeys(KINDS, 0)
        days: set[str] = set()
        for kind in KINDS:
            for day in _days_of(meta.parent / "snapshots", problem, kind, spec):
                counts[kind] += 1
                days.add(day)
        out["snapshots"] = counts
        out["days"] = {"first": min(days), "last": max(days)} if days else None
    return out


def _days_of(folder: Path, problem: str, kind: str, spec: ProblemSpec) -> list[str]:
    """Days of ``kind`` snapshots present in ``folder``: ids are derived, files not read."""
    if not folder.is_dir():
        return []
    present = {p.stem for p in folder.glob("*.json")}
    # the ids of the spec's partition days: cheaper than parsing megabytes of snapshot JSON
    part = spec.partitioning
    found = []
    for day in pd.date_range(part.start, part.end, freq="D", inclusive="left").date:
        if str(snapshot_id(problem, kind, day)) in present:
            found.append(day.isoformat())
    return found
