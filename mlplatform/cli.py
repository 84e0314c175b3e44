"""The ``mlplatform`` command: land data, run the pipeline, and report what the platform holds."""

import argparse
import json
import logging
import os
import sys
import warnings
from datetime import date
from pathlib import Path

from mlplatform import settings
from mlplatform.errors import PlatformError, UsageError
from mlplatform.runs import owner_tags


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _lake():
    from mlplatform.lib.storage import DataLake

    return DataLake(settings.data_dir())


def _tracking():
    """The active profile's MLflow tracking and registry store."""
    from mlplatform.resources import MlflowResource, open_resources

    mlflow = open_resources("mlflow")["mlflow"]
    assert isinstance(mlflow, MlflowResource)
    return mlflow.tracking()


def _instance():
    import dagster as dg

    from mlplatform.runs import fail_orphaned_runs

    os.environ["DAGSTER_HOME"] = str(settings.ensure_dagster_home())
    instance = dg.DagsterInstance.get()
    # a killed command leaves its run STARTED (and its pool slots taken): not for long
    for run_id in fail_orphaned_runs(instance):
        sys.stderr.write(f"mlplatform: run {run_id[:8]} lost its process; marked failed\n")
    return instance


def cmd_land(args: argparse.Namespace) -> int:
    """Write the problem's exports for a range of days into the landing zone."""
    from mlplatform.lib.ingestion.landing import land
    from mlplatform.problems import get_problem

    problem, lake = get_problem(args.problem), _lake()
    rows = land(lake, problem, args.start, args.end)
    _out(
        f"landed {problem.name} {args.start}..{args.end} "
        f"into {lake.root / 'landing' / problem.name}"
    )
    for source, count in rows.items():
        _out(f"  {source:<12} {count:>8} rows")
    return 0


# The run's events are in the instance (and the UI); the terminal gets one line per run.
# Failures are summarized below each run, so the console logger stays silent.
_QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _run_jobs(
    runs: list[tuple[str, str | None]],
    ops: dict | None = None,
    results: list | None = None,
    ops_by_job: dict[str, dict] | None = None,
    in_process: bool = False,
) -> int:
    """Run (job, partition) pairs on the project's instance, one line each; 1 if any failed.

    By default the runs are submitted to the instance (``mlplatform.launch``): the
    consecutive partitions of a job as one backfill, waited for one job after the other.
    ``in_process``: executed here one after the other (``execute_in_process``).
    ``ops`` is op config for every run, ``ops_by_job`` for the runs of one job (it wins);
    each run's result (``ExecuteInProcessResult`` or ``launch.RunOutcome``) is appended to
    ``results`` in the order of ``runs``.
    """
    instance = _instance()
    config = {job: (ops_by_job or {}).get(job, ops) for job, _ in runs}
    run = _execute_in_process if in_process else _submit_and_wait
    outcomes = run(instance, runs, config)
    if results is not None:
        results.extend(outcomes)
    failures = sum(not result.success for result in outcomes)
    _out(
        f"{len(runs) - failures}/{len(runs)} runs succeeded "
        f"on the instance at {instance.root_directory}"
    )
    failed = [p or job for (job, p), r in zip(runs, outcomes, strict=True) if not r.success]
    if failed:
        _out(f"failed: {', '.join(failed)}")
    return 1 if failures else 0


def _report_run(job_name: str, partition: str | None, result) -> None:
    """One line for a finished run (state, id, failed and warning checks), its step errors below.

    A check that failed at WARN severity is advisory (the data was accepted): it is listed as
    ``warnings``, apart from the blocking ``failed checks``.
    """
    import dagster as dg

    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    named = {
        warn: sorted(
            f"{e.asset_key.path[-1]}.{e.check_name}"
            for e in failed
            if (e.severity == dg.AssetCheckSeverity.WARN) == warn
        )
        for warn in (False, True)
    }
    label = f"{job_name.split('_')[-1]} {partition or ''}".strip()
    state = "ok" if result.success else "FAILED"
    _out(
        f"  {label:<22} {state:<6} run {result.run_id[:8]}"
        + (f"  failed checks: {', '.join(named[False])}" if named[False] else "")
        + (f"  warnings: {', '.join(named[True])}" if named[True] else "")
    )
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data:
                err = event.step_failure_data.error
                _out(f"{'':25}{event.step_key}: {_error_text(err)}")


def _error_text(err) -> str:
    """A step error as a user reads it: the message, indented, without Dagster's class path."""
    if err is None:
        return ""
    # Dagster wraps an exception raised in an op ("Error occurred while executing op ..."):
    # what the user needs is the exception it wraps
    while err.cause is not None and err.cls_name == "DagsterExecutionStepExecutionError":
        err = err.cause
    # a serialized error's message starts with the exception's qualified class name
    message = err.message.strip()
    if err.cls_name and ": " in message.split("\n", 1)[0]:
        head, rest = message.split(": ", 1)
        if head.endswith(err.cls_name):
            message = rest
    return message.replace("\n", "\n" + " " * 27)


def _execute_in_process(instance, runs: list[tuple[str, str | None]], config: dict) -> list:
    """Today's quick path: each run executed in this process, in order (``--in-process``)."""
    from mlplatform.definitions import defs

    definitions, outcomes = defs(), []
    for job_name, partition in runs:
        job = definitions.resolve_job_def(job_name)
        run_ops = config[job_name]
        result = job.execute_in_process(
            instance=instance,
            partition_key=partition,
            raise_on_error=False,
            run_config={**_QUIET, **({"ops": run_ops} if run_ops else {})},
            tags=owner_tags(),  # so a run whose process dies is found and marked failed
        )
        _report_run(job_name, partition, result)
        outcomes.append(result)
    return outcomes


