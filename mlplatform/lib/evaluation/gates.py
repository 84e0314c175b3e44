"""Promotion gates: each turns evaluation figures into a pass/fail with its numbers and reason.

All gates are ERROR severity (they block promotion). Gates that compare with the champion
pass on the bootstrap path (no champion yet) and say so; with a champion they decide on the
paired difference on the same holdout rows and its confidence interval
(``lib.evaluation.comparison``).
"""

import math
from typing import TYPE_CHECKING, Any

from mlplatform.lib.checks import CheckOutcome
from mlplatform.lib.names import (
    BEHAVIOURAL_CASES,
    MIN_METRIC,
    NO_REGRESSION,
    NO_SLICE_REGRESSION,
    P99_LATENCY,
    TRAINING_SET_CHECKS,
)
from mlplatform.spec import METRICS, GatesSpec, MetricSpec

if TYPE_CHECKING:
    from mlplatform.lib.evaluation.comparison import Paired


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
    candidate: float, paired: "Paired | None", metric: MetricSpec, gates: GatesSpec
) -> CheckOutcome:
    """Non-inferiority: the whole interval of the candidate's drop is within the tolerance.

    Args:
        candidate: the candidate's holdout metric.
        paired: candidate against champion on the same rows (``lib.evaluation.comparison.compare``);
            None on the bootstrap path (no champion).
        metric: the success metric and its direction.
        gates: ``max_regression`` and ``confidence``.

    The burden of proof lies with the candidate: it passes when the upper end of the
    ``gates.confidence`` interval of (champion - candidate) (for a maximized metric) is at
    most ``gates.max_regression``; an undefined difference refuses.
    """
    if paired is None:
        return CheckOutcome(
            NO_REGRESSION,
            True,
            "ERROR",
            "bootstrap: no champion to compare with",
            {"value": candidate, "threshold": gates.max_regression, "champion": None},
        )
    drop, low, high = paired.drop(metric.direction)
    ok = not math.isnan(high) and high <= gates.max_regression
    level = f"{gates.confidence:.0%}"
    row = comparison_row(f"overall {metric.name}", paired, metric)
    row["decision"] = "passed" if ok else "REFUSED"
    row["reason"] = (
        f"the drop's upper {level} bound {_fmt(high)} is "
        f"{'within' if ok else 'beyond'} the tolerance {gates.max_regression}"
    )
    return CheckOutcome(
        NO_REGRESSION,
        ok,
        "ERROR",
        f"holdout {metric.name} {_fmt(paired.candidate)} against the champion's "
        f"{_fmt(paired.champion)} on the same rows: "
        f"{'a regression of ' + _fmt(drop) if drop > 0 else 'no regression'} "
        f"({level} interval of the drop {_fmt(low)}..{_fmt(high)}, {paired.method}); "
        + row["reason"],
        {
            "value": candidate,
            "champion": paired.champion,
            "regression": drop,
            "regression_low": low,
            "regression_high": high,
            "threshold": gates.max_regression,
            "confidence": gates.confidence,
            "method": paired.method,
            "rule": f"refused unless the drop is within {gates.max_regression} "
            f"with {level} confidence (non-inferiority)",
            "comparison": [row],
        },
    )


def comparison_row(name: str, paired: "Paired", metric: MetricSpec) -> dict[str, Any]:
    """One row of the comparison table: candidate, champion, difference and its interval."""
    return {
        "slice": name,
        "candidate": round(paired.candidate, 4),
        "champion": round(paired.champion, 4),
        "difference": round(paired.difference, 4),
        "low": round(paired.low, 4),
        "high": round(paired.high, 4),
    }


def slice_rule(gates: GatesSpec, task: str = "binary") -> str:
    """The slice gate's rule in words, with the spec's numbers.

    A regression slice is judged on its rows alone (positives do not apply).
    """
    family = (
        "the judged values of the same slicing column (e.g. all carriers)"
        if gates.slice_family == "column"
        else "all judged slices"
    )
    return (
        f"a slice is refused when its drop is larger than {gates.slice_tolerance} with "
        f"{gates.confidence:.0%} confidence, {gates.slice_error_control}-adjusted over "
        f"{family}; slices under {gates.min_slice_rows} rows"
        + ("" if task == "regression" else f" or {gates.min_slice_positives} positives")
        + " are NOT JUDGED"
    )


