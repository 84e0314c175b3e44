"""Paired comparison of a candidate with the champion on the same holdout rows.

Both models score the same rows, so what matters is the distribution of their *difference*,
not of each metric alone: the rows that are hard for one are hard for the other, and the
paired difference is far less noisy than two independent intervals suggest.

- AUC: DeLong's test (DeLong, DeLong & Clarke-Pearson 1988, Biometrics 44:837-845) in the
  fast midrank form of Sun & Xu (2014), "Fast implementation of DeLong's algorithm for
  comparing the areas under correlated receiver operating characteristic curves", IEEE
  Signal Processing Letters 21(11):1389-1393. O(n log n); neither scipy 1.17 nor
  scikit-learn 1.x ships it.
- Any metric, regression ones (rmse, mae, r2) included: a paired bootstrap over rows (both
  models resampled with the same row indices; seeded), percentile interval.
- Families of slices: Holm's step-down adjustment (family-wise error rate) or
  Benjamini-Hochberg (false discovery rate, ``scipy.stats.false_discovery_control``).
"""

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Method = Literal["delong", "bootstrap"]


@dataclass(frozen=True)
class Paired:
    """Candidate against champion on the same rows.

    ``difference`` is candidate minus champion in the metric's own units; ``low``/``high`` its
    two-sided interval at ``confidence``; ``se`` its standard error. ``draws`` holds the
    bootstrap's resampled differences (empty for DeLong, whose test is normal).
    """

    candidate: float
    champion: float
    difference: float
    se: float
    low: float
    high: float
    confidence: float
    method: Method
    draws: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    def drop(self, direction: str) -> tuple[float, float, float]:
        """How much worse the candidate is (positive: worse), with the interval of the drop.

        Returns:
            (drop, lowest drop, highest drop) for a metric maximized or minimized.
        """
        if direction == "maximize":
            return -self.difference, -self.high, -self.low
        return self.difference, self.low, self.high

    def p_drop_above(self, tolerance: float, direction: str) -> float:
        """One-sided p-value of "the drop is larger than ``tolerance``" (small: it is).

        The null hypothesis is drop <= tolerance; NaN differences give 0 (refused: an
        undefined comparison is never evidence that the candidate is fine).

        Bootstrap: the share of resampled drops at or below the tolerance, ``(1 + k) /
        (B + 1)``. When no draw is (k = 0) that share only says p < 1/(B + 1), too coarse
        for a family of slices (Holm tests the smallest p at alpha / family size: 1,000
        resamples can never refuse one of 25 slices at alpha 0.025); then the normal tail
        of the bootstrap distribution, ``sf((drop - tolerance) / se)``, capped at 1/(B + 1).
        """
        from scipy.stats import norm

        drop = self.drop(direction)[0]
        if math.isnan(drop):
            return 0.0
        if self.method == "bootstrap" and len(self.draws):
            drops = -self.draws if direction == "maximize" else self.draws
            below = int(np.sum(drops <= tolerance))
            floor = 1 / (len(drops) + 1)
            if below or self.se <= 0 or math.isnan(self.se):
                return float((1 + below) * floor)
            return float(min(floor, norm.sf((drop - tolerance) / self.se)))
        if self.se <= 0:
            return 0.0 if drop > tolerance else 1.0
        return float(norm.sf((drop - tolerance) / self.se))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able figures (no draws)."""
        return {
            "candidate": self.candidate,
            "champion": self.champion,
            "difference": self.difference,
            "se": self.se,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "method": self.method,
        }


def _midrank(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank (Sun & Xu's ``compute_midrank``)."""
    from scipy.stats import rankdata

    return rankdata(x, method="average")


