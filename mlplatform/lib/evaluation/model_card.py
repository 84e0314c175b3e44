"""The model card of an evaluated version: what it is for, what it learned from, how it did.

Written from what the evaluation measured and the spec states, never typed by hand: intended
use (the spec), lineage (the version's tags: training window, training-set and holdout
versions, commit), features, holdout metrics with their intervals, slices judged and not,
behavioural cases, gates and verdict, global importance, serving latency, known limits.
Markdown from plain f-strings; the evaluation logs it to MLflow as ``model_card.md``.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mlplatform.lib import markdown
from mlplatform.lib.names import NO_REGRESSION, NO_SLICE_REGRESSION
from mlplatform.spec import ProblemSpec

if TYPE_CHECKING:
    import pandas as pd

    from mlplatform.lib.checks import CheckOutcome

CARD_FILE = "model_card.md"
TOP_FEATURES = 15  # features listed under global importance


def num(value: Any) -> str:
    """A cell: floats to 4 decimals, NaN as ``n/a``, anything else as text."""
    if isinstance(value, float | np.floating):
        return "n/a" if math.isnan(value) else f"{float(value):.4f}"
    return "" if value is None else str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of records (the first record's keys as columns); ``_none_`` if empty."""
    return markdown.table(rows, num)


def gate_rows(outcomes: "list[CheckOutcome]") -> list[dict[str, Any]]:
    """One row per gate: gate, result (pass, FAIL or overridden), value, threshold, reason."""
    return [
        {
            "gate": o.name,
            "result": "pass" if o.passed else ("overridden" if not o.blocks else "FAIL"),
            "value": num(o.details.get("value", o.details.get("p99_ms", ""))),
            "threshold": num(o.details.get("threshold", "")),
            "reason": o.reason,
        }
        for o in outcomes
    ]


def metric_interval(
    name: str,
    y: np.ndarray,
    p: np.ndarray,
    confidence: float,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float, str]:
    """Two-sided interval of one model's metric on the holdout rows.

    ``roc_auc``: DeLong's normal interval (``lib.evaluation.comparison.delong`` against a constant
    scoring, whose AUC is 0.5 with no variance, so the variance of the difference is the
    model's own); any other metric: a seeded percentile bootstrap over rows.

    Args:
        name: the metric (``lib.evaluation.metrics.metric``'s vocabulary).
        y: labels 0/1, or target values for a regression metric, shape (n,).
        p: probabilities, or predicted values, shape (n,).
        confidence: two-sided level, e.g. 0.95.
        resamples: bootstrap resamples (not used for ``roc_auc``).
        seed: seeds the bootstrap.

    Returns:
        (low, high, method); NaNs when the metric is undefined (one class only).
    """
    from scipy.stats import norm

    from mlplatform.lib.evaluation.comparison import delong
    from mlplatform.lib.evaluation.metrics import metric

    y, p = np.asarray(y), np.asarray(p, dtype=float)
    if name == "roc_auc":
        auc, _, var = delong(y, p, np.zeros_like(p))
        if math.isnan(var):
            return math.nan, math.nan, "delong"
        half = float(norm.ppf(0.5 + confidence / 2)) * math.sqrt(var)
        return auc - half, auc + half, "delong"
    rng = np.random.default_rng(seed)
    draws = [
        metric(name, y[i], p[i])
        for i in (rng.integers(0, len(y), len(y)) for _ in range(resamples))
    ]
    kept = np.asarray([d for d in draws if not math.isnan(d)])
    if not len(kept):
        return math.nan, math.nan, "bootstrap"
    low, high = np.quantile(kept, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high), "bootstrap"


