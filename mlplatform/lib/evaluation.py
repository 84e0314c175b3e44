"""Evaluation of a candidate on a holdout: metrics, slices, behavioural cases, latency.

Everything here is pure: predictions come in as arrays or callables, results go out as
plain records, so the gates (``lib.gates``) and the report can be tested on their own.
"""

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

Expect = Literal["same", "not_lower", "not_higher"]


@dataclass(frozen=True)
class BehaviouralCase:
    """A known failure: perturb one example, and how its prediction may move."""

    name: str
    description: str
    perturb: Callable[[dict[str, Any]], dict[str, Any]]
    expect: Expect
    tolerance: float = 1e-9


def metric(name: str, y: np.ndarray, p: np.ndarray) -> float:
    """One metric of the spec's vocabulary; NaN when it is undefined (one class only)."""
    from sklearn import metrics as m

    if name in ("roc_auc", "average_precision") and len(np.unique(y)) < 2:
        return math.nan
    if name == "roc_auc":
        return float(m.roc_auc_score(y, p))
    if name == "average_precision":
        return float(m.average_precision_score(y, p))
    if name == "log_loss":
        return float(m.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))
    if name == "brier":
        return float(m.brier_score_loss(y, p))
    raise ValueError(f"unknown metric {name!r}")


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Equal-width probability bins: rows, mean prediction and observed rate per bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    frame = pd.DataFrame({"bin": index, "p": p, "y": y})
    table = frame.groupby("bin").agg(
        rows=("y", "size"), predicted=("p", "mean"), observed=("y", "mean")
    )
    table["low"], table["high"] = edges[table.index], edges[table.index + 1]
    return table.reset_index(drop=True)[["low", "high", "rows", "predicted", "observed"]]


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Row-weighted mean gap between predicted and observed rates over the bins."""
    table = calibration(y, p, bins)
    gaps = (table["predicted"] - table["observed"]).abs()
    return float((gaps * table["rows"]).sum() / max(1, int(table["rows"].sum())))


def summary(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The usual companions of any success metric."""
    return {
        "roc_auc": metric("roc_auc", y, p),
        "average_precision": metric("average_precision", y, p),
        "log_loss": metric("log_loss", y, p),
        "brier": metric("brier", y, p),
        "calibration_error": expected_calibration_error(y, p),
        "mean_prediction": float(np.mean(p)),
        "prevalence": float(np.mean(y)),
        "rows": float(len(y)),
    }


def slice_metrics(
    slices: pd.DataFrame,
    y: np.ndarray,
    predictions: dict[str, np.ndarray],
    metric_name: str,
    min_rows: int,
) -> list[dict[str, Any]]:
    """The metric per slice value for each model; slices too small or single-class are marked.

    One record per (slice, value): rows, positives, ``evaluated`` and one column per model.
    """
    records = []
    for column in slices.columns:
        values = slices[column].astype(str).to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            rows, positives = int(mask.sum()), int(y[mask].sum())
            evaluated = rows >= min_rows and 0 < positives < rows
            record: dict[str, Any] = {
                "slice": column,
                "value": value,
                "rows": rows,
                "positives": positives,
                "evaluated": evaluated,
            }
            for model, p in predictions.items():
                record[model] = metric(metric_name, y[mask], p[mask]) if evaluated else math.nan
            records.append(record)
    return records


def run_cases(
    cases: Iterable[BehaviouralCase],
    records: list[dict[str, Any]],
    predict: Callable[[dict[str, Any]], float],
    max_examples: int = 5,
) -> list[dict[str, Any]]:
    """Score every record before and after each case's perturbation; count violations."""
    out = []
    for case in cases:
        violations: list[dict[str, Any]] = []
        for record in records:
            before, after = predict(record), predict(case.perturb(dict(record)))
            delta = after - before
            broken = (
                abs(delta) > case.tolerance
                if case.expect == "same"
                else delta < -case.tolerance
                if case.expect == "not_lower"
                else delta > case.tolerance
            )
            if broken:
                violations.append({"before": round(before, 6), "after": round(after, 6)})
        out.append(
            {
                "case": case.name,
                "expect": case.expect,
                "description": case.description,
                "examples": len(records),
                "violations": len(violations),
                "first_violations": violations[:max_examples],
            }
        )
    return out


def time_calls(fn: Callable[[Any], Any], inputs: list[Any], warmup: int = 20) -> dict[str, float]:
    """Wall time of ``fn`` per input, in ms: p50, p99 and max, after a warm-up."""
    for item in inputs[:warmup]:
        fn(item)
    took = []
    for item in inputs:
        start = time.perf_counter_ns()
        fn(item)
        took.append((time.perf_counter_ns() - start) / 1e6)
    arr = np.asarray(took)
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
        "max_ms": float(arr.max()),
        "requests": float(len(arr)),
    }


@dataclass
class Evaluation:
    """Everything measured about one candidate (and the champion) on one holdout."""

    metrics: dict[str, dict[str, float]]  # model → summary
    predictions: dict[str, np.ndarray]  # model → holdout probabilities
    labels: np.ndarray
    slices: list[dict[str, Any]]
    cases: list[dict[str, Any]]
    latency: dict[str, float]


def sample_records(frame: pd.DataFrame, n: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``n`` rows as records, a seeded sample in time order."""
    rows = frame.sample(n=min(n, len(frame)), random_state=seed).sort_index()
    return rows.to_dict("records")  # pyright: ignore[reportReturnType]


def override(
    outcomes: list[Any], gates: list[str], by: str, reason: str
) -> tuple[list[Any], list[str]]:
    """Failed gates named in ``gates`` become warnings that record who overrode them and why.

    Returns the outcomes and the gates actually overridden. An override must name its
    gates, its author and its reason; an unknown gate name is an error.
    """
    from dataclasses import replace

    if not gates:
        return outcomes, []
    names = {o.name for o in outcomes}
    unknown = sorted(set(gates) - names)
    if unknown:
        raise ValueError(f"override_gates: unknown gate(s) {unknown} (gates: {sorted(names)})")
    if not by.strip() or not reason.strip():
        raise ValueError("an override needs override_by (who) and override_reason (why)")
    out, applied = [], []
    for o in outcomes:
        if o.name in gates and not o.passed:
            applied.append(o.name)
            o = replace(
                o,
                severity="WARN",
                reason=f"OVERRIDDEN by {by} ({reason}): {o.reason}",
                details={**o.details, "override_by": by, "override_reason": reason},
            )
        out.append(o)
    return out, applied


def verdict(outcomes: list[Any]) -> tuple[str, list[str]]:
    """``passed``, ``overridden`` (every failure overridden) or ``failed``; and the failed gates."""
    failed = [o.name for o in outcomes if not o.passed]
    if not failed:
        return "passed", []
    blocking = [o.name for o in outcomes if o.blocks]
    return ("failed" if blocking else "overridden"), failed
