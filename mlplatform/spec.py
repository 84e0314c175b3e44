"""The problem spec: one declarative YAML file per problem, validated here.

The spec is the single place where a problem states its data, target, features, metric,
gates, rollout plan, monitoring and retraining triggers. The machinery compiles it into
schemas, checks and thresholds; nothing is hard-coded twice.
"""

from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlplatform.errors import UsageError

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]
TimePart = Literal["year", "month", "day", "hour", "minute"]


class SpecError(UsageError):
    """A problem spec that cannot be used; the message names the file and the fields."""


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a spec must never be silently ignored.
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, use_attribute_docstrings=True
    )


class Partitioning(_Strict):
    """Partitions of the problem's event data, in the local time of the data."""

    start: date
    """First day of the data (YYYY-MM-DD), in the partitioning timezone."""
    end: date
    """Day after the last day of the data (exclusive)."""
    timezone: str = "UTC"
    """IANA time zone of the data's local days (e.g. America/New_York): partitions start at its
    midnight.
    """
    granularity: Literal["daily", "hourly"] = Field(
        default="daily",
        description="How the daily sources are landed, checked and ingested: one batch per "
        "local day, or per local hour (Dagster's HourlyPartitionsDefinition in `timezone`). "
        "Hourly batches are typed into the same daily tables, so features, training, "
        "monitoring and batch scoring stay daily.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


class VolumeRule(_Strict):
    """Row volume as a ratio to the median of the trailing accepted partitions.

    With ``basis: same_weekday`` the median is over the same weekday of the trailing window
    (weekday and weekend volumes differ); until ``min_history`` such days are accepted it
    falls back to every accepted day of the window, and with fewer than that it does not
    judge (the first days of a lake). A ratio outside ``warn_range`` warns; outside
    ``error_range`` it blocks, until a user overrides the check (who, why).
    """

    trailing_days: int = Field(default=35, ge=1)
    """Days before the partition whose accepted row counts form the baseline."""
    basis: Literal["same_weekday", "all_days"] = "same_weekday"
    """Baseline: the same weekday of the trailing window, or every day of it."""
    min_history: int = Field(default=3, ge=1)
    """Accepted baseline days needed before the rule judges at all."""
    warn_range: tuple[float, float] = (0.8, 1.25)
    """Ratio to the baseline median outside which the check warns: [low, high]."""
    error_range: tuple[float, float] = (0.6, 1.6)
    """Ratio outside which the batch is refused (blocking, overridable): [low, high]."""

    @model_validator(mode="after")
    def _nested(self) -> Self:
        (wl, wh), (el, eh) = self.warn_range, self.error_range
        if not 0 <= el <= wl <= 1 <= wh <= eh:
            raise ValueError(
                f"need 0 <= error low <= warn low <= 1 <= warn high <= error high, "
                f"got warn_range {self.warn_range}, error_range {self.error_range}"
            )
        return self


class IngestionDrift(_Strict):
    """Drift of key columns of a source against the preceding days (Evidently, WARN only)."""

    columns: list[str] = Field(min_length=1)
    """Columns of the source compared with the preceding days."""
    reference_days: int = Field(default=14, ge=1)
    """Preceding accepted days forming the reference."""
    method: str = "psi"
    """Evidently stattest per column (psi, wasserstein, kl_div, jensenshannon, ks...)."""
    threshold: float = Field(default=0.2, gt=0)
    """Score at which a column drifts (a distance at or above it; a p-value test at or below)."""


class StreamSpec(_Strict):
    """Events of a source pushed to the feature store as they happen, within the day.

    The plug-in's ``source.export_events(source, start, end)`` gives the events whose
    ``event_time`` (UTC) falls in ``[start, end)``; ``source.stream_events(source, frame)``
    derives the same events from a validated day, so the offline path (the evening's batch)
    and the online path (the pushes) see one history. Each push holds one hour's events.
    """

    description: str
    """What the pushed events are, for people."""
    schema_name: str = Field(alias="schema", description="DataFrameModel of one pushed event")
    event_time: str = Field(description="column: when the event became known, UTC")
    freshness_minutes: int = Field(
        default=120, ge=1, description="a feed silent this long is late (freshness policy)"
    )


class SourceSpec(_Strict):
    """One data source: a daily export, a reference snapshot, or a stream.

    A ``stream`` source is landed and validated daily like a ``daily`` one (the system of
    record for training); its events are also pushed hour by hour (``stream``).
    """

    kind: Literal["daily", "reference", "stream"]
    """daily: one export per day; reference: a snapshot; stream: daily, and its events also pushed
    within the day.
    """
    description: str
    """What the source holds, for people."""
    schema_name: str = Field(alias="schema", description="DataFrameModel in the problem's schemas")
    format: Literal["csv", "parquet"] = "csv"
    """File format of the landed exports."""
    natural_key: list[str] = Field(min_length=1)
    """Columns identifying one row; duplicates are refused."""
    event_timestamp: str | None = None
    """Column holding when the row happened (UTC); required for daily and stream sources, whose
    partition follows it.
    """
    max_null_rate: dict[str, Ratio] = Field(default_factory=dict)
    """Per column, the largest share of nulls a batch may have."""
    null_values: list[str] = Field(
        default_factory=lambda: [""],
        description="the only spellings read as null (CSV); any other text is a value, so "
        "'N/A' in a numeric column is a schema failure, never a silent null",
    )
    naive_timezone: str | None = Field(
        default=None,
        description="IANA zone of timestamps written without a UTC offset; unset, such "
        "timestamps are refused",
    )
    timestamp_parts: dict[str, TimePart] = Field(
        default_factory=dict,
        description="columns restating a part of event_timestamp in the partitioning "
        "timezone (column: year, month, day, hour or minute); a check verifies they agree",
    )
    volume: VolumeRule | None = None
    """Row-volume rule of a daily source; unset: volume is not judged."""
    drift: IngestionDrift | None = None
    """Ingestion drift rule of a daily source (WARN only); unset: none."""
    stream: StreamSpec | None = None
    """The pushed events of a stream source (required for kind: stream, only then)."""

    @property
    def is_daily(self) -> bool:
        """Landed as one export per day (``daily`` and ``stream`` sources)."""
        return self.kind != "reference"

    @model_validator(mode="after")
    def _daily_needs_time(self) -> Self:
        if self.is_daily and not self.event_timestamp:
            raise ValueError(f"a {self.kind} source needs event_timestamp")
        if (self.kind == "stream") != (self.stream is not None):
            raise ValueError(
                "stream: a stream source needs its stream block, no other kind has one"
            )
        if self.kind == "reference" and (self.volume or self.drift):
            raise ValueError("volume and drift rules apply to daily sources only")
        if self.timestamp_parts and not self.event_timestamp:
            raise ValueError("timestamp_parts: restate parts of event_timestamp, which is unset")
        if self.naive_timezone is not None:
            try:
                ZoneInfo(self.naive_timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"naive_timezone: unknown time zone {self.naive_timezone!r} "
                    "(an IANA name such as America/New_York)"
                ) from None
        return self


class Entity(_Strict):
    """A business object features are keyed by."""

    join_keys: list[str] = Field(min_length=1)
    """Columns that identify one instance; feature tables and entity rows carry them."""
    description: str
    """What the entity is, for people."""


class TargetSpec(_Strict):
    """The label, known only after the fact.

    ``task: binary``: a comparison on an outcome column (``column operator value``, 0/1);
    ``task: regression``: the outcome column itself (no ``operator`` or ``value``).
    """

    name: Name
    """Name of the label column in training sets and reports."""
    source: str
    """The daily source whose rows are predicted and labelled."""
    column: str
    """The outcome column of that source the label is computed from."""
    operator: Literal[">", ">=", "<", "<=", "=="] | None = None
    """task binary: the comparison making the 0/1 label (column operator value); regression: unset.
    """
    value: float | None = None
    """task binary: the value compared with; regression: unset."""
    description: str
    """What the label means, including rows that have none."""
    outcomes: list[str] = Field(
        default_factory=list,
        description="columns known only after prediction time; never features",
    )


class FeatureSpec(_Strict):
    """One model input and where it comes from."""

    name: Name
    """The model input's name: a column of a feature table or of entity_row's output."""
    source: str
    """The spec source the value derives from (lineage, drift reports)."""
    kind: Literal["numeric", "categorical"]
    """numeric (a float) or categorical (a string category)."""
    description: str
    """What the value is, with its unit."""
    default: float | str | None = None
    """Value used when none is found (training and serving alike); unset: missing."""
    monotone: Literal["increasing", "decreasing"] | None = Field(
        default=None, description="Constrain the model's response to this numeric feature"
    )

    @model_validator(mode="after")
    def _monotone_numeric(self) -> Self:
        if self.monotone and self.kind != "numeric":
            raise ValueError(f"monotone: {self.name!r} is {self.kind}; only numeric features")
        return self


Task = Literal["binary", "regression"]
MetricName = Literal["roc_auc", "average_precision", "log_loss", "brier", "rmse", "mae", "r2"]
# Each metric's task and the direction in which it improves (scikit-learn's definitions).
METRICS: dict[str, tuple[Task, Literal["maximize", "minimize"]]] = {
    "roc_auc": ("binary", "maximize"),
    "average_precision": ("binary", "maximize"),
    "log_loss": ("binary", "minimize"),
    "brier": ("binary", "minimize"),
    "rmse": ("regression", "minimize"),
    "mae": ("regression", "minimize"),
    "r2": ("regression", "maximize"),
}


class MetricSpec(_Strict):
    """The success metric the gates and the tuner optimise, and its direction."""

    name: MetricName
    """The metric: roc_auc, average_precision, log_loss, brier (binary); rmse, mae, r2
    (regression).
    """
    direction: Literal["maximize", "minimize"]
    """The metric's natural direction (checked): maximize for roc_auc, average_precision, r2;
    minimize for the others.
    """

    @model_validator(mode="after")
    def _natural_direction(self) -> Self:
        natural = METRICS[self.name][1]
        if self.direction != natural:
            raise ValueError(
                f"direction: {self.name} improves when it is {natural}d, not {self.direction}d"
            )
        return self


class SearchRange(_Strict):
    """A hyper-parameter's search range (log scale for rates and regularisation)."""

    low: float
    """Lowest value tried."""
    high: float
    """Highest value tried (above low)."""
    log: bool = False
    """Sample on a log scale."""
    integer: bool = False
    """Sample whole numbers."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be above low ({self.low})")
        return self


def _default_space() -> dict[str, SearchRange]:
    return {
        "learning_rate": SearchRange(low=0.02, high=0.3, log=True),
        "num_leaves": SearchRange(low=8, high=128, log=True, integer=True),
        "min_child_samples": SearchRange(low=10, high=200, log=True, integer=True),
        "feature_fraction": SearchRange(low=0.5, high=1.0),
        "lambda_l2": SearchRange(low=1e-3, high=10.0, log=True),
    }


class TrainingSpec(_Strict):
    """The budgeted, seeded search and the final fit."""

    seed: int = 42
    """Seed of the search and of LightGBM (a run repeats exactly)."""
    n_trials: int = Field(default=20, ge=1)
    """Optuna trials per training: the search budget."""
    timeout_seconds: float = Field(default=600, gt=0)
    """Stops a runaway search after this many seconds."""
    validation_days: int = Field(default=7, ge=1)
    """The newest days of the training window that score the trials."""
    max_rounds: int = Field(default=400, ge=10)
    """Most boosting rounds of a trial (stopping: early)."""
    early_stopping_rounds: int = Field(default=30, ge=1)
    """Rounds without improvement after which a trial stops (stopping: early)."""
    pruner: Literal["hyperband", "successive_halving", "none"] = "hyperband"
    """Optuna pruner stopping poor trials early."""
    search_space: dict[str, SearchRange] = Field(default_factory=_default_space)
    """LightGBM parameters searched, each with its range (learning_rate, num_leaves, ...)."""
    stopping: Literal["early", "refit_fixed"] = Field(
        default="early",
        description="early: boost on the window minus its newest validation_days, stopped "
        "early on them (max_rounds at most), and keep that model; refit_fixed: every trial "
        "boosts exactly refit_rounds and is scored on the validation days at that round, "
        "then the final model is refit for refit_rounds on every day of the window",
    )
    refit_rounds: int = Field(
        default=300,
        ge=10,
        description="Boosting rounds of refit_fixed (trials and final fit), never more than "
        "max_rounds",
    )
    boost_from: str | None = Field(
        default=None,
        description="Regression only: a numeric feature the model starts from. LightGBM "
        "boosts from its value (init_score), so the trees learn the target minus it, and "
        "every prediction (serving, batch, evaluation) adds it back; its explanation "
        "carries the value in that feature's contribution. A row without it starts from "
        "the feature's training mean. null: boost from the label mean",
    )


class GatesSpec(_Strict):
    """What a candidate must show before it may take traffic."""

    min_metric: float
    """The holdout metric a candidate must reach: at least it (maximize) or at most it (minimize).
    """
    max_regression: float = Field(ge=0)
    """How much worse than the champion, in the metric's units, the candidate may be (non-
    inferiority).
    """
    slices: list[str] = Field(default_factory=list)
    """Slicing columns of the evaluation set, or SLICES of evaluation.py, where the candidate must
    not be worse.
    """
    slice_tolerance: float = Field(default=0.02, ge=0)
    """How much worse, in the metric's units, a slice may be before it is refused."""
    min_slice_rows: int = Field(default=200, ge=1)
    """Rows a slice needs to be judged."""
    min_slice_positives: int = Field(
        default=30, ge=1, description="Positive labels a slice needs to be judged"
    )
    confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="Two-sided level of the paired difference's interval: the overall metric "
        "passes when the whole interval of its drop is within max_regression (non-inferiority); "
        "a slice is refused when its drop is beyond slice_tolerance with this confidence, "
        "after the family's adjustment",
    )
    comparison: Literal["auto", "delong", "bootstrap"] = Field(
        default="auto", description="auto: DeLong for roc_auc, a paired bootstrap otherwise"
    )
    bootstrap_resamples: int = Field(default=1000, ge=100, description="Seeded, over rows")
    slice_error_control: Literal["holm", "bh", "none"] = Field(
        default="holm",
        description="Over the family of judged slices: holm (family-wise error rate) or bh "
        "(Benjamini-Hochberg, false discovery rate)",
    )
    slice_family: Literal["column", "all"] = Field(
        default="all",
        description="What one family of slices is: the values of one slicing column (every "
        "carrier), or every judged slice at once",
    )
    known_failures: list[str] = Field(default_factory=list)
    """Behavioural cases (CASES of evaluation.py) every candidate must pass."""
    p99_latency_ms: float = Field(gt=0)
    """p99 of one prediction (features included), in milliseconds, a candidate must meet."""
    holdout_days: int = Field(default=7, ge=1, description="Days after the training window")
    latency_requests: int = Field(default=300, ge=20, description="Requests per timed round")
    max_latency_ratio: float = Field(
        default=1.5,
        ge=1,
        description="Refuse a candidate slower than the champion by more than this factor "
        "(median over requests, each timed for both in the same rounds, interleaved)",
    )

    def comparison_settings(self, seed: int) -> dict[str, Any]:
        """The paired comparison's keyword arguments (``lib.evaluation.comparison.compare``).

        One place, so the evaluation's gates and ``gates calibrate`` judge alike: keys
        ``confidence`` (two-sided level), ``method``, ``resamples`` and ``seed``.
        """
        return {
            "confidence": self.confidence,
            "method": self.comparison,
            "resamples": self.bootstrap_resamples,
            "seed": seed,
        }


