"""Feature assets: daily feature tables, the Feast registry, and the online store.

- ``<table>`` (daily): one day of a feature table from the validated tables of that day
  and its trailing window, written as Parquet that a Feast ``FileSource`` reads.
- ``feature_registry``: ``feast apply`` of the problem's repository.
- ``online_features``: the newest values materialized, incrementally, into the online store.
"""

from datetime import date, timedelta

import dagster as dg

from mlplatform.defs.partitions import daily_partitions
from mlplatform.lib.features.tables import FeatureTable
from mlplatform.lib.names import features_table
from mlplatform.problems import Problem
from mlplatform.resources import FeastResource, LakeResource

GROUP = "features"


def registry_key(problem: Problem) -> dg.AssetKey:
    """Key of the problem's Feast registry asset."""
    return dg.AssetKey([problem.name, "feature_registry"])


def online_key(problem: Problem) -> dg.AssetKey:
    """Key of the problem's online store asset."""
    return dg.AssetKey([problem.name, "online_features"])


def feature_store_pool(problem: Problem) -> str:
    """The Dagster concurrency pool of the problem's feature store writes (limit 1, dagster.yaml).

    ``feast apply`` and materialization rewrite the registry and the online store; two at
    once would race on the same files (locally) or tables (production).
    """
    return f"{problem.name}_feature_store"


def complete_days(lake: LakeResource, problem: Problem) -> list[date]:
    """Days for which every feature table has its file, oldest first.

    A day whose newest landing of a daily source was rejected is not complete: its feature
    files were built from the batch that landing replaced.
    """
    store = lake.lake()
    days = [
        set(store.partitions(problem.name, features_table(t))) for t in problem.feature_tables()
    ]
    complete = sorted(set.intersection(*days)) if days else []
    daily = list(problem.spec.daily_sources())
    return [d for d in complete if not any(store.blocking(problem.name, s, d) for s in daily)]


def build_feature_asset(problem: Problem, table: FeatureTable) -> dg.AssetsDefinition:
    """One day of ``table``, from the day's validated tables and the trailing window."""
    deps = [
        dg.AssetDep(
            dg.AssetKey([problem.name, source]),
            partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-table.trailing_days),
        )
        for source in table.sources
    ] + [dg.AssetDep(dg.AssetKey([problem.name, ref])) for ref in table.reference]

    @dg.asset(
        key=[problem.name, table.name],
        deps=deps,
        group_name=GROUP,
        description=table.description,
        kinds={"pandas", "parquet"},
        owners=[problem.spec.owner],
        partitions_def=daily_partitions(problem.spec),
        tags={"mlplatform/problem": problem.name},
    )
    def _feature(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        from mlplatform.defs.metadata import frame_metadata
        from mlplatform.lib.features.build import MissingInputError, build_day, window

        day, store = date.fromisoformat(context.partition_key), lake.lake()
        try:
            frame = build_day(store, problem, table, day)
        except MissingInputError as exc:
            raise dg.Failure(str(exc)) from None
        days = window(day, table.trailing_days)
        # earlier days of the window whose newest landing was rejected were left out
        skipped = [r for s in table.sources for r in store.blocked_days(problem.name, s, days)]
        for rejected in skipped:
            context.log.warning(f"{table.name} {day}: left out {rejected.message()}")
        return dg.MaterializeResult(
            metadata={
                **frame_metadata(frame),
                "rejected_days_left_out": dg.MetadataValue.json([r.to_dict() for r in skipped]),
                "path": dg.MetadataValue.path(
                    str(store.table_path(problem.name, features_table(table), day))
                ),
                "input_days": f"{days[0]}..{days[-1]}",
                "entities": len(frame.drop_duplicates(list(table.join_keys))),
            }
        )

    return _feature


def build_registry_asset(problem: Problem) -> dg.AssetsDefinition:
    """The problem's Feast registry, synced with its repository like `feast apply`."""

    @dg.asset(
        key=registry_key(problem),
        group_name=GROUP,
        description=f"Feast registry of {problem.name}: entities, feature views and the "
        "feature service, applied from the problem's feature repository.",
        kinds={"feast"},
        owners=[problem.spec.owner],
        tags={"mlplatform/problem": problem.name},
        pool=feature_store_pool(problem),
    )
    def _registry(lake: LakeResource, feast: FeastResource) -> dg.MaterializeResult:
        from mlplatform.lib.features.feature_store import apply

        store = feast.store(problem)
        summary = apply(store, feast.objects(problem))
        lake.lake().write_latest(problem.name, "feature_registry", summary)
        return dg.MaterializeResult(
            metadata={
                "feature_views": dg.MetadataValue.json(summary["feature_views"]),
                "entities": dg.MetadataValue.json(summary["entities"]),
                "feature_services": dg.MetadataValue.json(summary["feature_services"]),
                "deleted": dg.MetadataValue.json(summary["deleted"]),
                "repository": dg.MetadataValue.path(
                    str(problem.feature_repo)
                    if problem.feature_repo.is_dir()
                    else "generated from spec.yaml and feature_tables.py"
                ),
                "registry": dg.MetadataValue.path(str(store.config.registry)),
            }
        )

    return _registry


def build_online_asset(problem: Problem) -> dg.AssetsDefinition:
    """The newest feature values of every view, materialized incrementally."""
    tables = problem.feature_tables()

    @dg.asset(
        key=online_key(problem),
        deps=[registry_key(problem), *(dg.AssetKey([problem.name, t.name]) for t in tables)],
        group_name=GROUP,
        description=f"Online store of {problem.name}: the newest value of every feature per "
        "entity, materialized up to the end of the newest complete feature day.",
        kinds={"feast", "sqlite"},
        owners=[problem.spec.owner],
        tags={"mlplatform/problem": problem.name},
        pool=feature_store_pool(problem),
    )
    def _online(lake: LakeResource, feast: FeastResource) -> dg.MaterializeResult:
        from mlplatform.lib.features.feature_store import (
            materialize,
            online_row_counts,
            rows_between,
        )
        from mlplatform.lib.features.tables import local_midnight
        from mlplatform.lib.ingestion.landing import days as day_range

        days = complete_days(lake, problem)
        if not days:
            raise dg.Failure(f"{problem.name}: no day has every feature table yet")
        tz = problem.spec.partitioning.timezone
        end = local_midnight(days[-1] + timedelta(days=1), tz)
        store = feast.store(problem)
        done = materialize(
            store,
            [t.view for t in tables],
            local_midnight(problem.spec.partitioning.start, tz),
            end,
        )
        rows = {t.view: 0 for t in tables}
        for table in tables:
            for run in (m for m in done if m.view == table.view):
                # files are per local day; UTC bounds can reach into the day before
                span = day_range((run.start - timedelta(days=1)).date(), days[-1])
                frame = lake.lake().read_days(problem.name, features_table(table), span)
                rows[table.view] = rows_between(frame, run.start, run.end)
        held = online_row_counts(store)
        lake.lake().write_latest(
            problem.name,
            "online_features",
            {
                "materialized_until": end.isoformat(),
                "online_store_rows": sum(held.values()),
                "by_view": held,
            },
        )
        return dg.MaterializeResult(
            metadata={
                "materialized_until": end.isoformat(),
                "intervals": dg.MetadataValue.json(
                    {m.view: [m.start.isoformat(), m.end.isoformat()] for m in done}
                ),
                **{f"rows_materialized/{v}": n for v, n in rows.items()},
                "rows_materialized": sum(rows.values()),
                "online_store_rows": sum(held.values()),
                "online_rows_by_view": dg.MetadataValue.json(held),
            }
        )

    return _online
