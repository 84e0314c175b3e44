"""Runs submitted to the instance: one backfill per range of days, waited for, one line each.

The CLI verbs do what the UI's Materialize button does: they call Dagster's GraphQL API
(``launchPartitionBackfill`` for a range of partitions, ``launchRun`` for one run),
executed in this process by ``dagster_graphql`` on the project's workspace, no webserver
needed. The runs go to the instance's run coordinator, so the queue
(``concurrency.runs``), the pools, the run launcher and the job's executor (Celery in
production) apply to them as to any run of the UI.

Who starts the queued runs: the daemon, when one is alive (``make dev``, production).
With none (``make demo``, the embedded default), nobody would, so the CLI plays the
queue's part itself: it submits the range synchronously and launches its queued runs
with the instance's run launcher (``DefaultRunLauncher``: one process per run), never
more at once than ``concurrency.runs.max_concurrent_runs``. A short-lived daemon was
not an option: it would also run every sensor and the automation, which is not what
``mlplatform ingest`` asks for. Without a daemon, a backfill record could only be
written through private APIs, so the range is one group of runs tagged with its
backfill id (``dagster/backfill``) and ``mlplatform/range``; with a daemon it is a
backfill on the UI's Backfills page.
"""

import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.errors import PlatformError

if TYPE_CHECKING:
    import dagster as dg

RANGE_TAG = "mlplatform/range"
# terminal states of a run, by name (the enum's values)
_DONE = {"SUCCESS", "FAILURE", "CANCELED"}

_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId launchedRunIds }
    ... on Error { message }
  }
}"""

_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}"""


class LaunchError(PlatformError):
    """The instance refused a submission (unknown job, invalid config), or its daemon left."""


@dataclass
class RunOutcome:
    """A finished run read back from the instance, as the CLI reads a run's result.

    The parts of ``ExecuteInProcessResult`` the verbs use: ``run_id``, ``success``,
    ``all_events``, materializations and check evaluations.
    """

    run_id: str
    job_name: str
    partition: str | None
    success: bool
    all_events: list = field(default_factory=list)

    def get_asset_materialization_events(self) -> list:
        """The run's ASSET_MATERIALIZATION events (``DagsterEvent``)."""
        return [e for e in self.all_events if e.is_step_materialization]

    def get_asset_check_evaluations(self) -> list:
        """The run's asset check evaluations (``AssetCheckEvaluation``)."""
        return [
            e.event_specific_data
            for e in self.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]


def daemon_alive(instance: "dg.DagsterInstance") -> bool:
    """Whether a daemon that dequeues runs is heartbeating on this instance."""
    status = instance.get_daemon_statuses(["QUEUED_RUN_COORDINATOR"]).get("QUEUED_RUN_COORDINATOR")
    return bool(status and status.healthy)


def max_concurrent_runs(instance: "dg.DagsterInstance") -> int:
    """The run queue's limit (``concurrency.runs.max_concurrent_runs``); at least 1."""
    queue = instance.get_concurrency_config().run_queue_config
    limit = queue.max_concurrent_runs if queue else None
    return limit if limit and limit > 0 else 1_000_000  # -1: no limit


@contextmanager
def workspace(instance: "dg.DagsterInstance", workspace_file: Path) -> Iterator[Any]:
    """The project's code location, loaded as the webserver loads it (a code server process).

    Yields the context that GraphQL mutations and run launches on ``instance`` need.
    """
    # dagster_graphql's in-process entry: the schema the UI talks to, with no webserver
    from dagster_graphql.test.utils import define_out_of_process_context

    # The code server, and the runs it starts, inherit this process's stdout: theirs goes to
    # stderr, so stdout keeps one line per run (scripts read it).
    with ExitStack() as stack:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
        try:
            context = stack.enter_context(
                define_out_of_process_context(str(workspace_file), None, instance)
            )
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        yield context


def _graphql(context: Any, query: str, variables: dict) -> Any:
    from dagster_graphql.test.utils import execute_dagster_graphql

    result = execute_dagster_graphql(context, query, variables)
    if result.errors:
        raise LaunchError("; ".join(str(e) for e in result.errors))
    return result.data


def _repository(context: Any) -> dict:
    """The selector of the workspace's only repository."""
    locations = context.code_location_names
    if len(locations) != 1:
        raise LaunchError(f"expected one code location in the workspace, found {locations}")
    location = context.get_code_location(locations[0])
    (repo,) = location.get_repositories().values()
    return {"repositoryLocationName": locations[0], "repositoryName": repo.name}


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in tags.items()]


def submit(
    context: Any,
    job_name: str,
    partitions: Sequence[str] | None,
    run_config: dict,
    range_id: str,
    synchronous: bool,
) -> None:
    """Submit one job's runs to the instance's run coordinator, tagged ``range_id``.

    ``partitions``: one backfill over them (``launchPartitionBackfill``); ``None``: one
    run of an unpartitioned job (``launchRun``). ``synchronous``: create and submit the
    runs now (no daemon); otherwise the daemon's backfill loop creates them. Every run
    carries ``mlplatform/range=<id>``. Raises ``LaunchError`` when the instance refuses.
    """
    tags = {RANGE_TAG: range_id}
    repo = _repository(context)
    if partitions is None:
        params = {
            "selector": {**repo, "jobName": job_name},
            "runConfigData": run_config,
            "executionMetadata": {"tags": _tags(tags)},
        }
        data = _graphql(context, _RUN, {"params": params})["launchRun"]
        if data["__typename"] != "LaunchRunSuccess":
            errors = [e["message"] for e in data.get("errors") or []]
            raise LaunchError(f"{job_name}: {data.get('message') or '; '.join(errors)}")
        return
    params = {
        "selector": {"partitionSetName": f"{job_name}_partition_set", "repositorySelector": repo},
        "partitionNames": list(partitions),
        "runConfigData": run_config,
        "tags": _tags(tags),
        "title": f"{job_name} {partitions[0]}...{partitions[-1]}",
        "forceSynchronousSubmission": synchronous,
    }
    data = _graphql(context, _BACKFILL, {"params": params})["launchPartitionBackfill"]
    if data["__typename"] != "LaunchBackfillSuccess":
        raise LaunchError(f"{job_name}: {data.get('message') or data['__typename']}")


