"""Small faults fixed as kinds (issue 17 part 7), each on the real thing.

- ``mlplatform predict`` asks a real service on 127.0.0.1 without ``--wait`` and names the
  URL when nothing (or no champion) answers; options that could never work are refused.
- The lineage commit is dirty when untracked files sit under the problem or the machinery
  (a real git repository in a temporary folder, and a real training run).
- The production entry point takes its problems and days from the specs, not from flights.
"""

import shutil
import socket
import subprocess
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from mlplatform import production
from mlplatform.cli import main
from mlplatform.lib.tracking import MACHINERY, git_commit, local_tracking, registered_versions
from mlplatform.problems import Problem, problems
from mlplatform.serving.server import (
    announce,
    build_runtime,
    http_url,
    serve_in_background,
    service_file,
)
from mlplatform.settings import project_root
from mlplatform_tests.helpers import STUMP, STUMP_TRAINING, Platform, fresh_instance, tuned_problem


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return tmp_path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def _runs(home: Path) -> int:
    home.joinpath("dagster_home").mkdir(exist_ok=True)
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        return len(instance.get_run_records())


# -- mlplatform predict, on a real service -----------------------------------------------


def test_predict_without_wait_answers_from_a_real_service_once_it_has_a_champion(
    tmp_path: Path,
    featured_base: Path,
    problem: Problem,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "data"
    shutil.copytree(featured_base, root)
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(root))
    with fresh_instance() as instance:
        platform = Platform(tuned_problem(problem), root, instance)
        assert platform.run_feature_store().success  # its checks are the training's gate
        runtime = build_runtime(platform.problem, root, local_tracking(root), refresh_seconds=0.2)
        service = serve_in_background(runtime)
        announcement = announce(root, problem.name, service.url)
        try:
            # up, but nothing registered yet: the answer says so and names the URL
            assert main(["predict", "--problem", problem.name, "--wait", "0.5"]) == 1
            out = capsys.readouterr()
            assert out.out == ""
            # (a fresh MLflow store logs its table creation first: MLflow's lines, not ours)
            (line,) = [x for x in out.err.splitlines() if x.startswith("mlplatform")]
            assert line == (
                f"mlplatform predict: the service at {service.url} answers but serves no "
                f"champion of {problem.name} (status 'no_champion'); train and promote one first"
            )
            before = git_commit(project_root(), problem.folder)
            assert platform.run_gated_training(params=STUMP, **STUMP_TRAINING).success
            after = git_commit(project_root(), problem.folder)  # others may commit meanwhile
            runtime.refresh()
            # the case: no --wait (and no --url: the announcement), the default waits
            assert main(["predict", "--problem", problem.name, "-n", "3"]) == 0
            out = capsys.readouterr()
        finally:
            announcement.withdraw()
            service.stop()
    lines = out.out.splitlines()
    assert lines[0] == f"3 requests from 2013-01-07 answered by {service.url}:"
    answers = [line for line in lines[1:] if "version 1 (champion, stage " in line]
    assert len(answers) == 3, out.out
    for line in answers:  # each request named by the target source's natural key
        assert line.split()[0] in {"AA", "B6", "DL", "EV", "MQ", "UA", "US", "WN", "9E"}
        assert 0.0 < float(line.split(" prediction ")[1].split()[0]) < 1.0
    # the lineage the training recorded is the checkout's, problem folder included
    (version,) = registered_versions(local_tracking(root), problem.name)
    assert version["git_commit"] in {before, after}
    if _ipv6_loopback():  # `serve --host ::1` announces a URL the other verbs can use
        v6 = serve_in_background(build_runtime(problem, root, local_tracking(root)), host="::1")
        announcement = announce(root, problem.name, v6.url)
        try:
            assert v6.url.startswith("http://[::1]:")
            assert main(["predict", "--problem", problem.name, "-n", "1"]) == 0
            assert f"1 requests from 2013-01-07 answered by {v6.url}:" in capsys.readouterr().out
        finally:
            announcement.withdraw()
            v6.stop()