def _executor_config(job_names: list[str]) -> dict[str, dict]:
    """Run config choosing the in-process executor for jobs on Dagster's default executor.

    The default (multiprocess) starts one process per step, each importing the code
    location again: a day's ingestion took ~10 times longer that way on two cores. A job
    given another executor (Celery in production) keeps it.
    """
    import dagster as dg

    from mlplatform.definitions import defs

    definitions = defs()
    default = dg.multi_or_in_process_executor.name
    return {
        job: {"execution": {"config": {"in_process": {}}}}
        if definitions.resolve_job_def(job).executor_def.name == default
        else {}
        for job in job_names
    }


def _submit_and_wait(instance, runs: list[tuple[str, str | None]], config: dict) -> list:
    """Submit each job's runs to the instance (a backfill per range), wait, one line per run.

    The jobs go one after the other (a later job reads what an earlier one wrote); the
    runs of one range go as the run queue lets them.
    """
    from itertools import groupby

    from mlplatform import launch

    by_key: dict[tuple[str, str | None], object] = {}
    jobs = _executor_config([job for job, _ in runs])
    with launch.workspace(instance, settings.project_root() / "workspace.yaml") as context:
        for job_name, group in groupby(runs, key=lambda r: r[0]):
            partitions = [p for _, p in group]
            keyed = None if partitions == [None] else [p for p in partitions if p]
            run_ops = config[job_name]
            bar = launch.progress_bar(len(partitions))

            def done(outcome, job_name=job_name, bar=bar) -> None:
                if bar is not None:
                    bar.clear()  # the run's lines above the bar, not through it
                _report_run(job_name, outcome.partition, outcome)
                if bar is not None:
                    bar.update()

            run_config = {**_QUIET, **jobs[job_name], **({"ops": run_ops} if run_ops else {})}
            for outcome in launch.run_range(
                instance, context, job_name, keyed, run_config, on_done=done
            ):
                by_key[(job_name, outcome.partition)] = outcome
            if bar is not None:
                bar.close()
    return [by_key[r] for r in runs]


def cmd_ingest(args: argparse.Namespace) -> int:
    """Materialize the ingestion assets for a range of days, one run per day.

    Each rejected batch is explained below its run: files, blocking checks with their
    first failure cases, and the quarantine folder. ``--override-check`` releases named
    failed checks of the daily batches (who, why), recorded in the checks' metadata.
    """
    from mlplatform.defs.jobs import daily_job_name, reference_job_name
    from mlplatform.lib.ingestion.ingest import OVERRIDABLE, describe_rejection
    from mlplatform.lib.ingestion.landing import check_range, days
    from mlplatform.lib.names import raw_table
    from mlplatform.problems import get_problem

    problem = get_problem(args.problem)
    check_range(problem, args.start, args.end)
    overrides = args.override_check or []
    if unknown := sorted(set(overrides) - set(OVERRIDABLE)):
        raise ValueError(f"--override-check: {unknown} cannot be overridden (only {OVERRIDABLE})")
    if overrides and not ((args.by or "").strip() and (args.reason or "").strip()):
        raise ValueError("--override-check needs --by (who) and --reason (why)")
    if not overrides and (args.by or args.reason):
        raise UsageError("--by and --reason record an override: pass --override-check CHECK")
    daily = daily_job_name(problem)
    release = {
        "override_checks": overrides,
        "override_by": args.by or "",
        "override_reason": args.reason or "",
    }
    ops_by_job = {
        daily: {
            f"{problem.name}__{raw_table(s)}": {"config": release}
            for s in problem.spec.daily_sources()
        }
    }
    runs: list[tuple[str, str | None]] = [(reference_job_name(problem), None)]
    if problem.spec.partitioning.granularity == "hourly":  # each hour, then each day typed
        from mlplatform.defs.jobs import typed_job_name
        from mlplatform.lib.ingestion.hours import hour_keys

        tz = problem.spec.partitioning.timezone
        runs += [(daily, k) for d in days(args.start, args.end) for k in hour_keys(d, tz)]
        runs += [(typed_job_name(problem), d.isoformat()) for d in days(args.start, args.end)]
    else:
        runs += [(daily, d.isoformat()) for d in days(args.start, args.end)]
    results: list = []
    code = _run_jobs(
        runs,
        results=results,
        ops_by_job=ops_by_job if overrides else None,
        in_process=args.in_process,
    )
    lake = _lake()
    for (_, partition), result in zip(runs, results, strict=True):
        for source in problem.spec.sources:
            report = lake.read_batch_report(problem.name, raw_table(source), partition)
            # only this run's verdict: an older report of the day is not news
            if report and report.get("run_id") == result.run_id:
                for line in describe_rejection(report) + _overridden(report):
                    _out("  " + line)
    return code


def _overridden(report: dict) -> list[str]:
    """One line when the batch was let through by an override (who, why)."""
    if not report.get("override"):
        return []
    o = report["override"]
    return [
        f"{report['source']} {report['partition']}: {', '.join(o['checks'])} OVERRIDDEN "
        f"by {o['by']} ({o['reason']})"
    ]


