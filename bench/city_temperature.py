"""The city_temperature spec's figures, measured on 2010: baselines, window, model, gates, drift.

Every forecast of 2010 gets its features from the problem's own builders
(``features.lagged`` over each day's observation events, ``features.city_daily`` over the
trailing week) and ``entity_row``, joined as the point-in-time audit joins them
(``merge_asof``, backward, within each table's TTL): the values Feast's join returns, without
Feast (a year in ~1 min). Models are LightGBM fits with the spec's monotone constraints
and fixed, seeded parameters, early-stopped on the window's newest 3 days, boosted from
the spec's ``training.boost_from`` (its value as ``init_score``: the trees learn the
target minus it, the prediction adds it back).

- baselines and window: a retrain every 28 days from Feb 1 (11), each scored on the 7 days
  after it, per window (14, 28, 56 days); persistence (the newest observation) and the
  target hour the day before, on the same rows;
- against the baseline "same hour yesterday" (``temp_18h``), side by side per retrain: the
  spec's model, the same boosted from the label mean (no ``boost_from``), and LightGBM's
  ``linear_tree`` (31 and 8 leaves, ``linear_lambda`` 1; whether ``pred_contrib``
  explains it);
- monotone constraints: the spec's against none (RMSE, and forecasts that fall when every
  observed temperature is 5 F warmer);
- gates: A/A pairs (seeds 1-4 against 42, per retrain) and the paired bootstrap's 95%
  bounds of the RMSE drop, overall and per slice (city, hour band); power against noise;
- drift: Evidently's Jensen-Shannon per feature, a week of forecasts against the 28 days
  before, at ages 0, 7 and 21 days (the share of features at or above the threshold);
  the observations' ingestion drift (each day against the 14 before; in Celsius).

Usage: ``.venv/bin/python bench/city_temperature.py``. Last line: one JSON object.
"""

import json
import sys
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.lib.features.build import FeatureInputs, day_hours
from mlplatform.lib.features.tables import EVENT_TS
from mlplatform.problems import get_problem
from mlplatform.problems.city_temperature import features, source

PROBLEM = get_problem("city_temperature")
SPEC = PROBLEM.spec
TZ = SPEC.partitioning.timezone
FEATURES = [f.name for f in SPEC.features]
MONOTONE = [1 if f.monotone == "increasing" else 0 for f in SPEC.features]
PARAMS = {"learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 5}
RETRAINS = [date(2010, 2, 1) + timedelta(days=28 * k) for k in range(11)]
RNG = np.random.default_rng(0)
LINEAR = {**PARAMS, "linear_tree": True, "linear_lambda": 1.0}
CANDIDATES: dict[str, dict[str, Any]] = {
    "from_label_mean": {"base": None},
    "linear_tree": {"params": LINEAR, "base": None},
    "linear_tree_8_leaves": {"params": {**LINEAR, "num_leaves": 8}, "base": None},
}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def year() -> pd.DataFrame:
    """Every labelled forecast of 2010 with its features, and its local ``day``."""
    days = [date(2010, 1, 1) + timedelta(days=d) for d in range(365)]
    obs = {d: source.export_day("observations", d) for d in days}
    recent, daily = [], []
    for i, day in enumerate(days):
        events = source.stream_events(
            "observations", pd.concat([obs[d] for d in days[max(0, i - 2) : i + 1]])
        )
        recent.append(features.lagged(events, day_hours(day, TZ)))
        week = pd.concat([obs[d] for d in days[max(0, i - 6) : i + 1]])
        inputs = FeatureInputs(day, TZ, SPEC.target, {"observations": week}, {})
        daily.append(features.city_daily(inputs))
    forecasts = pd.concat([source.export_day("forecasts", d).assign(day=d) for d in days])
    rows = pd.DataFrame([features.entity_row(r, TZ) for r in forecasts.to_dict("records")])
    rows[EVENT_TS] = pd.to_datetime(rows[EVENT_TS], utc=True).dt.as_unit("us")
    rows["y"], rows["day"] = forecasts["temp"].to_numpy(), forecasts["day"].to_numpy()
    out = rows.sort_values(EVENT_TS)
    for frame, table in zip((recent, daily), PROBLEM.feature_tables(), strict=True):
        right = pd.concat(frame, ignore_index=True)
        right[EVENT_TS] = pd.to_datetime(right[EVENT_TS], utc=True).dt.as_unit("us")
        out = pd.merge_asof(
            out,
            right.sort_values(EVENT_TS),
            on=EVENT_TS,
            by="city",
            tolerance=pd.Timedelta(table.ttl),
        )
    out = out[out["y"].notna()].reset_index(drop=True)
    out["city"] = out["city"].astype("category")
    return out


def rmse(y: Any, p: Any) -> float:
    return float(np.sqrt(np.mean((np.asarray(y) - np.asarray(p)) ** 2)))


class Fitted:
    """A seeded LightGBM fit; ``predict`` gives a float array (plus ``base``'s value, if any)."""

    def __init__(self, booster: Any, base: str | None = None) -> None:
        self.booster, self.base = booster, base

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.asarray(self.booster.predict(frame[FEATURES]), dtype=float)
        return out + frame[self.base].to_numpy(dtype=float) if self.base else out

    def explainable(self, frame: pd.DataFrame) -> bool:
        """Whether LightGBM's TreeSHAP (``pred_contrib``) explains this model."""
        import lightgbm as lgb

        try:
            self.booster.predict(frame[FEATURES].head(1), pred_contrib=True)
        except lgb.basic.LightGBMError:
            return False
        return True


def fit(
    train: pd.DataFrame,
    seed: int = 42,
    monotone: bool = True,
    params: dict | None = None,
    base: str | None = SPEC.training.boost_from,
) -> Fitted:
    import lightgbm as lgb

    last = sorted(train["day"].unique())[-3:]
    fitting, valid = train[~train["day"].isin(last)], train[train["day"].isin(last)]
    p = {
        "objective": "regression", "feature_fraction": 0.9, "bagging_fraction": 0.9,
        "bagging_freq": 1, "lambda_l2": 0.1, "seed": seed, "deterministic": True,
        "force_row_wise": True, "num_threads": 1, "verbose": -1, **(params or PARAMS),
    }  # fmt: skip
    if monotone:
        p["monotone_constraints"] = MONOTONE

    def dataset(rows: pd.DataFrame) -> Any:
        init = rows[base].to_numpy(dtype=float) if base else None
        return lgb.Dataset(rows[FEATURES], rows["y"], init_score=init)

    booster = lgb.train(
        p,
        dataset(fitting),
        num_boost_round=1000,
        valid_sets=[dataset(valid)],
        callbacks=[lgb.early_stopping(30, verbose=False)],
    )
    return Fitted(booster, base)


def window(data: pd.DataFrame, cut: date, days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    train = data[(data["day"] < cut) & (data["day"] >= cut - timedelta(days=days))]
    return train, data[(data["day"] >= cut) & (data["day"] < cut + timedelta(days=7))]


def drop_bounds(y: Any, cand: np.ndarray, champ: np.ndarray) -> tuple[float, float]:
    """Percentile 95% bounds of RMSE(candidate) - RMSE(champion), rows resampled together."""
    rows = RNG.integers(0, len(y), (1000, len(y)))
    e1, e0 = (cand - y) ** 2, (champ - y) ** 2
    d = np.sqrt(e1[rows].mean(1)) - np.sqrt(e0[rows].mean(1))
    return float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))


