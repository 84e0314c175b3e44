"""The model candidate: a budgeted Optuna search, a final LightGBM fit, tracked and registered.

Registering does not deploy: a new version gets tags for its lineage and no alias.
"""

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from mlplatform.defs.training.assets import GROUP, training_set_key
from mlplatform.errors import BusyError
from mlplatform.problems import Problem
from mlplatform.resources import DaskResource, LakeResource, MlflowResource, OptunaResource

if TYPE_CHECKING:
    from mlplatform.lib.storage import DataLake
    from mlplatform.lib.training.model import Fit
    from mlplatform.spec import TrainingSpec


def model_key(problem: Problem) -> dg.AssetKey:
    """Key of the problem's model candidate asset."""
    return dg.AssetKey([problem.name, "model_candidate"])


def training_pool(problem: Problem) -> str:
    """The Dagster concurrency pool of the problem's training (limit 1 in dagster.yaml)."""
    return f"{problem.name}_training"


# Part of every study's name: a change of how trials are sampled starts new studies
# rather than resuming one sampled the old way (v2: TPE seeded per trial number).
SAMPLER_VERSION = "tpe-per-trial-v2"


class SearchRangeConfig(dg.Config):
    """One hyper-parameter's range, editable in the launchpad."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


class ModelConfig(dg.Config):
    """Search settings; anything left unset takes the problem spec's value."""

    seed: int | None = None
    n_trials: int | None = None
    timeout_seconds: float | None = None
    validation_days: int | None = None
    max_rounds: int | None = None
    early_stopping_rounds: int | None = None
    pruner: str | None = None
    search_space: dict[str, SearchRangeConfig] | None = None
    params: dict[str, float] | None = None
    """Fixed LightGBM parameters: when set, no search runs and the final fit uses them."""


def _png_md(png: bytes, title: str) -> dg.MetadataValue:
    import base64

    return dg.MetadataValue.md(
        f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"
    )


def build_model_asset(problem: Problem) -> dg.AssetsDefinition:
    """The problem's model candidate."""
    spec = problem.spec

    @dg.asset(
        key=model_key(problem),
        deps=[training_set_key(problem)],
        group_name=GROUP,
        description=f"LightGBM {'regressor' if spec.is_regression else 'classifier'} of "
        f"{spec.target.name}, tuned by a seeded Optuna search of {spec.metric.name} "
        "({spec.metric.direction}d) within the spec's budget, tracked in MLflow and "
        "registered as a new version.",
        kinds={"lightgbm", "optuna", "mlflow"},
        owners=[spec.owner],
        tags={"mlplatform/problem": problem.name},
        # one training per problem: runs the daemon launches queue here; every run, CLI
        # included, also takes the problem's training lock below
        pool=training_pool(problem),
    )
    def _model(
        context: dg.AssetExecutionContext,
        config: ModelConfig,
        lake: LakeResource,
        mlflow: MlflowResource,
        dask: DaskResource,
        optuna: OptunaResource,
    ) -> dg.MaterializeResult:
        from mlplatform.lib.training import model as tr

        cfg = training_settings(problem, config)
        store = lake.lake()
        # One training per problem at a time, whoever started it: a second one would
        # share the study (duplicate trials, a budget overrun) and register a second
        # version. The lock is held from the search to the registration; it refuses.
        try:
            with tr.exclusive(
                training_lock(store.root, problem),
                f"a training of {problem.name}",
                {"dagster_run": context.run.run_id},
            ):
                return _train(context, problem, cfg, config, store, mlflow, dask, optuna)
        except BusyError as exc:
            raise dg.Failure(
                f"{exc}; this run refuses rather than duplicate its trials and register a "
                "second version. Run it again when that one has ended."
            ) from None

    return _model


# valid_<name> keys of the scores LightGBM computed; a binary model's also under the names
# they had before task types (valid_auc, valid_logloss), which runs and dashboards read
_LEGACY = {"roc_auc": "valid_auc", "log_loss": "valid_logloss"}


def validation_metrics(fit: "Fit") -> dict[str, float]:
    """The final fit's validation scores as metric keys: ``valid_<metric>`` for each.

    The spec's metric and its task's companions (``valid_roc_auc``, ``valid_log_loss``;
    ``valid_rmse``, ``valid_mae``), plus ``valid_auc`` and ``valid_logloss`` for a binary
    model (their names before task types).
    """
    out = {f"valid_{name}": value for name, value in fit.scores.items()}
    out |= {_LEGACY[n]: v for n, v in fit.scores.items() if n in _LEGACY}
    return out


def training_lock(root: Path, problem: Problem) -> Path:
    """The lock file one training of ``problem`` holds (``data/optuna/<problem>.lock``)."""
    return root / "optuna" / f"{problem.name}.lock"


def training_settings(problem: Problem, config: ModelConfig) -> "TrainingSpec":
    """The spec's training block with the run's overrides; ``dg.Failure`` if invalid."""
    import pydantic

    from mlplatform.spec import TrainingSpec

    overrides = {k: v for k, v in config.model_dump().items() if v is not None and k != "params"}
    try:
        return TrainingSpec.model_validate({**problem.spec.training.model_dump(), **overrides})
    except pydantic.ValidationError as exc:
        wrong = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise dg.Failure(f"{problem.name} training settings: {wrong}") from None