@dataclass(frozen=True)
class CardFacts:
    """Everything a model card states, gathered by the evaluation.

    ``lineage`` is the version's registry tags (``training_window``, ``data_version``,
    ``git_commit``, ``spec_version``, ``dagster_run_id``); ``holdout`` the holdout set's
    record (``start``, ``end``, ``rows``, ``data_version``); ``metrics`` model name →
    ``lib.evaluation.metrics.summary``; ``intervals`` model name → (low, high, method) of the
    success metric (``metric_interval``); ``slices`` the
    ``lib.evaluation.metrics.paired_slices`` records;
    ``cases`` ``lib.evaluation.metrics.run_cases``'s output; ``outcomes`` the gates as judged (after
    any override); ``importance`` ``lib.evaluation.explain.global_importance``'s table on
    ``importance_examples`` holdout rows; ``latency``
    ``lib.evaluation.metrics.latency_summary``; ``verdict_tags`` the tags recorded with the verdict
    (``evaluated_at``, ``evaluation_run``, ``override_by``...).
    """

    spec: ProblemSpec
    version: str
    verdict: str
    champion: str | None
    lineage: Mapping[str, str]
    holdout: Mapping[str, Any]
    metrics: Mapping[str, Mapping[str, float]]
    intervals: Mapping[str, tuple[float, float, str]]
    slices: list[dict[str, Any]]
    cases: list[dict[str, Any]]
    outcomes: "list[CheckOutcome]"
    importance: "pd.DataFrame | None"
    latency: Mapping[str, Any]
    verdict_tags: Mapping[str, str] = field(default_factory=dict)
    importance_examples: int = 0


def _details(facts: CardFacts, gate: str) -> dict[str, Any]:
    return next((o.details for o in facts.outcomes if o.name == gate), {})


def _intended_use(facts: CardFacts) -> str:
    spec = facts.spec
    t, m, g = spec.target, spec.metric, spec.gates
    op = ">=" if m.direction == "maximize" else "<="
    predicts = (
        f"the value of `{t.column}` (regression)"
        if spec.is_regression or t.operator is None or t.value is None
        else f"`{t.column} {t.operator} {t.value:g}` (its probability)"
    )
    return "\n".join(
        [
            "## Intended use",
            "",
            " ".join(spec.description.split()),
            "",
            f"- **Owner**: {spec.owner}",
            f"- **Predicts**: `{t.name}` = {predicts} on "
            f"`{t.source}`. {' '.join(t.description.split())}",
            f"- **Prediction time**: `{spec.prediction_time}`; only what is known then is a "
            f"feature. Budget: p99 {g.p99_latency_ms:g} ms for one prediction.",
            f"- **Success metric**: {m.name} ({m.direction}); a version must reach "
            f"{op} {g.min_metric:g} on the holdout, and lose at most {g.max_regression:g} "
            f"against the champion with {g.confidence:.0%} confidence.",
        ]
    )


def _lineage(facts: CardFacts) -> str:
    tags, holdout = facts.lineage, facts.holdout
    rows = [
        {"": "training window", "value": tags.get("training_window", "unknown")},
        {"": "training set version", "value": f"`{tags.get('data_version', 'unknown')}`"},
        {
            "": "holdout",
            "value": f"{holdout['start']}..{holdout['end']}, {holdout['rows']} rows, "
            f"version `{holdout['data_version']}`",
        },
        {"": "code commit", "value": f"`{tags.get('git_commit', 'unknown')}`"},
        {"": "spec version", "value": tags.get("spec_version", "unknown")},
        {"": "trained in Dagster run", "value": tags.get("dagster_run_id", "unknown")},
        {
            "": "evaluated",
            "value": f"{facts.verdict_tags.get('evaluated_at', '')} in Dagster run "
            f"{facts.verdict_tags.get('evaluation_run', 'unknown')}",
        },
    ]
    return "## Training data and lineage\n\n" + markdown_table(rows)


def _features(facts: CardFacts) -> str:
    rows = [
        {
            "feature": f.name,
            "kind": f.kind,
            "source": f.source,
            "default": "" if f.default is None else str(f.default),
            "constraint": f"monotone {f.monotone}" if f.monotone else "",
            "description": f.description,
        }
        for f in facts.spec.features
    ]
    return f"## Features ({len(rows)})\n\n" + markdown_table(rows)


