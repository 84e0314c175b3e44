"""Training under crashes and concurrency: kills, resumes, a second training, lost runs.

The searches run the real training path (``lib.training.model.train_candidate``, or the
``model_candidate`` asset) on the featured lake's real training set, in a subprocess that
is SIGKILLed; what resumes is compared with an uninterrupted run of the same settings.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from mlplatform.cli import main
from mlplatform.defs.training.model import training_pool
from mlplatform_tests.helpers import (
    BETTER,
    QUIET,
    STUMP,
    STUMP_TRAINING,
    Platform,
    failure_messages,
    tuned_problem,
)

ROOT = Path(__file__).resolve().parents[1]
# small but not trivial: ten trials of up to 120 rounds, pruned by Hyperband
BUDGET = {"validation_days": 2, "n_trials": 10, "max_rounds": 120, "early_stopping_rounds": 120}
SEARCH = """
import sys
import pandas as pd
from mlplatform.lib.training import model as tr
from mlplatform.problems import get_problem
spec = get_problem("flight_delay").spec
cfg = spec.training.model_copy(update={budget!r})
candidate = tr.train_candidate(pd.read_parquet(sys.argv[1]), spec, cfg, sys.argv[2], "study")
open(sys.argv[3], "w").write(candidate.fit.booster.model_to_string())
"""


def _trials(db: Path) -> list[tuple[int, str]]:
    """(number, state) of every trial in the study's database; empty before it exists."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute("select number, state from trials order by number").fetchall()
    except sqlite3.OperationalError:  # created but no tables yet, or busy
        return []


def _search(training: Path, db: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SEARCH.format(budget=BUDGET), str(training), f"sqlite:///{db}", out],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _kill_when(proc: subprocess.Popen, db: Path, finished: int) -> list[tuple[int, str]]:
    """SIGKILL the search once ``finished`` trials finished; the trials at that moment."""
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            trials = _trials(db)
            if sum(state in ("COMPLETE", "PRUNED") for _, state in trials) >= finished:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return _trials(db)


def _finished(db: Path) -> list[tuple[int, str, str]]:
    """(number, parameters as JSON, value) of the finished trials, in order."""
    import optuna

    study = optuna.load_study(study_name="study", storage=f"sqlite:///{db}")
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [
        (t.number, json.dumps(t.params, sort_keys=True), repr(t.value))
        for t in study.get_trials(states=states)
    ]


@pytest.mark.slow
def test_a_study_killed_at_any_point_resumes_to_the_same_trials_and_model(
    featured_base: Path, tmp_path: Path
) -> None:
    import pandas as pd

    from mlplatform.lib.storage import DataLake
    from mlplatform.lib.training import model as tr
    from mlplatform.problems import get_problem

    latest = DataLake(featured_base).read_latest("flight_delay", "training_set")
    assert latest is not None
    training = Path(latest["path"])
    spec = get_problem("flight_delay").spec
    cfg = spec.training.model_copy(update=BUDGET)
    frame = pd.read_parquet(training)

    whole = tmp_path / "whole.db"
    uninterrupted = tr.train_candidate(frame, spec, cfg, f"sqlite:///{whole}", "study")
    expected = _finished(whole)
    assert len(expected) == 10

    for point in (1, 4, 8):  # finished trials before the kill
        db = tmp_path / f"killed-{point}.db"
        at_kill = _kill_when(_search(training, db, tmp_path / "unused.txt"), db, point)
        assert point <= sum(s in ("COMPLETE", "PRUNED") for _, s in at_kill) < 10

        resumed = tr.train_candidate(frame, spec, cfg, f"sqlite:///{db}", "study")

        got = _finished(db)
        params = [p for _, p, _ in got]
        assert len(set(params)) == len(params) == 10, "a resumed study never repeats parameters"
        assert got == expected, f"killed after {point} trials: not the uninterrupted trials"
        interrupted = sum(s == "RUNNING" for _, s in at_kill)
        assert resumed.search is not None
        assert resumed.search.counts["interrupted"] == interrupted
        assert resumed.search.counts["running"] == resumed.search.counts["fail"] == 0
        assert resumed.fit.booster.model_to_string() == uninterrupted.fit.booster.model_to_string()