def bands(hours: pd.Series) -> np.ndarray:
    return pd.cut(hours, [0, 6, 12, 18, 24], right=False).astype(str).to_numpy()


def main() -> None:
    data = year()
    log(f"{len(data)} labelled forecasts")
    out: dict[str, object] = {"rows": len(data)}
    scores: dict[str, list[float]] = {
        k: [] for k in ("w14", "w28", "w56", "free", "persist", "yday", *CANDIDATES)
    }
    explainable = dict.fromkeys(CANDIDATES, True)
    candidate_fell = dict.fromkeys(CANDIDATES, 0)
    fell = {"free": 0, "monotone": 0}
    aa, aa_upper, slice_lower = [], [], []
    power: dict[float, list[bool]] = {0.15: [], 0.3: []}
    observed = [c for c in FEATURES if c.startswith("temp_")]
    for cut in RETRAINS:
        for days in (14, 56):
            train, hold = window(data, cut, days)
            scores[f"w{days}"].append(rmse(hold["y"], fit(train).predict(hold[FEATURES])))
        train, hold = window(data, cut, SPEC.training_window_days)
        y = hold["y"].to_numpy()
        model = fit(train)
        champ = model.predict(hold[FEATURES])
        scores["w28"].append(rmse(y, champ))
        free = fit(train, monotone=False)
        scores["free"].append(rmse(y, free.predict(hold[FEATURES])))
        scores["persist"].append(rmse(y, hold["temp_1h"]))
        scores["yday"].append(rmse(y, hold["temp_18h"]))
        for name, kwargs in CANDIDATES.items():
            other = fit(train, **kwargs)
            pred = other.predict(hold)
            scores[name].append(rmse(y, pred))
            explainable[name] &= other.explainable(hold)
            hotter = hold.copy()
            hotter[observed] = hotter[observed] + 5
            candidate_fell[name] += int((other.predict(hotter) < pred - 1e-9).sum())
        warmer = hold[FEATURES].copy()
        warmer[observed] = warmer[observed] + 5
        fell["monotone"] += int((model.predict(warmer) < champ - 1e-9).sum())
        fell["free"] += int((free.predict(warmer) < free.predict(hold[FEATURES]) - 1e-9).sum())
        groups = [bands(hold["target_hour"]) == b for b in np.unique(bands(hold["target_hour"]))]
        groups += [(hold["city"] == c).to_numpy() for c in ("seattle", "san_francisco")]
        for seed in (1, 2, 3, 4):
            cand = fit(train, seed=seed).predict(hold[FEATURES])
            aa.append(rmse(y, cand) - rmse(y, champ))
            aa_upper.append(drop_bounds(y, cand, champ)[1])
            slice_lower += [drop_bounds(y[g], cand[g], champ[g])[0] for g in groups]
        for noise, caught in power.items():
            worse = champ + RNG.normal(0, noise, len(y))
            caught.append(drop_bounds(y, worse, champ)[1] > SPEC.gates.max_regression)
        side = "  ".join(f"{k} {scores[k][-1]:.3f}" for k in ("w28", "yday", *CANDIDATES))
        log(f"{cut}: RMSE (F) {side}  persistence {scores['persist'][-1]:.2f}")
    out["mean_rmse"] = {k: round(float(np.mean(v)), 3) for k, v in scores.items()}
    out["retrains_beating_yday"] = {
        k: f"{sum(a < b for a, b in zip(scores[k], scores['yday'], strict=True))}/{len(RETRAINS)}"
        for k in ("w28", *CANDIDATES)
    }
    out["explainable_by_treeshap"] = {"w28": True, **explainable}
    out["candidates_colder_when_5F_warmer"] = candidate_fell
    out["forecasts_colder_when_5F_warmer"] = fell
    out["aa_rmse_diff_sd"] = round(float(np.std(aa)), 4)
    out["aa_upper_bound_q98_max"] = [
        round(float(np.quantile(aa_upper, 0.98)), 3),
        round(max(aa_upper), 3),
    ]
    out["aa_slice_lower_bound_q98_max"] = [
        round(float(np.quantile(slice_lower, 0.98)), 3),
        round(max(slice_lower), 3),
    ]
    out["refused_at_max_regression"] = {str(k): f"{sum(v)}/{len(v)}" for k, v in power.items()}
    out["drift"] = drift(data)
    out["ingestion_drift"] = ingestion_drift()
    print(json.dumps(out))


