"""Monitoring: one day of served predictions, their outcomes, online performance, drift.

A "day" is the local calendar day of the requests' prediction time (the day of the target
source's row), so a day's predictions meet that day's outcomes when the day's data lands.
"""

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlplatform.lib.deployment.online import outcome_keys
from mlplatform.lib.evaluation.metrics import expected_calibration_error, metric
from mlplatform.lib.features.build import label
from mlplatform.spec import METRICS, ProblemSpec

if TYPE_CHECKING:
    from datetime import date, datetime


def of_day(predictions: pd.DataFrame, day: "date", timezone: str) -> pd.DataFrame:
    """The logged requests whose prediction time falls on ``day`` (local)."""
    if predictions.empty:
        return predictions
    local = pd.to_datetime(predictions["event_time"], utc=True).dt.tz_convert(timezone).dt.date
    return predictions[local == day].reset_index(drop=True)


def with_outcomes(served: pd.DataFrame, outcomes: pd.DataFrame, spec: ProblemSpec) -> pd.DataFrame:
    """Each answered request with its ``label`` (float64; NaN while the outcome is unknown).

    Args:
        served: Prediction-log rows (``key``, ``status``, ``prediction``...).
        outcomes: Rows of the target source (its natural key and ``target.column``).
        spec: The problem's spec: the label is ``features.build.label`` (0/1 for a binary
            target, the outcome's value for a regression one).
    """
    labels = label(outcomes, spec.target)
    known = pd.Series(labels.to_numpy(), index=outcome_keys(outcomes, spec).to_numpy())
    known = known[~known.index.duplicated(keep="last")]
    out = served[served["status"] == "ok"].copy()
    out["label"] = known.reindex(out["key"]).to_numpy()
    return out.reset_index(drop=True)


REGRESSION_METRICS = ("rmse", "mae", "r2")  # reported online for every regression problem


def performance(
    joined: pd.DataFrame, served: pd.DataFrame, metric_name: str
) -> list[dict[str, Any]]:
    """Per version that answered: volume, errors, latency, and metrics on known outcomes.

    Args:
        joined: ``with_outcomes``'s rows (``served_version``, ``prediction``, ``label``).
        served: The day's prediction-log rows (``served_version``, ``status``,
            ``latency_ms``).
        metric_name: The spec's metric; its task (``spec.METRICS``) decides the companions.

    Returns:
        One record per version (``none`` for requests no version answered): ``version``,
        ``requests``, ``errors``, ``error_rate``, ``p99_latency_ms`` (ms), ``labelled`` and
        ``metric_name``'s value, then per task, on the labelled answers (NaN without any):
        binary: ``calibration_error``, ``mean_prediction`` (mean probability) and
        ``observed_rate`` (share of positive labels); regression: ``rmse``, ``mae``, ``r2``
        (scikit-learn's), ``mean_prediction`` and ``mean_observed`` (target units).
    """
    regression = METRICS[metric_name][0] == "regression"
    rows = []
    for version, answered in served.groupby(served["served_version"].fillna("none")):
        labelled = joined[(joined["served_version"] == version) & joined["label"].notna()]
        y = labelled["label"].to_numpy(dtype=float)
        p = labelled["prediction"].to_numpy(dtype=float)
        row: dict[str, Any] = {
            "version": str(version),
            "requests": len(answered),
            "errors": int((answered["status"] == "error").sum()),
            "error_rate": float((answered["status"] == "error").mean()),
            "p99_latency_ms": float(np.percentile(answered["latency_ms"], 99)),
            "labelled": len(labelled),
            metric_name: metric(metric_name, y, p) if len(y) else math.nan,
        }
        if regression:
            row |= {m: metric(m, y, p) if len(y) else math.nan for m in REGRESSION_METRICS}
            row |= {
                "mean_prediction": float(p.mean()) if len(p) else math.nan,
                "mean_observed": float(y.mean()) if len(y) else math.nan,
            }
        else:
            row |= {
                "calibration_error": expected_calibration_error(y, p) if len(y) else math.nan,
                "mean_prediction": float(p.mean()) if len(p) else math.nan,
                "observed_rate": float(y.mean()) if len(y) else math.nan,
            }
        rows.append(row)
    return rows


def served_features(served: pd.DataFrame, spec: ProblemSpec) -> pd.DataFrame:
    """The model inputs of the answered requests, one column per feature (spec order)."""
    ok = served[(served["status"] == "ok") & served["features"].notna()]
    names = [f.name for f in spec.features]
    rows = [json.loads(v) for v in ok["features"]]
    frame = pd.DataFrame(rows, columns=names)
    for f in spec.features:
        if f.kind == "numeric":
            frame[f.name] = pd.to_numeric(frame[f.name], errors="coerce")
    return frame


def drift(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    current_predictions: np.ndarray,
    reference_predictions: np.ndarray,
    spec: ProblemSpec,
    html_path: Path,
    timestamp: "datetime | None" = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Feature and prediction drift with the spec's test and threshold (Evidently).

    The drift share and drifted-feature count are Evidently's ``DataDriftPreset``'s over the
    features it could score; the prediction's drift (a numeric column: a probability or a
    predicted value, compared with the same test) is reported on its own. ``snapshot`` is
    the Evidently snapshot (stamped ``timestamp``, tagged ``drift``) for the dashboard.
    """
    from mlplatform.lib.monitoring.drift import drift_run

    names = [f.name for f in spec.features]
    rule = spec.monitoring
    both_current = current[names].assign(prediction=current_predictions)
    both_reference = reference[names].assign(prediction=reference_predictions)
    run = drift_run(
        both_current,
        both_reference,
        [*names, "prediction"],
        rule.stattest,
        rule.threshold,
        counted=names,
        drift_share=rule.drift_share,
        html_path=html_path,
        timestamp=timestamp,
        tags=["drift"],
        metadata=metadata,
        cat_method=rule.cat_stattest,
        cat_threshold=rule.cat_threshold,
    )
    features = [d for d in run.columns if d.column != "prediction"]
    (prediction,) = [d for d in run.columns if d.column == "prediction"]
    # a feature with no values in the window cannot be compared: reported, not counted
    scored = [d for d in features if d.evaluated]
    return {
        "drift_share": run.drifted_share,
        "drifted_count": run.drifted_count,
        "drifted": run.drifted_share >= rule.drift_share,
        "drifted_features": [d.column for d in features if d.drifted],
        "scores": {d.column: round(d.score, 4) for d in scored},
        "not_evaluated": {d.column: d.note for d in run.columns if not d.evaluated},
        "prediction_drift_score": prediction.score,
        "prediction_drifted": prediction.drifted,
        "snapshot": run.snapshot,
    }
