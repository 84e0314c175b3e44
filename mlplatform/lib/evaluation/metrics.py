"""Evaluation of a candidate on a holdout: metrics, slices, behavioural cases, latency.

Everything here is pure: predictions come in as arrays or callables, results go out as
plain records, so the gates (``lib.evaluation.gates``) and the report can be tested on their own.
"""

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlplatform.lib import checks

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
    """One metric of the spec's vocabulary (scikit-learn's definitions).

    Binary metrics take 0/1 labels and probabilities; ``rmse`` and ``mae`` (in the
    target's units) and ``r2`` take values. NaN when the metric is undefined: one class
    only (roc_auc, average_precision), no row, or r2 of fewer than two rows or a constant
    target.

    Raises:
        ValueError: a metric outside the spec's vocabulary.
    """
    from sklearn import metrics as m

    if name in ("roc_auc", "average_precision") and len(np.unique(y)) < 2:
        return math.nan
    if len(y) == 0:
        return math.nan
    if name == "rmse":
        return float(m.root_mean_squared_error(y, p))
    if name == "mae":
        return float(m.mean_absolute_error(y, p))
    if name == "r2":
        return float(m.r2_score(y, p)) if len(y) > 1 and np.ptp(y) > 0 else math.nan
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


def summary(y: np.ndarray, p: np.ndarray, task: str = "binary") -> dict[str, float]:
    """The usual companions of any success metric, by task.

    ``binary`` (0/1 labels, probabilities): roc_auc, average_precision, log_loss, brier,
    calibration_error, mean_prediction, prevalence, rows. ``regression`` (values): rmse,
    mae, r2, mean_prediction, mean_target, rows.
    """
    if task == "regression":
        return {
            "rmse": metric("rmse", y, p),
            "mae": metric("mae", y, p),
            "r2": metric("r2", y, p),
            "mean_prediction": float(np.mean(p)),
            "mean_target": float(np.mean(y)),
            "rows": float(len(y)),
        }
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
    min_positives: int = 1,
    task: str = "binary",
) -> list[dict[str, Any]]:
    """The metric per slice value for each model; slices too small to judge are marked.

    One record per (slice, value): rows, positives, ``evaluated`` (enough rows, positive and
    negative labels to be judged), ``not_judged`` (why not, empty when judged) and one column
    per model. For ``task`` ``regression`` a slice is judged on ``min_rows`` alone and
    ``positives`` is None (not applicable).
    """
    regression = task == "regression"
    records = []
    for column in slices.columns:
        values = slices[column].astype(str).to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            rows = int(mask.sum())
            positives = None if regression else int(y[mask].sum())
            why = (
                f"{rows} rows < {min_rows}"
                if rows < min_rows
                else ""
                if positives is None
                else f"{positives} positives < {min_positives}"
                if positives < min_positives
                else f"{positives} positives < {min_positives}"
                if positives < min_positives
                else "a single class"
                if positives in (0, rows)
                else ""
            )
            record: dict[str, Any] = {
                "slice": column,
                "value": value,
                "rows": rows,
                "positives": positives,
                "evaluated": not why,
                "not_judged": why,
            }
            for model, p in predictions.items():
                record[model] = metric(metric_name, y[mask], p[mask]) if not why else math.nan
            records.append(record)
    return records


def paired_slices(
    records: list[dict[str, Any]],
    slices: pd.DataFrame,
    y: np.ndarray,
    predictions: dict[str, np.ndarray],
    metric_name: str,
    comparison: dict[str, Any],
) -> list[dict[str, Any]]:
    """``records`` with the paired candidate-champion difference of every judged slice.

    Args:
        records: ``slice_metrics`` records.
        slices: the slice columns of the holdout, one row per holdout row.
        y: holdout labels, shape (n,).
        predictions: model name → holdout predictions (``candidate``, ``champion``):
            probabilities, or values for a regression metric.
        metric_name: the success metric.
        comparison: keyword arguments of ``lib.evaluation.comparison.compare`` (confidence, method,
            resamples, seed); each slice gets its own seed so that slices do not share draws.

    Returns:
        The records, each judged one with ``paired`` (a ``comparison.Paired``).
    """
    from mlplatform.lib.evaluation.comparison import compare

    if "champion" not in predictions:
        return records
    columns = {c: slices[c].astype(str).to_numpy() for c in slices.columns}
    seed = int(comparison.get("seed", 0))
    out = []
    for i, r in enumerate(records):
        r = dict(r)
        if r["evaluated"]:
            mask = columns[r["slice"]] == r["value"]
            r["paired"] = compare(
                metric_name,
                y[mask],
                predictions["candidate"][mask],
                predictions["champion"][mask],
                **{**comparison, "seed": seed + 1 + i},
            )
        out.append(r)
    return out


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