def drift(data: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Share of weeks whose drifted features reach ``drift_share``, per model age (days)."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    test, threshold = SPEC.monitoring.stattest, SPEC.monitoring.threshold
    shares: dict[int, list[float]] = {0: [], 7: [], 21: []}
    for k in range(40):
        cut = date(2010, 2, 1) + timedelta(days=7 * k)
        ref = data[(data["day"] < cut) & (data["day"] >= cut - timedelta(days=28))]
        for age, found in shares.items():
            cur = data[
                (data["day"] >= cut + timedelta(age)) & (data["day"] < cut + timedelta(age + 7))
            ]
            if cur.empty:
                continue
            drifted = 0
            for column in FEATURES:
                cat = column == "city"
                kind = ColumnType.Categorical if cat else ColumnType.Numerical
                r, c = ref[column].dropna(), cur[column].dropna()
                if cat:
                    r, c = r.astype(str), c.astype(str)
                stattest: Any = get_stattest(r, c, kind, test)
                drifted += stattest.func(r, c, kind, threshold)[0] >= threshold
            found.append(drifted / len(FEATURES))
    return {
        f"age_{age}d": {
            "weeks_over_drift_share": round(
                float(np.mean(np.array(v) >= SPEC.monitoring.drift_share)), 2
            )
        }
        for age, v in shares.items()
    }


def ingestion_drift() -> dict[str, float]:
    """The observations' ingestion drift score: each day against its 14 days before.

    Evidently's stattest of the spec (``sources.observations.drift``) on ``temp``: the
    highest score of 2010, and the lowest of the same days sent in Celsius.
    """
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    rule = SPEC.sources["observations"].drift
    assert rule is not None, "the spec watches the observations"
    hourly = source.hourly()
    day = hourly["time"].dt.tz_convert(TZ).dt.date
    days = sorted(day.unique())
    scores, celsius = [], []
    kind = ColumnType.Numerical
    for i in range(rule.reference_days, len(days)):
        temp = hourly["temp"]
        cur, ref = temp[day == days[i]], temp[day.isin(days[i - rule.reference_days : i])]
        stattest: Any = get_stattest(ref, cur, kind, rule.method)
        scores.append(stattest.func(ref, cur, kind, rule.threshold)[0])
        wrong = (cur - 32) * 5 / 9
        celsius.append(stattest.func(ref, wrong, kind, rule.threshold)[0])
    return {"max_2010": round(float(max(scores)), 2), "min_celsius": round(float(min(celsius)), 2)}


if __name__ == "__main__":
    main()
