"""Batch scoring: a day's scheduled requests answered as the online path would have answered them.

A day's requests are the target source's rows of that day, turned into the problem's request
shape exactly as the replay and ``mlplatform predict`` send them (``serving.client.as_requests``).
Their model inputs come from the training path's point-in-time join at each request's own
prediction time (``lib.monitoring.skew.offline_matrix``: ``feature_vectors(..., online=False)`` then
``feature_matrix``), the rebuild the ``serving_skew`` asset holds against every served vector
(0.0 mismatch when the online store is up to each hour); they are scored with one registered
version through the same encoding and LightGBM booster as ``OnlineScorer``.

The table (one Parquet file per day, ``warehouse/<problem>/batch_predictions/<day>.parquet``),
one row per request, in the day's row order:

- ``key`` (string): the request's natural key as one string (``rollout.request_key``), the
  prediction log's ``key`` and the outcomes' join key;
- the target source's natural-key columns, with the dtypes the request carried them in (its
  event timestamp as timestamp[us, UTC]);
- ``prediction_time`` (timestamp[us, UTC]): the request's prediction time, the instant its
  features were joined at;
- ``model_version`` (string): the registered version that scored it;
- ``prediction`` (float64): the model's output, as the service answers it: the probability of
  the positive class (``task: binary``) or the predicted value of the target, in its units
  (``task: regression``);
- ``feature_<name>`` for each spec feature, in spec order: the model's inputs with the
  spec's defaults filled; numeric features float64 (NaN when missing and without default),
  categorical ones string (None when missing).
"""

from typing import TYPE_CHECKING, Any

import pandas as pd

from mlplatform.lib.deployment.rollout import request_key
from mlplatform.lib.features.tables import EVENT_TS
from mlplatform.problems import Problem
from mlplatform.spec import ProblemSpec

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

    from mlplatform.lib.deployment.registry import LoadedModel

TABLE = "batch_predictions"  # the lake table (``DataLake.table_path(problem, TABLE, day)``)
KEY, PREDICTION_TIME, VERSION, PREDICTION = "key", "prediction_time", "model_version", "prediction"
FEATURE_PREFIX = "feature_"  # feature columns are prefixed: a key column may be a feature too


def feature_column(name: str) -> str:
    """The table's column holding the spec feature ``name``."""
    return FEATURE_PREFIX + name


def columns(spec: ProblemSpec) -> list[str]:
    """The table's columns, in order."""
    natural = spec.sources[spec.target.source].natural_key
    features = [feature_column(f.name) for f in spec.features]
    return [KEY, *natural, PREDICTION_TIME, VERSION, PREDICTION, *features]


def score_requests(
    problem: Problem,
    model: "LoadedModel",
    store: "FeatureStore",
    service: "FeatureService",
    requests: list[dict[str, Any]],
) -> pd.DataFrame:
    """Score requests with ``model``, each with its features at its own prediction time.

    Args:
        problem: The problem (its spec, ``entity_row`` and feature tables).
        model: The registered version that scores (the champion, for the asset).
        store: The problem's Feast store; its offline store must hold the feature rows up to
            the requests' prediction times.
        service: The feature service the model reads.
        requests: Requests in the problem's request shape (JSON values, as the HTTP service
            receives them).

    Returns:
        One row per request, in order, with ``columns(problem.spec)`` (see the module
        docstring for their meaning and dtypes); an empty frame with those columns when
        there is no request.

    Raises:
        ValueError: the model's inputs are not the spec's features (a model trained on
            another feature list cannot be scored through this path).
    """
    from mlplatform.lib.monitoring.skew import offline_matrix

    spec = problem.spec
    if list(model.encoding.features) != [f.name for f in spec.features]:
        raise ValueError(
            f"{problem.name} version {model.version} reads {len(model.encoding.features)} "
            f"inputs, not the spec's {len(spec.features)} features: score it with the spec "
            "it was trained under"
        )
    if not requests:
        return _typed(pd.DataFrame({c: [] for c in columns(spec)}), spec)
    frame = pd.DataFrame.from_records(requests)
    matrix = offline_matrix(problem, store, service, frame)
    scores = model.predict_matrix(model.encoding.matrix(matrix))
    natural = spec.sources[spec.target.source].natural_key
    out = pd.DataFrame(
        {
            KEY: [request_key(spec, r) for r in requests],
            **{c: frame[c] for c in natural},
            PREDICTION_TIME: problem.entity_rows(frame)[EVENT_TS],
            VERSION: str(model.version),
            PREDICTION: scores,
        }
    )
    features = matrix.reset_index(drop=True)
    features.columns = [feature_column(c) for c in features.columns]
    return _typed(pd.concat([out, features], axis=1), spec)


def _typed(frame: pd.DataFrame, spec: ProblemSpec) -> pd.DataFrame:
    """The documented dtypes: times UTC (us), strings as str, numbers float64."""
    source = spec.sources[spec.target.source]
    for column in (PREDICTION_TIME, source.event_timestamp):
        frame[column] = pd.to_datetime(frame[column], utc=True).dt.as_unit("us")
    frame[KEY] = frame[KEY].astype(str)
    frame[VERSION] = frame[VERSION].astype(str)
    frame[PREDICTION] = frame[PREDICTION].astype(float)
    for f in spec.features:
        name = feature_column(f.name)
        if f.kind == "numeric":
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
        else:  # one type per Parquet column: a category read as a number is its text
            frame[name] = frame[name].map(lambda v: None if pd.isna(v) else str(v)).astype(object)
    return frame[columns(spec)]