def _metrics(facts: CardFacts) -> str:
    spec, metrics = facts.spec, facts.metrics
    name, level = spec.metric.name, f"{spec.gates.confidence:.0%}"
    lines = ["## Holdout metrics", ""]
    for model, (low, high, method) in facts.intervals.items():
        value = metrics[model][name]
        lines.append(
            f"- {model}{'' if model == 'candidate' else ' (version ' + str(facts.champion) + ')'}"
            f": {name} **{num(value)}**, {level} interval {num(low)}..{num(high)} ({method})"
        )
    overall = _details(facts, NO_REGRESSION).get("comparison", [])
    for r in overall:
        lines.append(
            f"- paired on the same rows, candidate - champion: {num(r['difference'])}, "
            f"{level} interval {num(r['low'])}..{num(r['high'])} "
            f"({_details(facts, NO_REGRESSION).get('method', '')}): {r['decision']}"
        )
    if not facts.champion:
        lines.append("- no champion (bootstrap): nothing to compare with")
    table = [
        {
            "metric": m,
            # a count stays a count; figures to 4 decimals
            **{model: int(s[m]) if m == "rows" else s[m] for model, s in metrics.items()},
        }
        for m in metrics["candidate"]
    ]
    return "\n".join(lines) + "\n\n" + markdown_table(table)


def _slices(facts: CardFacts) -> str:
    g = facts.spec.gates
    decisions = {
        (r["slice"], str(r["value"])): r
        for r in _details(facts, NO_SLICE_REGRESSION).get("slices", [])
    }
    rows = []
    for r in facts.slices:
        d = decisions.get((r["slice"], str(r["value"])), {})
        row: dict[str, Any] = {
            "slice": r["slice"],
            "value": r["value"],
            "rows": r["rows"],
            "positives": "n/a" if r["positives"] is None else r["positives"],
            "candidate": r.get("candidate", math.nan),
        }
        if facts.champion:
            row |= {
                "champion": r.get("champion", math.nan),
                "difference": d.get("difference", ""),
                "interval": f"{num(d['low'])}..{num(d['high'])}" if "low" in d else "",
            }
        row["decision"] = d.get("decision") or (
            "measured (no champion)" if r["evaluated"] else "NOT JUDGED"
        )
        row["reason"] = d.get("reason") or r.get("not_judged", "")
        rows.append(row)
    judged = sum(1 for r in facts.slices if r["evaluated"])
    rule = _details(facts, NO_SLICE_REGRESSION).get("rule", "")
    head = (
        f"## Slices ({judged} judged, {len(rows) - judged} not judged)\n\n"
        f"Slices: {', '.join(g.slices) or 'none'}. "
        + (
            f"Rule: {rule}."
            if rule
            else f"Slices under {g.min_slice_rows} rows are NOT JUDGED."
            if facts.spec.is_regression
            else f"Slices under {g.min_slice_rows} rows or "
            f"{g.min_slice_positives} positives are NOT JUDGED."
        )
    )
    return head + "\n\n" + markdown_table(rows)


def _cases(facts: CardFacts) -> str:
    rows = [
        {k: r[k] for k in ("case", "expect", "examples", "violations", "description")}
        for r in facts.cases
    ]
    return "## Behavioural cases\n\n" + markdown_table(rows)


def _gates(facts: CardFacts) -> str:
    tags = facts.verdict_tags
    failed = [o.name for o in facts.outcomes if not o.passed]
    lines = [f"## Gates: {facts.verdict.upper()}"]
    if failed:
        lines.append(f"Failed gates: {', '.join(failed)}.")
    if tags.get("override_by"):
        lines.append(
            f"Overridden by {tags['override_by']} ({tags.get('override_reason', '')}): "
            f"{tags.get('overridden_gates', '')}."
        )
    return "\n\n".join([*lines, markdown_table(gate_rows(facts.outcomes))])


def _importance(facts: CardFacts) -> str:
    if facts.importance is None or facts.importance.empty:
        return "## Global importance\n\n_not computed_"
    used = facts.importance[facts.importance["mean_abs_contribution"] > 0]
    top = used.head(TOP_FEATURES)
    rows = [
        {
            "feature": r["feature"],
            "mean abs contribution": float(r["mean_abs_contribution"]),
            "share": f"{float(r['share']):.1%}",
            "mean contribution": float(r["mean_contribution"]),
        }
        for _, r in top.iterrows()
    ]
    unused = len(facts.importance) - len(used)
    return (
        f"## Global importance (top {len(rows)} of {len(facts.importance)} features)\n\n"
        "Mean absolute contribution to the raw score ("
        + (f"units of {facts.spec.target.column}" if facts.spec.is_regression else "log-odds")
        + ") on "
        + (
            f"{facts.importance_examples} of the {facts.holdout['rows']} holdout rows (seeded), "
            if facts.importance_examples
            else "the holdout, "
        )
        + "from LightGBM's TreeSHAP values (`pred_contrib`)"
        + (f"; {unused} feature(s) contribute nothing on these rows" if unused else "")
        + ".\n\n"
        + markdown_table(rows)
    )


