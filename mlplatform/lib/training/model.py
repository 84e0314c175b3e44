"""Training: time split, category encoding, a budgeted seeded Optuna search, the final fit.

Deterministic by construction: LightGBM runs with ``deterministic``, ``force_row_wise``,
a fixed seed and thread count; Optuna's TPE sampler is seeded per trial and trials run one
at a time. The same training set, spec and seed give the same model text, also when the
search was killed and resumed.
"""

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from mlplatform.errors import BusyError
from mlplatform.lib.features.tables import EVENT_TS
from mlplatform.spec import METRICS, ProblemSpec, SearchRange, TrainingSpec

if TYPE_CHECKING:
    from concurrent.futures import Executor

    import lightgbm as lgb
    import optuna

THREADS = 2  # the machines have two cores; a fixed count keeps results repeatable


@dataclass(frozen=True)
class Encoding:
    """How model inputs become a float matrix: categorical values map to fixed codes.

    ``boost_from`` (``training.boost_from``): the numeric feature the booster's raw score is
    added to (its value, or ``boost_default``, its training mean, where missing); None: the
    raw score is the prediction.
    """

    features: list[str]
    categories: dict[str, list[str]]
    boost_from: str | None = None
    boost_default: float = 0.0

    def offset(self, x: np.ndarray) -> np.ndarray | None:
        """What the model starts from per row of an encoded matrix, float64; None if nothing."""
        if self.boost_from is None:
            return None
        values = np.asarray(x[:, self.features.index(self.boost_from)], dtype=float)
        return np.where(np.isnan(values), self.boost_default, values)

    def offset_row(self, row: list[float]) -> float:
        """``offset`` of one encoded row (0.0 without ``boost_from``)."""
        if self.boost_from is None:
            return 0.0
        value = row[self.features.index(self.boost_from)]
        return self.boost_default if math.isnan(value) else float(value)

    @property
    def categorical_indices(self) -> list[int]:
        """Positions of the categorical features."""
        return [i for i, f in enumerate(self.features) if f in self.categories]

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode a feature matrix by column name, in this model's feature order.

        Unknown or missing categories become NaN, and so does a feature ``frame`` lacks
        (one the spec dropped since this model was trained: it reaches the model as
        missing, as in serving), so a champion trained on another feature set still scores.
        """
        columns = []
        for name in self.features:
            if name not in frame.columns:
                columns.append(np.full(len(frame), np.nan))
            elif name in self.categories:
                codes = {v: float(i) for i, v in enumerate(self.categories[name])}
                columns.append(frame[name].map(codes).astype(float).to_numpy())
            else:
                columns.append(pd.to_numeric(frame[name], errors="coerce").astype(float).to_numpy())
        return np.column_stack(columns) if columns else np.empty((len(frame), 0))

    def row(self, values: Mapping[str, Any] | Sequence[Any]) -> list[float]:
        """Encode one request's inputs without pandas, for serving, in this model's order.

        ``values``: feature name → value (a name absent is missing: NaN), or a sequence in
        this model's own ``features`` order. By name is what serving uses: the spec's
        feature list may have changed since this model was trained (a feature added or
        dropped), and the champion must keep scoring its own inputs.

        Raises:
            ValueError: a sequence whose length is not the model's feature count.
        """
        if isinstance(values, Mapping):
            vector: Sequence[Any] = [values.get(name) for name in self.features]
        else:
            vector = values
        out = []
        for name, value in zip(self.features, vector, strict=True):
            if name in self.categories:
                index = {v: i for i, v in enumerate(self.categories[name])}.get(value)
                out.append(math.nan if index is None else float(index))
            else:
                out.append(math.nan if value is None else float(value))
        return out

    def to_json(self) -> str:
        """Serialized form, stored beside the model."""
        data: dict[str, Any] = {"features": self.features, "categories": self.categories}
        if self.boost_from is not None:
            data |= {"boost_from": self.boost_from, "boost_default": self.boost_default}
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Encoding":
        """Read the stored form back."""
        data = json.loads(text)
        return cls(
            features=data["features"],
            categories=data["categories"],
            boost_from=data.get("boost_from"),
            boost_default=float(data.get("boost_default", 0.0)),
        )


def fit_encoding(matrix: pd.DataFrame, spec: ProblemSpec) -> Encoding:
    """Codes for every categorical feature: its values in the training data, sorted.

    With ``training.boost_from``, its training mean (0.0 if it is never known) stands in
    where a row lacks it.
    """
    categories = {
        f.name: sorted({str(v) for v in matrix[f.name].dropna()})
        for f in spec.features
        if f.kind == "categorical"
    }
    start = spec.training.boost_from
    mean = pd.to_numeric(matrix[start], errors="coerce").mean() if start else math.nan
    return Encoding(
        features=[f.name for f in spec.features],
        categories=categories,
        boost_from=start,
        boost_default=0.0 if math.isnan(mean) else float(mean),
    )


def time_split(
    training: pd.DataFrame, validation_days: int, timezone: str
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks: the newest ``validation_days`` local days validate, the rest train."""
    local = pd.to_datetime(training[EVENT_TS], utc=True).dt.tz_convert(timezone).dt.date
    days = sorted(local.unique())
    if len(days) <= validation_days:
        raise ValueError(
            f"the training set spans {len(days)} day(s); it needs more than the "
            f"{validation_days} validation day(s)"
        )
    valid = local.isin(days[-validation_days:]).to_numpy()
    return ~valid, valid


