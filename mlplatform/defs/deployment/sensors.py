"""The rollout sensor: starts a new challenger's shadow, then advances or rolls it back.

Each tick reads the registry, the deployment log and the prediction log joined to the
outcomes that arrived, applies ``lib.deployment.rollout.decide`` and asks for at most one
transition (a run of the deployment job with its reason). A promotion (to canary or to
full) waits while a day of the challenger's traffic since its stage began has its
``serving_skew`` check at ERROR (train/serve skew); rollbacks never wait.
"""

import dagster as dg

from mlplatform.defs.deployment.assets import deployment_job_name
from mlplatform.defs.monitoring.assets import skew_by_day
from mlplatform.problems import Problem
from mlplatform.resources import LakeResource, MlflowResource

INTERVAL_SECONDS = 30
PROMOTIONS = ("canary", "full")


def rollout_sensor_name(problem: Problem) -> str:
    """Name of the problem's rollout sensor."""
    return f"{problem.name}_rollout"


def build_rollout_sensor(problem: Problem) -> dg.SensorDefinition:
    """The problem's rollout sensor, on by default."""
    op = f"{problem.name}__deployment"

    def request(version: str, action: str, reason: str, stamp: str) -> dg.RunRequest:
        config = {"action": action, "reason": reason, "actor": "rollout sensor"}
        return dg.RunRequest(
            run_key=f"{version}-{action}-{stamp}",
            run_config={"ops": {op: {"config": config}}},
            tags={"mlplatform/action": action, "mlplatform/version": version},
        )

    @dg.sensor(
        name=rollout_sensor_name(problem),
        job_name=deployment_job_name(problem),
        minimum_interval_seconds=INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Moves a {problem.name} challenger through shadow and canary to full "
        "traffic, or rolls it back when its online figures fail the spec's criteria.",
    )
    def _rollout(context: dg.SensorEvaluationContext, lake: LakeResource, mlflow: MlflowResource):
        from mlplatform.lib.deployment import registry as reg
        from mlplatform.lib.deployment.log import DeploymentLog, plan
        from mlplatform.lib.deployment.online import challenger_figures
        from mlplatform.lib.deployment.prediction_log import read_predictions
        from mlplatform.lib.deployment.rollout import decide, since
        from mlplatform.lib.monitoring.skew import hold_reason, traffic_days

        spec = problem.spec
        store, tracking = lake.lake(), mlflow.tracking()
        current = DeploymentLog(store.root, problem.name).current()
        p = plan(reg.aliases(tracking, problem.name), current)
        if p.challenger and p.champion and current.version != p.challenger:
            cleared = reg.clearance(tracking, problem.name, p.challenger)
            if not cleared.cleared:  # an alias set by hand, past the gates: not rolled out
                return dg.SkipReason(f"challenger not rolled out: {cleared.reason}")
            tags = reg.version_tags(tracking, problem.name, p.challenger)
            reason = f"version {p.challenger} {tags.get('verdict', 'passed')} the gates"
            return request(p.challenger, "shadow", reason, "start")
        if not p.challenger_active or p.challenger is None:
            return dg.SkipReason(f"no challenger in shadow or canary (stage {current.stage})")
        start = since(current)
        logged = read_predictions(store.root, problem.name, start)
        figures = challenger_figures(
            logged,
            store,
            problem.name,
            spec,
            p.challenger,
            start,
        )
        context.log.info(f"{problem.name} {p.stage} {p.challenger}: {figures}")
        decision = decide(p.stage, figures, spec.rollout, spec.metric.name, spec.metric.direction)
        if decision is None:
            return dg.SkipReason(f"{p.stage} of {p.challenger}: waiting ({figures})")
        action, reason = decision
        if action in PROMOTIONS:
            days = traffic_days(logged, p.challenger, spec.partitioning.timezone)
            held = hold_reason(skew_by_day(context.instance, problem), days)
            if held:
                context.log.warning(f"{problem.name} {p.challenger}: {action} held: {held}")
                return dg.SkipReason(f"{p.stage} of {p.challenger}: {action} held: {held}")
        return request(p.challenger, action, reason, current.time)

    return _rollout
