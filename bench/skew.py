"""Train/serve skew benchmark: the same replayed fortnight served the old way and the new way.

Two fresh platforms in temporary folders, each built with the commands ``make demo`` runs
(``mlplatform land/ingest/features/train`` over 2013-01-01..01-28, the spec's search), then
``mlplatform replay`` of the next ``--days`` days (default 14, ``--trials`` per retrain):

- before: ``--serve-at morning``: the whole day at 07:00 from the evening's online store,
  no pushes (how the platform served until its stream views);
- after: ``--serve-at prediction_time``: each hour's events pushed, then the hour's requests
  scored at their own prediction time.

Both replays run the platform's ``serving_skew`` asset every evening (the day's served
vectors against their point-in-time rebuild through the training path). Figures, read from
each replay's timeline and Dagster instance:
``skew_share_before``/``skew_share_after`` (share of served requests with any feature
differing, requests-weighted over the days), ``online_auc_before``/``online_auc_after``
(the served models' AUC over every labelled request), the per-feature mismatch rates after
(``skewed_features_after``: every feature above 0), and the hours each replay took.

Last line: one JSON object. Run: ``.venv/bin/python bench/skew.py [--days N] [--trials N]``
(about 25 minutes on 2 cores with the defaults).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

FIRST, LAST_TRAINED = date(2013, 1, 1), date(2013, 1, 28)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(folder: Path, *args: str) -> str:
    """One ``mlplatform`` command on the platform in ``folder``; its output (also on stderr)."""
    cli = Path(sys.executable).with_name("mlplatform")
    env = {
        **os.environ,
        "MLPLATFORM_DATA_DIR": str(folder / "data"),
        "DAGSTER_HOME": str(folder / "dagster_home"),
    }
    done = subprocess.run([str(cli), *args], env=env, check=True, capture_output=True, text=True)
    log(done.stdout[-2000:])
    return done.stdout


def replayed(folder: Path, serve_at: str, start: date, end: date, trials: int) -> dict:
    """Build a platform in ``folder``, replay ``start..end`` served ``serve_at``; figures."""
    import dagster as dg
    import pandas as pd

    problem = ["--problem", "flight_delay"]
    span = ["--start", FIRST.isoformat(), "--end", LAST_TRAINED.isoformat()]
    (folder / "dagster_home").mkdir(parents=True)
    (folder / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    for verb in ("land", "ingest", "features"):
        run(folder, verb, *problem, *span)
    run(folder, "train", *problem)
    began = time.perf_counter()
    printed = run(
        folder,
        "replay",
        *problem,
        "--start",
        start.isoformat(),
        "--end",
        end.isoformat(),
        "--trials",
        str(trials),
        "--serve-at",
        serve_at,
    )
    seconds = time.perf_counter() - began
    timelines = sorted((folder / "data" / "replays" / "flight_delay").glob("*/timeline.csv"))
    days = pd.read_csv(timelines[-1])
    weights = days["requests"].where(days["skew_share"].notna(), 0)
    rates: dict[str, float] = {}
    instance = dg.DagsterInstance.from_config(str(folder / "dagster_home"))
    key = dg.AssetKey(["flight_delay", "serving_skew"])
    for record in instance.fetch_materializations(key, limit=1000).records:
        event = record.asset_materialization
        meta = event.metadata if event is not None else {}
        mismatch = meta.get("mismatch_rate")
        found: dict[str, float] = mismatch.value if mismatch is not None else {}  # pyright: ignore[reportAssignmentType]
        for feature, rate in found.items():
            rates[feature] = max(rates.get(feature, 0.0), float(rate))
    # the replay's summary line: the metric pooled over every labelled request
    summary = json.loads(next(line for line in printed.splitlines() if line.startswith("{")))
    return {
        "skew_share": float((days["skew_share"].fillna(0) * weights).sum() / weights.sum())
        if weights.sum()
        else float("nan"),
        "online_auc": float(summary["online_roc_auc"]),
        "skewed_features": {f: round(r, 4) for f, r in sorted(rates.items()) if r > 0},
        "replay_seconds": round(seconds, 1),
        "days": len(days),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    start = LAST_TRAINED + timedelta(days=1)
    end = LAST_TRAINED + timedelta(days=args.days)
    with tempfile.TemporaryDirectory() as tmp:
        log(f"before: {start}..{end} served at 07:00 from the evening's store")
        before = replayed(Path(tmp) / "before", "morning", start, end, args.trials)
        log(f"after: {start}..{end} served at each request's prediction time")
        after = replayed(Path(tmp) / "after", "prediction_time", start, end, args.trials)
    out = {
        "skew_share_before": round(before["skew_share"], 4),
        "skew_share_after": round(after["skew_share"], 4),
        "online_auc_before": round(before["online_auc"], 4),
        "online_auc_after": round(after["online_auc"], 4),
        "skewed_features_before": before["skewed_features"],
        "skewed_features_after": after["skewed_features"],
        "replay_seconds_before": before["replay_seconds"],
        "replay_seconds_after": after["replay_seconds"],
        "replayed": f"{start}..{end}",
        "trials_per_retrain": args.trials,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
