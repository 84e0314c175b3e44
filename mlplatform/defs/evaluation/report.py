"""The evaluation report a person reads: gate table, metrics, slices, plots, Evidently HTML.

The same markdown goes into the asset's metadata and, with the HTML and the figures, into
the candidate's MLflow run, so the UI of either tool shows why a model was (not) promoted.
"""

import base64
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from mlplatform.defs.metadata import md_table
from mlplatform.lib.names import NO_REGRESSION, NO_SLICE_REGRESSION
from mlplatform.problems import Problem

if TYPE_CHECKING:
    from mlplatform.lib.checks import CheckOutcome
    from mlplatform.lib.evaluation import Evaluation
    from mlplatform.lib.storage import DataLake
    from mlplatform.lib.tracking import Tracking
    from mlplatform.resources import MlflowResource


def _num(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _img(png: bytes, title: str) -> str:
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"


def gate_rows(outcomes: "list[CheckOutcome]") -> list[dict[str, Any]]:
    """One row per gate: passed, value, threshold, reason."""
    return [
        {
            "gate": o.name,
            "result": "pass" if o.passed else ("overridden" if not o.blocks else "FAIL"),
            "value": _num(o.details.get("value", o.details.get("p99_ms", ""))),
            "threshold": _num(o.details.get("threshold", "")),
            "reason": o.reason,
        }
        for o in outcomes
    ]


def _slice_rows(result: "Evaluation") -> list[dict[str, Any]]:
    rows = []
    for r in result.slices:
        row = {"slice": r["slice"], "value": r["value"], "rows": r["rows"]}
        for model in result.predictions:
            row[model] = _num(r[model])
        if "champion" in result.predictions and r["evaluated"]:
            row["change"] = _num(r["candidate"] - r["champion"])
        rows.append(row)
    return rows


COMPARISON_COLUMNS = (
    "slice",
    "value",
    "rows",
    "positives",
    "candidate",
    "champion",
    "difference",
    "low",
    "high",
    "decision",
    "reason",
)


def comparison_rows(judged: "Judged") -> list[dict[str, Any]]:
    """The metric and every slice: candidate, champion, difference, its interval, decision.

    Taken from the comparison gates' details (what they decided on); empty without a champion.
    """
    by_name = {o.name: o.details for o in judged.outcomes}
    overall = by_name.get(NO_REGRESSION, {}).get("comparison", [])
    rows = [
        {
            **r,
            "value": "all",
            "rows": int(judged.result.metrics["candidate"]["rows"]),
            "positives": int(judged.result.labels.sum()),
        }
        for r in overall
    ]
    rows += by_name.get(NO_SLICE_REGRESSION, {}).get("slices", [])
    return [{c: _num(r.get(c, "")) for c in COMPARISON_COLUMNS} for r in rows]


def forest_png(judged: "Judged") -> bytes | None:
    """Forest plot of the judged slices' differences (better direction), None without any."""
    from mlplatform.lib import plots

    gates = judged.problem.spec.gates
    flip = judged.problem.spec.metric.direction == "minimize"
    details = {o.name: o.details for o in judged.outcomes}
    slices = details.get(NO_SLICE_REGRESSION, {}).get("slices", [])
    rows = [
        {
            "label": f"{r['slice']}={r['value']}",
            "difference": -r["difference"] if flip else r["difference"],
            "low": -r["high"] if flip else r["low"],
            "high": -r["low"] if flip else r["high"],
            "decision": r["decision"],
        }
        for r in slices
        if r["decision"] != "NOT JUDGED"
    ]
    if not rows:
        return None
    level = f"{gates.confidence:.0%}"
    title = f"Slices: candidate - champion, {level} intervals ({gates.slice_error_control})"
    return plots.png(plots.forest(rows, gates.slice_tolerance, title))


@dataclass(frozen=True)
class Judged:
    """One evaluation: who was judged against whom, on what, with which outcome."""

    problem: Problem
    version: str
    champion: str | None
    holdout: dict[str, Any]
    result: "Evaluation"
    outcomes: "list[CheckOutcome]"
    verdict: str


def markdown(judged: Judged, figures: dict[str, bytes]) -> str:
    """The whole report as markdown (figures inline)."""
    problem, version, champion = judged.problem, judged.version, judged.champion
    holdout, result, verdict = judged.holdout, judged.result, judged.verdict
    against = f"champion version {champion}" if champion else "no champion (bootstrap)"
    metrics = [
        {"metric": m, **{model: _num(s[m]) for model, s in result.metrics.items()}}
        for m in result.metrics["candidate"]
    ]
    cases = [{k: r[k] for k in ("case", "expect", "examples", "violations")} for r in result.cases]
    return "\n\n".join(
        [
            f"## {problem.name} version {version}: **{verdict.upper()}**",
            f"Against {against}, on the holdout {holdout['start']}..{holdout['end']} "
            f"({holdout['rows']} flights, data version `{holdout['data_version']}`).",
            "### Gates\n" + md_table(gate_rows(judged.outcomes)),
            "### Metrics\n" + md_table(metrics),
            "### Behavioural cases\n" + md_table(cases),
            "### Slices\n" + md_table(_slice_rows(result)),
            *(
                [
                    "### Candidate against champion (paired, same rows)\n"
                    + _rules(judged)
                    + "\n\n"
                    + md_table(comparison_rows(judged))
                ]
                if champion
                else []
            ),
            *(_img(png, name) for name, png in figures.items()),
        ]
    )


def _rules(judged: Judged) -> str:
    """The comparison gates' rules in words."""
    rules = [o.details["rule"] for o in judged.outcomes if "rule" in o.details]
    return "\n".join(f"- {r}" for r in rules)


def _figures(judged: Judged) -> dict[str, bytes]:
    from mlplatform.lib import plots
    from mlplatform.lib.evaluation import calibration

    result = judged.result
    y = result.labels
    figures = {
        "roc": plots.png(plots.roc(y, result.predictions)),
        "calibration": plots.png(
            plots.calibration({m: calibration(y, p) for m, p in result.predictions.items()})
        ),
    }
    forest = forest_png(judged)
    if forest is not None:
        figures["slice differences"] = forest
    return figures


def _append_to_page(html: Path, judged: Judged) -> None:
    """Add the paired comparison (table and forest plot) to the Evidently page."""
    import html as escape

    rows = comparison_rows(judged)
    if not rows:
        return
    head = "".join(f"<th>{c}</th>" for c in COMPARISON_COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{escape.escape(str(r[c]))}</td>" for c in COMPARISON_COLUMNS)
        + "</tr>"
        for r in rows
    )
    forest = forest_png(judged)
    img = (
        f'<img alt="slice differences" src="data:image/png;base64,'
        f'{base64.b64encode(forest).decode()}"/>'
        if forest
        else ""
    )
    rules = "".join(
        f"<li>{escape.escape(o.details['rule'])}</li>"
        for o in judged.outcomes
        if "rule" in o.details
    )
    section = (
        '<section id="paired-comparison" style="font-family:sans-serif;margin:2em">'
        "<h2>Candidate against champion (paired, same rows)</h2>"
        f"<ul>{rules}</ul><table border=1 cellpadding=4><tr>{head}</tr>{body}</table>"
        f"{img}</section>"
    )
    text = html.read_text()
    at = text.lower().rfind("</body>")
    html.write_text(text[:at] + section + text[at:] if at >= 0 else text + section)


def log_evaluation(
    tracking: "Tracking", mlflow: "MlflowResource", lake: "DataLake", judged: Judged
) -> tuple[Path, str]:
    """Write the Evidently HTML, and log metrics, gates and reports to the candidate's run."""
    problem, version, result = judged.problem, judged.version, judged.result
    import json

    import pandas as pd

    from mlplatform.lib.drift import classification_report

    def frame(model: str) -> pd.DataFrame:
        return pd.DataFrame({"target": result.labels, "prediction": result.predictions[model]})

    html = lake.reports_dir(problem.name, "evaluation") / f"version-{version}.html"
    reference = frame("champion") if "champion" in result.predictions else None
    classification_report(frame("candidate"), reference, html)
    _append_to_page(html, judged)
    client = tracking.client()
    run_id = client.get_model_version(problem.name, version).run_id
    for name, value in result.metrics["candidate"].items():
        if not math.isnan(value):
            client.log_metric(run_id, f"holdout_{name}", value)
    client.log_metric(run_id, "serving_p99_ms", result.latency["p99_ms"])
    client.log_artifact(run_id, str(html), "evaluation")
    gates = [o.to_dict() for o in judged.outcomes]
    client.log_dict(run_id, {"verdict": judged.verdict, "gates": gates}, "evaluation/gates.json")
    slices = [
        {k: (v.to_dict() if k == "paired" else v) for k, v in r.items()} for r in result.slices
    ]
    client.log_text(run_id, json.dumps(slices, default=str), "evaluation/slices.json")
    experiment = client.get_run(run_id).info.experiment_id
    return html, mlflow.run_url(experiment, run_id)


def report_metadata(
    judged: Judged, verdict_tags: dict[str, str], html: Path, run_url: str
) -> dict[str, Any]:
    """The asset's metadata: the markdown report, headline numbers, links."""
    problem, version, champion = judged.problem, judged.version, judged.champion
    holdout, result, outcomes = judged.holdout, judged.result, judged.outcomes
    verdict = judged.verdict
    report = markdown(judged, _figures(judged))
    metric = problem.spec.metric.name
    meta: dict[str, Any] = {
        "report": dg.MetadataValue.md(report),
        "verdict": verdict,
        "failed_gates": dg.MetadataValue.json([o.name for o in outcomes if not o.passed]),
        "registered_version": version,
        "champion_version": champion or "none",
        "holdout_version": holdout["data_version"],
        "holdout_window": f"{holdout['start']}..{holdout['end']}",
        f"candidate_{metric}": result.metrics["candidate"][metric],
        "p50_latency_ms": result.latency["p50_ms"],
        "p99_latency_ms": result.latency["p99_ms"],
        "evidently_report": dg.MetadataValue.path(str(html)),
        "mlflow_run": dg.MetadataValue.url(run_url),
        "dagster/row_count": int(result.metrics["candidate"]["rows"]),
    }
    if champion:
        meta[f"champion_{metric}"] = result.metrics["champion"][metric]
        meta["comparison"] = dg.MetadataValue.md(
            _rules(judged) + "\n\n" + md_table(comparison_rows(judged))
        )
        forest = forest_png(judged)
        if forest is not None:
            meta["slice_differences"] = dg.MetadataValue.md(_img(forest, "slice differences"))
    if "override_by" in verdict_tags:
        meta["override"] = dg.MetadataValue.json(
            {k: verdict_tags[k] for k in ("override_by", "override_reason", "overridden_gates")}
        )
    return meta
