"""The evaluation report a person reads: gate table, metrics, slices, plots, Evidently HTML.

The same markdown goes into the asset's metadata and, with the HTML and the figures, into
the candidate's MLflow run, so the UI of either tool shows why a model was (not) promoted.
The version's model card (``lib.evaluation.model_card``) goes to its run and its logged
model, and the holdout metrics to the logged model and the holdout dataset (MLflow's model
comparison).
"""

import base64
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from mlplatform.defs.metadata import md_table, table
from mlplatform.lib.evaluation.model_card import CARD_FILE, gate_rows
from mlplatform.lib.names import NO_REGRESSION, NO_SLICE_REGRESSION
from mlplatform.problems import Problem

if TYPE_CHECKING:
    import pandas as pd

    from mlplatform.lib.checks import CheckOutcome
    from mlplatform.lib.evaluation.metrics import Evaluation
    from mlplatform.lib.storage import DataLake
    from mlplatform.lib.tracking import Tracking
    from mlplatform.resources import MlflowResource


def _num(value: Any) -> str:
    if value is None:  # not applicable (e.g. positives of a regression slice)
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _img(png: bytes, title: str) -> str:
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"


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
            "positives": None
            if judged.problem.spec.is_regression
            else int(judged.result.labels.sum()),
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
    importance: "pd.DataFrame | None" = None
    """``lib.evaluation.explain.global_importance`` of the candidate on the holdout."""
    lineage: dict[str, str] = field(default_factory=dict)
    """The version's registry tags (training window, training set version, commit...)."""
    importance_examples: int = 0
    """Holdout rows the importance was computed on (a seeded sample)."""


IMPORTANCE_ROWS = 15  # features in the report's importance table


def importance_rows(judged: Judged) -> list[dict[str, Any]]:
    """The top features by mean absolute contribution on the holdout (empty if none).

    Features that contribute nothing on the sampled rows (e.g. never split on) are left out.
    """
    if judged.importance is None:
        return []
    used = judged.importance[judged.importance["mean_abs_contribution"] > 0]
    return [
        {
            "feature": r["feature"],
            "mean_abs_contribution": _num(float(r["mean_abs_contribution"])),
            "share": f"{float(r['share']):.1%}",
            "mean_contribution": _num(float(r["mean_contribution"])),
        }
        for _, r in used.head(IMPORTANCE_ROWS).iterrows()
    ]


def importance_png(judged: Judged) -> bytes | None:
    """Bar plot of the mean absolute contributions, None without them."""
    from mlplatform.lib import plots

    if judged.importance is None or judged.importance.empty:
        return None
    return plots.png(plots.mean_contributions(judged.importance, units=raw_units(judged)))


IMPORTANCE_TITLE = "Global importance (mean |contribution| to the log-odds, holdout)"
IMPORTANCE_TITLE_REGRESSION = "Global importance (mean |contribution| to the prediction, holdout)"


def raw_units(judged: Judged) -> str:
    """Units of the model's raw score: log-odds (binary) or the target column's (regression)."""
    spec = judged.problem.spec
    return f"units of {spec.target.column}" if spec.is_regression else "log-odds"


def importance_title(judged: Judged) -> str:
    """The importance section's title, in the raw score's terms."""
    regression = judged.problem.spec.is_regression
    return IMPORTANCE_TITLE_REGRESSION if regression else IMPORTANCE_TITLE


def _importance_note(judged: Judged) -> str:
    return (
        "LightGBM's TreeSHAP values (pred_contrib) of the candidate on "
        f"{judged.importance_examples} of the {judged.holdout['rows']} holdout rows (seeded "
        "sample): each feature's mean absolute contribution to the raw score, in "
        f"{raw_units(judged)}."
    )


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
            f"({holdout['rows']} rows, data version `{holdout['data_version']}`).",
            "### Gates\n" + md_table(gate_rows(judged.outcomes)),
            "### Metrics\n" + md_table(metrics),
            "### Behavioural cases\n" + md_table(cases),
            "### Slices\n" + md_table(_slice_rows(result)),
            *(
                [
                    f"### {importance_title(judged)}\n{_importance_note(judged)}\n\n"
                    + md_table(importance_rows(judged))
                ]
                if judged.importance is not None
                else []
            ),
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
    """The report's figures by task, then the slice differences and the global importance.

    Binary: ROC and calibration; regression: residuals and predicted against actual.
    """
    from mlplatform.lib import plots
    from mlplatform.lib.evaluation.metrics import calibration

    result = judged.result
    y = result.labels
    if judged.problem.spec.is_regression:
        figures = {
            "residuals": plots.png(plots.residuals(y, result.predictions)),
            "predicted vs actual": plots.png(plots.predicted_vs_actual(y, result.predictions)),
        }
    else:
        figures = {
            "roc": plots.png(plots.roc(y, result.predictions)),
            "calibration": plots.png(
                plots.calibration({m: calibration(y, p) for m, p in result.predictions.items()})
            ),
        }
    forest = forest_png(judged)
    if forest is not None:
        figures["slice differences"] = forest
    bars = importance_png(judged)
    if bars is not None:
        figures["global importance"] = bars
    return figures


