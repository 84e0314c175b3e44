"""The serving path for one request: entity row → online features → model inputs → score.

The evaluation's latency gate times exactly this path with the candidate, and the HTTP
service calls it per request, so what the gate measured is what serves.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlplatform.lib.feature_store import feature_vector, online_vector
from mlplatform.problems import Problem

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

    from mlplatform.lib.registry import LoadedModel


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Features:
    """One request's model inputs (spec order) and the features that fell back to defaults."""

    vector: list[Any]
    defaulted: list[str]


class OnlineScorer:
    """Scores requests of one problem with features from its Feast online store."""

    def __init__(self, problem: Problem, store: "FeatureStore", service: "FeatureService"):
        self.problem, self.store, self.service = problem, store, service
        self._defaults = {f.name for f in problem.spec.features if f.default is not None}

    def features(self, request: Mapping[str, Any]) -> Features:
        """The request's features, read from the online store now."""
        values = online_vector(self.problem, self.store, self.service, request)
        defaulted = [n for n in self._defaults if _missing(values.get(n))]
        return Features(feature_vector(values, self.problem.spec), sorted(defaulted))

    def score(self, model: "LoadedModel", request: Mapping[str, Any]) -> float:
        """Probability of the positive class for one request."""
        return model.predict_row(model.encoding.row(self.features(request).vector))


def offline_score(problem: Problem, model: "LoadedModel", record: Mapping[str, Any]) -> float:
    """Score one historical record whose feature values were joined point-in-time.

    The request fields go through the problem's ``entity_row`` again, so a perturbed
    request field (a behavioural case) reaches the model exactly as in serving.
    """
    values = {**record, **problem.entity_row(record)}
    return model.predict_row(model.encoding.row(feature_vector(values, problem.spec)))