def cmd_features(args: argparse.Namespace) -> int:
    """Build the feature tables for a range of days, then the online store and training set."""
    from mlplatform.defs.jobs import feature_store_job_name, features_job_name
    from mlplatform.lib.ingestion.landing import check_range, days
    from mlplatform.problems import get_problem

    problem = get_problem(args.problem)
    check_range(problem, args.start, args.end)
    runs: list[tuple[str, str | None]]
    runs = [(features_job_name(problem), d.isoformat()) for d in days(args.start, args.end)]
    runs.append((feature_store_job_name(problem), None))
    return _run_jobs(runs, in_process=args.in_process)


def cmd_score(args: argparse.Namespace) -> int:
    """Score one day's scheduled requests with the champion into ``batch_predictions``."""
    from mlplatform.defs.deployment.batch import batch_job_name
    from mlplatform.lib.ingestion.landing import check_range
    from mlplatform.problems import get_problem

    problem = get_problem(args.problem)
    check_range(problem, args.day, args.day)
    results: list = []
    code = _run_jobs(
        [(batch_job_name(problem), args.day.isoformat())],
        results=results,
        in_process=args.in_process,
    )
    for event in results[0].get_asset_materialization_events() if results else []:
        meta = event.materialization.metadata
        _out(
            f"{meta['dagster/row_count'].value} requests of {args.day} scored by version "
            f"{meta['model_version'].value}: {meta['path'].value}"
        )
    return code


def _print_verdict(result) -> None:
    """The evaluation's verdict and one line per gate, from a run that evaluated."""
    report = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key and e.asset_key.path[-1] == "evaluation_report"
    ]
    if not report:
        return
    meta = report[0].materialization.metadata
    against = meta["champion_version"].value
    _out(
        f"verdict: version {meta['registered_version'].value} "
        f"{str(meta['verdict'].value).upper()} against "
        f"{'champion ' + str(against) if against != 'none' else 'no champion (bootstrap)'}"
    )
    for e in result.get_asset_check_evaluations():
        if e.asset_key.path[-1] == "evaluation_report":
            mark = "pass" if e.passed else ("WARN" if e.severity.value == "WARN" else "FAIL")
            _out(f"  {mark:<5} {e.check_name:<20} {e.description}")
    promoted = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key and e.asset_key.path[-1] == "promotion"
    ]
    if promoted:
        pm = promoted[0].materialization.metadata
        _out(
            f"promoted: version {pm['version'].value} is now {pm['alias'].value} "
            f"({pm['reason'].value})"
        )
    else:
        _out("promoted: nothing; no alias moved, the champion keeps serving")
    _out(f"report: {meta['evidently_report'].value}")
    if "model_card" in meta:
        _out(f"model card: {meta['model_card'].value}")