def monotone_constraints(spec: ProblemSpec) -> list[int]:
    """LightGBM's per-feature constraint (spec order): +1 increasing, -1 decreasing, 0 free."""
    sign = {"increasing": 1, "decreasing": -1, None: 0}
    return [sign[f.monotone] for f in spec.features]


# The spec's metrics by their names in LightGBM's evaluation results. brier and r2 have no
# LightGBM metric: ``feval`` scores them (``_feval``).
LGB_NAMES = {
    "roc_auc": "auc",
    "average_precision": "average_precision",
    "log_loss": "binary_logloss",
    "brier": "brier",
    "rmse": "rmse",
    "mae": "l1",
    "r2": "r2",
}
SPEC_NAMES = {v: k for k, v in LGB_NAMES.items()}
# What LightGBM computes each round besides the spec's metric (recorded in ``Fit.scores``)
_COMPANIONS = {"binary": ["auc", "binary_logloss"], "regression": ["rmse", "l1"]}


def lgb_metrics(metric: str) -> list[str]:
    """LightGBM's ``metric`` setting for the spec's ``metric``: that metric first.

    Early stopping (``first_metric_only``) and pruning follow the first one. A metric
    LightGBM lacks (brier, r2) is scored by ``feval`` alone: no built-in metric (they would
    come first in LightGBM's results).
    """
    if metric not in LGB_NAMES:
        raise ValueError(f"unknown metric {metric!r} (known: {sorted(LGB_NAMES)})")
    own = LGB_NAMES[metric]
    if metric in ("brier", "r2"):
        return ["none"]
    companions = _COMPANIONS[METRICS[metric][0]]
    return [own, *(c for c in companions if c != own)]


def _feval(metric: str) -> Callable[[np.ndarray, Any], tuple[str, float, bool]] | None:
    """A LightGBM ``feval`` scoring ``metric`` when LightGBM has no such metric, else None.

    LightGBM hands it the predictions after the objective's transform (probabilities for
    ``binary``, values for ``regression``).
    """
    if metric == "brier":

        def brier(preds: np.ndarray, data: Any) -> tuple[str, float, bool]:
            y = np.asarray(data.get_label(), dtype=float)
            return "brier", float(np.mean((np.asarray(preds, float) - y) ** 2)), False

        return brier
    if metric == "r2":

        def r2(preds: np.ndarray, data: Any) -> tuple[str, float, bool]:
            y = np.asarray(data.get_label(), dtype=float)
            total = float(np.sum((y - y.mean()) ** 2))
            residual = float(np.sum((y - np.asarray(preds, float)) ** 2))
            return "r2", (1.0 - residual / total) if total > 0 else math.nan, True

        return r2
    return None


def direction(metric: str) -> Literal["maximize", "minimize"]:
    """``maximize`` or ``minimize``: how the search optimizes ``metric``."""
    return METRICS[metric][1]


