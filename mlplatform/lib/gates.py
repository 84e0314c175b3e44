"""Promotion gates: each turns evaluation figures into a pass/fail with its numbers and reason.

All gates are ERROR severity (they block promotion). Gates that compare with the champion
pass on the bootstrap path (no champion yet) and say so.
"""

import math
from typing import Any

from mlplatform.lib.checks import CheckOutcome
from mlplatform.lib.names import (
    BEHAVIOURAL_CASES,
    MIN_METRIC,
    NO_REGRESSION,
    NO_SLICE_REGRESSION,
    P99_LATENCY,
    TRAINING_SET_CHECKS,
)
from mlplatform.spec import GatesSpec, MetricSpec


def _fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def regression(candidate: float, champion: float, metric: MetricSpec) -> float:
    """How much worse the candidate is (positive: worse), whatever the metric's direction."""
    return champion - candidate if metric.direction == "maximize" else candidate - champion


def min_metric(value: float, metric: MetricSpec, gates: GatesSpec) -> CheckOutcome:
    """The candidate's metric on the holdout meets the spec's floor (ceiling if minimized)."""
    ok = not math.isnan(value) and (
        value >= gates.min_metric if metric.direction == "maximize" else value <= gates.min_metric
    )
    op = ">=" if metric.direction == "maximize" else "<="
    return CheckOutcome(
        MIN_METRIC,
        ok,
        "ERROR",
        f"holdout {metric.name} {_fmt(value)} {'meets' if ok else 'misses'} "
        f"the required {op} {gates.min_metric}",
        {"value": value, "threshold": gates.min_metric, "metric": metric.name},
    )


def no_regression(
    candidate: float, champion: float | None, metric: MetricSpec, gates: GatesSpec
) -> CheckOutcome:
    """The candidate is not worse than the champion by more than the tolerance."""
    if champion is None:
        return CheckOutcome(
            NO_REGRESSION,
            True,
            "ERROR",
            "bootstrap: no champion to compare with",
            {"value": candidate, "threshold": gates.max_regression, "champion": None},
        )
    drop = regression(candidate, champion, metric)
    ok = not math.isnan(drop) and drop <= gates.max_regression
    return CheckOutcome(
        NO_REGRESSION,
        ok,
        "ERROR",
        f"holdout {metric.name} {_fmt(candidate)} against the champion's {_fmt(champion)}: "
        f"{'a regression of ' + _fmt(drop) if drop > 0 else 'no regression'} "
        f"({'within' if ok else 'beyond'} the tolerance {gates.max_regression})",
        {
            "value": candidate,
            "champion": champion,
            "regression": drop,
            "threshold": gates.max_regression,
        },
    )


def no_slice_regression(
    table: list[dict[str, Any]], has_champion: bool, metric: MetricSpec, gates: GatesSpec
) -> CheckOutcome:
    """No evaluated slice is worse than the champion's beyond the slice tolerance."""
    evaluated = [r for r in table if r["evaluated"]]
    if not has_champion:
        return CheckOutcome(
            NO_SLICE_REGRESSION,
            True,
            "ERROR",
            f"bootstrap: no champion to compare with ({len(evaluated)} slices measured)",
            {"threshold": gates.slice_tolerance, "slices_evaluated": len(evaluated)},
        )
    worst: list[dict[str, Any]] = []
    for r in evaluated:
        drop = regression(r["candidate"], r["champion"], metric)
        if not drop <= gates.slice_tolerance:  # NaN counts as a regression
            worst.append({"slice": f"{r['slice']}={r['value']}", "rows": r["rows"], "drop": drop})
    worst.sort(key=lambda r: -r["drop"] if not math.isnan(r["drop"]) else -math.inf)
    ok = not worst
    named = ", ".join(f"{w['slice']} ({_fmt(w['drop'])})" for w in worst[:5])
    return CheckOutcome(
        NO_SLICE_REGRESSION,
        ok,
        "ERROR",
        f"all {len(evaluated)} slices within {gates.slice_tolerance} of the champion"
        if ok
        else f"{len(worst)} of {len(evaluated)} slices regress beyond "
        f"{gates.slice_tolerance}: {named}",
        {
            "threshold": gates.slice_tolerance,
            "slices_evaluated": len(evaluated),
            "regressed": worst,
            "skipped": len(table) - len(evaluated),
        },
    )


def behavioural_cases(results: list[dict[str, Any]]) -> CheckOutcome:
    """Every behavioural case holds on every example."""
    failed = [r for r in results if r["violations"]]
    ok = not failed
    return CheckOutcome(
        BEHAVIOURAL_CASES,
        ok,
        "ERROR",
        f"all {len(results)} cases hold on {results[0]['examples'] if results else 0} flights"
        if ok
        else "violated: "
        + ", ".join(f"{r['case']} ({r['violations']}/{r['examples']})" for r in failed),
        {
            "cases": [
                {k: r[k] for k in ("case", "expect", "examples", "violations")} for r in results
            ],
            "first_violations": {r["case"]: r["first_violations"] for r in failed},
        },
    )


def p99_latency(timing: dict[str, float], gates: GatesSpec) -> CheckOutcome:
    """One prediction through the serving path, features included, within the p99 budget."""
    p99 = timing["p99_ms"]
    ok = p99 <= gates.p99_latency_ms
    return CheckOutcome(
        P99_LATENCY,
        ok,
        "ERROR",
        f"p99 {p99:.2f} ms (p50 {timing['p50_ms']:.2f} ms) over {int(timing['requests'])} "
        f"requests {'within' if ok else 'over'} the budget of {gates.p99_latency_ms} ms",
        {**timing, "threshold": gates.p99_latency_ms},
    )


def training_set_checks(statuses: dict[str, bool | None], data_version: str) -> CheckOutcome:
    """The checks of the training set the candidate was trained on all passed."""
    missing = sorted(n for n, s in statuses.items() if s is None)
    failed = sorted(n for n, s in statuses.items() if s is False)
    ok = bool(statuses) and not missing and not failed
    if ok:
        reason = f"training set {data_version}: all {len(statuses)} checks passed"
    elif failed:
        reason = f"training set {data_version}: failed {', '.join(failed)}"
    else:
        reason = f"training set {data_version}: no recorded result for {', '.join(missing)}"
    return CheckOutcome(
        TRAINING_SET_CHECKS,
        ok,
        "ERROR",
        reason,
        {"data_version": data_version, "checks": {n: s for n, s in statuses.items()}},
    )
