"""Rollout commands applied by the running service (``POST /deployment/transition``).

One module-scoped platform: version 1 (a stump) and version 2 (a better model) after the
gates, served over HTTP on 127.0.0.1 by a service announced in the data folder with its
token, as ``mlplatform serve`` announces itself. Tests run in file order: the rollout to
version 2 and its rollback through the service (the rollback in a new process, which must
not have imported MLflow when the service answered); callers without the token; the
command's own path when asked, and when no service runs.
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from mlplatform.lib.deployment import registry as reg
from mlplatform.lib.deployment.log import DeploymentLog
from mlplatform.lib.tracking import local_tracking
from mlplatform.problems import Problem
from mlplatform.serving.client import as_requests
from mlplatform.serving.server import Background, announced, build_runtime, serve_in_background
from mlplatform_tests.helpers import (
    BETTER,
    FAST,
    STUMP,
    STUMP_TRAINING,
    Platform,
    tuned_problem,
)

NAME = "flight_delay"
HEAVY = ("mlflow", "pandas", "lightgbm", "dagster")
# the real command in a new process; it prints which heavy modules it had imported when
# the service answered (a spy around the call, nothing else replaced)
SPY = f"""
import sys
import mlplatform.cli as cli

asked = cli._transition_in_service

def spy(*args, **kwargs):
    answer = asked(*args, **kwargs)
    loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)
    sys.stderr.write("LOADED-WHEN-ANSWERED " + repr(loaded) + "\\n")
    return answer

cli._transition_in_service = spy
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, featured_base: Path, problem: Problem
) -> Iterator[tuple[Platform, Background]]:
    root = tmp_path_factory.mktemp("fast_rollback") / "data"
    shutil.copytree(featured_base, root)
    with dg.instance_for_test() as instance:
        # the latency gate is not what is tested here; a loaded machine must not fail it
        platform = Platform(
            tuned_problem(problem, p99_latency_ms=1e3, max_latency_ratio=1e3), root, instance
        )
        assert platform.run_feature_store().success
        assert platform.run_gated_training(params=STUMP, **STUMP_TRAINING).success
        assert platform.run_gated_training(params=BETTER, **FAST).success
        runtime = build_runtime(
            platform.problem, root, local_tracking(root), refresh_seconds=30, flush_seconds=0.2
        )
        # a slow follower: only the transition itself can make the service switch in time
        service = serve_in_background(runtime, announce_in=root)
        yield platform, service
        service.stop()


