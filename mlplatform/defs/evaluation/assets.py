"""The evaluation report: a candidate against the champion on the holdout after its window.

Its checks are the promotion gates, blocking and one per gate. The step records the
verdict on the model version in the registry; moving an alias is the promotion asset's
job, which the blocking checks stop when any gate fails.
"""

import dagster as dg

from mlplatform import settings
from mlplatform.defs.training.assets import CHECKS_METADATA, holdout_set_key, training_set_key
from mlplatform.defs.training.model import model_key
from mlplatform.lib.names import (
    BEHAVIOURAL_CASES,
    GATES,
    MIN_METRIC,
    NO_LEAKAGE,
    NO_REGRESSION,
    NO_SLICE_REGRESSION,
    ONLINE_PARITY,
    P99_LATENCY,
    POINT_IN_TIME,
    TRAINING_SET_CHECKS,
)
from mlplatform.problems import Problem
from mlplatform.resources import FeastResource, LakeResource, MlflowResource

GROUP = "evaluation"
CASE_EXAMPLES = 300  # holdout rows each behavioural case perturbs
# holdout rows global importance is computed on (seeded): TreeSHAP costs ~3-7 ms a row for
# 300 trees of 64 leaves on these machines; on 1,000 of 6,000 rows the top 5 features are
# the same and their mean |contribution| within 3% of the whole holdout's
IMPORTANCE_EXAMPLES = 1000

_GATES = {
    MIN_METRIC: "The candidate's success metric on the holdout meets the spec's minimum.",
    NO_REGRESSION: "No regression against the champion beyond the spec's tolerance.",
    NO_SLICE_REGRESSION: "No slice named in the spec regresses beyond the slice tolerance.",
    BEHAVIOURAL_CASES: "Every known-failure case of the problem holds.",
    P99_LATENCY: "Steady p99 of one prediction through the serving path within the budget, "
    "and within the spec's ratio of the champion timed in the same rounds.",
    TRAINING_SET_CHECKS: "The checks of the training set the candidate learned from passed.",
}
assert set(_GATES) == set(GATES)


def evaluation_key(problem: Problem) -> dg.AssetKey:
    """Key of the problem's evaluation report."""
    return dg.AssetKey([problem.name, "evaluation_report"])


class EvaluationConfig(dg.Config):
    """Which version to evaluate, and an explicit override of named gates (never implied)."""

    version: str = ""
    """Registered version to evaluate; empty takes the newest model_candidate."""
    override_gates: list[str] = []  # noqa: RUF012 (pydantic copies defaults)
    """Failed gates to let pass as warnings; needs override_by and override_reason."""
    override_by: str = ""
    override_reason: str = ""


def run_materialization(
    context: dg.AssetExecutionContext, key: dg.AssetKey
) -> dg.AssetMaterialization | None:
    """The newest materialization of ``key`` made by this run (or the run it re-executes).

    What an asset built in the same run is the one its downstream step must use: "the
    newest in the instance" may come from another run that finished in between.
    """
    run = context.run
    for run_id in dict.fromkeys(r for r in (run.run_id, run.parent_run_id, run.root_run_id) if r):
        entries = context.instance.all_logs(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        )
        mine = [e.asset_materialization for e in entries if e.asset_materialization]
        mine = [m for m in mine if m.asset_key == key]
        if mine:
            return mine[-1]
    return None


def _candidate_version(context: dg.AssetExecutionContext, problem: Problem, config_version: str):
    """The version to judge: the configured one, else the candidate this run trained.

    Only a run that trained no candidate (the evaluation job, `mlplatform evaluate`
    without ``--version``) takes the newest candidate in the instance.
    """
    if config_version:
        return config_version
    materialization = run_materialization(context, model_key(problem))
    if materialization is None:
        event = context.instance.get_latest_materialization_event(model_key(problem))
        materialization = event.asset_materialization if event else None
    meta = materialization.metadata if materialization else {}
    if "registered_version" not in meta:
        raise dg.Failure(f"{problem.name}: no model candidate yet; materialize model_candidate")
    return str(meta["registered_version"].value)


