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
            *(_img(png, name) for name, png in figures.items()),
        ]
    )


def _figures(result: "Evaluation") -> dict[str, bytes]:
    from mlplatform.lib import plots
    from mlplatform.lib.evaluation import calibration

    y = result.labels
    return {
        "roc": plots.png(plots.roc(y, result.predictions)),
        "calibration": plots.png(
            plots.calibration({m: calibration(y, p) for m, p in result.predictions.items()})
        ),
    }


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
    client = tracking.client()
    run_id = client.get_model_version(problem.name, version).run_id
    for name, value in result.metrics["candidate"].items():
        if not math.isnan(value):
            client.log_metric(run_id, f"holdout_{name}", value)
    client.log_metric(run_id, "serving_p99_ms", result.latency["p99_ms"])
    client.log_artifact(run_id, str(html), "evaluation")
    gates = [o.to_dict() for o in judged.outcomes]
    client.log_dict(run_id, {"verdict": judged.verdict, "gates": gates}, "evaluation/gates.json")
    client.log_text(run_id, json.dumps(result.slices, default=str), "evaluation/slices.json")
    experiment = client.get_run(run_id).info.experiment_id
    return html, mlflow.run_url(experiment, run_id)


def report_metadata(
    judged: Judged, verdict_tags: dict[str, str], html: Path, run_url: str
) -> dict[str, Any]:
    """The asset's metadata: the markdown report, headline numbers, links."""
    problem, version, champion = judged.problem, judged.version, judged.champion
    holdout, result, outcomes = judged.holdout, judged.result, judged.outcomes
    verdict = judged.verdict
    report = markdown(judged, _figures(result))
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
    if "override_by" in verdict_tags:
        meta["override"] = dg.MetadataValue.json(
            {k: verdict_tags[k] for k in ("override_by", "override_reason", "overridden_gates")}
        )
    return meta