def _latency(facts: CardFacts) -> str:
    lat, budget = facts.latency, facts.spec.gates.p99_latency_ms
    return (
        "## Serving latency\n\n"
        f"One prediction through the serving path (online features included), on the "
        f"evaluating machine: p50 {num(lat.get('p50_ms'))} ms, p99 {num(lat.get('p99_ms'))} ms, "
        f"steady p99 {num(lat.get('steady_p99_ms'))} ms against the budget of {budget:g} ms"
        + (f"; {num(lat['ratio'])}x the champion" if lat.get("ratio") is not None else "")
        + "."
    )


def known_limits(facts: CardFacts) -> list[str]:
    """What this card does not show, from the evaluation's own figures."""
    spec, g, holdout = facts.spec, facts.spec.gates, facts.holdout
    limits = [
        f"Judged on one holdout, {holdout['start']}..{holdout['end']} ({holdout['rows']} rows): "
        "its intervals are the holdout's sampling noise only; retraining with another seed "
        "moves the metric too (`mlplatform gates calibrate` measures it), and later months "
        f"may drift (monitored with {spec.monitoring.stattest}, threshold "
        f"{spec.monitoring.threshold:g}).",
    ]
    not_judged = [f"{r['slice']}={r['value']}" for r in facts.slices if not r["evaluated"]]
    if not_judged:
        shown = ", ".join(not_judged[:12])
        more = f" and {len(not_judged) - 12} more" if len(not_judged) > 12 else ""
        small = (
            f"< {g.min_slice_rows} rows"
            if spec.is_regression
            else f"< {g.min_slice_rows} rows or < {g.min_slice_positives} positives"
        )
        limits.append(
            f"No claim about {len(not_judged)} slice(s) too small to judge "
            f"({small}): {shown}{more}."
        )
    if facts.cases:
        limits.append(
            f"Behavioural cases were checked on {facts.cases[0]['examples']} sampled holdout "
            f"rows each; only the {len(facts.cases)} named case(s) were tested."
        )
    defaults = [f.name for f in spec.features if f.default is not None]
    if defaults:
        limits.append(
            f"Missing values of {', '.join(defaults)} are filled with the spec's defaults; "
            "categories never seen in training are treated as missing."
        )
    if not facts.champion:
        limits.append(
            "No champion existed: the comparison gates passed on the bootstrap path, "
            "with nothing to compare with."
        )
    limits.append(
        "Latency was timed on the evaluating machine, not under production traffic; the "
        "rollout (shadow, canary) judges it on real requests."
    )
    if facts.verdict_tags.get("override_by"):
        limits.append(
            f"Gates {facts.verdict_tags.get('overridden_gates', '')} failed and were overridden "
            "by a person: this version did not meet them."
        )
    return limits


def render(facts: CardFacts) -> str:
    """The model card as markdown.

    Sections: title and verdict, intended use, training data and lineage, features,
    holdout metrics (with intervals), slices, behavioural cases, gates, global importance,
    serving latency, known limits.
    """
    against = f"champion version {facts.champion}" if facts.champion else "no champion (bootstrap)"
    title = (
        f"# Model card: {facts.spec.name} version {facts.version}\n\n"
        f"**Verdict: {facts.verdict.upper()}** against {against}."
    )
    limits = "## Known limits\n\n" + "\n".join(f"- {line}" for line in known_limits(facts))
    sections = [
        title,
        _intended_use(facts),
        _lineage(facts),
        _features(facts),
        _metrics(facts),
        _slices(facts),
        _cases(facts),
        _gates(facts),
        _importance(facts),
        _latency(facts),
        limits,
    ]
    return "\n\n".join(sections) + "\n"
