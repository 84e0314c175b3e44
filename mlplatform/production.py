"""Running jobs on the production profile: through the Celery executor, on Celery workers.

``execute_in_process`` (the ``mlplatform`` command's runner) ignores a job's executor, so
the production profile launches its runs here: each run is reconstructable from this
module, its steps go to the Celery workers, and its events to the instance's PostgreSQL.

    python -m mlplatform.production demo [--problem NAME] [--start DAY --end DAY]

runs the demo's pipeline (land, ingest, features, feature store, train) that way, for the
problems named (default: every problem found), each over the days given (default: the
first ``DEMO_DAYS`` days of its spec's partitioning); the workers are started by
``worker_command()`` (docs/deploy.md has the full setup).
"""

import argparse
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from mlplatform.errors import PlatformError, UsageError
from mlplatform.settings import project_root

if TYPE_CHECKING:
    from mlplatform.problems import Problem

CELERY_CONFIG_DIR = "deploy/celery"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def load_job(name: str) -> dg.JobDefinition:
    """The job ``name`` with the active profile's resources and executor (run in workers too)."""
    from mlplatform.definitions import build_definitions
    from mlplatform.problems import problems
    from mlplatform.resources import build_executor, build_resources

    definitions = build_definitions(problems().values(), build_resources(), build_executor())
    return definitions.resolve_job_def(name)


@dataclass(frozen=True)
class Launched:
    """One finished run."""

    run_id: str
    success: bool
    job: str
    partition: str | None


