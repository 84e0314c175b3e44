"""The single-row fast path scores exactly as ``Booster.predict`` (serving and the latency gate).

Boosters trained here on one real day of flights: a binary one stopped early (so
``best_iteration`` decides how many trees count) and a regression one, scored row by row
with missing values (None and NaN) among the inputs.
"""

import math
import threading
from datetime import date

import lightgbm as lgb
import numpy as np
import pytest

from mlplatform.lib.deployment.row_predictor import RowPredictor, row_predictor
from mlplatform.problems.flight_delay.source import export_day

COLUMNS = ["dep_delay", "distance", "hour", "air_time", "sched_dep_time"]


def _data() -> tuple[np.ndarray, np.ndarray]:
    flights = export_day("flights", date(2013, 1, 2))
    x = flights[COLUMNS].to_numpy(dtype=float)  # cancelled flights: NaN delays and air time
    return x, flights["arr_delay"].to_numpy(dtype=float)


def _booster(objective: str) -> lgb.Booster:
    x, y = _data()
    known = ~np.isnan(y)
    label = (y[known] > 15).astype(float) if objective == "binary" else y[known]
    params = {"objective": objective, "num_leaves": 15, "seed": 7, "verbose": -1}
    train = lgb.Dataset(x[known][:600], label[:600])
    valid = lgb.Dataset(x[known][600:], label[600:], reference=train)
    return lgb.train(
        params,
        train,
        num_boost_round=200,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(5, verbose=False)],
    )


def _predict(booster: lgb.Booster, x: np.ndarray) -> list[float]:
    return np.asarray(booster.predict(x, num_threads=1), dtype=float).ravel().tolist()


def _rows() -> list[list[float | None]]:
    x, _ = _data()
    rows: list[list[float | None]] = [list(map(float, r)) for r in x[:300]]
    rows[0][0] = None  # a feature the online store did not have
    rows[1] = [None] * len(COLUMNS)
    return rows


@pytest.mark.parametrize("objective", ["binary", "regression"])
def test_fast_path_equals_booster_predict(objective: str) -> None:
    booster = _booster(objective)
    assert 0 < booster.best_iteration < 200  # early stopping chose fewer trees than built
    rows = _rows()
    expected = [_predict(booster, np.asarray([r], dtype=float))[0] for r in rows]
    fast = row_predictor(booster)
    assert [fast(r) for r in rows] == expected  # bit for bit, missing values included
    assert any(math.isnan(v) for v in np.asarray(rows[1], dtype=float))
    assert row_predictor(booster) is fast  # prepared once per booster


def test_fast_path_from_threads_and_wrong_width() -> None:
    booster = _booster("binary")
    rows = _rows()
    expected = _predict(booster, np.asarray(rows, dtype=float))
    fast = RowPredictor(booster)
    results: dict[int, list[float]] = {}

    def score(n: int) -> None:
        results[n] = [fast(r) for r in rows]

    threads = [threading.Thread(target=score, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[n] == expected for n in range(4))  # one output buffer, locked
    with pytest.raises(ValueError, match="4 inputs, the model takes 5"):
        fast([1.0, 2.0, 3.0, 4.0])
