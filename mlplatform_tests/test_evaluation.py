"""Evaluation gates on real models: who gets an alias, and which gate stopped who.

One module-scoped platform: the first model takes the bootstrap path to ``champion``;
each later candidate is judged against it on the holdout (the last two test days).
"""

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from mlplatform.defs.evaluation.assets import IMPORTANCE_EXAMPLES
from mlplatform.defs.evaluation.report import logged_model_id
from mlplatform.lib.deployment import registry as reg
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
    fresh_instance,
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
    with fresh_instance() as instance:
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
    assert text.count("data:image/png;base64,") == 3  # ROC, calibration, global importance
    assert "### Global importance" in text
    for slice_name in ("origin", "carrier", "month", "hour_band"):
        assert f"| {slice_name} |" in text
    html = Path(str(report["evidently_report"]))
    assert html.stat().st_size > 100_000 and html.read_text()[:200].lower().count("html")
    assert '<section id="global-importance"' in html.read_text()  # table and bar plot
    assert 0 < float(report["p50_latency_ms"]) <= float(report["p99_latency_ms"])  # type: ignore[arg-type]
    client = local_tracking(platform.lake.root).client()
    run = client.get_run(client.get_model_version("flight_delay", "1").run_id)
    assert run.data.metrics["holdout_roc_auc"] == pytest.approx(float(report["candidate_roc_auc"]))  # type: ignore[arg-type]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/gates.json" in artifacts and "evaluation/version-1.html" in artifacts


def _card(platform: Platform, version: str) -> str:
    """The model card logged at the root of ``version``'s MLflow run."""
    from mlflow.artifacts import download_artifacts

    tracking = local_tracking(platform.lake.root)
    run_id = tracking.client().get_model_version("flight_delay", version).run_id
    path = download_artifacts(
        run_id=run_id, artifact_path="model_card.md", tracking_uri=tracking.tracking_uri
    )
    return Path(path).read_text()


def _model_metrics(platform: Platform, version: str) -> list:
    """Every metric logged against ``version``'s MLflow logged model."""
    client = local_tracking(platform.lake.root).client()
    model_id = logged_model_id(client.get_model_version("flight_delay", version))
    assert model_id
    return client.get_logged_model(model_id).metrics


def _holdout_metrics(platform: Platform, version: str) -> dict[str, tuple[float, str, str]]:
    """The logged model's newest metrics: name → (value, dataset name, dataset digest)."""
    metrics = sorted(_model_metrics(platform, version), key=lambda m: m.timestamp)
    return {m.key: (m.value, m.dataset_name, m.dataset_digest) for m in metrics}


def test_an_evaluated_version_has_a_model_card_in_its_run_linked_from_dagster(
    gated: tuple[Platform, dg.ExecuteInProcessResult],
) -> None:
    platform, result = gated
    report = _report(result)
    tags = _tags(platform, "1")

    card = _card(platform, "1")

    assert card.startswith("# Model card: flight_delay version 1")
    assert "**Verdict: PASSED** against no champion (bootstrap)" in card
    assert f"| training window | {tags['training_window']} |" in card
    assert f"`{tags['data_version']}`" in card and f"`{report['holdout_version']}`" in card
    assert platform.problem.spec.owner in card and "roc_auc (maximize)" in card
    for gate in ("min_metric", "no_regression", "no_slice_regression", "behavioural_cases"):
        assert f"| {gate} | pass |" in card
    for feature in platform.problem.spec.features:
        assert f"| {feature.name} | {feature.kind} |" in card
    for case in platform.problem.spec.gates.known_failures:
        assert f"| {case} |" in card
    assert "not judged)" in card and "## Known limits" in card
    assert "## Global importance" in card
    assert f"{IMPORTANCE_EXAMPLES} of the {report['dagster/row_count']} holdout rows" in card
    # the candidate's AUC with its DeLong interval
    auc = float(report["candidate_roc_auc"])  # type: ignore[arg-type]
    assert f"roc_auc **{auc:.4f}**, 95% interval" in card and "(delong)" in card
    # linked from the asset: the same card in the lake, and its page in the MLflow UI
    assert Path(str(report["model_card"])).read_text() == card
    assert str(report["model_card_mlflow"]).endswith("/artifactPath/model_card.md")
    # and beside the model itself
    client = local_tracking(platform.lake.root).client()
    model_id = logged_model_id(client.get_model_version("flight_delay", "1"))
    assert model_id
    files = {a.path for a in client.list_logged_model_artifacts(model_id)}
    assert "model_card.md" in files and "model.lgb" in files