def cmd_train(args: argparse.Namespace) -> int:
    """Train a candidate, evaluate it against the champion, promote it if every gate passes.

    Refuses at once (``BusyError``) while another training of the problem runs; its
    model step holds the problem's training lock from the search to the registration.
    """
    from mlplatform.defs.jobs import training_job_name
    from mlplatform.defs.training.model import training_lock
    from mlplatform.lib.training.model import exclusive
    from mlplatform.problems import get_problem

    problem = get_problem(args.problem)
    # Only a probe: the run's model step takes the lock for itself. Without it, the run
    # would queue on the problem's training pool, then register a second version.
    with exclusive(training_lock(settings.data_dir(), problem), f"a training of {problem.name}"):
        pass
    results: list = []
    code = _run_jobs(
        [(training_job_name(problem), None)], results=results, in_process=args.in_process
    )
    _print_verdict(results[0])
    return code


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a registered version against the champion; promote it if it passes."""
    from mlplatform.defs.jobs import evaluation_job_name
    from mlplatform.problems import get_problem

    problem = get_problem(args.problem)
    if args.override_gate and not ((args.by or "").strip() and (args.reason or "").strip()):
        raise UsageError("--override-gate needs --by (who) and --reason (why)")
    if not args.override_gate and (args.by or args.reason):
        raise UsageError("--by and --reason record an override: pass --override-gate GATE")
    if args.version:
        from mlplatform.lib.tracking import registered_versions

        known = [v["version"] for v in registered_versions(_tracking(), problem.name)]
        if args.version not in known:
            raise UsageError(
                f"{problem.name} has no registered version {args.version} "
                f"(registered: {', '.join(known) or 'none'})"
            )
    config = {
        "version": args.version or "",
        "override_gates": args.override_gate or [],
        "override_by": args.by or "",
        "override_reason": args.reason or "",
    }
    results: list = []
    ops = {f"{problem.name}__evaluation_report": {"config": config}}
    code = _run_jobs(
        [(evaluation_job_name(problem), None)],
        ops=ops,
        results=results,
        in_process=args.in_process,
    )
    _print_verdict(results[0])
    return code


def cmd_gates_calibrate(args: argparse.Namespace) -> int:
    """Measure the comparison gates on the problem's latest training set and holdout."""
    import pandas as pd

    from mlplatform.lib.evaluation import calibration as cal
    from mlplatform.problems import get_problem

    problem, lake = get_problem(args.problem), _lake()
    if args.pairs < 1:
        raise ValueError("--pairs must be at least 1")
    sets = {t: lake.read_latest(problem.name, t) for t in ("training_set", "holdout_set")}
    found = {t: latest for t, latest in sets.items() if latest is not None}
    if len(found) < len(sets):
        raise PlatformError(
            f"{problem.name}: no {' or '.join(sorted(set(sets) - set(found)))} in {lake.root}; "
            f"build them first (mlplatform features --problem {problem.name} ...)"
        )
    frames = {t: pd.read_parquet(latest["path"]) for t, latest in found.items()}
    _out(
        f"calibrating {problem.name}'s gates: {args.pairs} A/A pairs on training set "
        f"{found['training_set']['data_version']} ({len(frames['training_set'])} rows), "
        f"holdout {found['holdout_set']['data_version']} ({len(frames['holdout_set'])} rows)"
    )
    result = cal.calibrate(
        problem,
        frames["training_set"],
        frames["holdout_set"],
        pairs=args.pairs,
        seed=problem.spec.training.seed,
        progress=lambda line: sys.stderr.write(line + "\n"),
    )
    stamp = settings.now().strftime("%Y%m%dT%H%M%S")
    paths = cal.write_report(lake.reports_dir(problem.name, "gates"), problem, result, stamp)
    run_id = cal.log_report(_tracking(), problem, result, paths)
    for key, value in result.headline().items():
        _out(f"  {key}: {value}")
    _out(f"report: {paths['html']} (and .md, .png, .json); MLflow run {run_id}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a problem's champion (and challenger, by rollout stage) over HTTP."""
    from mlplatform.problems import get_problem
    from mlplatform.serving.server import http_url, serve

    problem, root = get_problem(args.problem), settings.data_dir()
    _out(
        f"serving {problem.name} on {http_url(args.host, args.port)} (docs at /docs), "
        f"{args.workers} worker(s), profile {settings.environment()}"
    )
    serve(problem, root, args.host, args.port, args.refresh, args.workers)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Send real rows of a day's target source to the running service and print its answers.

    Asks the service's ``/health`` at least once (then for up to ``--wait`` seconds). A
    service that is not there, answers without a champion, or refuses the requests is a
    ``PlatformError`` naming the URL (one line on stderr, exit 1).
    """
    import urllib.error

    from mlplatform.problems import get_problem
    from mlplatform.serving.client import post, sample_requests, wait_until_up
    from mlplatform.serving.server import call, service_file, service_url

    problem, lake = get_problem(args.problem), _lake()
    url = args.url or service_url(lake.root, problem.name)
    if url is None:
        raise PlatformError(
            f"no running service of {problem.name} announced in "
            f"{service_file(lake.root, problem.name)}: start `mlplatform serve --problem "
            f"{problem.name}` or pass --url"
        )
    if not wait_until_up(url, args.wait):
        health = call(url, "/health", timeout=2.0)
        if health is None:
            raise PlatformError(
                f"no service answers at {url} (asked {url}/health for {args.wait:.0f} s); "
                "start `mlplatform serve`, or raise --wait while it starts"
            )
        raise PlatformError(
            f"the service at {url} answers but serves no champion of {problem.name} "
            f"(status {health.get('status')!r}); train and promote one first"
        )
    target = problem.spec.target.source
    days = lake.partitions(problem.name, target)
    day = args.day or (days[-1] if days else None)
    if day is None:
        raise PlatformError(f"no {target} of {problem.name} ingested yet to take requests from")
    if day not in days:
        raise UsageError(
            f"{target} of {day} are not ingested "
            f"(ingested: {days[0]}..{days[-1]}); pass a --day among them"
        )
    requests = sample_requests(lake, problem, day, args.n)
    try:
        answers = post(url + "/predict", {"instances": requests})["predictions"]
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise PlatformError(f"{url}/predict refused the requests ({exc.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PlatformError(f"{url}/predict did not answer: {exc}") from None
    _out(f"{len(answers)} requests from {day} answered by {url}:")
    source = problem.spec.sources[target]
    shown = [*source.natural_key]  # what names a row of the target source
    if source.event_timestamp and source.event_timestamp not in shown:
        shown.append(source.event_timestamp)
    for request, answer in zip(requests, answers, strict=True):
        what = " ".join(str(request[k]) for k in shown if k in request)
        _out(
            f"  {what}  prediction {answer['prediction']:.4g}  version {answer['version']} "
            f"({answer['route']}, stage {answer['stage']})"
            + (f" defaults: {answer['defaulted_features']}" if answer["defaulted_features"] else "")
        )
    if any(a["defaulted_features"] for a in answers):
        # a past day, asked now: the store holds values from after these prediction times
        # (or older than their TTL), which the training path could never have used
        _out(
            "  (defaults: the online store holds no value of that feature from before the "
            "request's prediction time within its TTL, as when the store has moved past the "
            "day asked; the replay serves each hour after its pushes)"
        )
    return 0


TRANSITION_VIA_SERVICE = "MLPLATFORM_TRANSITION_VIA_SERVICE"  # "0": the command applies it
TRANSITION_TIMEOUT_SECONDS = 60.0  # a locked SQLite registry holds a write up to 20 s


def _transition(problem_name: str, action: str, reason: str, actor: str, share: float = 0.0):
    """Apply one rollout transition now, record it as a materialization, tell the service.

    With a running service announced for the problem, the service applies it (it has
    MLflow loaded and the registry open: traffic moves in a fraction of a second, not
    after this process imported MLflow); otherwise, or with
    ``MLPLATFORM_TRANSITION_VIA_SERVICE=0``, this process does, then asks the service
    to re-read the registry. Either way the same ``rollout.apply``, then the Dagster
    materialization, imported after traffic moved.
    """
    import time

    started = time.perf_counter()
    root = settings.data_dir()
    asked = None
    if os.environ.get(TRANSITION_VIA_SERVICE, "1") != "0":
        asked = _transition_in_service(root, problem_name, action, reason, actor, share)
    if asked is None:
        return _transition_here(problem_name, action, reason, actor, share, started)
    url, answer = asked
    switched = time.perf_counter() - started
    from mlplatform.lib.deployment.log import Transition

    done = Transition(**answer["transition"])
    _out(f"{problem_name}: {done.stage} version {done.version}; champion {done.champion}")
    _out(f"  reason: {done.reason} (by {done.actor})")
    _out(f"  registry and deployment log updated by the service in {answer['seconds']:.3f} s")
    _out(f"  service {url} serves champion {answer['champion']} after {switched:.3f} s")
    for alert in answer.get("alerts", []):  # it keeps a model the registry no longer names
        _out(f"  WARNING: the service does not follow the registry: {alert['reason']}")
    if answer.get("refresh_error"):
        _out(f"  WARNING: the service did not re-read the registry: {answer['refresh_error']}")
    aliases = answer.get("aliases")
    if aliases is None:  # its re-read failed: read them here
        from mlplatform.lib.deployment import registry as reg

        aliases = reg.aliases(_tracking(), problem_name)
    _record_transition(problem_name, done, aliases)
    return 0


def _transition_in_service(
    root: Path, problem: str, action: str, reason: str, actor: str, share: float
) -> tuple[str, dict] | None:
    """Ask the problem's running service to apply the transition: (its URL, its answer).

    None when no service can take it and nothing was changed: none announced or alive,
    the connection refused, or a service that refuses the token (one started by a test
    or an older version; 401/403/404/405). The command then applies it itself.

    Raises:
        RolloutError: The service refused it (409): the state does not allow it.
        PlatformError: The service took the request and failed, or did not answer in
            time: the transition may have happened; the message says where to look.
    """
    import json
    import urllib.error
    import urllib.request

    from mlplatform.lib.process import process_alive
    from mlplatform.serving.server import announced

    held = announced(root, problem)  # no problem name check: an unknown one has no file
    if held is None or not held.get("token") or not process_alive(held.get("pid")):
        return None
    url = str(held["url"])
    body = {"action": action, "reason": reason, "actor": actor, "share": share}
    req = urllib.request.Request(
        url + "/deployment/transition",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {held['token']}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=TRANSITION_TIMEOUT_SECONDS) as resp:
            return url, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404, 405):  # refused before anything was applied
            return None
        detail = exc.read().decode(errors="replace")
        try:
            detail = str(json.loads(detail).get("detail", detail))
        except (ValueError, AttributeError):
            pass
        if exc.code == 409:
            from mlplatform.lib.deployment.rollout import RolloutError

            raise RolloutError(detail) from None
        raise PlatformError(
            f"the service at {url} failed to apply the {action} ({exc.code}: {detail[:300]}); "
            f"part of it may have happened: see `mlplatform status --problem {problem}`"
        ) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):  # nothing listens: gone
            return None
        raise PlatformError(
            f"the service at {url} did not answer the {action}: {exc.reason}; it may "
            f"still apply it: see `mlplatform status --problem {problem}`"
        ) from None
    except (TimeoutError, OSError) as exc:
        raise PlatformError(
            f"the service at {url} did not answer the {action} within "
            f"{TRANSITION_TIMEOUT_SECONDS:.0f} s ({exc}); it may still apply it: see "
            f"`mlplatform status --problem {problem}`"
        ) from None


def _transition_here(
    problem_name: str, action: str, reason: str, actor: str, share: float, started: float
) -> int:
    """The transition applied by this process, then the service told to re-read."""
    import time

    # the alias move and the service's refresh first; Dagster loads after traffic moved
    from mlplatform.lib.deployment import registry as reg
    from mlplatform.lib.deployment.rollout import apply
    from mlplatform.problems import get_problem
    from mlplatform.serving.server import call, service_url

    problem, root = get_problem(problem_name), settings.data_dir()
    tracking = _tracking()
    done = apply(problem.name, problem.spec, root, tracking, action, reason, actor, share)
    moved = time.perf_counter() - started
    url = service_url(root, problem.name)
    served = call(url, "/refresh", method="POST") if url else None
    switched = time.perf_counter() - started
    _out(f"{problem.name}: {done.stage} version {done.version}; champion {done.champion}")
    _out(f"  reason: {done.reason} (by {done.actor})")
    _out(f"  registry and deployment log updated in {moved:.3f} s")
    if served is not None:
        _out(f"  service {url} serves champion {served['champion']} after {switched:.3f} s")
        for alert in served.get("alerts", []):  # it keeps a model the registry no longer names
            _out(f"  WARNING: the service does not follow the registry: {alert['reason']}")
    else:
        _out("  no running service answered; it picks the change up when it starts")
    _record_transition(problem.name, done, reg.aliases(tracking, problem.name))
    return 0


def _record_transition(problem_name: str, done, aliases: dict[str, str]) -> None:
    """The transition as a runless materialization of the problem's deployment asset."""
    import dagster as dg

    from mlplatform.defs.deployment.assets import deployment_key, transition_metadata
    from mlplatform.problems import get_problem

    _instance().report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=deployment_key(get_problem(problem_name)),
            metadata=transition_metadata(done, aliases),
        )
    )


