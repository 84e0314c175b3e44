"""``mlplatform replay``: walk simulated days of a problem through the platform's own automation.

Each simulated day, on the platform clock (``MLPLATFORM_NOW``), in the problem's timezone:

- 06:00: the retrain schedule's ticks due since the previous morning are evaluated, then
  every sensor ticks until none asks for more (``settle``);
- 07:00: the day's requests go through the service path (``Runtime.predict``: Feast online
  read, champion and challenger as the deployment says, the prediction log); the first
  model, frozen, scores the same feature vectors offline and is never served;
- 23:00: the day's files land (the target source with its outcomes, the other sources) and the
  sensors settle again: landing → ingestion, the automation-condition sensor → feature
  tables, online store and the day's monitoring, the rollout sensor, the retraining
  triggers, and last the alert sensor (what they caused, sent once).

Nothing here decides what to run: Dagster's sensors, schedule and automation conditions
are evaluated through Dagster's own APIs and their run requests executed in-process on
the project's instance, with the tags the daemon would give them (a run key already run
is not run again). Each day leaves a row in the timeline (``lib.monitoring.timeline``).
"""

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import dagster as dg

from mlplatform import settings
from mlplatform.defs.automation import AUTOMATION_SENSOR, retrain_job_name
from mlplatform.defs.deployment.sensors import rollout_sensor_name
from mlplatform.defs.monitoring.alerts import alert_sensor_name
from mlplatform.errors import PlatformError
from mlplatform.lib.ingestion.landing import days, land
from mlplatform.lib.names import raw_table
from mlplatform.problems import Problem
from mlplatform.runs import owner_tags

if TYPE_CHECKING:
    import pandas as pd

    from mlplatform.lib.deployment.registry import LoadedModel
    from mlplatform.lib.monitoring.timeline import Timeline
    from mlplatform.lib.storage import DataLake
    from mlplatform.serving.runtime import Runtime

MORNING, SERVING, EVENING = time(6), time(7), time(23)
PREDICTION_TIME, AT_MORNING = "prediction_time", "morning"  # how a replayed day is served
MAX_ROUNDS = 8  # sensor rounds per settle; each round's runs finish before the next
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
RUN_KEY, SENSOR_NAME, SCHEDULE_NAME = (
    "dagster/run_key",
    "dagster/sensor_name",
    "dagster/schedule_name",
)


@dataclass
class Launched:
    """One run the replay executed for a sensor or the schedule."""

    at: datetime
    origin: str
    job: str
    success: bool
    tags: dict[str, str]
    result: Any = field(repr=False, default=None)


@dataclass(frozen=True)
class Day:
    """One replayed day: the runs it launched, requests that failed, seconds per phase."""

    day: date
    launched: list[Launched]
    failed: int
    seconds: dict[str, float]


def _job_of(sensor: Any) -> str | None:
    """The one job a sensor targets, if it names one (asset-selection sensors do not)."""
    targets = sensor.targets
    return targets[0].job_name if len(targets) == 1 else None


def schedule_ticks(cron: str, timezone: str, since: datetime, until: datetime) -> list[datetime]:
    """The ticks of ``cron`` in ``timezone`` within (``since``, ``until``], as the daemon fires.

    ``since`` and ``until`` are aware datetimes; the ticks are aware, in ``timezone``. Like
    Dagster's scheduler, a schedule that is not hourly fires once, at the second instant,
    at a wall time that the end of summer time repeats (croniter alone would fire at both).
    """
    from croniter import croniter_range

    zone = ZoneInfo(timezone)
    hourly = cron.split()[1] == "*"
    ticks: list[datetime] = []
    for tick in croniter_range(since.astimezone(zone), until.astimezone(zone), cron):
        if tick <= since:  # the range includes its start; the window does not
            continue
        if ticks and not hourly and tick.replace(tzinfo=None) == ticks[-1].replace(tzinfo=None):
            ticks[-1] = tick  # a wall time repeated when summer time ends: its second instant
            continue
        ticks.append(tick)
    return ticks


