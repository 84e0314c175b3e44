"""What the benchmarks share: real 2013 days landed, validated and featurized in a folder."""

import os
import socket
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from mlplatform.lib.features.build import build_day
from mlplatform.lib.ingestion.ingest import ingest_batch, load_accepted
from mlplatform.lib.ingestion.landing import days, land
from mlplatform.lib.storage import DataLake
from mlplatform.problems import Problem

if TYPE_CHECKING:
    import dagster as dg
    import pandas as pd


def prepare(lake: DataLake, problem: Problem, start: date, end: date) -> None:
    """Land, validate and featurize ``start``..``end`` through the platform's own functions."""
    land(lake, problem, start, end)
    tz = problem.spec.partitioning.timezone
    for source, spec in problem.spec.sources.items():
        model = problem.schema(source)
        for day in [None] if spec.kind == "reference" else list(days(start, end)):
            ingest_batch(lake, problem.name, source, spec, model, day, tz)
            typed = load_accepted(lake, problem.name, source, model, day)
            lake.write_table(problem.name, source, day, typed)
    for day in days(start, end):
        for table in problem.feature_tables():
            build_day(lake, problem, table, day)


def training_frame(lake: DataLake, problem: Problem, start: date, end: date) -> "pd.DataFrame":
    """``prepare`` the days, apply the Feast repo, and join the labelled flights point-in-time.

    Returns the training set's frame (request columns, features, label) as the training
    path assembles it, for benchmarks that time what comes after.
    """
    from mlplatform.lib.features.feature_store import (
        apply,
        feature_vectors,
        open_store,
        service_of,
    )
    from mlplatform.lib.features.training_set import assemble, labelled

    spec = problem.spec
    prepare(lake, problem, start, end)
    store = open_store(problem, lake.root)
    apply(store, problem.feast_objects(lake.root))
    requests = labelled(lake.read_days(problem.name, "flights", list(days(start, end))), spec)
    vectors = feature_vectors(
        problem, store, service_of(problem, store, lake.root), requests, online=False
    )
    return assemble(requests, vectors, spec)


def definitions(problem: Problem, root: Path) -> "dg.Definitions":
    """The code location of ``problem`` over the lake at ``root`` (local profile)."""
    from mlplatform.definitions import build_definitions
    from mlplatform.resources import FeastResource, LakeResource, MlflowResource

    res = LakeResource(root=str(root))
    return build_definitions(
        [problem],
        {"lake": res, "feast": FeastResource(lake=res), "mlflow": MlflowResource(lake=res)},
    )


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(root: Path, home: Path, port: int, workers: int = 1) -> subprocess.Popen:
    """``mlplatform serve`` over the lake at ``root`` as its own process (output discarded)."""
    cli = Path(sys.executable).with_name("mlplatform")
    env = {**os.environ, "MLPLATFORM_DATA_DIR": str(root), "DAGSTER_HOME": str(home)}
    return subprocess.Popen(
        [str(cli), "serve", "--problem", "flight_delay", "--port", str(port)]
        + (["--workers", str(workers)] if workers > 1 else []),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