@pytest.fixture
def cli_env(served: tuple[Platform, Background], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    platform, _ = served
    root = platform.lake.root
    env = {"MLPLATFORM_DATA_DIR": str(root), "DAGSTER_HOME": str(root.parent / "dagster_home")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **env}


def _aliases(platform: Platform) -> dict[str, str]:
    return reg.aliases(local_tracking(platform.lake.root), NAME)


def _versions(service: Background, platform: Platform) -> set[str]:
    flights = platform.lake.read_days(NAME, "flights", [date(2013, 1, 7)])
    requests = as_requests(platform.problem, flights.iloc[:20])
    with httpx.Client(base_url=service.url, timeout=10) as client:
        answers = [client.post("/predict", json=r) for r in requests]
    assert {a.status_code for a in answers} == {200}
    return {a.json()["version"] for a in answers}


def _materialization(env: dict[str, str]) -> Any:
    assert os.environ["DAGSTER_HOME"] == env["DAGSTER_HOME"]
    with dg.DagsterInstance.get() as instance:  # the command's own instance
        event = instance.get_latest_materialization_event(dg.AssetKey([NAME, "deployment"]))
    assert event and event.asset_materialization
    return event.asset_materialization.metadata


def test_the_rollout_and_a_rollback_in_a_new_process_are_applied_by_the_service(
    served: tuple[Platform, Background],
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlplatform.cli import main

    platform, service = served
    assert _aliases(platform) == {"champion": "1", "challenger": "2"}
    for action in ("shadow", "canary", "full"):
        assert main(["rollout", action, "--problem", NAME, "--reason", action, "--by", "t"]) == 0
    rollout = capsys.readouterr().out
    promoted = _aliases(platform)
    served_after_full = _versions(service, platform)
    swaps = service.runtime.swaps

    done = subprocess.run(
        [sys.executable, "-c", SPY, "rollback", "--problem", NAME, "--reason", "fast", "--by", "u"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert rollout.count("updated by the service") == 3
    assert promoted == {"champion": "2", "previous": "1"}
    assert served_after_full == {"2"}
    assert done.returncode == 0, done.stderr
    assert "LOADED-WHEN-ANSWERED []" in done.stderr  # no MLflow, pandas, LightGBM, Dagster
    assert "updated by the service" in done.stdout
    assert f"service {service.url} serves champion 1 after" in done.stdout
    assert _aliases(platform) == {"champion": "1"}  # the alias move, in the registry
    assert service.runtime.swaps > swaps  # switched by the transition (the follower sleeps 30 s)
    assert _versions(service, platform) == {"1"}
    current = DeploymentLog(platform.lake.root, NAME).current()
    assert (current.stage, current.version, current.champion) == ("rolled_back", "2", "1")
    assert (current.reason, current.actor) == ("fast", "u")
    recorded = _materialization(cli_env)
    assert (recorded["stage"].value, recorded["champion"].value) == ("rolled_back", "1")
    assert (recorded["reason"].value, recorded["actor"].value) == ("fast", "u")
    assert recorded["aliases"].value == {"champion": "1"}


def test_a_refusal_by_the_service_is_the_commands_one_line(
    served: tuple[Platform, Background],
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlplatform.cli import main

    platform, _ = served
    entries = DeploymentLog(platform.lake.root, NAME).entries()

    assert main(["rollback", "--problem", NAME, "--reason", "again", "--by", "t"]) == 1
    err = capsys.readouterr().err
    assert "mlplatform rollback: flight_delay: nothing to roll back to" in err
    assert DeploymentLog(platform.lake.root, NAME).entries() == entries


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer not-the-token"}, {"authorization": "Basic x"}],
    ids=["no token", "another token", "another scheme"],
)
def test_a_transition_without_the_announcements_token_is_refused_and_changes_nothing(
    served: tuple[Platform, Background], headers: dict[str, str]
) -> None:
    platform, service = served
    tracking = local_tracking(platform.lake.root)
    reg.set_alias(tracking, NAME, reg.PREVIOUS, "2")  # a rollback would be allowed
    service.runtime.refresh()
    before = (_aliases(platform), DeploymentLog(platform.lake.root, NAME).entries())
    plan = service.runtime.snapshot.plan
    body = {"action": "rollback", "reason": "intruder", "actor": "x"}

    with httpx.Client(base_url=service.url, timeout=10) as client:
        refused = client.post("/deployment/transition", json=body, headers=headers)
        docs = client.get("/openapi.json").json()

    assert refused.status_code == (401 if not headers else 403), refused.text
    assert (_aliases(platform), DeploymentLog(platform.lake.root, NAME).entries()) == before
    assert service.runtime.snapshot.plan == plan
    assert _versions(service, platform) == {"1"}
    assert "/deployment/transition" in docs["paths"]
    held = Path(platform.lake.root / "deployments" / NAME / "service.json")
    assert held.stat().st_mode & 0o077 == 0  # the token's file: its owner's only


def test_the_command_applies_it_itself_when_asked_to_and_without_a_service(
    served: tuple[Platform, Background],
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlplatform.cli import main

    platform, service = served
    tracking = local_tracking(platform.lake.root)
    assert _aliases(platform) == {"champion": "1", "previous": "2"}  # as the test before left

    monkeypatch.setenv("MLPLATFORM_TRANSITION_VIA_SERVICE", "0")
    assert main(["rollback", "--problem", NAME, "--reason", "cli", "--by", "c"]) == 0
    own = capsys.readouterr().out
    after_own = (_aliases(platform), _versions(service, platform), _materialization(cli_env))
    monkeypatch.delenv("MLPLATFORM_TRANSITION_VIA_SERVICE")

    reg.set_alias(tracking, NAME, reg.PREVIOUS, "1")
    announcement = announced(platform.lake.root, NAME)
    assert service.announcement is not None
    service.announcement.withdraw()  # as a stopped service's: none announced
    assert main(["rollback", "--problem", NAME, "--reason", "alone", "--by", "a"]) == 0
    alone = capsys.readouterr().out

    assert "registry and deployment log updated in" in own  # this process applied it
    assert f"service {service.url} serves champion 2 after" in own  # then told the service
    assert after_own[0] == {"champion": "2"} and after_own[1] == {"2"}
    assert (after_own[2]["reason"].value, after_own[2]["champion"].value) == ("cli", "2")
    assert announcement is not None and announced(platform.lake.root, NAME) is None
    assert "no running service answered" in alone
    assert _aliases(platform) == {"champion": "1"}
    assert DeploymentLog(platform.lake.root, NAME).current().reason == "alone"
    assert _materialization(cli_env)["reason"].value == "alone"
    assert announcement["token"]  # it had one, so the service was asked first