def base_params(
    seed: int, monotone: list[int] | None = None, metric: str = "roc_auc"
) -> dict[str, Any]:
    """LightGBM settings every trial and the final fit share.

    The objective follows the task of ``metric`` (the spec's success metric): ``binary``
    (log loss on 0/1 labels, predictions are probabilities) or ``regression`` (squared
    error, predictions are values); LightGBM scores ``lgb_metrics(metric)`` each round.
    """
    constrained = {"monotone_constraints": monotone} if monotone and any(monotone) else {}
    task = METRICS[metric][0]
    return {
        **constrained,
        "objective": "binary" if task == "binary" else "regression",
        "metric": lgb_metrics(metric),
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": THREADS,
        "verbosity": -1,
        "feature_pre_filter": False,  # one Dataset serves trials with other min_child_samples
    }


def suggest(trial: "optuna.Trial", space: dict[str, SearchRange]) -> dict[str, Any]:
    """Sample one point of the search space."""
    params: dict[str, Any] = {}
    for name, r in space.items():
        if r.integer:
            params[name] = trial.suggest_int(name, int(r.low), int(r.high), log=r.log)
        else:
            params[name] = trial.suggest_float(name, r.low, r.high, log=r.log)
    return params


@dataclass
class Data:
    """Training and validation datasets in LightGBM's form."""

    train: "lgb.Dataset"
    valid: "lgb.Dataset"
    encoding: Encoding
    metric: str = "roc_auc"
    """The spec's success metric: what fits are scored, stopped and searched on."""


def datasets(
    x: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    valid: np.ndarray,
    encoding: Encoding,
    metric: str = "roc_auc",
) -> Data:
    """LightGBM datasets of the two splits, categorical features marked.

    ``metric`` is the spec's success metric (``spec.metric.name``).
    """
    import lightgbm as lgb

    common = {
        "feature_name": encoding.features,
        "categorical_feature": encoding.categorical_indices,
        "free_raw_data": False,
        "params": {"feature_pre_filter": False, "verbosity": -1},
    }
    init = encoding.offset(x)  # boost_from: the trees learn the label minus it
    dtrain = lgb.Dataset(
        x[train], label=y[train], init_score=None if init is None else init[train], **common
    )
    dvalid = lgb.Dataset(
        x[valid],
        label=y[valid],
        init_score=None if init is None else init[valid],
        reference=dtrain,
        **common,
    )
    return Data(dtrain, dvalid, encoding, metric)


@dataclass
class Fit:
    """One LightGBM fit, how many rounds it boosted, and its validation scores.

    ``value`` is the validation score of ``metric`` (the spec's success metric); ``scores``
    every metric LightGBM computed on the validation split, by the spec's names (e.g.
    ``roc_auc`` and ``log_loss`` for a binary model, ``rmse`` and ``mae`` for regression).
    """

    booster: "lgb.Booster"
    rounds: int
    metric: str
    value: float
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def auc(self) -> float:
        """Validation ROC AUC (NaN when not computed: a regression model)."""
        return self.scores.get("roc_auc", math.nan)

    @property
    def logloss(self) -> float:
        """Validation log loss (NaN when not computed: a regression model)."""
        return self.scores.get("log_loss", math.nan)


