"""The model card's pure parts: the interval of one model's metric, and what an override says.

The card of a real evaluation (bootstrap, refused, compared) is checked in test_evaluation.py.
"""

import math

import numpy as np
import pandas as pd
import pytest

from mlplatform.lib.checks import CheckOutcome
from mlplatform.lib.evaluation.explain import BIAS, global_importance
from mlplatform.lib.evaluation.metrics import metric
from mlplatform.lib.evaluation.model_card import CardFacts, metric_interval, render
from mlplatform.problems import Problem


def _scored(n: int = 4000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    p = np.clip(0.2 + 0.15 * (y - 0.2) + rng.normal(0, 0.15, n), 0.001, 0.999)
    return y, p


def test_the_auc_interval_is_delongs_and_agrees_with_a_bootstrap_of_the_rows() -> None:
    y, p = _scored()

    low, high, method = metric_interval("roc_auc", y, p, 0.95)

    auc = metric("roc_auc", y, p)
    assert method == "delong" and low < auc < high
    assert (low + high) / 2 == pytest.approx(auc)
    rng = np.random.default_rng(0)
    draws = [
        metric("roc_auc", y[i], p[i]) for i in (rng.integers(0, len(y), len(y)) for _ in range(400))
    ]
    b_low, b_high = np.quantile(draws, [0.025, 0.975])
    assert high - low == pytest.approx(b_high - b_low, rel=0.15)


def test_other_metrics_get_a_seeded_bootstrap_interval_and_one_class_gets_none() -> None:
    y, p = _scored()

    first = metric_interval("brier", y, p, 0.9, resamples=300, seed=5)
    again = metric_interval("brier", y, p, 0.9, resamples=300, seed=5)

    assert first == again and first[2] == "bootstrap"
    assert first[0] < metric("brier", y, p) < first[1]
    low, high, _ = metric_interval("roc_auc", np.zeros(50, dtype=int), p[:50], 0.95)
    assert math.isnan(low) and math.isnan(high)


def test_an_overridden_verdict_names_who_and_why_and_the_gate_is_a_known_limit(
    problem: Problem,
) -> None:
    contributions = pd.DataFrame({"carrier": [0.2, -0.1], "distance": [0.0, 0.0], BIAS: [-1, -1]})
    failed = CheckOutcome(
        "no_slice_regression",
        False,
        "WARN",
        "OVERRIDDEN by alice@example.com (UA schedule change): 1 of 9 judged slices regress",
        {"threshold": 0.03, "rule": "a slice is refused when ..."},
    )
    facts = CardFacts(
        spec=problem.spec,
        version="7",
        verdict="overridden",
        champion="3",
        lineage={"training_window": "2013-01-01..2013-03-31", "data_version": "abc"},
        holdout={"start": "2013-04-01", "end": "2013-04-07", "rows": 6000, "data_version": "h1"},
        metrics={
            "candidate": {"roc_auc": 0.7, "rows": 6000.0},
            "champion": {"roc_auc": 0.69, "rows": 6000.0},
        },
        intervals={"candidate": (0.68, 0.72, "delong"), "champion": (0.67, 0.71, "delong")},
        slices=[
            {
                "slice": "carrier",
                "value": "UA",
                "rows": 900,
                "positives": 150,
                "evaluated": True,
                "not_judged": "",
                "candidate": 0.6,
                "champion": 0.66,
            },
            {
                "slice": "carrier",
                "value": "HA",
                "rows": 20,
                "positives": 3,
                "evaluated": False,
                "not_judged": "20 rows < 200",
                "candidate": math.nan,
                "champion": math.nan,
            },
        ],
        cases=[],
        outcomes=[failed],
        importance=global_importance(contributions),
        latency={"p50_ms": 1.0, "p99_ms": 3.0, "steady_p99_ms": 1.2, "ratio": 1.01},
        verdict_tags={
            "override_by": "alice@example.com",
            "override_reason": "UA schedule change",
            "overridden_gates": "no_slice_regression",
        },
    )

    card = render(facts)

    assert "**Verdict: OVERRIDDEN** against champion version 3." in card
    assert "Overridden by alice@example.com (UA schedule change): no_slice_regression." in card
    assert "| no_slice_regression | overridden |" in card
    assert "| carrier | HA | 20 | 3 | n/a | n/a |  |  | NOT JUDGED | 20 rows < 200 |" in card
    assert "Gates no_slice_regression failed and were overridden by a person" in card
    assert "No claim about 1 slice(s) too small to judge" in card and "carrier=HA" in card
    # distance never contributes: named as such, not ranked
    assert "| carrier | 0.1500 | 100.0% | 0.0500 |" in card
    ranked = card.split("## Global importance")[1]
    assert "| distance |" not in ranked
    assert "1 feature(s) contribute nothing on these rows" in ranked
    assert "| rows | 6000 | 6000 |" in card