def cmd_rollback(args: argparse.Namespace) -> int:
    """Undo the latest change: drop an active challenger, or champion back to previous."""
    return _transition(args.problem, "rollback", args.reason, args.by)


def cmd_rollout(args: argparse.Namespace) -> int:
    """Move the challenger by hand: shadow, canary, full, or the kill switch."""
    if args.share is not None and args.action != "canary":
        raise UsageError(f"--share is the canary's share; `rollout {args.action}` takes none")
    return _transition(args.problem, args.action, args.reason, args.by, args.share or 0.0)


def cmd_keep(args: argparse.Namespace) -> int:
    """Keep a day's previously accepted table although its newest landing was rejected."""
    from mlplatform.defs.automation import keep_previous
    from mlplatform.problems import get_problem
    from mlplatform.resources import LakeResource

    problem = get_problem(args.problem)
    lake = LakeResource(root=str(settings.data_dir()))
    record = keep_previous(
        _instance(), lake, problem, args.source, args.day, args.by or "", args.reason
    )
    _out(
        f"kept {problem.name}/{args.source} {args.day.isoformat()} (by {record['by']}: "
        f"{record['reason']}); the rejected landing stays at {record['quarantine']}"
    )
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    """Push one hour of a stream source's events (CSV or Parquet) to the online store."""
    import pandas as pd

    from mlplatform.defs.features.stream import report_push
    from mlplatform.lib.features.stream import push_hour
    from mlplatform.problems import get_problem
    from mlplatform.resources import open_resources

    problem = get_problem(args.problem)
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"--file {path}: no such file")
    if path.suffix == ".parquet":
        events = pd.read_parquet(path)
    else:  # text as the feed wrote it: the stream's model coerces and checks every column
        events = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    feast = open_resources("feast")["feast"]
    result = push_hour(
        settings.data_dir(),
        problem,
        feast.store(problem),
        args.source,
        args.hour,
        events,
        settings.now(),
    )
    report_push(_instance(), problem, result)
    pushed = ", ".join(f"{v} {n}" for v, n in result.views.items()) or "no view"
    _out(
        f"pushed {result.rows} {args.source} events of {result.start}..{result.end} "
        f"({'replacing the earlier push' if result.replaced else 'new hour'}); rows: {pushed}"
    )
    return 0