class Replay:
    """Replays days of one problem on a Dagster instance, with the given definitions."""

    def __init__(
        self,
        problem: Problem,
        definitions: dg.Definitions,
        instance: dg.DagsterInstance,
        resources: dict[str, Any],
        retrain_ops: dict[str, Any] | None = None,
    ) -> None:
        from mlplatform.lib.monitoring.timeline import replays_dir

        self.problem, self.defs, self.instance = problem, definitions, instance
        self.resources = resources
        self.lake: DataLake = resources["lake"].lake()
        self.tracking = resources["mlflow"].tracking()
        self.retrain_ops = retrain_ops or {}
        self.zone = ZoneInfo(problem.spec.partitioning.timezone)
        self.folder = replays_dir(self.lake.root, problem.name)
        self.cursor_file = self.folder / "cursors.json"
        self.cursors: dict[str, str | None] = (
            json.loads(self.cursor_file.read_text()) if self.cursor_file.exists() else {}
        )
        name = problem.name
        # in the order a day's work flows; the triggers a spec turns off are not defined
        present = {s.name: s for s in definitions.sensors or []}
        self.sensors: dict[str, str | None] = {
            sensor: _job_of(present[sensor])
            for sensor in (
                f"{name}_landing",
                AUTOMATION_SENSOR,
                rollout_sensor_name(problem),
                f"{name}_labeled_volume",
                f"{name}_drift",
                alert_sensor_name(problem),  # last: it reads what the others caused
            )
            if sensor in present
        }
        self.schedule = f"{name}_retrain_schedule" if problem.spec.retraining.schedule else None
        self.launched: list[Launched] = []

    # -- the clock ----------------------------------------------------------------------
    def at(self, day: date, clock: time) -> datetime:
        """Set the platform clock to ``clock`` on ``day`` (local); return that instant."""
        instant = datetime.combine(day, clock, self.zone)
        os.environ[settings.CLOCK_VAR] = instant.isoformat()
        return instant

    # -- Dagster's own evaluators -------------------------------------------------------
    def tick_sensor(self, name: str) -> list[dg.RunRequest]:
        """Evaluate one sensor tick, as the daemon would, keeping its cursor."""
        sensor = self.defs.resolve_sensor_def(name)
        with (
            warnings.catch_warnings(),
            dg.build_sensor_context(
                instance=self.instance,
                resources=self.resources,
                definitions=self.defs,
                cursor=self.cursors.get(name),
            ) as context,
        ):
            warnings.simplefilter("ignore", DeprecationWarning)
            context.log.setLevel(logging.WARNING)  # the daemon keeps INFO in its tick log
            data = sensor.evaluate_tick(context)
        if data.cursor is not None:
            self.cursors[name] = data.cursor
        return list(data.run_requests or [])

    def tick_schedule(self, since: datetime, until: datetime) -> int:
        """Evaluate the retrain schedule at each of its ticks in (since, until]."""
        if self.schedule is None:
            return 0
        schedule = self.defs.resolve_schedule_def(self.schedule)
        launched = 0
        cron, zone = str(schedule.cron_schedule), schedule.execution_timezone or "UTC"
        for tick in schedule_ticks(cron, zone, since, until):
            with (
                warnings.catch_warnings(),
                dg.build_schedule_context(
                    instance=self.instance, resources=self.resources, scheduled_execution_time=tick
                ) as context,
            ):
                warnings.simplefilter("ignore", DeprecationWarning)
                data = schedule.evaluate_tick(context)
            for request in data.run_requests or []:
                launched += self.execute(self.schedule, schedule.job_name, request)
        return launched

    def settle(self) -> int:
        """Tick every sensor, run what they ask for; repeat until none asks for more."""
        total = 0
        for _ in range(MAX_ROUNDS):
            launched = 0
            for name, job in self.sensors.items():
                for request in self.tick_sensor(name):
                    launched += self.execute(name, job, request)
            total += launched
            if not launched:
                break
        self._save_cursors()
        return total

    def execute(self, origin: str, job_name: str | None, request: dg.RunRequest) -> int:
        """Run one request in-process with the daemon's tags; 0 if its run key already ran.

        A request for several partitions at once (the automation sensor emits those as a
        backfill) runs as the backfill daemon would: one run per partition, oldest day
        first, then the unpartitioned assets.
        """
        if request.asset_graph_subset is not None:
            return self._backfill(origin, request)
        kind = SCHEDULE_NAME if origin == self.schedule else SENSOR_NAME
        tags = {**request.tags, kind: origin}
        if request.run_key:
            tags[RUN_KEY] = request.run_key
            done = self.instance.get_runs(
                dg.RunsFilter(tags={kind: origin, RUN_KEY: request.run_key}), limit=1
            )
            if done:
                return 0
        selection = list(request.asset_selection) if request.asset_selection else None
        if selection is not None:
            job = self.defs.resolve_implicit_job_def_def_for_assets(selection)
        else:
            name = request.job_name or job_name
            job = self.defs.resolve_job_def(name) if name else None
        if job is None:
            wanted = [k.to_user_string() for k in selection or []] or [request.job_name]
            raise ReplayError(
                f"{origin} asked for {wanted}, which no job of the code location runs"
            )
        run_config = dict(request.run_config or {})
        if job.name == retrain_job_name(self.problem) and self.retrain_ops:
            run_config["ops"] = {**self.retrain_ops, **run_config.get("ops", {})}
        # the run's events go to the instance; Feast and MLflow print to stdout, and
        # the replay's own output is one line per day
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # MLflow and Feast deprecations, once per run
            result = job.execute_in_process(
                instance=self.instance,
                run_config={**QUIET, **run_config},
                partition_key=request.partition_key,
                asset_selection=selection,
                tags={**tags, **owner_tags()},
                raise_on_error=False,
            )
        self.launched.append(
            Launched(settings.now(), origin, job.name, result.success, tags, result)
        )
        return 1

    def _backfill(self, origin: str, request: dg.RunRequest) -> int:
        """One run per partition key of a backfill request (unpartitioned assets last)."""
        subset = request.asset_graph_subset
        assert subset is not None
        by_partition: dict[str | None, list[dg.AssetKey]] = {}
        for asset_partition in subset.iterate_asset_partitions():
            keys = by_partition.setdefault(asset_partition.partition_key, [])
            keys.append(asset_partition.asset_key)
        launched = 0
        for partition in sorted(by_partition, key=lambda p: (p is None, p or "")):
            part = dg.RunRequest(
                asset_selection=sorted(set(by_partition[partition]), key=str),
                partition_key=partition,
                tags=dict(request.tags),
            )
            launched += self.execute(origin, None, part)
        return launched

    def _save_cursors(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cursor_file.write_text(json.dumps(self.cursors))

    # -- a day --------------------------------------------------------------------------
    def requests(self, day: date) -> list[dict[str, Any]]:
        """The day's rows of the target source as requests, without their outcomes."""
        from mlplatform.serving.client import as_requests

        frame = self.problem.export_day(self.problem.spec.target.source, day)
        return as_requests(self.problem, frame)

    def serve(self, runtime: "Runtime", requests: list[dict[str, Any]]) -> int:
        """Send requests through the service path; count the ones that failed."""
        runtime.refresh()
        failed = 0
        for request in requests:
            try:
                runtime.predict(request)
            except Exception:  # logged by the runtime, counted against the day
                failed += 1
        runtime.predictions.flush()
        return failed

    # -- the streams --------------------------------------------------------------------
    def push(self, store: Any, hour: "pd.Timestamp") -> int:
        """Push every stream source's events of ``[hour - 1h, hour)``, as the feed sends them.

        Each push is a materialization of the source's stream asset. Returns the events
        pushed.
        """
        import pandas as pd

        from mlplatform.defs.features.stream import report_push
        from mlplatform.lib.features.stream import HOUR, push_hour

        events = 0
        for source in self.problem.spec.stream_sources():
            start = pd.Timestamp(hour) - HOUR
            feed = self.problem.export_events(source, start, pd.Timestamp(hour))
            result = push_hour(
                self.lake.root, self.problem, store, source, start, feed, settings.now()
            )
            report_push(self.instance, self.problem, result)
            events += result.rows
        return events

    def catch_up(self, store: Any, day: date) -> int:
        """Push the hours before ``day`` that its stream views look back on.

        Its first hours then see what a running feed would have shown; hours pushed
        before are skipped. From the evening two days before (a day's schedule is
        published the evening before it) to the hour before ``day``'s first. Returns the
        events pushed.
        """
        import pandas as pd

        from mlplatform.lib.features.stream import HOUR, EventLog
        from mlplatform.lib.features.tables import local_midnight

        tz = self.problem.spec.partitioning.timezone
        back = max((t.trailing_days for t in self.problem.feature_tables() if t.stream), default=0)
        first = pd.Timestamp(local_midnight(day - timedelta(days=back + 1), tz)) - HOUR
        last = pd.Timestamp(local_midnight(day, tz)) - HOUR  # pushed by the day's first hour
        log = EventLog(self.lake.root, self.problem.name)
        pushed = {h for s in self.problem.spec.stream_sources() for h in log.hours(s)}
        done, window = 0, first
        while window < last:
            if window not in pushed:
                os.environ[settings.CLOCK_VAR] = (window + HOUR).isoformat()
                done += self.push(store, window + HOUR)
            window += HOUR
        return done

    def serve_day(self, runtime: "Runtime", store: Any, day: date) -> int:
        """Serve a day hour by hour at each request's prediction time; count failures.

        At each hour t of the local day the platform clock is t; the streams' events of
        the hour before are pushed first, then the requests whose prediction time is t
        are scored against the online store as it stands. The retrain schedule ticks when
        its hour comes.
        """
        import pandas as pd

        from mlplatform.lib.features.build import day_hours

        requests = self.requests(day)
        field = self.problem.spec.prediction_time
        by_hour: dict[pd.Timestamp, list[dict[str, Any]]] = {}
        for request in requests:
            at = pd.Timestamp(request[field]).tz_convert("UTC").floor("h")
            by_hour.setdefault(at, []).append(request)
        hours = day_hours(day, self.problem.spec.partitioning.timezone)
        late = sorted(set(by_hour) - set(hours))
        assert not late, f"{day}: requests outside the day's hours: {late[:3]}"
        failed = 0
        for hour in hours:
            os.environ[settings.CLOCK_VAR] = hour.isoformat()
            if hour.tz_convert(self.zone).time() == MORNING:
                self.tick_schedule(self._previous_tick, hour.to_pydatetime())
                self.settle()
                self._previous_tick = hour.to_pydatetime()
            self.push(store, hour)
            if by_hour.get(hour):
                failed += self.serve(runtime, by_hour[hour])
        return failed

    def land_hours(self, day: date) -> None:
        """``granularity: hourly``: each hour of ``day`` lands at its end and the sensors settle.

        The clock steps by the partition: at the end of each local hour its files land
        (``lib.ingestion.landing.hour_exports``) and the landing sensor ingests that hour;
        the day's typed tables and features follow by automation once its last hour is in.
        """
        from mlplatform.lib.ingestion.hours import HOUR, hour_start
        from mlplatform.lib.ingestion.landing import hour_exports

        tz = self.problem.spec.partitioning.timezone
        for source, spec in self.problem.spec.sources.items():  # as ``land`` does each day
            if spec.kind == "reference":
                frame = self.problem.export_reference(source)
                self.lake.land(self.problem.name, source, None, frame, spec.format)
        sources = self.problem.spec.daily_sources()
        exports = {s: hour_exports(self.problem, s, day) for s in sources}
        for key in next(iter(exports.values()), {}):
            os.environ[settings.CLOCK_VAR] = (hour_start(key, tz) + HOUR).isoformat()
            for source, spec in sources.items():
                self.lake.land(self.problem.name, source, key, exports[source][key], spec.format)
            self.settle()

    def days(self, start: date, end: date, serve_at: str = PREDICTION_TIME) -> Iterator["Day"]:
        """Replay ``start``..``end``, yielding each day as it ends.

        ``serve_at``: ``prediction_time`` (each request at its own hour, after that hour's
        pushes) or ``morning`` (the whole day at 07:00 from the evening's store, no pushes:
        how the platform served before its stream views, kept to measure the skew).
        """
        from mlplatform.serving.server import build_runtime

        store = self.resources["feast"].store(self.problem)
        runtime = build_runtime(self.problem, self.lake.root, self.tracking, store=store)
        self._previous_tick = self.at(start - timedelta(days=1), MORNING)
        try:
            if serve_at == PREDICTION_TIME:
                self.catch_up(store, start)
            for day in days(start, end):
                before = len(self.launched)
                clock = perf_counter()
                if serve_at == PREDICTION_TIME:
                    self.at(day, time(0))
                    served = perf_counter()
                    failed = self.serve_day(runtime, store, day)
                else:
                    morning = self.at(day, MORNING)
                    self.tick_schedule(self._previous_tick, morning)
                    self.settle()
                    self._previous_tick = morning
                    self.at(day, SERVING)
                    served = perf_counter()
                    failed = self.serve(runtime, self.requests(day))
                self.at(day, EVENING)
                landed = perf_counter()
                if self.problem.spec.partitioning.granularity == "hourly":
                    self.land_hours(day)
                else:
                    land(self.lake, self.problem, day, day)
                    self.settle()
                seconds = {
                    "morning_seconds": served - clock,
                    "serving_seconds": landed - served,
                    "update_seconds": perf_counter() - landed,
                }
                yield Day(day, self.launched[before:], failed, seconds)
        finally:
            runtime.stop()
            os.environ.pop(settings.CLOCK_VAR, None)


def frozen_scores(model: "LoadedModel", outcomes: "pd.DataFrame", names: list[str]) -> "pd.Series":
    """The frozen model's predictions for the logged feature vectors (offline).

    ``names``: the spec's features, the order the log keeps each vector in; the frozen
    model encodes them by name (it may predate a change of the feature list).
    """
    import numpy as np
    import pandas as pd

    if outcomes.empty:
        return pd.Series(dtype=float)
    rows = [
        model.encoding.row(dict(zip(names, json.loads(v), strict=True)))
        for v in outcomes["features"]
    ]
    return pd.Series(model.predict_matrix(np.asarray(rows, dtype=float)), index=outcomes.index)


class ReplayError(PlatformError, RuntimeError):
    """The replay cannot start (nothing deployed, days outside the problem's data, a gap)."""


class AlreadyReplayed(ReplayError):
    """Every day of the range was replayed before: its timeline is ``table``."""

    def __init__(self, message: str, table: Path) -> None:
        super().__init__(message)
        self.table = table


def drift_figures(instance: dg.DagsterInstance, key: dg.AssetKey, day: date) -> dict[str, Any]:
    """The numeric figures of a day's drift report, empty if it was not materialized."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day.isoformat()]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return {}
    meta = records[0].asset_materialization.metadata
    return {k: getattr(v, "value", v) for k, v in meta.items()}


def retrain_event(problem: Problem, tracking: Any, run: Launched, day: date) -> Any:
    """What one retrain run did: trigger, candidate version, verdict, new alias."""
    from mlplatform.lib.deployment import registry as reg
    from mlplatform.lib.monitoring.timeline import Event

    version, verdict, promoted = "", "failed before the gates", ""
    for event in run.result.get_asset_materialization_events():
        meta = event.materialization.metadata
        name = event.asset_key.path[-1] if event.asset_key else ""
        if name == "model_candidate":
            version = str(meta["registered_version"].value)
        if name == "promotion" and "alias" in meta:
            promoted = f" → {meta['alias'].value}"
    if version:
        tags = reg.version_tags(tracking, problem.name, version)
        verdict = tags.get("verdict", "not evaluated")
        if tags.get("failed_gates"):
            verdict += f" ({tags['failed_gates']})"
    trigger = run.tags.get("mlplatform/retrain", "?")
    reason = run.tags.get("mlplatform/reason", "")
    return Event(
        day, run.at.isoformat(), "retrain", version, f"{trigger}: {reason}; {verdict}{promoted}"
    )


def _refuse_gaps(
    problem: Problem, instance: dg.DagsterInstance, start: date, ingested: list[str]
) -> None:
    """Refuse a start that leaves days unlanded, or ingested but without features.

    A replayed day is served from the features of the days before it: a gap would serve
    it silently from stale values (the newest observations weeks old, trailing statistics
    of the last days missing). Raises ``ReplayError`` saying which days and what to run.
    """
    if not ingested:
        return  # nothing before the start: the champion check says what to do
    newest = date.fromisoformat(ingested[-1])
    after = newest + timedelta(days=1)
    if start > after:
        missing = (start - after).days
        raise ReplayError(
            f"{problem.name}: {after}..{start - timedelta(days=1)} ({missing} days) were never "
            f"landed and ingested, so {start} would be served from features {missing + 1} "
            f"days old; start at {after}, or land, ingest and build features for those days "
            "first ('mlplatform land/ingest/features')"
        )
    tables = [dg.AssetKey([problem.name, t.name]) for t in problem.feature_tables()]
    unbuilt = sorted(
        {
            d
            for key in tables
            for d in ingested
            if d not in instance.get_materialized_partitions(key)
        }
    )
    # older days may lack features for their own reasons (a rejected batch); the days
    # right before the start must all have them
    recent = [d for d in unbuilt if d > (newest - timedelta(days=7)).isoformat()]
    if recent:
        raise ReplayError(
            f"{problem.name}: {recent[0]}..{recent[-1]} were ingested but their features were "
            f"not built; run 'mlplatform features --problem {problem.name} --start "
            f"{recent[0]} --end {recent[-1]}' first"
        )


def _check_retrain_ops(problem: Problem, retrain_ops: dict[str, Any]) -> None:
    """Refuse retraining settings a retrain would fail on, before the first day."""
    from mlplatform.defs.training.model import ModelConfig, model_key, training_settings

    op = "__".join(model_key(problem).path)
    config = retrain_ops.get(op, {}).get("config")
    if config is None:
        return
    try:
        training_settings(problem, ModelConfig(**config))
    except (dg.Failure, ValueError) as exc:
        message = exc.description if isinstance(exc, dg.Failure) else str(exc)
        raise ReplayError(f"cannot retrain with these settings: {message}") from None


def replay(
    problem: Problem,
    start: date,
    end: date,
    definitions: dg.Definitions,
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    retrain_ops: dict[str, Any] | None = None,
    progress: Callable[[str], None] = lambda line: None,
    serve_at: str = PREDICTION_TIME,
) -> "Timeline":
    """Replay ``start``..``end`` from the deployment in place; return its timeline.

    The champion at the start is the frozen first model. Raises ``ReplayError`` when no
    champion exists yet (``mlplatform train``, which ``make demo`` runs, makes one).
    """
    from mlplatform.lib.deployment import registry as reg
    from mlplatform.lib.deployment.log import DeploymentLog, kind, plan
    from mlplatform.lib.monitoring.timeline import Event, Timeline, replay_dir

    spec = problem.spec
    last = spec.partitioning.end - timedelta(days=1)
    if start > end or start < spec.partitioning.start or end > last:
        raise ReplayError(
            f"{problem.name}: cannot replay {start}..{end}; its data covers "
            f"{spec.partitioning.start}..{last}"
        )
    lake = resources["lake"].lake()
    folder = replay_dir(lake.root, problem.name, start, end)
    raw = dg.AssetKey([problem.name, raw_table(next(iter(spec.daily_sources())))])
    # the days ingested (an hourly key's first ten characters are its day)
    ingested = sorted({p[:10] for p in instance.get_materialized_partitions(raw)})
    replayed = [d for d in ingested if start.isoformat() <= d <= end.isoformat()]
    if replayed:
        table = folder / "timeline.csv"
        if len(replayed) == (end - start).days + 1 and table.exists():
            raise AlreadyReplayed(f"{problem.name}: {start}..{end} was replayed already", table)
        raise ReplayError(
            f"{problem.name}: {replayed[0]}..{replayed[-1]} ({len(replayed)} days) were "
            f"already ingested; a replay walks new days: start after {ingested[-1]}"
        )
    _refuse_gaps(problem, instance, start, ingested)
    _check_retrain_ops(problem, retrain_ops or {})
    tracking = resources["mlflow"].tracking()
    champion = reg.aliases(tracking, problem.name).get(reg.CHAMPION)
    if champion is None:
        raise ReplayError(
            f"{problem.name}: no champion to replay from; land and train the days before "
            f"{start} first ('mlplatform train', or 'make demo')"
        )
    frozen = reg.load_version(tracking, problem.name, champion)
    runner = Replay(problem, definitions, instance, resources, retrain_ops)
    timeline = Timeline(problem.name, spec.metric.name, champion, folder)
    deployments = DeploymentLog(lake.root, problem.name)
    seen = len(deployments.entries())
    drift_key = dg.AssetKey([problem.name, "drift_report"])
    skew_key = dg.AssetKey([problem.name, "serving_skew"])
    progress(f"replaying {problem.name} {start}..{end}; frozen first model: version {champion}")
    for today in runner.days(start, end, serve_at):
        day, launched = today.day, today.launched
        outcomes = lake.read_days(problem.name, "monitoring/online_outcomes", [day])
        entries = deployments.entries()
        events = [
            retrain_event(problem, tracking, run, day)
            for run in launched
            if run.job == retrain_job_name(problem)
        ]
        events += [
            Event(day, t.time, kind(t.stage, t.reason), t.version, t.reason) for t in entries[seen:]
        ]
        seen = len(entries)
        state = plan(reg.aliases(tracking, problem.name), deployments.current())
        row = timeline.add_day(
            day,
            outcomes,
            frozen_scores(frozen, outcomes, [f.name for f in spec.features]),
            {"champion": state.champion, "challenger": state.challenger, "stage": state.stage},
            drift_figures(instance, drift_key, day),
            sorted(events, key=lambda e: e.time),
            today.failed,
            {"runs": len(launched), **{k: round(v, 2) for k, v in today.seconds.items()}},
            skew=drift_figures(instance, skew_key, day),
        )
        timeline.write(plot=False)
        name = spec.metric.name
        progress(
            f"{day}  {row['requests']:>4} requests  {name} served {row[f'online_{name}']:.3f} "
            f"frozen {row[f'frozen_{name}']:.3f}  drift {row['drift_share']:.2f}  "
            f"skew {row['skew_share']:.3f}  "
            f"champion {state.champion} {state.stage}  {len(launched)} runs"
            + (f"  | {row['events']}" if row["events"] else "")
        )
    timeline.write()
    return timeline
