"""Online figures of a challenger: logged predictions joined to the outcomes that arrived."""

import math
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlplatform.lib.deployment.rollout import OnlineFigures
from mlplatform.lib.evaluation.metrics import metric
from mlplatform.lib.features.build import label
from mlplatform.spec import ProblemSpec

if TYPE_CHECKING:
    from mlplatform.lib.storage import DataLake


def outcome_keys(frame: pd.DataFrame, spec: ProblemSpec) -> pd.Series:
    """``rollout.request_key`` of every row of the target source, vectorized."""
    source = spec.sources[spec.target.source]
    parts = []
    for column in source.natural_key:
        values = frame[column]
        if column == source.event_timestamp:
            values = pd.to_datetime(values, utc=True).map(lambda t: t.isoformat())
        parts.append(values.astype(str))
    out = parts[0]
    for part in parts[1:]:
        out = out + "|" + part
    return out


def outcomes(
    lake: "DataLake", problem: str, spec: ProblemSpec, event_times: pd.Series
) -> pd.Series:
    """Known labels by request key, for the local days the requests fall on.

    A label is ``features.build.label`` of the target source's row: 0/1 for a binary
    problem, the outcome's value for a regression one (float64 either way).
    """
    local = pd.to_datetime(event_times, utc=True).dt.tz_convert(spec.partitioning.timezone)
    days = sorted(set(local.dt.date.dropna()))
    present = [d for d in days if lake.table_path(problem, spec.target.source, d).exists()]
    if not present:
        return pd.Series(dtype=float)
    rows = lake.read_days(problem, spec.target.source, present)
    labels = label(rows, spec.target)
    known = labels.notna()
    return pd.Series(labels[known].to_numpy(), index=outcome_keys(rows[known], spec).to_numpy())


def challenger_figures(
    predictions: pd.DataFrame,
    lake: "DataLake",
    problem: str,
    spec: ProblemSpec,
    version: str,
    since: datetime,
) -> OnlineFigures:
    """The challenger's scored, answered, failed and labelled requests since ``since``.

    ``challenger_metric`` and ``champion_metric`` are the spec's metric of each version's
    logged predictions on the same labelled requests (``evaluation.metrics.metric``: e.g.
    ROC AUC of probabilities, RMSE of predicted values); NaN before any outcome is known.
    """
    rows = predictions[
        (predictions["challenger_version"] == version)
        & (predictions["time"] >= pd.Timestamp(since).tz_convert("UTC"))
    ]
    scored = rows[rows["challenger_prediction"].notna() | rows["challenger_error"].notna()]
    answered = rows[rows["route"] == "challenger"]
    p99 = float(np.percentile(answered["latency_ms"], 99)) if len(answered) else 0.0
    known = outcomes(lake, problem, spec, rows["event_time"]) if len(rows) else pd.Series()
    both = scored[scored["challenger_prediction"].notna() & scored["key"].isin(known.index)]
    both = both.drop_duplicates("key", keep="last")
    y = known.reindex(both["key"]).to_numpy()
    name = spec.metric.name
    return OnlineFigures(
        scored=len(scored),
        answered=len(answered),
        errors=int(scored["challenger_error"].notna().sum()),
        p99_ms=p99,
        labelled=len(both),
        challenger_metric=metric(name, y, both["challenger_prediction"].to_numpy())
        if len(both)
        else math.nan,
        champion_metric=metric(name, y, both["champion_prediction"].to_numpy())
        if len(both)
        else math.nan,
    )