def _outcome(instance: "dg.DagsterInstance", run: Any) -> RunOutcome:
    events = [e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event]
    return RunOutcome(
        run_id=run.run_id,
        job_name=run.job_name,
        partition=run.tags.get("dagster/partition"),
        success=run.status.value == "SUCCESS",
        all_events=events,
    )


def wait(
    instance: "dg.DagsterInstance",
    context: Any,
    range_id: str,
    expected: int,
    launch: bool,
    on_done: Callable[[RunOutcome], None],
    submitting: list[BaseException] | None = None,
    poll: float = 0.5,
) -> list[RunOutcome]:
    """Wait for the ``expected`` runs of a range; the outcomes in the order they finished.

    ``launch``: no daemon dequeues, so launch the range's queued runs here with the
    instance's run launcher, at most ``max_concurrent_runs`` in flight (counting every
    in-progress run of the instance). ``on_done`` is called once per finished run.
    ``submitting`` receives the error of a submission still under way (then raised here).
    """
    import dagster as dg

    limit, done, outcomes, polls = max_concurrent_runs(instance), set(), [], 0
    in_flight = [
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ]
    while len(done) < expected:
        if submitting:
            raise submitting[0]
        runs = instance.get_runs(dg.RunsFilter(tags={RANGE_TAG: range_id}))
        for run in sorted(runs, key=lambda r: r.tags.get("dagster/partition", "")):
            if run.status.value in _DONE and run.run_id not in done:
                done.add(run.run_id)
                outcomes.append(_outcome(instance, run))
                on_done(outcomes[-1])
        if launch:
            busy = len(instance.get_run_ids(dg.RunsFilter(statuses=in_flight)))
            queued = [r for r in runs if r.status == dg.DagsterRunStatus.QUEUED]
            for run in sorted(queued, key=lambda r: r.tags.get("dagster/partition", ""))[
                : max(0, limit - busy)
            ]:
                instance.launch_run(run.run_id, context)
        if len(done) < expected:
            time.sleep(poll)
            polls += 1
            # the daemon was to start them: if it stopped, say so rather than wait forever
            if not launch and polls % 60 == 0 and not daemon_alive(instance):
                raise LaunchError(
                    f"the daemon stopped with {expected - len(done)} run(s) of range "
                    f"{range_id} unfinished (tag {RANGE_TAG}={range_id}); start it again "
                    "(make dev) and they go on"
                )
    return outcomes


def run_range(
    instance: "dg.DagsterInstance",
    context: Any,
    job_name: str,
    partitions: Sequence[str] | None,
    run_config: dict,
    on_done: Callable[[RunOutcome], None],
) -> list[RunOutcome]:
    """Submit a job's range (or its one run) to the instance and wait for every run.

    With a daemon alive, the range is a backfill that the daemon submits and its queue
    starts. Without one, the runs are submitted in a thread while this one launches each
    as soon as it is queued (submitting a day costs about a second: the first runs need
    not wait for the last to be created). Raises ``LaunchError`` when the instance refuses.
    """
    range_id = uuid.uuid4().hex[:12]
    expected = 1 if partitions is None else len(partitions)
    if daemon_alive(instance):
        submit(context, job_name, partitions, run_config, range_id, synchronous=False)
        try:
            return wait(instance, context, range_id, expected, launch=False, on_done=on_done)
        except KeyboardInterrupt:
            raise LaunchError(
                f"interrupted; the runs of {job_name} go on in the daemon's queue "
                f"(tag {RANGE_TAG}={range_id})"
            ) from None
    errors: list[BaseException] = []

    def submit_all() -> None:
        try:
            submit(context, job_name, partitions, run_config, range_id, synchronous=True)
        except BaseException as exc:  # raised in the waiting thread
            errors.append(exc)

    thread = threading.Thread(target=submit_all, name=f"submit {range_id}", daemon=True)
    thread.start()
    try:
        outcomes = wait(
            instance, context, range_id, expected, launch=True, on_done=on_done, submitting=errors
        )
    except KeyboardInterrupt:
        raise LaunchError(
            f"interrupted; the launched runs of {job_name} finish on their own, the queued ones "
            f"start when a daemon runs (make dev) (tag {RANGE_TAG}={range_id})"
        ) from None
    thread.join()
    return outcomes


def progress_bar(total: int) -> Any:
    """A bar on stderr for long ranges (a terminal only); ``None`` otherwise."""
    if total < 8 or not sys.stderr.isatty():
        return None
    from tqdm import tqdm  # an optuna/feast dependency

    return tqdm(total=total, unit="run", file=sys.stderr, leave=False)