def fit(
    data: Data,
    params: dict[str, Any],
    cfg: TrainingSpec,
    callbacks: list[Any] | None = None,
    counter: dict[str, int] | None = None,
) -> Fit:
    """Boost on the training split, scored on the validation split.

    ``cfg.stopping`` ``early``: at most ``max_rounds``, early-stopped on the validation score
    of ``data.metric`` (the booster keeps its best round); ``params`` are ``base_params``
    of that metric. ``refit_fixed``: exactly ``fixed_rounds(cfg)``,
    scored at the last one (the model ``refit`` then fits on every day).
    """
    import lightgbm as lgb

    counted = counter if counter is not None else {}

    def count(env: Any) -> None:
        counted["rounds"] = env.iteration + 1

    early = cfg.stopping == "early"
    stop = (
        [lgb.early_stopping(cfg.early_stopping_rounds, first_metric_only=True, verbose=False)]
        if early
        else []
    )
    booster = lgb.train(
        params,
        data.train,
        num_boost_round=cfg.max_rounds if early else fixed_rounds(cfg),
        valid_sets=[data.valid],
        valid_names=["valid"],
        feval=_feval(data.metric),
        callbacks=[count, *(callbacks or []), *stop],
    )
    if not early:
        booster.best_iteration = fixed_rounds(cfg)
    best = booster.best_score["valid"]
    scores = {SPEC_NAMES[k]: float(v) for k, v in best.items() if k in SPEC_NAMES}
    if data.metric not in scores:
        raise ValueError(
            f"the fit recorded no validation {data.metric} (it scored {sorted(best)}): "
            f"params must be base_params(..., metric={data.metric!r})"
        )
    return Fit(booster, counted.get("rounds", 0), data.metric, scores[data.metric], scores)


def fixed_rounds(cfg: TrainingSpec) -> int:
    """Rounds of ``refit_fixed``: ``refit_rounds``, never more than ``max_rounds``."""
    return min(cfg.refit_rounds, cfg.max_rounds)


def refit(
    x: np.ndarray, y: np.ndarray, encoding: Encoding, params: dict[str, Any], held: Fit, rounds: int
) -> Fit:
    """``refit_fixed``'s final model: exactly ``rounds`` on every row (all days of the window).

    Its scores stay those of ``held``, the same recipe fitted without the validation days
    and scored on them: the refit model has seen those days.
    """
    booster = refit_booster(x, y, encoding, params, rounds)
    return Fit(booster, rounds, held.metric, held.value, dict(held.scores))


def refit_booster(
    x: np.ndarray, y: np.ndarray, encoding: Encoding, params: dict[str, Any], rounds: int
) -> "lgb.Booster":
    """Exactly ``rounds`` boosting rounds on every row of ``x`` (``refit``'s booster)."""
    import lightgbm as lgb

    everything = lgb.Dataset(
        x,
        label=y,
        init_score=encoding.offset(x),
        feature_name=encoding.features,
        categorical_feature=encoding.categorical_indices,
        params={"feature_pre_filter": False, "verbosity": -1},
    )
    booster = lgb.train(params, everything, num_boost_round=rounds)
    booster.best_iteration = rounds
    return booster


def make_pruner(cfg: TrainingSpec) -> "optuna.pruners.BasePruner":
    """Hyperband or successive halving over boosting rounds, or no pruning."""
    import optuna

    if cfg.pruner == "hyperband":
        rounds = cfg.max_rounds if cfg.stopping == "early" else fixed_rounds(cfg)
        return optuna.pruners.HyperbandPruner(
            min_resource=10, max_resource=rounds, reduction_factor=3
        )
    if cfg.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=10, reduction_factor=3)
    return optuna.pruners.NopPruner()


@dataclass
class SearchResult:
    """The study after the search: best parameters and what the budget bought."""

    study: "optuna.Study"
    best_params: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)
    rounds: int = 0


def exclusive(
    path: Path, what: str, holder: dict[str, Any] | None = None
) -> AbstractContextManager[None]:
    """Hold an exclusive lock on ``path`` (``fcntl.flock``) for the ``with`` block.

    Never waits: when another process holds it, raises ``BusyError`` naming ``what`` and
    the holder (pid, host, since, and whatever it put in ``holder``, e.g. its run id). The
    kernel releases the lock when its holder exits, killed or not, so a killed run never
    leaves it held; the file stays (deleting a lock file races with the next holder).
    """
    return _exclusive(path, what, holder or {})


@contextmanager
def _exclusive(path: Path, what: str, holder: dict[str, Any]) -> Iterator[None]:
    import fcntl
    import os
    import socket

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"{what} is running already ({_holder(path)})") from None
        since = datetime.now(UTC).isoformat(timespec="seconds")
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": since, **holder}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(mine).encode())
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def _holder(path: Path) -> str:
    """Who holds the lock at ``path``, as its holder wrote it."""
    try:
        held = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        held = {}
    if not held:
        return "holder unknown"
    return ", ".join(f"{k} {v}" for k, v in held.items())