def judge_slices(
    table: list[dict[str, Any]], metric: MetricSpec, gates: GatesSpec
) -> list[dict[str, Any]]:
    """Each slice's decision: refused, passed or NOT JUDGED, with its reason.

    A slice is refused when its drop is larger than ``gates.slice_tolerance`` with
    ``gates.confidence`` confidence: the one-sided p-value of "the drop is at most the
    tolerance" is below ``(1 - confidence) / 2`` (for a lone slice: the whole two-sided
    interval of the drop beyond the tolerance) after ``gates.slice_error_control`` over the
    family (``gates.slice_family``). With Holm, the chance that holdout noise alone refuses
    some slice of a family stays below (1 - confidence) / 2; the tolerance absorbs what the
    interval does not see (two seeds of one model differ per slice by more than the holdout
    noise: ``gates calibrate`` measures it).

    Args:
        table: ``lib.evaluation.metrics.paired_slices`` records (judged ones carry ``paired``).
        metric: the success metric and its direction.
        gates: ``slice_tolerance``, ``confidence``, ``slice_error_control``, ``slice_family``.

    Returns:
        One row per slice: slice, value, rows, positives, candidate, champion, difference,
        low, high, drop, p, p_adjusted, decision, reason.
    """
    from mlplatform.lib.evaluation.comparison import adjust

    alpha = (1 - gates.confidence) / 2
    judged = [r for r in table if r.get("paired") is not None]
    raw = {id(r): r["paired"].p_drop_above(gates.slice_tolerance, metric.direction) for r in judged}
    families: dict[str, list[dict[str, Any]]] = {}
    for r in judged:
        families.setdefault(r["slice"] if gates.slice_family == "column" else "all", []).append(r)
    adjusted: dict[int, float] = {}
    for members in families.values():
        q = adjust([raw[id(r)] for r in members], gates.slice_error_control)
        adjusted |= dict(zip(map(id, members), q, strict=True))
    out = []
    for r in table:
        row: dict[str, Any] = {
            "slice": r["slice"],
            "value": r["value"],
            "rows": r["rows"],
            "positives": r["positives"],
        }
        paired = r.get("paired")
        if paired is None:
            why = r.get("not_judged") or "no champion"
            row |= {"decision": "NOT JUDGED", "reason": why}
            out.append(row)
            continue
        drop = paired.drop(metric.direction)[0]
        q = adjusted[id(r)]
        beyond = not drop <= gates.slice_tolerance  # NaN counts as beyond
        refused = q < alpha
        row |= comparison_row(f"{r['slice']}={r['value']}", paired, metric)
        row["slice"] = r["slice"]
        k = len(families[r["slice"] if gates.slice_family == "column" else "all"])
        evidence = f"{gates.slice_error_control}-adjusted p {q:.2g} over {k}"
        row |= {
            "drop": drop,
            "p": raw[id(r)],
            "p_adjusted": q,
            "decision": "REFUSED" if refused else "passed",
            "reason": f"drop {_fmt(drop)} beyond {gates.slice_tolerance} with "
            f"{gates.confidence:.0%} confidence ({evidence} < {alpha:.3g})"
            if refused
            else f"drop {_fmt(drop)} within {gates.slice_tolerance}"
            if not beyond
            else f"drop {_fmt(drop)} beyond {gates.slice_tolerance} but not with "
            f"{gates.confidence:.0%} confidence ({evidence} >= {alpha:.3g})",
        }
        out.append(row)
    return out


def no_slice_regression(
    table: list[dict[str, Any]], has_champion: bool, metric: MetricSpec, gates: GatesSpec
) -> CheckOutcome:
    """No judged slice is worse than the champion's beyond the tolerance, with confidence.

    Slices with too few rows or positives are NOT JUDGED (reported, not passed). See
    ``judge_slices`` for the rule.
    """
    evaluated = [r for r in table if r["evaluated"]]
    if not has_champion:
        return CheckOutcome(
            NO_SLICE_REGRESSION,
            True,
            "ERROR",
            f"bootstrap: no champion to compare with ({len(evaluated)} slices measured)",
            {"threshold": gates.slice_tolerance, "slices_evaluated": len(evaluated)},
        )
    rows = judge_slices(table, metric, gates)
    worst = [
        {
            "slice": f"{r['slice']}={r['value']}",
            "rows": r["rows"],
            "drop": r["drop"],
            "low": r["low"],
            "high": r["high"],
            "p_adjusted": r["p_adjusted"],
        }
        for r in rows
        if r["decision"] == "REFUSED"
    ]
    worst.sort(key=lambda r: -r["drop"] if not math.isnan(r["drop"]) else -math.inf)
    not_judged = [f"{r['slice']}={r['value']}" for r in rows if r["decision"] == "NOT JUDGED"]
    judged = len(rows) - len(not_judged)
    ok = not worst
    level = f"{gates.confidence:.0%}"
    named = ", ".join(f"{w['slice']} ({_fmt(w['drop'])})" for w in worst[:5])
    task = METRICS[metric.name][0]
    few = "too few rows" if task == "regression" else "too few rows or positives"
    tail = f"; {len(not_judged)} NOT JUDGED ({few})" if not_judged else ""
    return CheckOutcome(
        NO_SLICE_REGRESSION,
        ok,
        "ERROR",
        (
            f"no slice of {judged} judged is worse than the champion by more than "
            f"{gates.slice_tolerance} with {level} confidence ({gates.slice_error_control})"
            if ok
            else f"{len(worst)} of {judged} judged slices regress beyond "
            f"{gates.slice_tolerance} with {level} confidence "
            f"({gates.slice_error_control}): {named}"
        )
        + tail,
        {
            "threshold": gates.slice_tolerance,
            "confidence": gates.confidence,
            "error_control": gates.slice_error_control,
            "rule": slice_rule(gates, task),
            "slices_evaluated": judged,
            "regressed": worst,
            "not_judged": not_judged,
            "skipped": len(not_judged),
            "slices": [{k: _cell(v) for k, v in r.items()} for r in rows],
        },
    )


def _cell(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) and not math.isnan(value) else value


def behavioural_cases(results: list[dict[str, Any]]) -> CheckOutcome:
    """Every behavioural case holds on every example."""
    failed = [r for r in results if r["violations"]]
    ok = not failed
    return CheckOutcome(
        BEHAVIOURAL_CASES,
        ok,
        "ERROR",
        f"all {len(results)} cases hold on {results[0]['examples'] if results else 0} examples"
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
        timing: ``lib.evaluation.metrics.latency_summary`` of candidate and champion timed in the
            same rounds, interleaved. The budget applies to the candidate's
            ``steady_p99_ms`` (each request's fastest time over the rounds, then the p99),
            and ``ratio`` (median over requests of the candidate's fastest time over the
            champion's on the same request) must stay within the spec's
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
            f"; {ratio:.2f}x the champion on the same requests in the same rounds (its "
            f"steady p99 {timing['champion_steady_p99_ms']:.2f} ms; "
            f"{'within' if close else 'beyond'} the ratio {gates.max_latency_ratio})"
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