def run_job(
    instance: dg.DagsterInstance,
    name: str,
    partition: str | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> Launched:
    """Run a job with its executor (Celery on the production profile) and wait for it."""
    job = dg.build_reconstructable_job(
        "mlplatform.production", "load_job", reconstructable_args=(name,)
    )
    tags = {"dagster/partition": partition} if partition else None
    config = {**QUIET, **(run_config or {})}  # events go to the instance; the terminal: errors
    # dagster-celery registers its task again for every step it submits; celery says so
    warnings.filterwarnings("ignore", message="Task name 'execute_plan' is already registered")
    with dg.execute_job(
        job, instance=instance, run_config=config, tags=tags, raise_on_error=False
    ) as result:
        return Launched(result.run_id, result.success, name, partition)


def worker_command(concurrency: int = 2) -> list[str]:
    """The Celery worker that runs the production profile's steps (queue ``dagster``)."""
    return [
        str(Path(sys.executable).parent / "celery"),
        "-A",
        "dagster_celery.app",
        "worker",
        "-Q",
        "dagster",
        "--loglevel",
        "WARNING",
        "--concurrency",
        str(concurrency),
        "--prefetch-multiplier",
        "1",
    ]


def worker_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with ``deploy/celery`` on the path (the workers' ``dagster_celery_config``)."""
    config = str(project_root() / CELERY_CONFIG_DIR)
    path = env.get("PYTHONPATH", "")
    return {**env, "PYTHONPATH": f"{config}{os.pathsep}{path}" if path else config}


def start_worker(env: Mapping[str, str], log: Path, concurrency: int = 2) -> subprocess.Popen:
    """A Celery worker in its own process group (so it stops with its pool children)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            worker_command(concurrency),
            env=worker_env(env),
            cwd=project_root(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(worker: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a worker and its pool processes: TERM (warm shutdown), then KILL."""
    if worker.poll() is not None:
        return
    group = os.getpgid(worker.pid)
    os.killpg(group, signal.SIGTERM)
    try:
        worker.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(group, signal.SIGKILL)
        worker.wait(timeout=timeout)
    try:  # pool children that outlived their parent
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def pipeline(problem_name: str, start: date, end: date) -> list[tuple[str, str | None, dict]]:
    """The demo's runs in order: (job, partition, run config).

    Ingestion runs per partition of the spec's granularity: one run a day, or one run an
    hour and then each day's typed tables (``partitioning.granularity: hourly``).
    """
    from mlplatform.defs.jobs import (
        daily_job_name,
        feature_store_job_name,
        features_job_name,
        reference_job_name,
        training_job_name,
    )
    from mlplatform.lib.ingestion.landing import days
    from mlplatform.problems import get_problem

    problem = get_problem(problem_name)
    day_keys = [d.isoformat() for d in days(start, end)]
    ingestion = [(daily_job_name(problem), d, {}) for d in day_keys]
    if problem.spec.partitioning.granularity == "hourly":  # each hour, then each day typed
        from mlplatform.defs.jobs import typed_job_name
        from mlplatform.lib.ingestion.hours import hour_keys

        tz = problem.spec.partitioning.timezone
        hours = [k for d in days(start, end) for k in hour_keys(d, tz)]
        ingestion = [(daily_job_name(problem), k, {}) for k in hours]
        ingestion += [(typed_job_name(problem), d, {}) for d in day_keys]
    return [
        (reference_job_name(problem), None, {}),
        *ingestion,
        *[(features_job_name(problem), d, {}) for d in day_keys],
        (feature_store_job_name(problem), None, {}),
        (training_job_name(problem), None, {}),
    ]


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def demo(problem_name: str, start: date, end: date) -> int:
    """Land the days, then run the demo's pipeline through the profile's executor."""
    from mlplatform.lib.ingestion.landing import land
    from mlplatform.lib.storage import DataLake
    from mlplatform.problems import get_problem
    from mlplatform.settings import data_dir, ensure_dagster_home, environment

    ensure_dagster_home()
    instance = dg.DagsterInstance.get()
    land(DataLake(data_dir()), get_problem(problem_name), start, end)
    _say(f"profile {environment()}: landed {start}..{end} under {data_dir()}")
    for name, partition, config in pipeline(problem_name, start, end):
        run = run_job(instance, name, partition, config)
        status = "ok" if run.success else "FAILED"
        _say(f"{status:6} {name} {partition or ''} run {run.run_id}")
        if not run.success:
            return 1
    return 0


DEMO_DAYS = 28  # the demo's default span: the first four weeks of each problem's data


def demo_range(problem: "Problem", start: date | None, end: date | None) -> tuple[date, date]:
    """The demo's days for ``problem``: as asked, else from its spec's partitioning.

    ``start`` defaults to the partitioning's first day, ``end`` to ``DEMO_DAYS`` days on
    from ``start`` (within the partitioning).

    Raises:
        UsageError: the days are outside the problem's partitioning (names both).
    """
    from mlplatform.lib.ingestion.landing import check_range

    part = problem.spec.partitioning
    first = start or part.start
    last = end or min(first + timedelta(days=DEMO_DAYS - 1), part.end - timedelta(days=1))
    check_range(problem, first, last)
    return first, last


def chosen_problems(names: list[str] | None) -> "list[Problem]":
    """The problems named, else every problem found (``MLPLATFORM_PROBLEMS_PATH`` too).

    Raises:
        UnknownNameError: a name is not a known problem (the message lists them).
        UsageError: no problem is found at all.
    """
    from mlplatform.problems import get_problem, problems

    if names:
        return [get_problem(name) for name in dict.fromkeys(names)]
    found = list(problems().values())
    if not found:
        raise UsageError("no problem found: add one under mlplatform/problems/ (see README)")
    return found


def main(argv: list[str] | None = None) -> int:
    """``python -m mlplatform.production demo``: the demo's pipeline on the active profile."""
    parser = argparse.ArgumentParser(prog="python -m mlplatform.production")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("demo", help="land, ingest, featurize and train through the executor")
    run.add_argument(
        "--problem",
        action="append",
        help="a problem to run (repeatable; default: every problem found)",
    )
    run.add_argument(
        "--start",
        type=date.fromisoformat,
        help="first day (default: each problem's partitioning start)",
    )
    run.add_argument(
        "--end",
        type=date.fromisoformat,
        help=f"last day, included (default: {DEMO_DAYS} days from the start)",
    )
    sub.add_parser("worker", help="print the Celery worker command")
    args = parser.parse_args(argv)
    if args.command == "worker":
        env = worker_env(os.environ)
        _say(f"PYTHONPATH={env['PYTHONPATH']} {' '.join(worker_command())}")
        return 0
    try:  # every problem's days checked before anything lands
        plan = [(p, *demo_range(p, args.start, args.end)) for p in chosen_problems(args.problem)]
    except PlatformError as exc:
        sys.stderr.write(f"{parser.prog} demo: {exc}\n")
        return exc.exit_code
    for problem, start, end in plan:
        if code := demo(problem.name, start, end):
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