def trial_seeded_sampler(seed: int) -> "optuna.samplers.BaseSampler":
    """Optuna's TPE sampler, its random state a function of ``seed`` and the trial number.

    A ``TPESampler(seed=...)`` draws every trial from one random sequence that starts over
    in each process, so a resumed study repeats the parameters of its first trials. Here
    each trial gets a fresh ``TPESampler`` seeded from (seed, trial number): what trial
    ``n`` samples depends only on the seed, ``n`` and the finished trials before it, in
    one process or across a kill and a resume.
    """
    import optuna

    class TrialSeededTPE(optuna.samplers.BaseSampler):
        """Delegates each trial to a TPE sampler seeded for that trial alone."""

        def __init__(self) -> None:
            self._by_trial: dict[int, optuna.samplers.TPESampler] = {}

        def _tpe(self, trial: "optuna.trial.FrozenTrial") -> "optuna.samplers.TPESampler":
            sampler = self._by_trial.get(trial.number)
            if sampler is None:
                (state,) = np.random.SeedSequence([seed, trial.number]).generate_state(1)
                sampler = optuna.samplers.TPESampler(seed=int(state))
                self._by_trial[trial.number] = sampler
            return sampler

        def infer_relative_search_space(self, study, trial):
            return self._tpe(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._tpe(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._tpe(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial) -> None:
            self._tpe(trial).before_trial(study, trial)

        def after_trial(self, study, trial, state, values) -> None:
            self._tpe(trial).after_trial(study, trial, state, values)
            self._by_trial.pop(trial.number, None)

    return TrialSeededTPE()


INTERRUPTED = "interrupted_trials"  # study user attribute: trials dropped on resume, in total


def search(
    data: Data,
    cfg: TrainingSpec,
    storage_url: str,
    study_name: str,
    monotone: list[int] | None = None,
    workers: int = 1,
    executor: "Executor | None" = None,
) -> SearchResult:
    """Run (or resume) the study until ``n_trials`` trials finished (complete or pruned).

    The study optimizes ``data.metric`` (the spec's success metric) in its direction
    (``direction``: e.g. ``maximize`` roc_auc, ``minimize`` log_loss or rmse); pruning
    follows its per-round validation score.

    ``storage_url`` is ``sqlite:///<file>`` (one machine, one process; below), or the
    URL of a shared database (``postgresql+psycopg2://...``): then ``workers`` processes
    run trials of the one study at once (``shared_search``).

    The study lives in SQLite (``storage_url``, ``sqlite:///<file>``); a lock on
    ``<file>.lock`` is held for the whole search, so one process at a time searches in that
    storage (``BusyError`` otherwise), and a trial found unfinished under the lock belongs
    to a process that died. Such trials (killed mid-trial, or failed) are dropped: Optuna
    cannot delete a trial, so the study is re-created under its name from its finished
    trials, which keep their numbers, parameters, values and pruning records, and the
    count of dropped trials is kept in the study's ``interrupted_trials`` attribute. With
    ``trial_seeded_sampler`` the next trial then samples exactly what the interrupted one
    did, and the search goes on as if never interrupted: a resumed study never repeats a
    parameter set and ends in the same trials (and model) as an uninterrupted one.
    """
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState
    from optuna_integration import LightGBMPruningCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not storage_url.startswith("sqlite:///"):
        return shared_search(data, cfg, storage_url, study_name, monotone, workers, executor)
    if workers > 1:
        raise ValueError(f"{workers} search workers need a shared database, not {storage_url}")
    database = Path(storage_url.removeprefix("sqlite:///"))
    finished = (TrialState.COMPLETE, TrialState.PRUNED)

    def open_study(load_if_exists: bool) -> optuna.Study:
        return optuna.create_study(
            study_name=study_name,
            storage=storage_url,
            direction=direction(data.metric),
            load_if_exists=load_if_exists,
            sampler=trial_seeded_sampler(cfg.seed),
            pruner=make_pruner(cfg),
        )

    def objective(trial: optuna.Trial) -> float:
        params = {
            **base_params(cfg.seed, monotone, data.metric),
            **suggest(trial, cfg.search_space),
        }
        counter: dict[str, int] = {}
        pruning = LightGBMPruningCallback(
            trial, LGB_NAMES[data.metric], valid_name="valid", report_interval=10
        )
        try:
            done = fit(data, params, cfg, [pruning], counter)
        finally:
            trial.set_user_attr("rounds", counter.get("rounds", 0))
        # every validation score of the fit: with refit_fixed, the final model's scores
        # are those of its best trial's fit, which then need not be fitted again
        trial.set_user_attr(SCORES, done.scores)
        return done.value

    lock = database.with_name(database.name + ".lock")
    with exclusive(lock, f"an Optuna search in {database}", {"study": study_name}):
        study = open_study(load_if_exists=True)
        trials = study.get_trials(deepcopy=True)
        dropped = [t for t in trials if t.state not in finished]
        if dropped:
            attrs = dict(study.user_attrs)
            optuna.delete_study(study_name=study_name, storage=storage_url)
            study = open_study(load_if_exists=False)
            attrs[INTERRUPTED] = int(attrs.get(INTERRUPTED, 0)) + len(dropped)
            for key, value in attrs.items():
                study.set_user_attr(key, value)
            study.add_trials([t for t in trials if t.state in finished])
        done = len(study.get_trials(deepcopy=False, states=finished))
        if done < cfg.n_trials:
            study.optimize(
                objective,
                n_trials=cfg.n_trials - done,
                timeout=cfg.timeout_seconds,
                n_jobs=1,  # seeded trials repeat only one at a time
                callbacks=[MaxTrialsCallback(cfg.n_trials, states=finished)],
                gc_after_trial=False,
            )
    return _result(study)


# the trial user attribute holding a complete trial's validation scores (``Fit.scores``)
SCORES = "scores"


def held_scores(result: SearchResult | None, cfg: TrainingSpec) -> dict[str, float] | None:
    """The validation scores of the best trial's fit, when it is the held fit of refit_fixed.

    With ``refit_fixed`` a complete trial boosted exactly ``fixed_rounds(cfg)`` on the same
    split with the same parameters (and threads) as the held fit ``train_candidate`` would
    make; deterministic training gives the same scores. None when the study did not record
    them (trials of a shared search, or of a study from before they were recorded), the
    trial did not run every round, or early stopping is the rule.
    """
    if result is None or cfg.stopping != "refit_fixed":
        return None
    best = result.study.best_trial
    scores = best.user_attrs.get(SCORES)
    if not isinstance(scores, dict) or best.user_attrs.get("rounds") != fixed_rounds(cfg):
        return None
    return {str(k): float(v) for k, v in scores.items()}


def _result(study: "optuna.Study") -> SearchResult:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    counts["interrupted"] = int(study.user_attrs.get(INTERRUPTED, 0))
    rounds = sum(int(t.user_attrs.get("rounds", 0)) for t in trials)
    return SearchResult(study, dict(study.best_params), counts, rounds)


# A shared study's trials send a heartbeat; one silent for the grace period belongs to a
# worker that died, and the next trial any worker starts marks it FAIL (Optuna's
# fail_stale_trials), so the budget, which counts only finished trials, redoes it.
HEARTBEAT_SECONDS, GRACE_SECONDS = 20, 60


def _shared_study(
    cfg: TrainingSpec, storage_url: str, study_name: str, metric: str
) -> "optuna.Study":
    import warnings

    import optuna

    with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            storage_url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS
        )
    return optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction=direction(metric),
        load_if_exists=True,  # workers open it at once: Optuna retries a racing create
        sampler=trial_seeded_sampler(cfg.seed),
        pruner=make_pruner(cfg),
    )


