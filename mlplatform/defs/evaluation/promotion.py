"""Promotion: the one step that moves a registry alias after the gates.

It runs only when every gate (a blocking check on the evaluation report) passed or was
explicitly overridden. The first model ever to pass becomes ``champion`` directly (the
bootstrap path: there is no traffic to protect and nothing to shadow against); after
that a passing model becomes ``challenger`` and reaches traffic through the rollout.
"""

import dagster as dg

from mlplatform import settings
from mlplatform.defs.evaluation.assets import GROUP, evaluation_key, run_materialization
from mlplatform.problems import Problem
from mlplatform.resources import LakeResource, MlflowResource


def promotion_key(problem: Problem) -> dg.AssetKey:
    """Key of the problem's promotion decision."""
    return dg.AssetKey([problem.name, "promotion"])


def build_promotion_asset(problem: Problem) -> dg.AssetsDefinition:
    """The problem's promotion decision: which alias the evaluated version now holds."""

    @dg.asset(
        key=promotion_key(problem),
        deps=[evaluation_key(problem)],
        group_name=GROUP,
        description=f"Gives the {problem.name} version that passed the gates the alias "
        "`challenger` (or `champion` when there is none yet). Blocked by any failed gate.",
        kinds={"mlflow"},
        owners=[problem.spec.owner],
        tags={"mlplatform/problem": problem.name},
    )
    def _promotion(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
        from mlplatform.lib.deployment import registry as reg
        from mlplatform.lib.deployment.log import REPLACED, DeploymentLog, Transition, plan

        # the report of this run, never a newer one another run wrote in between
        report = run_materialization(context, evaluation_key(problem))
        if report is None:
            event = context.instance.get_latest_materialization_event(evaluation_key(problem))
            report = event.asset_materialization if event else None
        if report is None:
            raise dg.Failure(f"{problem.name}: no evaluation report; materialize it first")
        version = str(report.metadata["registered_version"].value)
        verdict = str(report.metadata["verdict"].value)
        tracking = mlflow.tracking()
        recorded = reg.version_tags(tracking, problem.name, version).get("verdict")
        if verdict not in ("passed", "overridden") or recorded != verdict:
            raise dg.Failure(
                f"{problem.name} version {version}: verdict {verdict!r} (registry: {recorded!r}); "
                "only a passed or explicitly overridden version is promoted"
            )
        try:  # an unreadable registry is not "no champion": never take the bootstrap path
            held = reg.aliases(tracking, problem.name)
        except reg.RegistryError as exc:
            raise dg.Failure(
                f"{problem.name} version {version} not promoted: the aliases are unknown "
                f"({exc}); retry when the registry answers"
            ) from exc
        champion = held.get(reg.CHAMPION)
        if champion == version:
            alias, reason = reg.CHAMPION, "already champion: no alias moves"
        elif champion is None:
            alias, reason = reg.CHAMPION, "bootstrap: the first model to pass the gates"
            reg.set_alias(tracking, problem.name, alias, version)
        else:
            alias = reg.CHALLENGER
            reason = f"{verdict} every gate against champion {champion}"
            log = DeploymentLog(lake.lake().root, problem.name)
            live = plan(held, log.current())
            if live.challenger_active and live.challenger != version:
                # the running shadow or canary ends here: say so in the deployment log
                log.append(
                    Transition(
                        "rolled_back",
                        live.challenger or "",
                        champion,
                        0.0,
                        f"{REPLACED} {version}, which {verdict} the gates",
                        "promotion",
                    )
                )
            reg.set_alias(tracking, problem.name, alias, version)
        replaced = held.get(alias) if held.get(alias) != version else None
        reg.set_version_tags(
            tracking,
            problem.name,
            version,
            {
                "promoted_to": alias,
                "promoted_at": settings.now().isoformat(timespec="seconds"),
                "promotion_run": context.run.run_id,
            },
        )
        context.log.info(f"{problem.name} version {version} → {alias}: {reason}")
        return dg.MaterializeResult(
            metadata={
                "version": version,
                "alias": alias,
                "reason": reason,
                "verdict": verdict,
                "replaced_version": replaced or "none",
                "aliases": dg.MetadataValue.json(reg.aliases(tracking, problem.name)),
            },
            data_version=dg.DataVersion(f"{alias}-{version}"),
        )

    return _promotion
