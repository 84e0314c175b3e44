"""What the benchmarks share: real 2013 days landed, validated and featurized in a folder."""

from datetime import date

from mlplatform.lib.features import build_day
from mlplatform.lib.ingest import ingest_batch, load_accepted
from mlplatform.lib.landing import days, land
from mlplatform.lib.storage import DataLake
from mlplatform.problems import Problem


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
