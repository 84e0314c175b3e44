"""The serving path for one request: entity row → online features → model inputs → score.

The evaluation's latency gate times exactly this path with the candidate, and the HTTP
service calls it per request, so what the gate measured is what serves. The service calls
it from several worker threads at once.
"""

import json
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlplatform.lib.features.feature_store import feature_values, online_vector
from mlplatform.problems import Problem

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureService, FeatureStore

    from mlplatform.lib.deployment.registry import LoadedModel
    from mlplatform.lib.training.model import Encoding


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Features:
    """One request's model inputs by name (spec order) and those the store had no value for.

    ``missing``: every input with no value, sorted; ``defaulted``: those of them the spec's
    default filled (the others reach the model as missing). Each model encodes ``values``
    by its own feature names (``Encoding.row``), so a champion trained before the spec's
    feature list changed still scores.
    """

    values: dict[str, Any]
    defaulted: list[str]
    missing: list[str]

    @property
    def vector(self) -> list[Any]:
        """The inputs in spec order, as the prediction log keeps them."""
        return list(self.values.values())

    def unseen(self, encoding: "Encoding") -> list[str]:
        """Categorical inputs whose value the model's encoding never saw in training, sorted."""
        return sorted(
            name
            for name in encoding.features
            if name in encoding.categories
            and not _missing(value := self.values.get(name))
            and value not in set(encoding.categories[name])
        )


class OnlineScorer:
    """Scores requests of one problem with features from its Feast online store.

    Safe to call from several threads: the online-store read is serialized, since Feast's
    SQLite store shares one connection across threads (``check_same_thread=False``, opened
    lazily without a lock) and Feast promises no thread safety for ``get_online_features``.
    The read is ~0.5 ms of mostly Python (the GIL serializes it anyway); the rest of the
    path (entity row, vector, encoding, LightGBM's predict) runs concurrently.
    """

    def __init__(self, problem: Problem, store: "FeatureStore", service: "FeatureService"):
        self.problem, self.store, self.service = problem, store, service
        self._defaults = {f.name for f in problem.spec.features if f.default is not None}
        self._names = [f.name for f in problem.spec.features]
        self._read = threading.Lock()

    @property
    def store_lock(self) -> threading.Lock:
        """Held around every use of the store's connection (reads here, pushes elsewhere)."""
        return self._read

    def features(self, request: Mapping[str, Any]) -> Features:
        """The request's features, read from the online store now."""
        with self._read:
            values = online_vector(self.problem, self.store, self.service, request)
        missing = sorted(n for n in self._names if _missing(values.get(n)))
        defaulted = [n for n in missing if n in self._defaults]
        return Features(feature_values(values, self.problem.spec), defaulted, missing)

    def score(self, model: "LoadedModel", request: Mapping[str, Any]) -> float:
        """The model's output for one request (``LoadedModel.predict_row``)."""
        return model.predict_row(model.encoding.row(self.features(request).values))


def offline_score(problem: Problem, model: "LoadedModel", record: Mapping[str, Any]) -> float:
    """Score one historical record whose feature values were joined point-in-time.

    The request fields go through the problem's ``entity_row`` again, so a perturbed
    request field (a behavioural case) reaches the model exactly as in serving.
    """
    values = {**record, **problem.entity_row(record)}
    return model.predict_row(model.encoding.row(feature_values(values, problem.spec)))


def degraded(log: "pd.DataFrame") -> "pd.Series":
    """Which answers of a prediction-log frame had missing inputs or unseen categories.

    Args:
        log: rows of the prediction log (``lib.deployment.prediction_log.COLUMNS``); records written
            before the ``missing``/``unseen`` columns existed count as not degraded.

    Returns:
        A boolean series on ``log``'s index.
    """
    import pandas as pd

    def listed(column: str) -> "pd.Series":
        if column not in log.columns:
            return pd.Series(False, index=log.index)
        return log[column].map(lambda v: isinstance(v, str) and bool(json.loads(v)))

    return listed("missing") | listed("unseen")
