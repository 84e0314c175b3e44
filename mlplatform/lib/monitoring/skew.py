"""Train/serve skew: the vectors a service answered with against their point-in-time rebuild.

What TFDV's feature-skew detection does, on the platform's own paths: each served request's
logged model inputs (``features`` of the prediction log: spec order, the spec's defaults
filled, as ``feature_store.feature_vector`` built them) are compared, feature by feature,
with the inputs the training path gives for the same request at its prediction time
(``feature_vectors(..., online=False)`` then ``feature_matrix``). Categoricals must be equal;
numbers may differ by ``absolute + relative * |offline|`` (float noise of the two paths'
storage: Parquet/DuckDB against the online store's protobuf doubles). A missing value
(None/NaN) equals a missing value only.
"""

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from mlplatform.spec import FeatureSpec, ProblemSpec

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

    from mlplatform.problems import Problem

Severity = Literal["ok", "warn", "error"]
KEY = "key"  # the prediction log's request key column
MIN_SAMPLE = 1000  # a sample smaller than this is too coarse for a 1% threshold


@dataclass(frozen=True)
class Tolerance:
    """How far two numbers may differ and still be the same value: ``a + r * |offline|``."""

    absolute: float = 1e-6
    relative: float = 1e-6


@dataclass(frozen=True)
class SkewResult:
    """The comparison of one day's served vectors with their point-in-time rebuild.

    Attributes:
        rows: Requests compared (answered requests with a logged vector, sampled).
        mismatch_rate: Per feature (spec order), the share of compared requests whose served
            value differs from the offline one, in [0, 1].
        mismatch_share: Share of compared requests with at least one differing feature.
        worst: At most ``worst`` examples ``{key, feature, served, offline}``, spread over the
            features with the highest mismatch rates first, largest differences first.
        not_comparable: Logged rows left out: no vector, or one of another length than the
            spec's features (logged by a model with other inputs).
        flags: ``rows x features`` booleans, True where the served value differs (the
            monitoring dashboard's per-request data); None when nothing was compared.
    """

    rows: int
    mismatch_rate: dict[str, float]
    mismatch_share: float
    worst: list[dict[str, Any]] = field(default_factory=list)
    not_comparable: int = 0
    flags: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @property
    def worst_feature(self) -> str | None:
        """The feature with the highest mismatch rate, None when nothing differs."""
        if not self.mismatch_rate or max(self.mismatch_rate.values()) == 0:
            return None
        return max(self.mismatch_rate, key=lambda n: self.mismatch_rate[n])

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON-able values."""
        return {
            "rows": self.rows,
            "mismatch_share": self.mismatch_share,
            "worst_feature": self.worst_feature,
            "mismatch_rate": self.mismatch_rate,
            "worst": self.worst,
            "not_comparable": self.not_comparable,
        }


def severity(share: float, warn_share: float, error_share: float) -> Severity:
    """``error`` above ``error_share``, ``warn`` above ``warn_share``, else ``ok``."""
    if share > error_share:
        return "error"
    if share > warn_share:
        return "warn"
    return "ok"


def comparable(served: pd.DataFrame, spec: ProblemSpec) -> pd.DataFrame:
    """Answered rows of a prediction-log frame whose logged vector has the spec's length.

    Args:
        served: Rows of the prediction log (``lib.deployment.prediction_log.COLUMNS``).
        spec: The problem's spec (its features give the length).

    Returns:
        The rows kept, with their index.
    """
    if served.empty:
        return served
    ok = served[(served["status"] == "ok") & served["features"].notna()]
    width = len(spec.features)
    return ok[ok["features"].map(lambda v: len(json.loads(v)) == width)]


def sample(served: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """All rows when there are at most ``size`` (at least ``MIN_SAMPLE``), else a seeded sample.

    Returns:
        The rows, in their original order (index kept).
    """
    size = max(size, MIN_SAMPLE)
    if len(served) <= size:
        return served
    return served.sample(n=size, random_state=seed).sort_index()


def served_matrix(served: pd.DataFrame, spec: ProblemSpec) -> pd.DataFrame:
    """The logged model inputs: one column per spec feature, on ``served``'s index.

    Args:
        served: Rows of the prediction log whose ``features`` is a JSON list of the spec's
            length (``comparable``).
        spec: The problem's spec (names and kinds of the features, in order).

    Returns:
        Frame ``len(served) x len(spec.features)``; numbers as float (NaN when missing),
        categoricals as objects (None when missing).
    """
    names = [f.name for f in spec.features]
    rows = [json.loads(v) for v in served["features"]]
    frame = pd.DataFrame(rows, columns=names, index=served.index, dtype=object)
    for f in spec.features:
        if f.kind == "numeric":
            frame[f.name] = pd.to_numeric(frame[f.name], errors="coerce").astype(float)
    return frame


def requests_of(served: pd.DataFrame) -> pd.DataFrame:
    """The requests as received (the log's ``request`` JSON), one row each, same index."""
    return pd.DataFrame.from_records([json.loads(v) for v in served["request"]], index=served.index)


def offline_matrix(
    problem: "Problem",
    store: "FeatureStore",
    service: "FeatureService",
    requests: pd.DataFrame,
) -> pd.DataFrame:
    """The training path's model inputs for ``requests``, each at its own prediction time.

    Returns:
        Frame ``len(requests) x len(spec.features)`` on ``requests``' index, as
        ``feature_matrix`` gives it to training (spec order, the spec's defaults filled).
    """
    from mlplatform.lib.features.feature_store import feature_matrix, feature_vectors

    vectors = feature_vectors(problem, store, service, requests, online=False)
    return feature_matrix(vectors, problem.spec)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _same_category(served: Any, offline: Any) -> bool:
    if _missing(served) or _missing(offline):
        return _missing(served) and _missing(offline)
    if isinstance(served, int | float | np.number) and isinstance(offline, int | float | np.number):
        return float(served) == float(offline)  # 2 and 2.0: one category read by two paths
    return str(served) == str(offline)


def _numeric_diff(
    served: pd.Series, offline: pd.Series, tolerance: Tolerance
) -> tuple[np.ndarray, np.ndarray]:
    """(differs, size of the difference) per row; inf when only one side is missing."""
    a = pd.to_numeric(served, errors="coerce").to_numpy(dtype=float)
    b = pd.to_numeric(offline, errors="coerce").to_numpy(dtype=float)
    na, nb = np.isnan(a), np.isnan(b)
    with np.errstate(invalid="ignore"):
        gap = np.abs(a - b)
        differs = gap > tolerance.absolute + tolerance.relative * np.abs(b)
    differs = np.where(na | nb, na != nb, differs)
    gap = np.where(na | nb, np.where(na != nb, np.inf, 0.0), gap)
    return differs, gap


def compare(
    served: pd.DataFrame,
    offline: pd.DataFrame,
    keys: pd.Series,
    features: list[FeatureSpec],
    tolerance: Tolerance = Tolerance(),
    worst: int = 10,
    not_comparable: int = 0,
) -> SkewResult:
    """Compare served and offline vectors feature by feature.

    Args:
        served: ``n x k`` logged inputs (``served_matrix``).
        offline: ``n x k`` point-in-time inputs (``offline_matrix``), same index and columns.
        keys: The requests' keys (length ``n``, same index), for the examples.
        features: The spec's features (their ``kind`` decides exact or tolerant equality).
        tolerance: Numbers within ``absolute + relative * |offline|`` are equal.
        worst: Examples kept at most.
        not_comparable: Rows left out before, reported as is.

    Returns:
        The per-feature mismatch rates, the share of rows with any mismatch, the examples.

    Raises:
        ValueError: The two frames do not have the same index.
    """
    if not served.index.equals(offline.index):
        raise ValueError("served and offline vectors must share one index (one row per request)")
    n = len(served)
    if n == 0:
        rates = {f.name: 0.0 for f in features}
        return SkewResult(0, rates, 0.0, [], not_comparable)
    any_row = np.zeros(n, dtype=bool)
    flags = pd.DataFrame(index=served.index)
    rates: dict[str, float] = {}
    cells: dict[str, list[tuple[float, int]]] = {}
    for f in features:
        a, b = served[f.name], offline[f.name]
        if f.kind == "numeric":
            differs, gap = _numeric_diff(a, b, tolerance)
        else:
            same = [_same_category(x, y) for x, y in zip(a, b, strict=True)]
            differs = ~np.asarray(same, dtype=bool)
            gap = np.where(differs, np.inf, 0.0)
        any_row |= differs
        flags[f.name] = np.asarray(differs, dtype=bool)
        rates[f.name] = float(differs.mean())
        where = np.flatnonzero(differs)
        cells[f.name] = sorted(((float(gap[i]), int(i)) for i in where), reverse=True)
    examples = _examples(served, offline, keys, rates, cells, worst)
    return SkewResult(n, rates, float(any_row.mean()), examples, not_comparable, flags)


def _examples(
    served: pd.DataFrame,
    offline: pd.DataFrame,
    keys: pd.Series,
    rates: Mapping[str, float],
    cells: Mapping[str, list[tuple[float, int]]],
    worst: int,
) -> list[dict[str, Any]]:
    """Round-robin over the differing features (highest rate first), largest gap first."""
    order = [n for n in sorted(rates, key=lambda n: -rates[n]) if cells[n]]
    out: list[dict[str, Any]] = []
    depth = 0
    while len(out) < worst and any(depth < len(cells[n]) for n in order):
        for name in order:
            if depth < len(cells[name]) and len(out) < worst:
                _, i = cells[name][depth]
                out.append(
                    {
                        "key": str(keys.iloc[i]),
                        "feature": name,
                        "served": _plain(served[name].iloc[i]),
                        "offline": _plain(offline[name].iloc[i]),
                    }
                )
        depth += 1
    return out


def _plain(value: Any) -> Any:
    """A JSON-able scalar (NaN and None as None)."""
    if _missing(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isinf(value):
        return str(value)
    return value if isinstance(value, int | float | str | bool) else str(value)


def traffic_days(predictions: pd.DataFrame, version: str, timezone: str) -> list[str]:
    """Local days (ISO) of the requests ``version`` scored, as challenger, in a log frame.

    Args:
        predictions: Rows of the prediction log (``event_time`` UTC, ``challenger_version``).
        version: The challenger's registered version.
        timezone: The spec's partitioning timezone (monitoring days are local days).

    Returns:
        Sorted day labels, as the daily partitions name them.
    """
    if predictions.empty:
        return []
    mine = predictions[predictions["challenger_version"].astype(str) == str(version)]
    stamps = pd.to_datetime(mine["event_time"], utc=True).dropna()
    return sorted({d.isoformat() for d in stamps.dt.tz_convert(timezone).dt.date})


def hold_reason(by_day: Mapping[str, Mapping[str, Any]], days: list[str]) -> str | None:
    """Why a promotion waits: a day of ``days`` whose newest skew check is ERROR; else None.

    Args:
        by_day: Per day label, the newest skew evaluation (``severity``: ok | warn | error,
            ``skew_share``, ``worst_feature``), as ``defs.monitoring.skew_by_day`` reads them.
        days: The days the challenger's traffic covers (``traffic_days``).
    """
    bad = [d for d in days if by_day.get(d, {}).get("severity") == "error"]
    if not bad:
        return None
    parts = []
    for d in bad:
        e = by_day[d]
        share, worst = e.get("skew_share"), e.get("worst_feature") or "?"
        shown = f"{share:.3f}" if isinstance(share, float) else str(share)
        parts.append(f"{d} (share {shown}, worst {worst})")
    return "train/serve skew at ERROR on the challenger's traffic: " + ", ".join(parts)