def _training_check_statuses(
    instance: dg.DagsterInstance, problem: Problem, data_version: str
) -> dict[str, bool | None]:
    """Pass/fail of each training-set check on ``data_version``; ``None`` where not recorded.

    The training set records its checks' outcomes in its own materialization
    (``CHECKS_METADATA``), so the newest materialization of that version answers.
    """
    names = [POINT_IN_TIME, NO_LEAKAGE, ONLINE_PARITY]
    statuses: dict[str, bool | None] = dict.fromkeys(names)
    records = instance.fetch_materializations(training_set_key(problem), limit=100).records
    for record in records:  # newest first
        meta = record.asset_materialization.metadata if record.asset_materialization else {}
        version = meta.get("data_version")
        if version is None or version.value != data_version:
            continue
        recorded = meta.get(CHECKS_METADATA)
        passed = recorded.value if recorded is not None else {}
        if isinstance(passed, dict):
            statuses |= {n: bool(passed[n]) for n in names if n in passed}
        break
    return statuses


def build_evaluation_asset(problem: Problem) -> dg.AssetsDefinition:
    """The problem's evaluation report, its gates as blocking checks."""
    key = evaluation_key(problem)
    spec = problem.spec

    @dg.asset(
        key=key,
        deps=[model_key(problem), holdout_set_key(problem)],
        group_name=GROUP,
        description=f"The newest {problem.name} candidate against the champion on the holdout "
        "days after its training window: metrics, slices, behavioural cases and serving "
        "latency. Its checks are the promotion gates.",
        kinds={"mlflow", "evidently"},
        owners=[spec.owner],
        check_specs=[
            dg.AssetCheckSpec(name, asset=key, blocking=True, description=text)
            for name, text in _GATES.items()
        ],
        tags={"mlplatform/problem": problem.name},
    )
    def _evaluation_report(
        context: dg.AssetExecutionContext,
        config: EvaluationConfig,
        lake: LakeResource,
        feast: FeastResource,
        mlflow: MlflowResource,
    ) -> dg.MaterializeResult:
        from functools import partial

        import pandas as pd

        from mlplatform.defs.evaluation.report import (
            Judged,
            log_evaluation,
            log_model_card,
            report_metadata,
        )
        from mlplatform.defs.metadata import check_result
        from mlplatform.lib.deployment import registry as reg
        from mlplatform.lib.deployment.scoring import OnlineScorer, offline_score
        from mlplatform.lib.evaluation import explain, gates
        from mlplatform.lib.evaluation import metrics as ev
        from mlplatform.lib.evaluation.comparison import compare
        from mlplatform.lib.features.feature_store import feature_matrix

        tracking, store = mlflow.tracking(), lake.lake()
        version = _candidate_version(context, problem, config.version)
        tags = reg.version_tags(tracking, problem.name, version)
        latest = store.read_latest(problem.name, "holdout_set")
        if latest is None:
            raise dg.Failure(f"{problem.name}: no holdout set yet; materialize holdout_set")
        trained_until = tags.get("training_window", "..").split("..")[-1]
        if trained_until and latest["start"] <= trained_until:
            raise dg.Failure(
                f"{problem.name} version {version} was trained on days up to {trained_until}; "
                f"the holdout {latest['start']}..{latest['end']} overlaps it. Rebuild the "
                "training and holdout sets, then train again."
            )
        holdout = pd.read_parquet(latest["path"])
        try:  # an unreadable registry is not "no champion": never judge it as a bootstrap
            champion_version = reg.aliases(tracking, problem.name).get(reg.CHAMPION)
        except reg.RegistryError as exc:
            raise dg.Failure(
                f"{problem.name} version {version} not evaluated: whether a champion exists "
                f"is unknown ({exc}); retry when the registry answers"
            ) from exc
        models = {"candidate": reg.load_version(tracking, problem.name, version)}
        if champion_version:
            models["champion"] = reg.load_version(tracking, problem.name, champion_version)

        y = holdout[spec.target.name].to_numpy()
        matrix = feature_matrix(holdout, spec)
        predictions = {n: m.predict_matrix(m.encoding.matrix(matrix)) for n, m in models.items()}
        summaries = {n: ev.summary(y, p, spec.task) for n, p in predictions.items()}
        seed = spec.training.seed
        slice_columns = problem.slices(holdout)
        g = spec.gates
        slices = ev.slice_metrics(
            slice_columns,
            y,
            predictions,
            spec.metric.name,
            g.min_slice_rows,
            g.min_slice_positives,
            spec.task,
        )
        # paired on the same rows: a confidence interval of the difference, not two numbers
        comparison = g.comparison_settings(seed)
        slices = ev.paired_slices(
            slices, slice_columns, y, predictions, spec.metric.name, comparison
        )
        overall = (
            compare(
                spec.metric.name, y, predictions["candidate"], predictions["champion"], **comparison
            )
            if champion_version
            else None
        )
        candidate = models["candidate"]
        # global importance: mean |TreeSHAP contribution| of each feature over the holdout
        explained = matrix.sample(n=min(IMPORTANCE_EXAMPLES, len(matrix)), random_state=seed)
        importance = explain.global_importance(explain.contributions(candidate, explained))
        cases = ev.run_cases(
            problem.behavioural_cases(),
            ev.sample_records(holdout, CASE_EXAMPLES, seed),
            lambda record: offline_score(problem, candidate, record),
        )
        fs = feast.store(problem)
        scorer = OnlineScorer(problem, fs, feast.service(problem, fs))
        requests = ev.sample_records(holdout, spec.gates.latency_requests, seed + 1)
        # candidate and champion through the same path, interleaved in the same rounds, so
        # a busy machine slows both alike and its stalls drop out of the steady p99s
        timed = {n: partial(scorer.score, m) for n, m in models.items()}
        latency = ev.latency_summary(ev.time_interleaved(timed, requests, seed=seed))

        value = summaries["candidate"][spec.metric.name]
        outcomes = [
            gates.min_metric(value, spec.metric, spec.gates),
            gates.no_regression(value, overall, spec.metric, spec.gates),
            gates.no_slice_regression(slices, bool(champion_version), spec.metric, spec.gates),
            gates.behavioural_cases(cases),
            gates.p99_latency(latency, spec.gates),
            gates.training_set_checks(
                _training_check_statuses(context.instance, problem, tags.get("data_version", "")),
                tags.get("data_version", "unknown"),
            ),
        ]
        try:
            outcomes, overridden = ev.override(
                outcomes, config.override_gates, config.override_by, config.override_reason
            )
        except ValueError as exc:
            raise dg.Failure(f"{problem.name} evaluation config: {exc}") from None
        verdict, failed = ev.verdict(outcomes)
        result = ev.Evaluation(summaries, predictions, y, slices, cases, latency)
        evaluated_at = settings.now().isoformat(timespec="seconds")
        verdict_tags = {
            "verdict": verdict,
            "failed_gates": ",".join(failed),
            "compared_with": champion_version or "none (bootstrap)",
            "holdout_version": latest["data_version"],
            "evaluation_run": context.run.run_id,
            "evaluated_at": evaluated_at,
        }
        if overridden:
            verdict_tags |= {
                "override_by": config.override_by,
                "override_reason": config.override_reason,
                "overridden_gates": ",".join(overridden),
            }
        verdict_tags = reg.record_verdict(tracking, problem.name, version, verdict_tags)
        judged = Judged(
            problem,
            version,
            champion_version,
            latest,
            result,
            outcomes,
            verdict,
            importance,
            tags,
            importance_examples=len(explained),
        )
        html, run_url = log_evaluation(tracking, mlflow, store, judged, holdout)
        card = log_model_card(tracking, mlflow, store, judged, verdict_tags)
        context.log.info(
            f"{problem.name} version {version}: {verdict}"
            + (f" (failed: {', '.join(failed)})" if failed else "")
        )
        return dg.MaterializeResult(
            metadata=report_metadata(judged, verdict_tags, html, run_url, card),
            check_results=[check_result(o, key) for o in outcomes],
            data_version=dg.DataVersion(f"{version}-{latest['data_version']}-{verdict}"),
        )

    return _evaluation_report