def delong(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """AUC of two scorings of the same rows and the variance of their difference.

    Args:
        y: labels 0/1, shape (n,).
        a: scores of the first model, shape (n,).
        b: scores of the second model, shape (n,).

    Returns:
        (AUC of a, AUC of b, variance of AUC(a) - AUC(b)); NaNs with a single class.
    """
    y = np.asarray(y).astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        return math.nan, math.nan, math.nan
    scores = np.vstack([np.asarray(a, float), np.asarray(b, float)])
    pos, neg = scores[:, y], scores[:, ~y]
    tx = np.vstack([_midrank(r) for r in pos])
    ty = np.vstack([_midrank(r) for r in neg])
    tz = np.vstack([_midrank(r) for r in np.hstack([pos, neg])])
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v01 = (tz[:, :m] - tx) / n  # per positive: share of negatives it outranks
    v10 = 1.0 - (tz[:, m:] - ty) / m  # per negative: share of positives above it
    sx = np.cov(v01) if m > 1 else np.zeros((2, 2))
    sy = np.cov(v10) if n > 1 else np.zeros((2, 2))
    cov = sx / m + sy / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    return float(aucs[0]), float(aucs[1]), max(var, 0.0)


def _row_losses(name: str, y: np.ndarray, p: np.ndarray) -> np.ndarray | None:
    """Per-row losses of metrics that are means over rows (fast bootstrap), else None."""
    if name == "brier":
        return (p - y) ** 2
    if name == "mae":
        return np.abs(p - y)
    if name == "log_loss":
        q = np.clip(p, 1e-15, 1 - 1e-15)
        return -(y * np.log(q) + (1 - y) * np.log(1 - q))
    return None


def bootstrap(
    name: str,
    y: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    resamples: int,
    seed: int,
) -> np.ndarray:
    """Resampled differences (candidate minus champion) of metric ``name``, paired by row.

    Returns:
        Shape (resamples,); a resample where the metric is undefined (a single class; a
        constant target for r2) gives NaN and is dropped.
    """
    from mlplatform.lib.evaluation.metrics import metric

    rng = np.random.default_rng(seed)
    n = len(y)
    y, candidate, champion = np.asarray(y), np.asarray(candidate), np.asarray(champion)
    la, lb = _row_losses(name, y, candidate), _row_losses(name, y, champion)
    squared = name in ("rmse", "r2")
    if squared:  # both rest on the mean squared error of the resample
        la, lb = (candidate - y) ** 2, (champion - y) ** 2
    out = np.empty(resamples)
    for i in range(resamples):
        idx = rng.integers(0, n, n)
        if squared and la is not None and lb is not None:
            a, b = la[idx].mean(), lb[idx].mean()
            if name == "rmse":
                out[i] = math.sqrt(a) - math.sqrt(b)
            else:  # r2 = 1 - mse / variance of the resample's target: NaN when constant
                var = float(np.var(y[idx].astype(float)))
                out[i] = (b - a) / var if var > 0 else math.nan
        elif la is not None and lb is not None:
            out[i] = la[idx].mean() - lb[idx].mean()
        else:
            out[i] = metric(name, y[idx], candidate[idx]) - metric(name, y[idx], champion[idx])
    return out[~np.isnan(out)]


def compare(
    name: str,
    y: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    confidence: float,
    method: str = "auto",
    resamples: int = 1000,
    seed: int = 0,
) -> Paired:
    """The paired difference of metric ``name`` with its two-sided interval at ``confidence``.

    Args:
        name: the metric (``lib.evaluation.metrics.metric``'s vocabulary).
        y: labels 0/1 (binary metrics) or target values (rmse, mae, r2), shape (n,).
        candidate: the candidate's predictions on the rows (probabilities, or values for a
            regression metric), shape (n,).
        champion: the champion's predictions on the same rows, shape (n,).
        confidence: two-sided level of the interval, e.g. 0.95.
        method: ``delong`` (AUC only), ``bootstrap``, or ``auto`` (DeLong for ``roc_auc``,
            the bootstrap for every other metric).
        resamples: bootstrap resamples.
        seed: seeds the bootstrap's row draws.

    Raises:
        ValueError: DeLong asked for a metric other than ``roc_auc``.
    """
    from scipy.stats import norm

    from mlplatform.lib.evaluation.metrics import metric

    chosen: Method = "delong" if method == "auto" and name == "roc_auc" else "bootstrap"
    if method == "delong":
        if name != "roc_auc":
            raise ValueError(f"DeLong's test compares AUCs, not {name}")
        chosen = "delong"
    y = np.asarray(y)
    alpha = 1 - confidence
    if chosen == "delong":
        a, b, var = delong(y, candidate, champion)
        se = math.sqrt(var) if not math.isnan(var) else math.nan
        z = float(norm.ppf(1 - alpha / 2))
        d = a - b
        return Paired(a, b, d, se, d - z * se, d + z * se, confidence, "delong")
    a, b = metric(name, y, candidate), metric(name, y, champion)
    draws = bootstrap(name, y, candidate, champion, resamples, seed)
    if not len(draws) or math.isnan(a - b):
        return Paired(a, b, a - b, math.nan, math.nan, math.nan, confidence, "bootstrap", draws)
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    se = float(np.std(draws, ddof=1)) if len(draws) > 1 else 0.0
    return Paired(a, b, a - b, se, float(low), float(high), confidence, "bootstrap", draws)


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error rate), in the input's order."""
    k = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(k)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def benjamini_hochberg(p: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), in the input's order."""
    from scipy.stats import false_discovery_control

    if not p:
        return []
    return np.asarray(false_discovery_control(np.asarray(p), method="bh")).tolist()


def adjust(p: list[float], control: str) -> list[float]:
    """Adjust a family of p-values: ``holm``, ``bh`` or ``none``.

    Raises:
        ValueError: an unknown ``control``.
    """
    if control == "holm":
        return holm(p)
    if control == "bh":
        return benjamini_hochberg(p)
    if control == "none":
        return list(p)
    raise ValueError(f"unknown error control {control!r} (holm, bh or none)")