def shared_search(
    data: Data,
    cfg: TrainingSpec,
    storage_url: str,
    study_name: str,
    monotone: list[int] | None = None,
    workers: int = 1,
    executor: "Executor | None" = None,
) -> SearchResult:
    """Run (or resume) a study in a shared database, trials on ``workers`` processes at once.

    The trials still missing from ``n_trials`` (complete or pruned) are split between the
    workers, so the budget is kept exactly whichever worker is faster; each worker is one
    ``search_worker`` call on ``executor`` (a Dask client's ``get_executor(pure=False)``
    runs them on the cluster's machines, which need only the database's URL), or on as
    many spawned local processes when ``executor`` is None. Each trial runs LightGBM on
    ``THREADS // workers`` threads (at least one), so two workers share the cores one
    search used. Trials of a worker that died fail after the heartbeat's grace period and
    are redone. Parallel trials see each other's results in the order they finish, so
    unlike a one-process search the trials (and model) are not repeatable.

    Raises:
        Exception: whatever a worker's trial raised (after the other workers finished).
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from optuna.trial import TrialState

    study = _shared_study(cfg, storage_url, study_name, data.metric)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    missing = cfg.n_trials - len(study.get_trials(deepcopy=False, states=finished))
    workers = max(1, min(workers, missing))
    shares = [missing // workers + (i < missing % workers) for i in range(workers)]
    threads = max(1, THREADS // workers)
    if missing <= 0:
        pass
    elif workers == 1:
        search_worker(portable(data), cfg, storage_url, study_name, monotone, shares[0], threads)
    else:
        # spawned, not forked: a forked child would inherit this process's threads and
        # database connections (Optuna's, LightGBM's OpenMP pool)
        own = None if executor else ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
        pool = executor or own
        assert pool is not None
        try:
            payload = portable(data)
            futures = [
                pool.submit(
                    search_worker, payload, cfg, storage_url, study_name, monotone, n, threads
                )
                for n in shares
            ]
            errors = [f.exception() for f in futures]
        finally:
            if own is not None:
                own.shutdown()
        for error in errors:
            if error is not None:
                raise error
    return _result(_shared_study(cfg, storage_url, study_name, data.metric))


Portable = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Encoding, str]


def portable(data: Data) -> Portable:
    """The arrays ``data`` was built from and its metric, to send to another process.

    (LightGBM Datasets do not pickle.)
    """
    return (
        np.asarray(data.train.data),
        np.asarray(data.train.label),
        np.asarray(data.valid.data),
        np.asarray(data.valid.label),
        data.encoding,
        data.metric,
    )


def search_worker(
    arrays: Portable,
    cfg: TrainingSpec,
    storage_url: str,
    study_name: str,
    monotone: list[int] | None,
    n_trials: int,
    threads: int = THREADS,
) -> str:
    """Run ``n_trials`` trials of the shared study in this process; returns ``host:pid``.

    Each trial records the worker that ran it in its ``worker`` user attribute.
    """
    import os
    import socket

    import optuna
    from optuna_integration import LightGBMPruningCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    x_train, y_train, x_valid, y_valid, encoding, metric = arrays
    n_train = len(y_train)
    x, y = np.concatenate([x_train, x_valid]), np.concatenate([y_train, y_valid])
    rows = np.arange(len(y))
    data = datasets(x, y, rows < n_train, rows >= n_train, encoding, metric)
    me = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial: optuna.Trial) -> float:
        params = {
            **base_params(cfg.seed, monotone, data.metric),
            **suggest(trial, cfg.search_space),
        }
        params["num_threads"] = threads
        trial.set_user_attr("worker", me)
        counter: dict[str, int] = {}
        pruning = LightGBMPruningCallback(
            trial, LGB_NAMES[data.metric], valid_name="valid", report_interval=10
        )
        try:
            return fit(data, params, cfg, [pruning], counter).value
        finally:
            trial.set_user_attr("rounds", counter.get("rounds", 0))

    study = _shared_study(cfg, storage_url, study_name, metric)
    study.optimize(
        objective, n_trials=n_trials, timeout=cfg.timeout_seconds, n_jobs=1, gc_after_trial=False
    )
    return me


def history(study: "optuna.Study") -> pd.DataFrame:
    """One row per trial: number, state, value, rounds and parameters."""
    rows = [
        {
            "trial": t.number,
            "state": t.state.name,
            "value": t.value,
            "rounds": t.user_attrs.get("rounds"),
            **t.params,
        }
        for t in study.get_trials(deepcopy=False)
    ]
    return pd.DataFrame(rows)


@dataclass
class Candidate:
    """A trained candidate and how it came about."""

    fit: Fit
    encoding: Encoding
    params: dict[str, Any]
    search: SearchResult | None
    example: pd.DataFrame
    train_rows: int
    valid_rows: int

    def history(self) -> pd.DataFrame:
        """The study's trials (empty when parameters were fixed)."""
        return history(self.search.study) if self.search else pd.DataFrame()