def test_a_second_training_of_the_problem_refuses_while_one_runs(
    featured: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    budget = {**BUDGET, "n_trials": 400, "max_rounds": 400, "early_stopping_rounds": 400}
    script = (
        "import dagster as dg, sys\n"
        "from pathlib import Path\n"
        "from mlplatform.problems import get_problem\n"
        "from mlplatform_tests.helpers import Platform\n"
        "with dg.instance_for_test() as inst:\n"
        "    Platform(get_problem('flight_delay'), Path(sys.argv[1]), inst)"
        f".run_training(**{budget!r})\n"
    )
    root = featured.lake.root
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(root)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    db = root / "optuna" / "flight_delay.db"
    try:
        deadline = time.monotonic() + 240
        while len(_trials(db)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert len(_trials(db)) >= 2, "the first training is searching"

        second = featured.run_training(**budget)
        monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(root))
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
        capsys.readouterr()
        code = main(["train", "--problem", "flight_delay"])
        err = capsys.readouterr().err
        assert proc.poll() is None, "the first training was still running throughout"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    assert not second.success
    (message,) = failure_messages(second)
    assert "a training of flight_delay is running already" in message
    assert f"pid {proc.pid}" in message and "refuses" in message
    assert code == 1
    assert err.count("\n") == 1 and "a training of flight_delay is running already" in err
    assert "Traceback" not in err


def test_a_run_whose_process_was_killed_is_marked_failed_and_frees_its_pool(
    featured: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(ROOT / "dagster.yaml")  # the project's instance config
    budget = {**BUDGET, "n_trials": 400, "max_rounds": 400, "early_stopping_rounds": 400}
    script = (
        "import dagster as dg, sys\n"
        "from pathlib import Path\n"
        "from mlplatform.problems import get_problem\n"
        "from mlplatform.runs import owner_tags\n"
        "from mlplatform_tests.helpers import Platform, QUIET\n"
        "platform = Platform(get_problem('flight_delay'), Path(sys.argv[1]), "
        "dg.DagsterInstance.get())\n"
        "job = platform.defs.resolve_job_def('flight_delay_training')\n"
        "job.execute_in_process(instance=platform.instance, tags=owner_tags(), run_config={"
        f"**QUIET, 'ops': {{'flight_delay__model_candidate': {{'config': {budget!r}}}}}}})\n"
    )
    root = featured.lake.root
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(root)],
        cwd=ROOT,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    db = root / "optuna" / "flight_delay.db"
    try:
        deadline = time.monotonic() + 240
        while len(_trials(db)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert len(_trials(db)) >= 2, "the training is searching"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(root))
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED  # what a kill leaves behind
        pool = instance.event_log_storage.get_concurrency_info(training_pool(featured.problem))
        assert pool.slot_count == 1 and pool.active_slot_count == 1  # the pool applied

    capsys.readouterr()
    assert main(["status", "--json"]) == 0  # any command that opens the instance
    assert f"run {run.run_id[:8]} lost its process; marked failed" in capsys.readouterr().err

    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]
        pool = instance.event_log_storage.get_concurrency_info(training_pool(featured.problem))
        assert pool.active_slot_count == 0


def test_evaluation_judges_the_candidate_of_its_own_run(featured: Platform, problem) -> None:
    from mlplatform.defs.training.model import model_key

    tuned = tuned_problem(problem)
    platform = Platform(tuned, featured.lake.root, featured.instance)
    assert platform.run_feature_store().success  # the training-set checks, on this instance
    assert platform.run_training(**STUMP_TRAINING, params=STUMP).success  # version 1

    @dg.success_hook
    def another_training_finishes(context: dg.HookContext) -> None:
        """Between this run's candidate and its evaluation, another run's candidate lands."""
        if context.op.name.endswith("model_candidate"):
            context.instance.report_runless_asset_event(
                dg.AssetMaterialization(model_key(tuned), metadata={"registered_version": "1"})
            )

    keys = [dg.AssetKey(["flight_delay", n]) for n in ("model_candidate", "evaluation_report")]
    job = dg.define_asset_job("interleaved", selection=keys, hooks={another_training_finishes})
    defs = dg.Definitions.merge(platform.defs, dg.Definitions(jobs=[job]))
    ops = {"flight_delay__model_candidate": {"config": {**STUMP_TRAINING, "params": BETTER}}}
    result = defs.resolve_job_def("interleaved").execute_in_process(
        instance=platform.instance, run_config={**QUIET, "ops": ops}, raise_on_error=False
    )

    judged = {
        e.asset_key.path[-1]: e.materialization.metadata["registered_version"].value
        for e in result.get_asset_materialization_events()
        if e.asset_key
    }
    assert judged == {"model_candidate": "2", "evaluation_report": "2"}


def test_a_missing_model_file_ends_in_one_line_not_a_traceback(
    featured: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from mlplatform.lib.deployment import registry as reg
    from mlplatform.lib.tracking import local_tracking

    assert featured.run_training(**STUMP_TRAINING, params=STUMP).success
    tracking = local_tracking(featured.lake.root)
    reg.set_alias(tracking, "flight_delay", reg.CHAMPION, "1")
    for model_file in (featured.lake.root / "mlflow").rglob("*.lgb"):
        model_file.unlink()  # what a cleaned-up artifact store leaves
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(featured.lake.root))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    capsys.readouterr()

    argv = ["replay", "--problem", "flight_delay", "--start", "2013-01-08", "--end", "2013-01-08"]
    code = main(argv)

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("mlplatform replay: ") and err.count("\n") == 1, err
    assert "version 1" in err and "Traceback" not in err