def test_predict_names_the_url_when_no_service_answers(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _free_port()  # nothing listens on it
    url = f"http://127.0.0.1:{port}"
    assert main(["predict", "--problem", "flight_delay", "--url", url, "--wait", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"mlplatform predict: no service answers at {url} (asked {url}/health for 0 s); "
        "start `mlplatform serve`, or raise --wait while it starts"
    )
    # no --url and nothing announced: the announcement file is named
    assert main(["predict", "--problem", "flight_delay"]) == 1
    err = capsys.readouterr().err
    announced_in = service_file(home / "data", "flight_delay")
    assert f"no running service of flight_delay announced in {announced_in}" in err
    # an IPv6 service address: bracketed, accepted, named
    v6 = f"http://[::1]:{port}"
    assert main(["predict", "--problem", "flight_delay", "--url", v6, "--wait", "0"]) == 1
    assert f"no service answers at {v6} (asked {v6}/health" in capsys.readouterr().err
    assert http_url("::1", port) == v6 and http_url("127.0.0.1", port) == url
    # an announcement left by a service that died: its URL is named, at once with --wait 0
    announce(home / "data", "flight_delay", url)
    assert main(["predict", "--problem", "flight_delay", "--wait", "0"]) == 1
    assert f"no service answers at {url}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "--url", "127.0.0.1:8000"], "is not an http(s) URL"),
        (["predict", "-n", "0"], "is not a whole number of at least 1"),
        (["predict", "--wait", "nan"], "is not a number of seconds >= 0"),
        (["serve", "--refresh", "0"], "is not a number of seconds >= 0.01"),
    ],
)
def test_options_that_could_never_work_are_refused_by_the_parser(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([argv[0], "--problem", "flight_delay", *argv[1:]])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["rollout", "shadow", "--reason", "r", "--share", "0.3"],
            "--share is the canary's share; `rollout shadow` takes none",
        ),
        (
            ["ingest", "--start", "2013-01-01", "--end", "2013-01-01", "--by", "ana"],
            "--by and --reason record an override: pass --override-check CHECK",
        ),
        (
            ["evaluate", "--reason", "looks fine"],
            "--by and --reason record an override: pass --override-gate GATE",
        ),
    ],
)
def test_an_option_the_command_would_ignore_is_refused_before_any_run(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main([argv[0], "--problem", "flight_delay", *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"mlplatform {argv[0]}: {message}"
    assert _runs(home) == 0


def test_mlflow_opens_the_active_profiles_store(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a tracking server's UI is the server: named, nothing local opened
    monkeypatch.setenv("MLPLATFORM_MLFLOW_URI", "http://127.0.0.1:5999")
    monkeypatch.setenv("MLPLATFORM_ENV", "production")
    assert main(["mlflow"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == (
        "the production profile's MLflow UI is its tracking server: http://127.0.0.1:5999"
    )
    assert not (home / "data" / "mlflow").exists()


# -- --problem left out ----------------------------------------------------------------


@pytest.fixture
def second_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Another problem on ``MLPLATFORM_PROBLEMS_PATH``: a copy of flights' folder, renamed."""
    folder = tmp_path / "extra_problems" / "flights_copy"
    shutil.copytree(problems()["flight_delay"].folder, folder)
    spec = folder / "spec.yaml"
    spec.write_text(spec.read_text().replace("name: flight_delay", "name: flights_copy"))
    monkeypatch.setenv("MLPLATFORM_PROBLEMS_PATH", str(folder.parent))
    problems.cache_clear()
    yield "flights_copy"
    monkeypatch.delenv("MLPLATFORM_PROBLEMS_PATH")
    problems.cache_clear()


def test_a_command_without_problem_among_several_lists_them(
    home: Path, second_problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    known = sorted(problems())
    assert second_problem in known and "flight_delay" in known
    assert main(["train"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mlplatform train: --problem is needed: {len(known)} problems are known "
        f"({', '.join(known)})"
    )
    assert _runs(home) == 0


# -- the production entry point ------------------------------------------------------------


def test_production_demo_takes_each_problems_days_from_its_spec(
    home: Path, second_problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flights = problems()["flight_delay"]
    assert production.demo_range(flights, None, None) == (
        flights.spec.partitioning.start,
        flights.spec.partitioning.start.replace(day=production.DEMO_DAYS),
    )
    # default: every problem found, none named in the code
    assert {p.name for p in production.chosen_problems(None)} == set(problems())
    # days outside a problem's data are refused before anything lands
    argv = ["demo", "--problem", "flight_delay", "--start", "2012-12-01", "--end", "2012-12-02"]
    assert production.main(argv) == 2
    assert "flight_delay has data for 2013-01-01..2013-12-31" in capsys.readouterr().err
    assert production.main(["demo", "--problem", "nope"]) == 2
    assert "unknown problem 'nope' (known: " in capsys.readouterr().err
    assert not (home / "data").exists()


def test_production_demo_ingests_an_hourly_problem_hour_by_hour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "extra_problems" / "hourly_copy"
    shutil.copytree(problems()["flight_delay"].folder, folder)
    spec = folder / "spec.yaml"
    text = spec.read_text().replace("name: flight_delay", "name: hourly_copy")
    spec.write_text(
        text.replace(
            "  timezone: America/New_York", "  timezone: America/New_York\n  granularity: hourly"
        )
    )
    monkeypatch.setenv("MLPLATFORM_PROBLEMS_PATH", str(folder.parent))
    problems.cache_clear()
    try:
        assert problems()["hourly_copy"].spec.partitioning.granularity == "hourly"
        runs = [
            (job, key)
            for job, key, _ in production.pipeline("hourly_copy", *[date(2013, 3, 10)] * 2)
        ]
    finally:
        monkeypatch.delenv("MLPLATFORM_PROBLEMS_PATH")
        problems.cache_clear()
    hours = [key for job, key in runs if job == "hourly_copy_ingestion"]
    assert len(hours) == 23  # New York's clocks go forward that day
    assert hours[0] == "2013-03-10-00:00" and hours[-1] == "2013-03-10-23:00"
    assert ("hourly_copy_typed_tables", "2013-03-10") in runs
    assert runs[-2:] == [("hourly_copy_feature_store", None), ("hourly_copy_training", None)]


# -- the lineage commit ------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A real git repository: machinery, one problem, a README; ``*.pyc`` ignored."""
    repo = tmp_path / "repo"
    for path, text in {
        "mlplatform/core.py": "X = 1\n",
        "mlplatform/problems/p/spec.yaml": "name: p\n",
        "README.md": "# r\n",
        ".gitignore": "*.pyc\n",
    }.items():
        repo.joinpath(path).parent.mkdir(parents=True, exist_ok=True)
        repo.joinpath(path).write_text(text)
    _git(repo.parent, "init", "-q", str(repo))
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return repo


def test_untracked_files_under_the_problem_or_the_machinery_make_the_commit_dirty(
    checkout: Path, tmp_path: Path
) -> None:
    machinery, folder = checkout / "mlplatform", checkout / "mlplatform/problems/p"
    sha = _git(checkout, "rev-parse", "HEAD")

    def commit(problem_folder: Path = folder) -> str:
        return git_commit(checkout, problem_folder, machinery=machinery)

    assert commit() == sha
    folder.joinpath("features.py").write_text("")  # the case: never added
    assert commit() == f"{sha}-dirty"
    folder.joinpath("features.py").unlink()
    machinery.joinpath("new_stage").mkdir()
    machinery.joinpath("new_stage/assets.py").write_text("")  # deep in an untracked folder
    assert commit() == f"{sha}-dirty"
    shutil.rmtree(machinery / "new_stage")
    folder.joinpath("cache.pyc").write_text("")  # ignored: not code the commit lacks
    checkout.joinpath("notes.txt").write_text("")  # untracked outside problem and machinery
    assert commit() == sha
    checkout.joinpath("README.md").write_text("# changed\n")  # a tracked change, anywhere
    assert commit() == f"{sha}-dirty"
    _git(checkout, "checkout", "-q", "README.md")
    assert commit() == sha
    elsewhere = tmp_path / "team_problems" / "q"  # on MLPLATFORM_PROBLEMS_PATH, unversioned
    elsewhere.mkdir(parents=True)
    assert commit(elsewhere) == f"{sha}-dirty"
    assert git_commit(tmp_path / "team_problems", elsewhere) == "unknown"  # not a checkout

    # by default the machinery watched is the platform's own package
    assert MACHINERY == project_root() / "mlplatform"