INTEGER_PARAMS = {
    "num_leaves",
    "min_child_samples",
    "min_data_in_leaf",
    "max_depth",
    "max_bin",
    "bagging_freq",
}


def typed_params(params: dict[str, Any], cfg: TrainingSpec) -> dict[str, Any]:
    """Parameters typed as LightGBM wants them: integer ones as ``int``."""
    integer = INTEGER_PARAMS | {n for n, r in cfg.search_space.items() if r.integer}
    return {k: int(v) if k in integer else v for k, v in params.items()}


def train_candidate(
    training: pd.DataFrame,
    spec: ProblemSpec,
    cfg: TrainingSpec,
    storage_url: str,
    study_name: str,
    fixed_params: dict[str, Any] | None = None,
    final_fit: Callable[[Data, dict[str, Any], TrainingSpec], Fit] | None = None,
    workers: int = 1,
    executor: "Executor | None" = None,
) -> Candidate:
    """Encode, split by time, search (unless ``fixed_params``), and fit the final model.

    ``final_fit`` replaces ``fit`` for the final model (``lib.training.distributed.fit_dask`` on a
    Dask cluster); the search runs here, or on ``workers`` processes (``executor``'s, e.g.
    the Dask cluster's) against a shared study database (``shared_search``). With
    ``cfg.stopping`` ``refit_fixed`` the final model is then refit on every day of the
    window, the validation days included (``refit`` here, or ``final_fit`` on all rows for
    ``fixed_rounds(cfg)``); its reported scores are those of the same fit without them.
    """
    from mlplatform.lib.features.feature_store import feature_matrix

    matrix = feature_matrix(training, spec)
    encoding = fit_encoding(matrix, spec)
    x, y = encoding.matrix(matrix), training[spec.target.name].to_numpy()
    train, valid = time_split(training, cfg.validation_days, spec.partitioning.timezone)
    data = datasets(x, y, train, valid, encoding, spec.metric.name)
    monotone = monotone_constraints(spec)
    result = (
        None
        if fixed_params
        else search(data, cfg, storage_url, study_name, monotone, workers, executor)
    )
    params = (
        typed_params(fixed_params, cfg)
        if fixed_params
        else dict(result.best_params if result else {})
    )
    full = {**base_params(cfg.seed, monotone, spec.metric.name), **params}
    if final_fit is not None:
        # a final_fit reads the datasets' rows, which exist once constructed (a search
        # constructs them; fixed parameters skip it)
        data.train.construct()
        data.valid.construct()
    if cfg.stopping == "early":
        final = (final_fit or fit)(data, full, cfg)
    elif final_fit is None:
        rounds = fixed_rounds(cfg)
        recorded = None if fixed_params else held_scores(result, cfg)
        if recorded is None:
            final = refit(x, y, encoding, full, fit(data, full, cfg), rounds)
        else:  # the best trial was the held fit: its scores, without fitting it again
            booster = refit_booster(x, y, encoding, full, rounds)
            final = Fit(booster, rounds, data.metric, recorded[data.metric], recorded)
    else:
        # a final_fit cuts at its best validation round: with patience as long as the fit,
        # on all rows that is the last one or near it
        rounds = fixed_rounds(cfg)
        fixed = cfg.model_copy(update={"max_rounds": rounds, "early_stopping_rounds": rounds})
        held = final_fit(data, full, fixed)
        everything = datasets(x, y, train | valid, valid, encoding, spec.metric.name)
        everything.train.construct()
        everything.valid.construct()
        whole = final_fit(everything, full, fixed)
        final = Fit(whole.booster, whole.rounds, held.metric, held.value, dict(held.scores))
    example = pd.DataFrame(x[:5], columns=encoding.features)
    return Candidate(final, encoding, params, result, example, int(train.sum()), int(valid.sum()))
