"""Evaluation gates on real models: who gets an alias, and which gate stopped who.

One module-scoped platform: the first model takes the bootstrap path to ``champion``;
each later candidate is judged against it on the holdout (the last two test days).
"""

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from mlplatform.lib import registry as reg
from mlplatform.lib.tracking import local_tracking
from mlplatform.problems import Problem
from mlplatform_tests.helpers import (
    BETTER,
    CONSTANT,
    FAST,
    STUMP,
    STUMP_TRAINING,
    UNEVEN,
    Platform,
    checks,
    failure_messages,
    materialized,
    tuned_problem,
)


def _gates(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {n: e for (a, n), e in checks(result).items() if a == "evaluation_report"}


def _report(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key and e.asset_key.path[-1] == "evaluation_report"
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _aliases(platform: Platform) -> dict[str, str]:
    return reg.aliases(local_tracking(platform.lake.root), "flight_delay")


def _tags(platform: Platform, version: str) -> dict[str, str]:
    return reg.version_tags(local_tracking(platform.lake.root), "flight_delay", version)


def _failed(result: dg.ExecuteInProcessResult) -> list[str]:
    return sorted(n for n, e in _gates(result).items() if not e.passed)


@pytest.fixture(scope="module")
def gated(
    tmp_path_factory: pytest.TempPathFactory, featured_base: Path, problem: Problem
) -> Iterator[tuple[Platform, dg.ExecuteInProcessResult]]:
    """A platform whose first model (version 1) went through the gates to champion."""
    root = tmp_path_factory.mktemp("gated") / "data"
    shutil.copytree(featured_base, root)
    with dg.instance_for_test() as instance:
        platform = Platform(tuned_problem(problem), root, instance)
        assert platform.run_feature_store().success  # the training set's checks, on record
        result = platform.run_gated_training(params=STUMP, **STUMP_TRAINING)
        yield platform, result


def test_the_first_model_takes_the_bootstrap_path_to_champion(
    gated: tuple[Platform, dg.ExecuteInProcessResult],
) -> None:
    platform, result = gated

    assert result.success, failure_messages(result)
    assert {"model_candidate", "evaluation_report", "promotion"} <= materialized(result)
    assert all(e.passed for e in _gates(result).values())
    assert "bootstrap" in (_gates(result)["no_regression"].description or "")
    assert _aliases(platform) == {"champion": "1"}
    tags = _tags(platform, "1")
    assert tags["verdict"] == "passed" and tags["compared_with"] == "none (bootstrap)"
    assert tags["promoted_to"] == "champion"

    report = _report(result)
    assert report["verdict"] == "passed"
    text = str(report["report"])
    for section in ("### Gates", "### Metrics", "### Slices", "### Behavioural cases"):
        assert section in text
    assert text.count("data:image/png;base64,") == 2  # ROC and calibration
    for slice_name in ("origin", "carrier", "month", "hour_band"):
        assert f"| {slice_name} |" in text
    html = Path(str(report["evidently_report"]))
    assert html.stat().st_size > 100_000 and html.read_text()[:200].lower().count("html")
    assert 0 < float(report["p50_latency_ms"]) <= float(report["p99_latency_ms"])  # type: ignore[arg-type]
    client = local_tracking(platform.lake.root).client()
    run = client.get_run(client.get_model_version("flight_delay", "1").run_id)
    assert run.data.metrics["holdout_roc_auc"] == pytest.approx(float(report["candidate_roc_auc"]))  # type: ignore[arg-type]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/gates.json" in artifacts and "evaluation/version-1.html" in artifacts


def test_a_worse_model_keeps_the_champion_and_names_no_regression(
    gated: tuple[Platform, dg.ExecuteInProcessResult],
) -> None:
    platform, _ = gated

    result = platform.run_gated_training(params=CONSTANT, **FAST)

    assert not result.success
    assert "no_regression" in _failed(result)
    assert "promotion" not in materialized(result)
    version = str(_report(result)["registered_version"])
    assert _aliases(platform) == {"champion": "1"}
    tags = _tags(platform, version)
    assert tags["verdict"] == "failed" and "no_regression" in tags["failed_gates"].split(",")
    reason = _gates(result)["no_regression"].description or ""
    tolerance = platform.problem.spec.gates.max_regression
    assert "regression of" in reason and f"beyond the tolerance {tolerance}" in reason


def test_a_model_that_regresses_on_one_slice_keeps_the_champion(
    gated: tuple[Platform, dg.ExecuteInProcessResult], problem: Problem
) -> None:
    # two test days give UA 295 flights: its 0.088 drop is beyond the spec's 0.03 with 95%
    # confidence only on a 7-day holdout (the spec's size); here the test asks "worse at
    # all" (tolerance 0), Holm over the carriers (see test_gates_noise.py)
    platform, _ = gated
    strict = tuned_problem(problem, slice_tolerance=0.0, slice_family="column")
    platform = Platform(strict, platform.lake.root, platform.instance)

    result = platform.run_gated_training(params=UNEVEN, **FAST)

    assert not result.success
    assert _failed(result) == ["no_slice_regression"]  # better overall, worse for one carrier
    gate = _gates(result)["no_slice_regression"]
    assert gate.description and "carrier=UA" in gate.description
    regressed = gate.metadata["regressed"].value
    assert "carrier=UA" in str(regressed)
    report = _report(result)
    assert float(report["candidate_roc_auc"]) > float(report["champion_roc_auc"])  # type: ignore[arg-type]
    assert "promotion" not in materialized(result)
    assert _aliases(platform) == {"champion": "1"}


def test_a_slow_model_keeps_the_champion_and_names_p99_latency(
    gated: tuple[Platform, dg.ExecuteInProcessResult], problem: Problem
) -> None:
    # LightGBM answers one row in ~0.1 ms even with 5,000 trees, so no model trainable in a
    # test misses the real 20 ms budget: the budget shrinks below what any model can do
    platform, _ = gated
    strict = Platform(
        tuned_problem(problem, p99_latency_ms=0.05), platform.lake.root, platform.instance
    )

    result = strict.run_gated_training(params=BETTER, **FAST)

    assert not result.success
    assert _failed(result) == ["p99_latency"]
    gate = _gates(result)["p99_latency"]
    assert gate.metadata["p99_ms"].value > 0.05  # type: ignore[operator]
    assert "over the budget of 0.05 ms" in (gate.description or "")
    assert _aliases(platform) == {"champion": "1"}


def test_a_better_model_becomes_challenger_and_the_champion_stays(
    gated: tuple[Platform, dg.ExecuteInProcessResult],
) -> None:
    platform, _ = gated

    result = platform.run_gated_training(params=BETTER, **FAST)

    assert result.success, failure_messages(result)
    report = _report(result)
    version = str(report["registered_version"])
    assert float(report["candidate_roc_auc"]) > float(report["champion_roc_auc"]) + 0.03  # type: ignore[arg-type]
    assert _aliases(platform) == {"champion": "1", "challenger": version}
    tags = _tags(platform, version)
    assert tags["verdict"] == "passed" and tags["compared_with"] == "1"
    assert tags["failed_gates"] == "" and tags["promoted_to"] == "challenger"


def test_an_override_is_explicit_and_recorded(
    gated: tuple[Platform, dg.ExecuteInProcessResult], problem: Problem
) -> None:
    platform, _ = gated
    # the uneven model fails no_slice_regression as in the test above (tolerance 0 on 2 days)
    strict = tuned_problem(problem, slice_tolerance=0.0, slice_family="column")
    platform = Platform(strict, platform.lake.root, platform.instance)
    failed = platform.run_gated_training(params=UNEVEN, **FAST)
    version = str(_report(failed)["registered_version"])

    unexplained = platform.run_evaluation(version=version, override_gates=["no_slice_regression"])
    assert not unexplained.success
    assert any("override_reason" in m for m in failure_messages(unexplained))
    assert _aliases(platform).get("challenger") != version

    result = platform.run_evaluation(
        version=version,
        override_gates=["no_slice_regression"],
        override_by="alice@example.com",
        override_reason="UA's January schedule change; accepted for the canary",
    )

    assert result.success, failure_messages(result)
    gate = _gates(result)["no_slice_regression"]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN
    assert (gate.description or "").startswith("OVERRIDDEN by alice@example.com")
    assert _report(result)["verdict"] == "overridden"
    assert _aliases(platform)["challenger"] == version
    tags = _tags(platform, version)
    assert tags["override_by"] == "alice@example.com"
    assert tags["override_reason"].startswith("UA's January")
    assert tags["overridden_gates"] == "no_slice_regression"


def test_a_candidate_without_recorded_training_checks_is_stopped(
    gated: tuple[Platform, dg.ExecuteInProcessResult], tmp_path: Path
) -> None:
    platform, _ = gated
    root = tmp_path / "data"
    shutil.copytree(platform.lake.root, root)
    with dg.instance_for_test() as elsewhere:  # an instance that never saw the training set
        result = Platform(platform.problem, root, elsewhere).run_evaluation(version="1")

    assert not result.success
    assert _failed(result) == ["training_set_checks"]
    assert "no recorded result" in (_gates(result)["training_set_checks"].description or "")


def test_status_reports_aliases_and_the_last_verdict(
    gated: tuple[Platform, dg.ExecuteInProcessResult],
) -> None:
    from mlplatform.status import problem_status

    platform, _ = gated
    result = platform.run_gated_training(params=CONSTANT, **FAST)
    version = str(_report(result)["registered_version"])

    status = problem_status(platform.problem, platform.lake, platform.instance)

    assert status["aliases"] == _aliases(platform) and status["aliases"]["champion"] == "1"
    verdict = status["last_verdict"]
    assert verdict["version"] == version and verdict["passed"] is False
    assert "no_regression" in verdict["failed_gates"] and "min_metric" in verdict["failed_gates"]


def test_a_champion_whose_files_are_gone_fails_evaluation_by_name_and_keeps_its_alias(
    gated: tuple[Platform, dg.ExecuteInProcessResult],
) -> None:
    platform, _ = gated
    tracking = local_tracking(platform.lake.root)
    champion = _aliases(platform)["champion"]
    uri = tracking.client().get_model_version_download_uri("flight_delay", champion)
    files = Path(uri.removeprefix("file://"))
    aside = files.with_name(files.name + ".aside")
    files.rename(aside)  # e.g. an artifact folder deleted with an old checkout
    try:
        result = platform.run_gated_training(params=BETTER, **FAST)
    finally:
        aside.rename(files)

    assert not result.success
    causes = [
        e.step_failure_data.error.cause.message
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data.error and e.step_failure_data.error.cause
    ]
    (message,) = [m for m in causes if "model files" in m]
    assert f"flight_delay version {champion} is registered, but its model files" in message
    assert str(files) in message
    assert _aliases(platform)["champion"] == champion