def _train(
    context: dg.AssetExecutionContext,
    problem: Problem,
    cfg: "TrainingSpec",
    config: ModelConfig,
    store: "DataLake",
    mlflow: MlflowResource,
    dask: DaskResource,
    optuna: OptunaResource,
) -> dg.MaterializeResult:
    """Search, fit, track and register one candidate (the training lock is held)."""
    from contextlib import nullcontext

    import pandas as pd

    from mlplatform.lib import plots
    from mlplatform.lib.tracking import git_commit, log_training
    from mlplatform.lib.training import model as tr
    from mlplatform.settings import project_root

    spec = problem.spec
    latest = store.read_latest(problem.name, "training_set")
    if latest is None:
        raise dg.Failure(f"{problem.name}: no training set yet; materialize training_set")
    training = pd.read_parquet(latest["path"])
    # the same data, settings and metric give the same study: a rerun resumes or reuses it
    # (another metric, or direction, is another study)
    searched = {**cfg.model_dump(), "sampler": SAMPLER_VERSION, "metric": spec.metric.name}
    settings = json.dumps(searched, sort_keys=True)
    digest = hashlib.sha256(settings.encode()).hexdigest()[:8]
    study_name = f"{problem.name}-{latest['data_version']}-{digest}"
    try:
        storage = optuna.storage(problem.name)
        # the final fit on the Dask cluster when the profile names one; parallel trials
        # too (Celery's worker processes cannot start their own), else local processes
        final_fit = dask.fit if dask.enabled else None
        parallel = optuna.workers > 1 and dask.enabled
        with dask.client() if parallel else nullcontext() as client:
            candidate = tr.train_candidate(
                training,
                spec,
                cfg,
                storage,
                study_name,
                config.params,
                final_fit,
                optuna.workers,
                # pure=False: equal shares are separate tasks, not one cached result
                client.get_executor(pure=False) if client is not None else None,
            )
    except ValueError as exc:
        raise dg.Failure(f"{problem.name} training set {latest['data_version']}: {exc}") from None
    final, result, history = candidate.fit, candidate.search, candidate.history()
    trainer = f"lightgbm.dask ({dask.scheduler_address})" if dask.enabled else "lightgbm"
    valid_scores = validation_metrics(final)
    figures = {"feature_importance": plots.importance(final.booster)}
    if result is not None:
        figures["optimization_history"] = plots.optimization_history(result.study, spec.metric.name)
        searched = plots.param_importances(result.study, spec.metric.name)
        if searched is not None:
            figures["param_importances"] = searched
    # rendered once: the same PNGs go to the MLflow run and to the asset's metadata
    images = {name: plots.png(fig) for name, fig in figures.items()}
    commit = git_commit(project_root(), problem.folder)
    lineage = {
        "data_version": latest["data_version"],
        "git_commit": commit,
        "dagster_run_id": context.run.run_id,
        "spec_version": str(spec.version),
        "training_window": f"{latest['start']}..{latest['end']}",
    }
    logged = log_training(
        mlflow.tracking(),
        experiment=problem.name,
        run_name=f"{problem.name}-{context.run.run_id[:8]}",
        registered_model=problem.name,
        params={
            **candidate.params,
            "search_space": json.dumps(cfg.model_dump()["search_space"]),
            "n_trials": cfg.n_trials if result else 0,
            "seed": cfg.seed,
            "pruner": cfg.pruner,
            "trainer": trainer,
            "best_iteration": final.booster.best_iteration,
            "study": study_name if result else "none: fixed parameters",
        },
        metrics={
            **valid_scores,
            "train_rows": float(candidate.train_rows),
            "valid_rows": float(candidate.valid_rows),
            **(
                {
                    f"best_trial_{spec.metric.name}": float(result.study.best_value),
                    # the name before task types (roc_auc problems): consumers read it
                    **(
                        {"best_trial_auc": float(result.study.best_value)}
                        if spec.metric.name == "roc_auc"
                        else {}
                    ),
                    "search_rounds": float(result.rounds),
                    **{f"trials_{k}": float(v) for k, v in result.counts.items() if v},
                }
                if result
                else {}
            ),
        },
        tags={
            "mlflow.source.git.commit": commit,
            **{f"mlplatform.{k}": v for k, v in lineage.items()},
        },
        booster=final.booster,
        encoding_json=candidate.encoding.to_json(),
        example=candidate.example,
        dataset=training,
        dataset_source=latest["path"],
        dataset_digest=latest["data_version"],
        dataset_name=f"{problem.name}_training_set",
        history=history,
        figures=images,
        version_tags={**lineage},
    )
    url = mlflow.run_url(logged.experiment_id, logged.run_id)
    context.log.info(f"registered {problem.name} version {logged.version} from run {url}")
    return dg.MaterializeResult(
        metadata={
            "mlflow_run_id": logged.run_id,
            "mlflow_run": dg.MetadataValue.url(url),
            "registered_model": problem.name,
            "registered_version": logged.version,
            "model_uri": logged.model_uri,
            "training_set_version": latest["data_version"],
            "git_commit": commit,
            **valid_scores,
            "metric": spec.metric.name,
            "best_iteration": final.booster.best_iteration,
            "trainer": trainer,
            "trials": dg.MetadataValue.json(result.counts if result else {}),
            "best_params": dg.MetadataValue.json(candidate.params),
            **{name: _png_md(png, name) for name, png in images.items()},
        },
        data_version=dg.DataVersion(
            hashlib.sha256(final.booster.model_to_string().encode()).hexdigest()[:16]
        ),
    )