def cmd_mlflow(args: argparse.Namespace) -> int:
    """Open the MLflow UI on the active profile's tracking store (replaces this process).

    A profile whose store is a tracking server has its UI there: the command names it.
    """
    tracking = _tracking()
    if tracking.tracking_uri.startswith(("http://", "https://")):
        profile = settings.environment()
        _out(f"the {profile} profile's MLflow UI is its tracking server: {tracking.tracking_uri}")
        return 0
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    argv = [mlflow, "ui", "--backend-store-uri", tracking.tracking_uri]
    if tracking.artifact_root is not None:
        argv += ["--default-artifact-root", str(tracking.artifact_root)]
    argv += [
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    os.execv(mlflow, argv)
    return 0  # not reached


def _dashboard_path() -> str:
    """The active profile's Evidently workspace (monitoring dashboards)."""
    from mlplatform.resources import DashboardResource, open_resources

    dashboard = open_resources("dashboard")["dashboard"]
    assert isinstance(dashboard, DashboardResource)
    return dashboard.path()


def cmd_monitor(args: argparse.Namespace) -> int:
    """Open Evidently's UI on the problem's monitoring dashboard (replaces this process)."""
    from mlplatform.lib.monitoring.dashboard import ensure_project, open_workspace
    from mlplatform.problems import get_problem

    problem = get_problem(args.problem)
    path = _dashboard_path()
    project = ensure_project(open_workspace(path), problem.name, problem.spec)
    _out(f"{problem.name}: http://{args.host}:{args.port}/projects/{project} (workspace {path})")
    evidently = str(Path(sys.executable).with_name("evidently"))
    os.environ["DO_NOT_TRACK"] = "1"  # Evidently's UI reports usage to its makers unless set
    argv = [evidently, "ui", "--workspace", path, "--host", args.host, "--port", str(args.port)]
    os.execv(evidently, argv)
    return 0  # not reached


def cmd_status(args: argparse.Namespace) -> int:
    """Print what the platform holds per problem, as text or JSON."""
    from mlplatform.problems import problems
    from mlplatform.status import status

    report = status(problems(), _lake(), _instance(), _tracking(), _dashboard_path())
    if args.json:
        _out(json.dumps(report, indent=2, sort_keys=True))
        return 0
    for name, fields in report.items():
        _out(name)
        if broken := fields.get("broken"):  # a problem that cannot load: what and where
            _out(f"  {'cannot load':<22} {broken['kind']}: {broken['file']}")
            for line in broken["error"].splitlines():
                _out(f"    {line}")
            continue
        for key, value in fields.items():
            _out(f"  {key:<22} {value}")
    return 0


def cmd_feast(args: argparse.Namespace) -> int:
    """Run the feast CLI on a problem's feature repository and the project's data folder."""
    from mlplatform.lib.features.feature_store import cli_repo
    from mlplatform.problems import get_problem

    problem = get_problem(args.problem)
    data = settings.data_dir()
    repo = cli_repo(problem, data)  # the generated (or the problem's own) repository
    os.environ[settings.DATA_VAR] = str(data)  # feature_store.yaml reads it
    feast = str(Path(sys.executable).with_name("feast"))
    feast_args = args.feast_args[1:] if args.feast_args[:1] == ["--"] else args.feast_args
    os.execv(feast, [feast, "-c", str(repo), *feast_args])
    return 0  # not reached


def cmd_dev(args: argparse.Namespace) -> int:
    """Start the Dagster UI and daemon on the project's instance (replaces this process)."""
    workspace = settings.project_root() / "workspace.yaml"
    home = settings.ensure_dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    dagster = str(Path(sys.executable).with_name("dagster"))
    # Run from DAGSTER_HOME: Dagster warns when the working folder holds a dagster.yaml
    # that is not DAGSTER_HOME's (here it is the same file, linked).
    os.chdir(home)
    argv = [dagster, "dev", "-w", str(workspace), "-h", args.host, "-p", str(args.port)]
    os.execv(dagster, argv)
    return 0  # not reached


def cmd_new_problem(args: argparse.Namespace) -> int:
    """Write a new problem's skeleton, which runs as written on a synthetic example source."""
    from mlplatform.scaffold import new_problem, next_steps

    made = new_problem(args.name, args.task, args.partition, args.dir)
    for line in next_steps(made):
        _out(line)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Walk simulated days through the platform's own automation; leave a timeline."""
    from mlplatform.definitions import defs
    from mlplatform.problems import get_problem
    from mlplatform.replay import AlreadyReplayed, ReplayError, replay
    from mlplatform.resources import open_resources

    # one line per day: Dagster's own INFO lines and deprecations stay in the instance
    logging.getLogger("dagster").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    problem = get_problem(args.problem)
    ops = {}
    if args.trials is not None:
        ops[f"{problem.name}__model_candidate"] = {"config": {"n_trials": args.trials}}
    try:
        timeline = replay(
            problem,
            args.start,
            args.end,
            defs(),
            _instance(),
            open_resources(),
            retrain_ops=ops,
            progress=_out,
            serve_at=args.serve_at,
        )
    except AlreadyReplayed as exc:  # make demo run twice: nothing new to replay
        _out(f"replay: {exc}; timeline: {exc.table}")
        return 0
    except ReplayError as exc:
        _out(f"replay: {exc}")
        return 1
    summary = timeline.summary()
    _out("")
    _out(json.dumps(summary))
    _out(f"timeline: {timeline.folder / 'timeline.csv'}")
    _out(f"plot:     {timeline.folder / 'timeline.png'}")
    _out(f"page:     {timeline.folder / 'timeline.html'}")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1..65535)")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _seconds(least: float):
    """An argparse type: a finite number of seconds, at least ``least``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not least <= value < float("inf"):  # NaN fails too
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= {least:g}")
        return value

    return parse


def _url(text: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s) URL: http://HOST:PORT")
    return text.rstrip("/")


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text!r} is not a share in (0, 1]")
    return value


def _problem_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problem", help="the problem (may be left out when only one problem is known)")


def _only_problem() -> str:
    """The one known problem, for a command given no ``--problem``.

    Raises:
        UsageError: none or several problems are known (the message lists them).
    """
    from mlplatform.problems import problems

    known = sorted(problems())
    if len(known) == 1:
        return known[0]
    raise UsageError(
        f"--problem is needed: {len(known)} problems are known ({', '.join(known) or 'none'})"
    )


def _in_process_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--in-process",
        action="store_true",
        help="execute the runs in this process one after the other, outside the run queue "
        "and the executor (tests, quick local work); default: submit them to the instance",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line, one subcommand per verb."""
    parser = argparse.ArgumentParser(prog="mlplatform", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    for name, fn, text in (
        ("land", cmd_land, "write a problem's daily exports into the landing zone"),
        ("ingest", cmd_ingest, "materialize the ingestion assets for a range of days"),
        ("features", cmd_features, "build features, the online store and the training set"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        _problem_option(p)
        p.add_argument("--start", type=_day, required=True, help="first day, YYYY-MM-DD")
        p.add_argument("--end", type=_day, required=True, help="last day (included)")
        p.set_defaults(fn=fn)
        if name != "land":
            _in_process_flag(p)
        if name == "ingest":
            p.add_argument(
                "--override-check",
                action="append",
                metavar="CHECK",
                help="release this failed check of the days' batches (volume or null_rates; "
                "repeatable); needs --by and --reason",
            )
            p.add_argument("--by", help="who releases (recorded in the check's metadata)")
            p.add_argument("--reason", help="why (recorded in the check's metadata)")

    p = sub.add_parser(
        "score",
        help="score a day's scheduled requests with the champion (point-in-time features) "
        "into batch_predictions (Parquet)",
    )
    _problem_option(p)
    p.add_argument("--day", type=_day, required=True, help="the day scored, YYYY-MM-DD")
    _in_process_flag(p)
    p.set_defaults(fn=cmd_score)

    p = sub.add_parser(
        "train", help="train a candidate, take it through the gates, promote it if it passes"
    )
    _problem_option(p)
    _in_process_flag(p)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a registered version against the champion")
    _problem_option(p)
    p.add_argument("--version", help="registered version (default: the newest candidate)")
    p.add_argument(
        "--override-gate",
        action="append",
        metavar="GATE",
        help="let this failed gate pass as a warning (repeatable); needs --by and --reason",
    )
    p.add_argument("--by", help="who overrides (recorded in the registry and the report)")
    p.add_argument("--reason", help="why (recorded in the registry and the report)")
    _in_process_flag(p)
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("gates", help="the promotion gates: how often they are wrong")
    gates_sub = p.add_subparsers(dest="gates_command", required=True)
    p = gates_sub.add_parser(
        "calibrate",
        help="measure false refusals (A/A) and power on the problem's own data; a report",
    )
    _problem_option(p)
    p.add_argument("--pairs", type=int, default=40, help="A/A pairs, two fits each (40)")
    p.set_defaults(fn=cmd_gates_calibrate)

    p = sub.add_parser(
        "replay", help="replay days on simulated time through the automation; a timeline"
    )
    _problem_option(p)
    p.add_argument("--start", type=_day, required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--end", type=_day, required=True, help="last day (included)")
    p.add_argument(
        "--trials", type=_positive, help="search trials per retrain (default: the spec's)"
    )
    p.add_argument(
        "--serve-at",
        choices=["prediction_time", "morning"],
        default="prediction_time",
        help="prediction_time (default): each request at its own hour, after that hour's "
        "pushes; morning: the whole day at 07:00 from the evening's store (the old way, "
        "kept to measure skew)",
    )
    p.set_defaults(fn=cmd_replay)

    p = sub.add_parser(
        "push", help="push one hour of a stream source's events to the online store (Feast)"
    )
    _problem_option(p)
    p.add_argument("--source", required=True, help="a stream source of the spec")
    p.add_argument(
        "--hour", required=True, help="the hour pushed, with its UTC offset: YYYY-MM-DDTHH:00Z"
    )
    p.add_argument("--file", required=True, help="the hour's events, CSV or Parquet")
    p.set_defaults(fn=cmd_push)

    p = sub.add_parser("serve", help="serve predictions over HTTP (FastAPI)")
    _problem_option(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument(
        "--refresh", type=_seconds(0.01), default=0.5, help="seconds between registry reads"
    )
    p.add_argument("--workers", type=_count, default=1, help="uvicorn worker processes")
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser(
        "predict", help="send real rows of a day's target source to the running service"
    )
    _problem_option(p)
    p.add_argument("--day", type=_day, help="day to take the rows from (default: the newest)")
    p.add_argument("-n", type=_count, default=5, help="how many requests (one batch)")
    p.add_argument(
        "--url", type=_url, help="service URL (default: the one `mlplatform serve` announced)"
    )
    p.add_argument(
        "--wait", type=_seconds(0), default=10, help="seconds to wait for the service (default 10)"
    )
    p.set_defaults(fn=cmd_predict)

    user = os.environ.get("USER", "operator")
    p = sub.add_parser("rollback", help="undo the latest deployment change (one alias move)")
    _problem_option(p)
    p.add_argument("--reason", required=True, help="why (recorded in the deployment log)")
    p.add_argument("--by", default=user, help="who (default: $USER)")
    p.set_defaults(fn=cmd_rollback)

    p = sub.add_parser("rollout", help="move the challenger by hand, or the kill switch")
    p.add_argument("action", choices=["shadow", "canary", "full", "kill"])
    _problem_option(p)
    p.add_argument("--reason", required=True, help="why (recorded in the deployment log)")
    p.add_argument("--by", default=user, help="who (default: $USER)")
    p.add_argument("--share", type=_share, help="canary share in (0, 1] (default: the spec's)")
    p.set_defaults(fn=cmd_rollout)

    p = sub.add_parser(
        "keep",
        help="read a day's previous accepted table although its newest landing was rejected",
    )
    _problem_option(p)
    p.add_argument("--source", required=True, help="a daily source of the spec")
    p.add_argument("--day", type=_day, required=True, help="the rejected day, YYYY-MM-DD")
    p.add_argument("--reason", required=True, help="why (recorded in the lake and the instance)")
    p.add_argument("--by", default=user, help="who (default: $USER)")
    p.set_defaults(fn=cmd_keep)

    p = sub.add_parser("mlflow", help="open the MLflow UI on the project's tracking store")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=5000)
    p.set_defaults(fn=cmd_mlflow)

    p = sub.add_parser(
        "monitor", help="open the Evidently UI on a problem's monitoring dashboard (history)"
    )
    _problem_option(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8001)
    p.set_defaults(fn=cmd_monitor)

    p = sub.add_parser("status", help="what the platform holds, per problem")
    p.add_argument("--json", action="store_true", help="one JSON object keyed by problem")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser(
        "feast", help="the feast CLI on a problem's repository, e.g. `feast -- feature-views list`"
    )
    _problem_option(p)
    p.add_argument("feast_args", nargs=argparse.REMAINDER, help="arguments for feast, after --")
    p.set_defaults(fn=cmd_feast)

    p = sub.add_parser("dev", help="start the Dagster UI on the project's instance")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=3000)
    p.set_defaults(fn=cmd_dev)

    p = sub.add_parser(
        "new-problem",
        help="write a new problem's folder: a skeleton that runs on example data, with TODOs",
    )
    p.add_argument("name", help="the problem's name: lowercase letters, digits, underscores")
    p.add_argument("--task", choices=["binary", "regression"], default="binary")
    p.add_argument("--partition", choices=["daily", "hourly"], default="daily")
    p.add_argument(
        "--dir",
        type=Path,
        help="folder of problems to write into (default: mlplatform/problems; another one "
        "must be listed in MLPLATFORM_PROBLEMS_PATH)",
    )
    p.set_defaults(fn=cmd_new_problem)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mlplatform`` command."""
    args = build_parser().parse_args(argv)
    # Library deprecation notices are for us, not for the person at the terminal.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        if "problem" in vars(args) and args.problem is None:
            args.problem = _only_problem()
        return args.fn(args)
    except PlatformError as exc:  # the platform's own: one line, what is wrong and what to do
        sys.stderr.write(f"mlplatform {args.command}: {exc}\n")
        return exc.exit_code
    except (KeyError, ValueError) as exc:
        if not _raised_here(exc):
            raise  # a bug: its traceback is what helps
        sys.stderr.write(f"mlplatform {args.command}: {exc}\n")  # a verb's argument check
        return 2


def _raised_here(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by a verb of this module (its own argument checks)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename == __file__


if __name__ == "__main__":
    sys.exit(main())
