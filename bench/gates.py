"""Gate benchmark: how often the comparison gates refuse an equal model, and catch a worse one.

Data: 2013-01-01..02-04 landed, validated and featurized through the platform's own
functions (``common.prepare``); the training set (01-01..01-28) and the 7-day holdout
(01-29..02-04, the spec's holdout_days) joined point-in-time through Feast as the
training asset does. Then ``lib.evaluation.calibration.calibrate`` with the spec's gates:

- A/A: pairs of fixed-parameter LightGBM fits with different seeds (no real difference);
- power: the second model of each pair made worse by a known AUC drop overall (0.03) or on
  the largest judged slice (0.05), the share refused.

``latency_gate_flips_under_load`` comes from ``bench/gates_latency.py`` (identical models
under a CPU-bound load beside the timing; null if that file is absent).

Usage: ``.venv/bin/python bench/gates.py [--quick] [--pairs N] [--data DIR]`` (``--quick``:
8 pairs and a short latency run, for CI; ``--data`` reuses a prepared folder, printed on
stderr).

Last line: one JSON object with aa_false_refusal, power_overall_003, power_slice_005,
latency_gate_flips_under_load and the figures behind them.
"""

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd
from common import prepare

from mlplatform.lib.evaluation import calibration as cal
from mlplatform.lib.features.feature_store import apply, feature_vectors, open_store, service_of
from mlplatform.lib.features.training_set import assemble, labelled
from mlplatform.lib.ingestion.landing import days
from mlplatform.lib.storage import DataLake
from mlplatform.problems import Problem, get_problem

START, TRAIN_END, END = date(2013, 1, 1), date(2013, 1, 28), date(2013, 2, 4)
# `gates calibrate` (the spec's training seed, 42...) chose the spec's tolerances: the
# benchmark measures them on other seeds, out of that sample
SEED = 1000


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def joined(lake: DataLake, problem: Problem, start: date, end: date) -> pd.DataFrame:
    """Labelled flights of ``start``..``end`` with their point-in-time features."""
    store = open_store(problem, lake.root)
    requests = labelled(
        lake.read_days(problem.name, "flights", list(days(start, end))), problem.spec
    )
    vectors = feature_vectors(
        problem, store, service_of(problem, store, lake.root), requests, online=False
    )
    return assemble(requests, vectors, problem.spec)


def sets(root: Path, problem: Problem) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training set and holdout, prepared into ``root`` once and cached there."""
    lake = DataLake(root)
    cache = {n: root / f"bench_gates_{n}.parquet" for n in ("training", "holdout")}
    if all(p.exists() for p in cache.values()):
        return pd.read_parquet(cache["training"]), pd.read_parquet(cache["holdout"])
    prepare(lake, problem, START, END)
    apply(open_store(problem, lake.root), problem.feast_objects(lake.root))
    training = joined(lake, problem, START, TRAIN_END)
    holdout = joined(lake, problem, date.fromordinal(TRAIN_END.toordinal() + 1), END)
    training.to_parquet(cache["training"])
    holdout.to_parquet(cache["holdout"])
    return training, holdout


def latency_flips(quick: bool) -> float | None:
    """``bench/gates_latency.py``'s share of identical models refused under load, if present."""
    path = Path(__file__).with_name("gates_latency.py")
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("gates_latency", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = module.latency_gate_flips_under_load
    return float(fn(trials=2) if quick else fn())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 pairs, short latency run")
    parser.add_argument("--pairs", type=int, help="A/A pairs (default 40, 8 with --quick)")
    parser.add_argument("--data", type=Path, help="data folder of an earlier run")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency part")
    parser.add_argument(
        "--seed",
        type=int,
        default=SEED,
        help=f"first model seed ({SEED}: not the seeds the spec's thresholds were chosen on)",
    )
    args = parser.parse_args()
    pairs = args.pairs or (8 if args.quick else 40)
    problem = get_problem("flight_delay")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp) / "data"
        log(f"data folder: {root}")
        t0 = time.perf_counter()
        training, holdout = sets(root, problem)
        log(
            f"training {len(training)} rows, holdout {len(holdout)} rows: "
            f"{time.perf_counter() - t0:.0f} s"
        )
        t0 = time.perf_counter()
        result = cal.calibrate(
            problem,
            training,
            holdout,
            pairs=pairs,
            overall_sizes=(0.01, 0.02, 0.03),
            slice_sizes=(0.03, 0.05, 0.08),
            seed=args.seed,
            progress=log,
        )
        calibrate_s = time.perf_counter() - t0
        log(cal.report_markdown(problem, result))
    flips = None if args.no_latency else latency_flips(args.quick)
    if flips is None:
        log("latency_gate_flips_under_load: null (bench/gates_latency.py absent or skipped)")
    headline = result.headline()
    print(
        json.dumps(
            {
                "aa_false_refusal": headline["aa_false_refusal"],
                "power_overall_003": headline["power_overall_003"],
                "power_slice_005": headline["power_slice_005"],
                "latency_gate_flips_under_load": flips,
                "aa_false_refusal_no_regression": headline["aa_false_refusal_no_regression"],
                "aa_false_refusal_no_slice_regression": headline[
                    "aa_false_refusal_no_slice_regression"
                ],
                "power_slice": headline["power_slice"],
                "power": [
                    {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                    for r in result.power
                ],
                "aa_difference_sd": round(result.overall_noise["difference_sd"], 5),
                "aa_median_se": round(result.overall_noise["median_se"], 5),
                "pairs": pairs,
                "training_rows": len(training),
                "holdout_rows": len(holdout),
                "calibrate_s": round(calibrate_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
