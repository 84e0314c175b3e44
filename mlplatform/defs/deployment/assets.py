"""The deployment asset: every rollout transition is one materialization with its reason.

The rollout sensor launches it with an action (shadow, canary, full, rollback); a person
can too, from the launchpad, or with ``mlplatform rollback`` / ``mlplatform rollout``,
which record the same materialization without a run so they act within a second.
"""

from typing import Any, Literal

import dagster as dg

from mlplatform.defs.evaluation.promotion import promotion_key
from mlplatform.problems import Problem
from mlplatform.resources import LakeResource, MlflowResource

GROUP = "deployment"
Action = Literal["shadow", "canary", "full", "rollback", "kill"]


def deployment_key(problem: Problem) -> dg.AssetKey:
    """Key of the problem's deployment asset."""
    return dg.AssetKey([problem.name, "deployment"])


def deployment_job_name(problem: Problem) -> str:
    """Name of the job that applies one rollout transition."""
    return f"{problem.name}_deployment"


class DeploymentConfig(dg.Config):
    """One transition: what to do, why, and who asks."""

    action: Action
    reason: str
    actor: str = "dagster"
    share: float = 0.0
    """Canary share; 0 takes the spec's ``rollout.canary_share``."""


def transition_metadata(transition: Any, aliases: dict[str, str]) -> dict[str, Any]:
    """What a deployment materialization records."""
    return {
        "stage": transition.stage,
        "version": transition.version,
        "champion": transition.champion,
        "canary_share": transition.share,
        "reason": transition.reason,
        "actor": transition.actor,
        "time": transition.time,
        "aliases": dg.MetadataValue.json(aliases),
    }


def build_deployment_asset(problem: Problem) -> dg.AssetsDefinition:
    """The problem's deployment: which version takes how much traffic, and why."""

    @dg.asset(
        key=deployment_key(problem),
        deps=[promotion_key(problem)],
        group_name=GROUP,
        description=f"The {problem.name} rollout: the challenger in shadow, then canary, then "
        "full traffic; or rolled back. Each materialization is one transition with its "
        "reason and actor; the registry's aliases and the deployment log hold the state.",
        kinds={"mlflow", "fastapi"},
        owners=[problem.spec.owner],
        tags={"mlplatform/problem": problem.name},
    )
    def _deployment(
        context: dg.AssetExecutionContext,
        config: DeploymentConfig,
        lake: LakeResource,
        mlflow: MlflowResource,
    ) -> dg.MaterializeResult:
        from mlplatform.lib.deployment import registry as reg
        from mlplatform.lib.deployment.rollout import RolloutError, apply

        tracking = mlflow.tracking()
        try:
            done = apply(
                problem.name,
                problem.spec,
                lake.lake().root,
                tracking,
                config.action,
                config.reason,
                config.actor,
                config.share,
            )
        except RolloutError as exc:
            raise dg.Failure(str(exc)) from None
        context.log.info(f"{problem.name}: {done.stage} {done.version}: {done.reason}")
        return dg.MaterializeResult(
            metadata=transition_metadata(done, reg.aliases(tracking, problem.name)),
            data_version=dg.DataVersion(f"{done.stage}-{done.version}-{done.time}"),
        )

    return _deployment


def build_deployment_job(problem: Problem) -> Any:
    """The job the rollout sensor launches."""
    return dg.define_asset_job(
        deployment_job_name(problem),
        selection=dg.AssetSelection.assets(deployment_key(problem)),
        description=f"Apply one {problem.name} rollout transition (config: action, reason).",
    )
