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


def p99_latency(timing: dict[str, Any], gates: GatesSpec) -> CheckOutcome:
    """One prediction through the serving path: within the p99 budget, near the champion's.

    Args:
        timing: ``lib.evaluation.latency_summary`` of candidate and champion timed in the
            same rounds, interleaved. The budget applies to the candidate's
            ``steady_p99_ms`` (each request's fastest time over the rounds, then the p99),
            and ``ratio`` (its steady p99 over the champion's) must stay within the spec's
            ``max_latency_ratio``; ``ratio`` is None on the bootstrap path (no champion),
            where the budget alone applies. Both figures leave out the stalls a busy machine
            puts on single calls, which a single p99 over one pass reports as the model's.
        gates: the spec's ``p99_latency_ms`` budget and ``max_latency_ratio``.
    """
    steady, ratio = timing["steady_p99_ms"], timing.get("ratio")
    within = steady <= gates.p99_latency_ms
    stat = (
        f"steady p99 {steady:.2f} ms (each request's fastest of {timing['rounds']} rounds of "
        f"{timing['requests_per_round']}; per round p99 {timing['p99_ms']:.2f} ms, p50 "
        f"{timing['p50_ms']:.2f} ms, medians) "
        f"{'within' if within else 'over'} the budget of {gates.p99_latency_ms} ms"
    )
    if ratio is None:
        ok, compared = within, "; bootstrap: no champion to compare with, the budget alone"
    else:
        close = ratio <= gates.max_latency_ratio
        ok = within and close
        compared = (
            f"; {ratio:.2f}x the champion's steady p99 {timing['champion_steady_p99_ms']:.2f} "
            f"ms, timed in the same rounds ({'within' if close else 'beyond'} the ratio "
            f"{gates.max_latency_ratio})"
        )
    return CheckOutcome(
        P99_LATENCY,
        ok,
        "ERROR",
        stat + compared,
        {**timing, "threshold": gates.p99_latency_ms, "max_ratio": gates.max_latency_ratio},
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
