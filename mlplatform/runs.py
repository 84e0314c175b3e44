"""Runs whose process died: found by the owner tags the CLI gives its runs, marked failed.

``mlplatform`` executes its runs in its own process (``execute_in_process``), which no
run launcher watches: a run whose process is killed stays STARTED, holding its pool
slots, until something marks it failed. Every run the CLI starts carries the pid and host
that run it; each CLI command that opens the instance marks failed the STARTED runs of
this host whose process is gone, and frees their pool slots. The daemon's run monitoring
(``dagster.yaml``) covers the rest after ``max_runtime_seconds``.
"""

import os
import socket
from typing import TYPE_CHECKING

from mlplatform.lib.process import process_alive

if TYPE_CHECKING:
    import dagster as dg

PID_TAG, HOST_TAG = "mlplatform/pid", "mlplatform/host"


def owner_tags() -> dict[str, str]:
    """Tags naming the process (pid, host) that executes a run."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def fail_orphaned_runs(instance: "dg.DagsterInstance") -> list[str]:
    """Mark failed the in-progress runs of this host whose process is gone; their ids.

    A run is orphaned when its ``mlplatform/pid`` tag names a process that no longer
    exists on this host (``mlplatform/host``). Its pool slots are freed with it.
    """
    import dagster as dg

    host = socket.gethostname()
    records = instance.get_run_records(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING],
            tags={HOST_TAG: host},
        )
    )
    failed = []
    for record in records:
        run = record.dagster_run
        pid = run.tags.get(PID_TAG, "")
        if not pid.isdigit() or int(pid) == os.getpid() or process_alive(int(pid)):
            continue
        instance.report_run_failed(
            run,
            f"the process that executed this run (pid {pid} on {host}) is gone: killed or "
            "crashed; marked failed by the next mlplatform command",
        )
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(run.run_id)
    return failed