class RolloutSpec(_Strict):
    """Shadow, then canary, then full traffic; and when to roll back."""

    shadow_requests: int = Field(default=500, ge=0)
    """Requests the challenger scores in shadow before its canary."""
    canary_share: float = Field(default=0.1, gt=0, lt=1)
    """Share of requests the challenger answers in canary."""
    canary_requests: int = Field(default=1000, ge=1)
    """Requests the challenger answers in canary before full traffic."""
    max_metric_drop: float = Field(default=0.02, ge=0)
    """Roll back when the challenger's online metric is worse than the champion's by more (metric's
    units).
    """
    max_error_rate: Ratio = 0.01
    """Roll back above this share of failed requests."""
    max_p99_latency_ms: float = Field(default=50.0, gt=0)
    """Roll back above this online p99 latency (ms)."""
    min_outcomes: int = Field(default=200, ge=1, description="Outcomes before judging the metric")


class SkewSpec(_Strict):
    """Train/serve skew: each day's served vectors against their point-in-time rebuild.

    A request is skewed when any of its features differs: categoricals exactly, numbers by
    more than ``abs_tolerance + rel_tolerance * |offline value|``.
    """

    sample: int = Field(
        default=1000, ge=1000, description="Requests compared per day at most (seeded sample)"
    )
    seed: int = 0
    """Seed of the daily sample."""
    abs_tolerance: float = Field(default=1e-6, ge=0)
    """Absolute part of the numeric tolerance."""
    rel_tolerance: float = Field(default=1e-6, ge=0)
    """Relative part of the numeric tolerance (times the offline value)."""
    warn_share: Ratio = Field(
        default=0.01, description="WARN above this share of requests with any mismatch"
    )
    error_share: Ratio = Field(
        default=0.10, description="ERROR above this share: promotion is held while it lasts"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.warn_share > self.error_share:
            raise ValueError(
                f"warn_share {self.warn_share} must not exceed error_share {self.error_share}"
            )
        return self


class MonitoringSpec(_Strict):
    """Feature and prediction drift against the training reference, and train/serve skew."""

    stattest: str = "kl_div"
    """Evidently stattest comparing each served feature with the training reference."""
    threshold: float = Field(default=0.1, gt=0)
    """Score at which one feature drifts."""
    cat_stattest: str | None = None
    """Evidently stattest of the categorical features (its ``cat_method``); null: stattest.
    Needed when stattest scores numbers only (wasserstein, ks, anderson, ...)."""
    cat_threshold: float | None = Field(default=None, gt=0)
    """Score at which one categorical feature drifts; null: threshold."""
    drift_share: Ratio = 0.3
    """Share of drifted features at which the day drifts (and on_drift acts)."""
    window_days: int = Field(
        default=1,
        ge=1,
        description="Days of served requests each drift report compares, ending on its day: "
        "one day of hourly weather or daily rates is narrow by construction",
    )
    skew: SkewSpec = Field(default_factory=SkewSpec)


class RetrainingSpec(_Strict):
    """When to retrain, and the rails that keep retraining sane."""

    schedule: str | None = "0 6 * * 1"
    """Cron schedule of retraining (in the partitioning timezone); null: none."""
    labeled_volume: int | None = Field(default=20000, ge=1)
    """Retrain once this many labelled rows arrived after the champion's window; null: never."""
    on_drift: Literal["retrain", "alert", "off"] = "retrain"
    """When the served features drift: retrain, only alert, or nothing."""
    min_new_labels: int = Field(default=2000, ge=0)
    """Rail: no retrain with fewer new labelled rows than this."""
    cooldown_hours: float = Field(default=24, ge=0)
    """Rail: hours between two retrains at least."""
    daily_cap: int = Field(default=1, ge=1)
    """Rail: retrains in 24 hours at most."""


AlertKind = Literal["gate_failed", "rolled_back", "drift", "freshness", "run_failed", "skew"]
ALERT_KINDS: tuple[AlertKind, ...] = (
    "gate_failed",
    "rolled_back",
    "drift",
    "freshness",
    "run_failed",
    "skew",
)


class AlertsSpec(_Strict):
    """Where the platform's alerts go, and how often a lasting condition is repeated.

    Every alert is appended to the local alert log (``alerts/<problem>/alerts.jsonl`` under
    the data folder); with a webhook URL (or ``MLPLATFORM_ALERT_WEBHOOK``) it is also
    POSTed there, as the alert's JSON or as a Slack-compatible ``{"text": ...}``.
    """

    kinds: list[AlertKind] = Field(
        default_factory=lambda: list(ALERT_KINDS), description="which conditions alert"
    )
    webhook_url: str = Field(
        default="", description="empty: the local log only; MLPLATFORM_ALERT_WEBHOOK overrides"
    )
    webhook_format: Literal["json", "slack"] = "json"
    """Body of a webhook POST: the alert's JSON, or Slack's {"text": ...}."""
    timeout_seconds: float = Field(default=5.0, gt=0, description="per attempt")
    retries: int = Field(default=2, ge=0, description="attempts after the first, with backoff")
    cooldown_hours: float = Field(
        default=24,
        ge=0,
        description="a condition (drift, skew, a stale asset, a failing job) alerted once is "
        "not sent again before this many hours; one-off events (a refused version, a "
        "rollback) each alert once",
    )


class ProblemSpec(_Strict):
    """A whole problem, as stated in its ``spec.yaml``."""

    name: Name
    """The problem's name: its folder, module, asset prefix and registered model."""
    version: int = Field(ge=1)
    """Version of the spec; numbers the generated feature service."""
    description: str
    """What is predicted, for whom and when."""
    owner: str = Field(pattern=r"^(team:[\w-]+|[^@\s]+@[^@\s]+)$")
    """Who answers for the problem: team:<name> or an e-mail address (asset owners)."""
    task: Task = Field(
        default="binary",
        description="binary: a 0/1 label from a comparison, the model predicts its "
        "probability; regression: the outcome column itself, the model predicts its value",
    )
    partitioning: Partitioning
    """The days (or hours) of data and their time zone."""
    sources: dict[Name, SourceSpec] = Field(min_length=1)
    """The data sources by name."""
    entities: dict[Name, Entity] = Field(default_factory=dict)
    """The entities feature tables are keyed by, by name."""
    prediction_time: str
    """Column of the target source holding the moment a prediction is made (requests carry it)."""
    target: TargetSpec
    """The label."""
    features: list[FeatureSpec] = Field(min_length=1)
    """The model's inputs, in model order."""
    metric: MetricSpec
    """The success metric."""
    latency_budget_ms: float = Field(gt=0, description="p99 of one prediction, end to end")
    training_window_days: int = Field(default=60, ge=1)
    """Days before the holdout that train a model."""
    training: TrainingSpec = TrainingSpec()
    """The search and the final fit."""
    gates: GatesSpec
    """The promotion gates."""
    rollout: RolloutSpec = RolloutSpec()
    """The staged rollout."""
    monitoring: MonitoringSpec = MonitoringSpec()
    """Drift and skew monitoring."""
    retraining: RetrainingSpec = RetrainingSpec()
    """Retraining triggers and rails."""
    alerts: AlertsSpec = AlertsSpec()
    """Where alerts go."""

    @model_validator(mode="after")
    def _task_consistent(self) -> Self:
        t = self.target
        if self.task == "binary" and (t.operator is None or t.value is None):
            raise ValueError(
                "target: a binary target is a comparison: give operator and value "
                "(e.g. operator: '>', value: 15)"
            )
        if self.task == "regression" and (t.operator is not None or t.value is not None):
            raise ValueError(
                "target: a regression target is the column itself: drop operator and value"
            )
        if METRICS[self.metric.name][0] != self.task:
            fit = sorted(m for m, (task, _) in METRICS.items() if task == self.task)
            raise ValueError(
                f"metric.name: {self.metric.name} is a {METRICS[self.metric.name][0]} metric; "
                f"a {self.task} problem uses one of {fit}"
            )
        return self

    @property
    def is_regression(self) -> bool:
        """The model predicts a value (not a probability)."""
        return self.task == "regression"

    @model_validator(mode="after")
    def _references_resolve(self) -> Self:
        known = sorted(self.sources)
        if self.target.source not in self.sources:
            raise ValueError(
                f"target.source: unknown source {self.target.source!r} (declared: {known})"
            )
        if not self.sources[self.target.source].is_daily:
            raise ValueError("target.source: the target must come from a daily source")
        for i, feature in enumerate(self.features):
            if feature.source not in self.sources:
                raise ValueError(
                    f"features.{i}.source: unknown source {feature.source!r} for feature "
                    f"{feature.name!r} (declared: {known})"
                )
            if feature.name in self.target.outcomes or feature.name == self.target.column:
                raise ValueError(
                    f"features.{i}.name: {feature.name!r} is an outcome, known only after "
                    "prediction time; it can never be a feature (leakage)"
                )
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(
                f"features: duplicate names {sorted({n for n in names if names.count(n) > 1})}"
            )
        start = self.training.boost_from
        numeric = [f.name for f in self.features if f.kind == "numeric"]
        if start is not None and (self.task != "regression" or start not in numeric):
            raise ValueError(
                f"training.boost_from: {start!r} must name a numeric feature of a "
                f"regression problem (numeric features: {numeric}); or drop it"
            )
        return self

    def daily_sources(self) -> dict[str, SourceSpec]:
        """Sources that arrive as one export per day (``daily`` and ``stream``)."""
        return {n: s for n, s in self.sources.items() if s.is_daily}

    def stream_sources(self) -> dict[str, SourceSpec]:
        """Sources whose events are also pushed as they happen."""
        return {n: s for n, s in self.sources.items() if s.kind == "stream"}


def parse_spec(data: Any, origin: str) -> ProblemSpec:
    """Validate a spec already read into Python objects; errors name ``origin`` and each field."""
    try:
        return ProblemSpec.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            where = ".".join(str(part) for part in err["loc"])
            # Cross-field validators name their own field at the start of the message.
            lines.append(f"  - {where}: {msg}" if where else f"  - {msg}")
        raise SpecError(f"{origin}: invalid problem spec\n" + "\n".join(lines)) from None


def load_spec(path: Path) -> ProblemSpec:
    """Read and validate a problem spec file."""
    import yaml

    try:
        with path.open(encoding="utf-8") as stream:  # a YAML error then names the file
            data = yaml.safe_load(stream)
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: cannot read problem spec: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a problem spec must be a mapping of keys to values")
    spec = parse_spec(data, str(path))
    if spec.name != path.parent.name:
        raise SpecError(f"{path}: name: {spec.name!r} must match its folder {path.parent.name!r}")
    return spec