def _html_table(rows: list[dict[str, Any]]) -> str:
    import html as escape

    columns = list(rows[0])
    head = "".join(f"<th>{escape.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape.escape(str(r[c]))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table border=1 cellpadding=4><tr>{head}</tr>{body}</table>"


def _importance_section(judged: Judged) -> str:
    """The global importance table and bar plot as an HTML section (empty without them)."""
    import html as escape

    rows = importance_rows(judged)
    if not rows:
        return ""
    bars = importance_png(judged)
    png = base64.b64encode(bars).decode() if bars else ""
    img = f'<img alt="global importance" src="data:image/png;base64,{png}"/>' if png else ""
    return (
        '<section id="global-importance" style="font-family:sans-serif;margin:2em">'
        f"<h2>{escape.escape(importance_title(judged))}</h2>"
        f"<p>{escape.escape(_importance_note(judged))}</p>"
        f"{_html_table(rows)}{img}</section>"
    )


def _append_to_page(html: Path, judged: Judged) -> None:
    """Add the paired comparison (table, forest plot) and global importance to the page."""
    sections = [_comparison_section(judged), _importance_section(judged)]
    section = "".join(sections)
    if not section:
        return
    text = html.read_text()
    at = text.lower().rfind("</body>")
    html.write_text(text[:at] + section + text[at:] if at >= 0 else text + section)


def _comparison_section(judged: Judged) -> str:
    """The paired comparison (table and forest plot) as an HTML section; empty without it."""
    import html as escape

    rows = comparison_rows(judged)
    if not rows:
        return ""
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
    return (
        '<section id="paired-comparison" style="font-family:sans-serif;margin:2em">'
        "<h2>Candidate against champion (paired, same rows)</h2>"
        f"<ul>{rules}</ul>{_html_table(rows)}{img}</section>"
    )


def log_evaluation(
    tracking: "Tracking",
    mlflow: "MlflowResource",
    lake: "DataLake",
    judged: Judged,
    holdout_frame: "pd.DataFrame",
) -> tuple[Path, str]:
    """Write the Evidently HTML, and log metrics, gates and reports to the candidate's run.

    The holdout metrics go to the logged models and the holdout dataset
    (``log_holdout_metrics``). Returns the HTML page and the candidate run's UI link.
    """
    problem, version, result = judged.problem, judged.version, judged.result
    import json

    import pandas as pd

    from mlplatform.lib.monitoring.drift import performance_report

    def frame(model: str) -> pd.DataFrame:
        return pd.DataFrame({"target": result.labels, "prediction": result.predictions[model]})

    html = lake.reports_dir(problem.name, "evaluation") / f"version-{version}.html"
    reference = frame("champion") if "champion" in result.predictions else None
    performance_report(frame("candidate"), reference, html, problem.spec.is_regression)
    _append_to_page(html, judged)
    client = tracking.client()
    run_id = client.get_model_version(problem.name, version).run_id
    log_holdout_metrics(tracking, judged, holdout_frame)
    client.log_artifact(run_id, str(html), "evaluation")
    gates = [o.to_dict() for o in judged.outcomes]
    client.log_dict(run_id, {"verdict": judged.verdict, "gates": gates}, "evaluation/gates.json")
    slices = [
        {k: (v.to_dict() if k == "paired" else v) for k, v in r.items()} for r in result.slices
    ]
    client.log_text(run_id, json.dumps(slices, default=str), "evaluation/slices.json")
    if judged.importance is not None:
        client.log_text(
            run_id, judged.importance.to_csv(index=False), "evaluation/global_importance.csv"
        )
    experiment = client.get_run(run_id).info.experiment_id
    return html, mlflow.run_url(experiment, run_id)


def holdout_dataset_name(problem: Problem) -> str:
    """Name of the holdout dataset in MLflow (its digest is the holdout set's data version)."""
    return f"{problem.name}_holdout_set"


def logged_model_id(version: Any) -> str | None:
    """The MLflow logged model (``m-...``) a registered version was made from, if any.

    MLflow 3.17's SQL registry leaves ``ModelVersion.model_id`` empty for a version
    registered from ``models:/<model_id>``; its ``source`` still names the logged model.
    """
    if getattr(version, "model_id", None):
        return str(version.model_id)
    source = str(getattr(version, "source", "") or "")
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def log_holdout_metrics(
    tracking: "Tracking", judged: Judged, holdout_frame: "pd.DataFrame"
) -> dict[str, str | None]:
    """Log each model's holdout metrics against its MLflow logged model and the holdout dataset.

    MLflow 3 keeps metrics per (logged model, dataset): with the candidate and the champion
    both scored on the same holdout version, MLflow's model comparison view sets them side
    by side on that dataset. Each metric is logged in the version's own run (``holdout_<name>``
    from ``lib.evaluation.metrics.summary``, and ``serving_p99_ms`` for the candidate), with the
    holdout dataset (digest: its data version) as an ``evaluation`` input of that run. The
    champion's run thus gains the figures of every holdout it was compared on.

    Returns:
        Model name (``candidate``, ``champion``) → MLflow model id (None for a version
        registered without a logged model: its metrics go to its run only).
    """
    import time

    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    problem, result, holdout = judged.problem, judged.result, judged.holdout
    client = tracking.client()
    dataset = from_pandas(
        holdout_frame,
        source=str(holdout["path"]),
        name=holdout_dataset_name(problem),
        digest=str(holdout["data_version"]),
    )
    entity = Dataset(**dataset.to_dict())
    context = InputTag(MLFLOW_DATASET_CONTEXT, "evaluation")
    versions = {"candidate": judged.version, "champion": judged.champion}
    now = int(time.time() * 1000)
    model_ids: dict[str, str | None] = {}
    for model, summary in result.metrics.items():
        found = client.get_model_version(problem.name, versions[model])
        model_id = model_ids[model] = logged_model_id(found)
        figures = {f"holdout_{k}": v for k, v in summary.items() if not math.isnan(v)}
        if model == "candidate":
            figures["serving_p99_ms"] = float(result.latency["p99_ms"])
        run = client.get_run(found.run_id)
        inputs = run.inputs.dataset_inputs if run.inputs else []
        logged = {(i.dataset.name, i.dataset.digest) for i in inputs}
        if (entity.name, entity.digest) not in logged:
            client.log_inputs(found.run_id, datasets=[DatasetInput(entity, tags=[context])])
        client.log_batch(
            found.run_id,
            metrics=[
                Metric(
                    key,
                    float(value),
                    now,
                    0,
                    model_id=model_id,
                    dataset_name=entity.name,
                    dataset_digest=entity.digest,
                )
                for key, value in figures.items()
            ],
        )
    return model_ids


def log_model_card(
    tracking: "Tracking",
    mlflow: "MlflowResource",
    lake: "DataLake",
    judged: Judged,
    verdict_tags: dict[str, str],
) -> dict[str, str]:
    """Render the version's model card and log it as ``model_card.md`` to MLflow.

    Written into the lake beside the evaluation page (``.../evaluation/version-<v>/``), then
    logged at the root of the version's run and of its logged model. A version evaluated
    again (e.g. with an override) gets a new card in place of the earlier one.

    Returns:
        ``path`` (the card in the lake), ``run_url`` (its page in the MLflow UI) and
        ``artifact_uri`` (its MLflow artifact URI).
    """
    from mlplatform.lib.evaluation import model_card as mc

    problem, result, spec = judged.problem, judged.result, judged.problem.spec
    g = spec.gates
    intervals = {
        model: mc.metric_interval(
            spec.metric.name,
            result.labels,
            p,
            g.confidence,
            g.bootstrap_resamples,
            spec.training.seed,
        )
        for model, p in result.predictions.items()
    }
    facts = mc.CardFacts(
        spec=spec,
        version=judged.version,
        verdict=judged.verdict,
        champion=judged.champion,
        lineage=judged.lineage,
        holdout=judged.holdout,
        metrics=result.metrics,
        intervals=intervals,
        slices=result.slices,
        cases=result.cases,
        outcomes=judged.outcomes,
        importance=judged.importance,
        importance_examples=judged.importance_examples,
        latency=result.latency,
        verdict_tags=verdict_tags,
    )
    folder = lake.reports_dir(problem.name, "evaluation") / f"version-{judged.version}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CARD_FILE
    path.write_text(mc.render(facts))
    client = tracking.client()
    found = client.get_model_version(problem.name, judged.version)
    client.log_artifact(found.run_id, str(path))
    model_id = logged_model_id(found)
    if model_id:  # shown on the logged model's page too
        client.log_model_artifact(model_id, str(path))
    run = client.get_run(found.run_id)
    url = mlflow.run_url(run.info.experiment_id, found.run_id) + f"/artifactPath/{CARD_FILE}"
    return {
        "path": str(path),
        "run_url": url,
        "artifact_uri": f"{run.info.artifact_uri}/{CARD_FILE}",
    }


def report_metadata(
    judged: Judged,
    verdict_tags: dict[str, str],
    html: Path,
    run_url: str,
    card: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The asset's metadata: the markdown report, headline numbers, links.

    ``card`` is ``log_model_card``'s answer: the model card's path and MLflow links.
    """
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
        meta["comparison"] = table(comparison_rows(judged))
        meta["comparison_rules"] = dg.MetadataValue.md(_rules(judged))
        forest = forest_png(judged)
        if forest is not None:
            meta["slice_differences"] = dg.MetadataValue.md(_img(forest, "slice differences"))
    if card:
        meta["model_card"] = dg.MetadataValue.path(card["path"])
        meta["model_card_mlflow"] = dg.MetadataValue.url(card["run_url"])
        meta["model_card_uri"] = card["artifact_uri"]
    rows = importance_rows(judged)
    if rows:
        meta["global_importance"] = table(rows)
        bars = importance_png(judged)
        if bars:
            meta["global_importance_plot"] = dg.MetadataValue.md(_img(bars, "global importance"))
    if "override_by" in verdict_tags:
        meta["override"] = dg.MetadataValue.json(
            {k: verdict_tags[k] for k in ("override_by", "override_reason", "overridden_gates")}
        )
    return meta