LATENCY_ROUNDS = 5  # rounds of the latency gate: its p99 and ratio are medians over them


def time_interleaved(
    fns: Mapping[str, Callable[[Any], Any]],
    inputs: list[Any],
    rounds: int = LATENCY_ROUNDS,
    warmup: int = 20,
    seed: int = 0,
) -> dict[str, list[list[float]]]:
    """Wall time of each function per input, in ms, interleaved and repeated in rounds.

    Each round sends every input through every function back to back, in an order drawn
    afresh for each input (seeded), so whatever slows the machine during a round (another
    process, a GC pause, a noisy neighbour) lands on all the functions of that round alike
    and no function always goes first. All functions are warmed up first.

    Args:
        fns: name → function of one input (e.g. ``candidate`` and ``champion`` scoring one
            request through the serving path).
        inputs: the inputs of one round.
        rounds: how many times every input is timed through every function.
        warmup: inputs run through every function, untimed, before the first round.
        seed: seeds the order within each input.

    Returns:
        name → ``rounds`` lists of ``len(inputs)`` wall times in milliseconds.

    Raises:
        ValueError: no function, no input or no round.
    """
    if not fns or not inputs or rounds < 1:
        raise ValueError("time_interleaved needs at least one function, input and round")
    names = list(fns)
    for item in inputs[:warmup]:
        for name in names:
            fns[name](item)
    rng = np.random.default_rng(seed)
    took: dict[str, list[list[float]]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            took[name].append([])
        for item in inputs:
            for i in rng.permutation(len(names)):
                name = names[int(i)]
                start = time.perf_counter_ns()
                fns[name](item)
                took[name][-1].append((time.perf_counter_ns() - start) / 1e6)
    return took


def steady_p99(rounds: list[list[float]]) -> float:
    """p99 over inputs of each input's fastest time across rounds, in ms.

    What a request costs by itself: a slow input (a model that is slow on some requests, a
    store read that always waits) is slow in every round and stays in the tail, while a
    stall of the machine (another process holding the core, a GC pause) hits an input in
    one round and not in the others, and drops out.

    Args:
        rounds: ``rounds`` lists of wall times, one per input, inputs in the same order.
    """
    return float(np.percentile(np.min(np.asarray(rounds), axis=0), 99))


def latency_summary(
    took: Mapping[str, list[list[float]]], candidate: str = "candidate", champion: str = "champion"
) -> dict[str, Any]:
    """The latency gate's figures from interleaved rounds (``time_interleaved``), in ms.

    Both judged figures rest on each request's fastest time across rounds: a machine busy
    with other work stalls single calls, which drop out, while a slow model or input stays
    slow in every round. The budget judges the candidate's ``steady_p99``; the ratio pairs
    candidate and champion on the same request, timed back to back in the same rounds, and
    takes the median over requests. Measured on 2 shared cores with a busy loop per core
    (``bench/gates_latency.py``): per-round p99s of 9-35 ms against a steady p99 of ~1 ms;
    per-round p99 ratios of identical models spread 0.62-1.78, their median let a path three
    times slower pass at 1.40, and a ratio of steady p99s reached 2.77 for identical models
    on a machine at load 7 (a few requests stalled in every round).

    Args:
        took: name → rounds of wall times, inputs in the same order for every name;
            ``champion`` may be absent (bootstrap).
        candidate: the name of the model judged.
        champion: the name of the model it is compared with.

    Returns:
        The candidate's ``steady_p99_ms`` (what the budget applies to), ``p50_ms`` and
        ``p99_ms`` (medians over rounds of each round's p50 and p99) and ``max_ms``; the
        champion's ``champion_steady_p99_ms``, ``champion_p50_ms``, ``champion_p99_ms``;
        ``ratio`` (median over requests of the candidate's fastest time over the
        champion's), ``round_ratios`` (per-round p99 ratios, shown, not judged) and
        ``round_ratio_median`` (champion figures and ratios None without a champion);
        ``rounds``, ``requests_per_round`` and ``round_p99_ms`` (name → p99 of each round).
    """
    per_round = {
        name: {
            "p50": [float(np.percentile(r, 50)) for r in rounds],
            "p99": [float(np.percentile(r, 99)) for r in rounds],
        }
        for name, rounds in took.items()
    }
    cand = per_round[candidate]
    out: dict[str, Any] = {
        "steady_p99_ms": steady_p99(took[candidate]),
        "p50_ms": float(np.median(cand["p50"])),
        "p99_ms": float(np.median(cand["p99"])),
        "max_ms": float(max(max(r) for r in took[candidate])),
        "champion_steady_p99_ms": None,
        "champion_p50_ms": None,
        "champion_p99_ms": None,
        "ratio": None,
        "round_ratios": None,
        "round_ratio_median": None,
        "rounds": len(took[candidate]),
        "requests_per_round": len(took[candidate][0]),
        "round_p99_ms": {n: [round(v, 4) for v in f["p99"]] for n, f in per_round.items()},
    }
    if champion in per_round:
        champ = per_round[champion]
        fastest = {n: np.min(np.asarray(took[n]), axis=0) for n in (candidate, champion)}
        ratios = [c / h for c, h in zip(cand["p99"], champ["p99"], strict=True)]
        out |= {
            "champion_steady_p99_ms": steady_p99(took[champion]),
            "champion_p50_ms": float(np.median(champ["p50"])),
            "champion_p99_ms": float(np.median(champ["p99"])),
            "ratio": float(np.median(fastest[candidate] / fastest[champion])),
            "round_ratios": [round(r, 4) for r in ratios],
            "round_ratio_median": float(np.median(ratios)),
        }
    return out


@dataclass
class Evaluation:
    """Everything measured about one candidate (and the champion) on one holdout."""

    metrics: dict[str, dict[str, float]]  # model → summary
    predictions: dict[str, np.ndarray]  # model → holdout probabilities (values: regression)
    labels: np.ndarray
    slices: list[dict[str, Any]]
    cases: list[dict[str, Any]]
    latency: dict[str, Any]  # lib.evaluation.metrics.latency_summary


def sample_records(frame: pd.DataFrame, n: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``n`` rows as records, a seeded sample in time order."""
    rows = frame.sample(n=min(n, len(frame)), random_state=seed).sort_index()
    return rows.to_dict("records")  # pyright: ignore[reportReturnType]


def override(
    outcomes: list[Any], gates: list[str], by: str, reason: str
) -> tuple[list[Any], list[str]]:
    """Failed gates named in ``gates`` become warnings that record who overrode them and why.

    Returns the outcomes and the gates actually overridden (``lib.checks.override``, the
    ingestion checks' release, with the gates of this evaluation as the names allowed).

    Raises:
        ValueError: an unknown gate name, or a missing author or reason.
    """
    names = {o.name for o in outcomes}
    if unknown := sorted(set(gates) - names):
        raise ValueError(f"override_gates: unknown gate(s) {unknown} (gates: {sorted(names)})")
    if gates and (not by.strip() or not reason.strip()):  # named as the run config names them
        raise ValueError("an override needs override_by (who) and override_reason (why)")
    return checks.override(outcomes, gates, by, reason)


def verdict(outcomes: list[Any]) -> tuple[str, list[str]]:
    """``passed``, ``overridden`` (every failure overridden) or ``failed``; and the failed gates."""
    failed = [o.name for o in outcomes if not o.passed]
    if not failed:
        return "passed", []
    blocking = [o.name for o in outcomes if o.blocks]
    return ("failed" if blocking else "overridden"), failed
