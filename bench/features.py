"""Feature store benchmark, measured side by side in one run on real 2013 data.

1. Point-in-time join of three months of labelled flights (Jan-Mar 2013) through Feast's
   DuckDB offline store, against a plain pandas ``merge_asof`` on the same rows and the
   same feature files; both results must agree value for value.
2. One request's online lookup, the serving path (entity row, Feast SQLite online store,
   feature vector; no DataFrame), p50 and p99 over single-flight requests.
3. Incremental cost: computing every feature table for 2013-03-31 against 2013-03-01.

Last line: one JSON object with pit_ratio, pit_agree, online_p50_ms, online_p99_ms,
incremental_ratio (and the raw timings).
"""

import json
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from common import prepare

from mlplatform.lib.features.build import build_day
from mlplatform.lib.features.feature_store import (
    apply,
    feature_matrix,
    feature_vector,
    feature_vectors,
    join_keys,
    online_vector,
    open_store,
    service_of,
)
from mlplatform.lib.features.tables import EVENT_TS, local_midnight
from mlplatform.lib.ingestion.landing import days
from mlplatform.lib.storage import DataLake
from mlplatform.problems import Problem, get_problem

START, END = date(2013, 1, 1), date(2013, 3, 31)
ONLINE_REQUESTS = 300


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def pandas_pit(rows: pd.DataFrame, lake: DataLake, problem: Problem) -> pd.DataFrame:
    """The baseline: one backward merge_asof per feature table, with the table's TTL."""
    out = rows.reset_index(drop=True).assign(_row=lambda f: range(len(f)))
    out[EVENT_TS] = pd.to_datetime(out[EVENT_TS], utc=True).dt.as_unit("us")
    out = out.sort_values(EVENT_TS)
    for table in problem.feature_tables():
        right = lake.read_days(problem.name, f"features/{table.name}", list(days(START, END)))
        right[EVENT_TS] = pd.to_datetime(right[EVENT_TS], utc=True).dt.as_unit("us")
        out = pd.merge_asof(
            out,
            right.sort_values(EVENT_TS),
            on=EVENT_TS,
            by=list(table.join_keys),
            direction="backward",
            tolerance=pd.Timedelta(table.ttl),
            allow_exact_matches=True,
        )
    return out.sort_values("_row").drop(columns="_row").set_index(rows.index)


def main() -> None:
    problem = get_problem("flight_delay")
    with tempfile.TemporaryDirectory() as tmp:
        lake = DataLake(Path(tmp) / "data")
        t0 = time.perf_counter()
        prepare(lake, problem, START, END)
        log(f"prepared {START}..{END} in {time.perf_counter() - t0:.0f} s")

        store = open_store(problem, lake.root)
        apply(store, problem.feast_objects(lake.root))
        service = service_of(problem, store, lake.root)
        flights = lake.read_days(problem.name, "flights", list(days(START, END)))
        requests = flights[flights["arr_delay"].notna()].reset_index(drop=True)

        # 1. point-in-time join, Feast against pandas, same rows
        t0 = time.perf_counter()
        feast_rows = feature_vectors(problem, store, service, requests, online=False)
        feast_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pandas_rows = pandas_pit(problem.entity_rows(requests), lake, problem)
        pandas_s = time.perf_counter() - t0
        a, b = feature_matrix(feast_rows, problem.spec), feature_matrix(pandas_rows, problem.spec)
        ts_columns = [t.ts_column for t in problem.feature_tables()]
        agree = a.equals(b) and np.array_equal(
            feast_rows[ts_columns].to_numpy(dtype=float),
            pandas_rows[ts_columns].to_numpy(dtype=float),
            equal_nan=True,
        )
        log(f"PIT join of {len(requests)} rows: feast {feast_s:.2f} s, pandas {pandas_s:.2f} s")
        log(f"the two joins agree on every value and timestamp: {agree}")

        # 2. one request's online lookup, the serving path
        tz = problem.spec.partitioning.timezone
        store.materialize(local_midnight(START, tz), local_midnight(date(2013, 4, 1), tz))
        sample = requests.sample(ONLINE_REQUESTS, random_state=0)
        records = sample.to_dict("records")
        feature_vector(online_vector(problem, store, service, records[0]), problem.spec)  # warm
        latencies = []
        for request in records:
            t0 = time.perf_counter()
            feature_vector(online_vector(problem, store, service, request), problem.spec)
            latencies.append((time.perf_counter() - t0) * 1000)
        p50 = statistics.median(latencies)
        p99 = float(np.percentile(latencies, 99))
        # the store's own share: Feast's get_online_features for the same keys, nothing else
        keys = problem.entity_rows(sample)[join_keys(problem.spec)]
        raw = []
        for record in keys.to_dict("records"):
            entity = {str(k): v for k, v in record.items()}
            t0 = time.perf_counter()
            store.get_online_features(features=service, entity_rows=[entity]).to_dict()
            raw.append((time.perf_counter() - t0) * 1000)
        raw_p50 = statistics.median(raw)
        log(
            f"online lookup of one request: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
            f"(Feast's get_online_features alone: p50 {raw_p50:.2f} ms)"
        )

        # 3. incremental cost: day 31 of March against day 1, every feature table
        def day_cost(day: date) -> float:
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                for table in problem.feature_tables():
                    build_day(lake, problem, table, day)
                best = min(best, time.perf_counter() - t0)
            return best

        first, last = day_cost(date(2013, 3, 1)), day_cost(date(2013, 3, 31))
        log(f"feature day cost: 03-01 {first * 1000:.0f} ms, 03-31 {last * 1000:.0f} ms")

    print(
        json.dumps(
            {
                "pit_ratio": round(feast_s / pandas_s, 2),
                "pit_agree": bool(agree),
                "pit_rows": len(requests),
                "feast_pit_s": round(feast_s, 3),
                "pandas_pit_s": round(pandas_s, 3),
                "online_p50_ms": round(p50, 2),
                "online_p99_ms": round(p99, 2),
                "feast_online_p50_ms": round(raw_p50, 2),
                "incremental_ratio": round(last / first, 2),
                "day_1_ms": round(first * 1000, 1),
                "day_31_ms": round(last * 1000, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