def test_holdout_metrics_are_logged_against_the_model_and_the_holdout_dataset(
    gated: tuple[Platform, dg.ExecuteInProcessResult],
) -> None:
    platform, result = gated
    report = _report(result)

    metrics = _holdout_metrics(platform, "1")

    value, name, digest = metrics["holdout_roc_auc"]
    assert value == pytest.approx(float(report["candidate_roc_auc"]))  # type: ignore[arg-type]
    assert (name, digest) == ("flight_delay_holdout_set", report["holdout_version"])
    assert {"holdout_log_loss", "holdout_brier", "serving_p99_ms"} <= set(metrics)
    client = local_tracking(platform.lake.root).client()
    run = client.get_run(client.get_model_version("flight_delay", "1").run_id)
    inputs = {(i.dataset.name, i.dataset.digest): i for i in run.inputs.dataset_inputs}
    holdout = inputs[("flight_delay_holdout_set", report["holdout_version"])]
    assert {t.key: t.value for t in holdout.tags}["mlflow.data.context"] == "evaluation"


def test_contributions_add_up_to_the_raw_score_and_rank_the_features(
    gated: tuple[Platform, dg.ExecuteInProcessResult],
) -> None:
    import numpy as np
    import pandas as pd

    from mlplatform.lib.evaluation.explain import BIAS, contributions, global_importance
    from mlplatform.lib.features.feature_store import feature_matrix

    platform, result = gated
    model = reg.load_version(local_tracking(platform.lake.root), "flight_delay", "1")
    latest = platform.lake.read_latest("flight_delay", "holdout_set")
    assert latest is not None
    holdout = feature_matrix(pd.read_parquet(latest["path"]), platform.problem.spec)
    frame = holdout.head(5)

    values = contributions(model, frame)

    assert list(values.columns) == [*model.encoding.features, BIAS]
    assert (values.dtypes == np.float64).all() and values.index.equals(frame.index)
    raw = np.asarray(model.booster.predict(model.encoding.matrix(frame), raw_score=True))
    np.testing.assert_allclose(values.sum(axis=1).to_numpy(), raw, rtol=1e-9, atol=1e-9)
    # the serving path's explanation of one request is the same row
    row, base = model.contributions_row(model.encoding.matrix(frame)[0].tolist())
    np.testing.assert_allclose([*row, base], values.iloc[0].to_numpy(), rtol=1e-12)
    table = global_importance(values)
    assert BIAS not in set(table["feature"]) and len(table) == len(model.encoding.features)
    assert table["mean_abs_contribution"].is_monotonic_decreasing
    assert table["share"].sum() == pytest.approx(1.0)
    # the evaluation page shows the same ranking, computed on the whole holdout
    shown = _report(result)["global_importance"]
    assert isinstance(shown, dg.TableMetadataValue)
    top = global_importance(contributions(model, holdout))
    assert shown.records[0].data["feature"] == top["feature"].iloc[0]


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
    # a refused version gets its card too: the verdict, the failed gate and its interval
    card = _card(platform, version)
    assert "**Verdict: FAILED** against champion version 1" in card
    assert "| no_regression | FAIL |" in card and "Failed gates: " in card
    assert "paired on the same rows, candidate - champion:" in card
    assert "REFUSED" in card


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
    # both models' figures on this holdout, against their logged models: MLflow compares them
    holdout = ("flight_delay_holdout_set", report["holdout_version"])
    candidate, champion = _holdout_metrics(platform, version), _holdout_metrics(platform, "1")
    assert candidate["holdout_roc_auc"] == (
        pytest.approx(float(report["candidate_roc_auc"])),  # type: ignore[arg-type]
        *holdout,
    )
    assert champion["holdout_roc_auc"][1:] == holdout
    # once from its own evaluation, and again from this comparison (on the champion's run)
    assert sum(m.key == "holdout_roc_auc" for m in _model_metrics(platform, "1")) >= 2
    # what MLflow's model comparison asks: the models scored on this holdout, best first
    client = local_tracking(platform.lake.root).client()
    dataset = {"dataset_name": holdout[0], "dataset_digest": holdout[1]}
    ranked = client.search_logged_models(
        [client.get_experiment_by_name("flight_delay").experiment_id],
        filter_string="metrics.holdout_roc_auc > 0",
        datasets=[dataset],
        order_by=[{"field_name": "metrics.holdout_roc_auc", "ascending": False, **dataset}],
    )
    ids = [m.model_id for m in ranked]
    for v in (version, "1"):
        assert logged_model_id(client.get_model_version("flight_delay", v)) in ids
    assert ids.index(logged_model_id(client.get_model_version("flight_delay", version))) < (
        ids.index(logged_model_id(client.get_model_version("flight_delay", "1")))
    )
    assert champion["holdout_roc_auc"][0] == pytest.approx(float(report["champion_roc_auc"]))  # type: ignore[arg-type]


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
    with fresh_instance() as elsewhere:  # an instance that never saw the training set
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
