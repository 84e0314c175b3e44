"""Ingestion assets: landed files → raw batches behind checks → validated, typed tables.

For every source in a problem's spec:
- ``raw_<source>`` reads the partition's landed files, runs the spec's checks (schema,
  keys, timestamps, null rates, volume) and stores the batch as landed. Failed ERROR
  checks are blocking: nothing downstream runs, and the batch is quarantined.
- ``<source>`` is the typed table of an accepted batch, with a drift check (WARN).

With ``partitioning.granularity: hourly`` the raw batches are hourly partitions (landed,
checked and quarantined hour by hour) and ``<source>`` stays daily: each day is typed from
its hours, mapped by ``dg.TimeWindowPartitionMapping``, once all of them are accepted.
"""

from datetime import date

import dagster as dg

from mlplatform.defs.partitions import daily_partitions, is_hourly, landing_partitions
from mlplatform.lib.names import (
    DUPLICATES,
    NULL_RATES,
    SCHEMA,
    TIMESTAMP_PARTS,
    TIMESTAMPS,
    VOLUME,
    raw_table,
)
from mlplatform.lib.names import INGESTION_DRIFT as DRIFT
from mlplatform.problems import Problem
from mlplatform.resources import LakeResource

GROUP = "ingestion"

_CHECK_DESCRIPTIONS = {
    SCHEMA: "Columns, types and value rules of the source's pandera schema (blocking).",
    DUPLICATES: "Each natural key appears once (blocking).",
    TIMESTAMPS: "Event times inside the partition's day and not in the future (blocking).",
    TIMESTAMP_PARTS: "Columns restating the event time (year, month, day, hour) agree with it "
    "in local time (blocking).",
    NULL_RATES: "Null rates of watched columns within the spec's limits (blocking).",
    VOLUME: "Row count against the same weekday's trailing median; outside the spec's error "
    "band it blocks until a user overrides it (who, why).",
}
_HOURLY_DESCRIPTIONS = {
    TIMESTAMPS: "Event times inside the partition's hour and not in the future (blocking).",
    VOLUME: "Row count against the trailing median of the same hour (of the same weekday); "
    "outside the spec's error band it blocks until a user overrides it (who, why).",
}


class IngestionConfig(dg.Config):
    """An explicit release of named failed checks of the run's batch (never implied)."""

    override_checks: list[str] = []  # noqa: RUF012 (pydantic copies defaults)
    """Failed checks to let pass as warnings (volume, null_rates); needs override_by and
    override_reason."""
    override_by: str = ""
    override_reason: str = ""


def check_names(problem: Problem, source: str) -> list[str]:
    """The gating checks the spec asks of a source's raw batches."""
    spec = problem.spec.sources[source]
    names = [SCHEMA, DUPLICATES]
    if spec.is_daily:
        names.append(TIMESTAMPS)
    if spec.timestamp_parts:
        names.append(TIMESTAMP_PARTS)
    if spec.max_null_rate:
        names.append(NULL_RATES)
    if spec.volume:
        names.append(VOLUME)
    return names


def _day(context: dg.AssetExecutionContext) -> date | None:
    return date.fromisoformat(context.partition_key) if context.has_partition_key else None


def _partition(context: dg.AssetExecutionContext, problem: Problem) -> date | str | None:
    """The raw batch's partition: a day, or the hourly key itself (``granularity: hourly``)."""
    if context.has_partition_key and is_hourly(problem.spec):
        return context.partition_key
    return _day(context)


def build_raw_asset(problem: Problem, source: str) -> dg.AssetsDefinition:
    """The raw batches of ``source``, gated by blocking checks."""
    spec = problem.spec.sources[source]
    key = dg.AssetKey([problem.name, raw_table(source)])
    described = {**_CHECK_DESCRIPTIONS, **(_HOURLY_DESCRIPTIONS if is_hourly(problem.spec) else {})}

    @dg.asset(
        key=key,
        group_name=GROUP,
        description=f"{spec.description} As landed, gated by the spec's checks.",
        kinds={spec.format, "pandera"},
        owners=[problem.spec.owner],
        partitions_def=landing_partitions(problem.spec) if spec.is_daily else None,
        check_specs=[
            dg.AssetCheckSpec(name, asset=key, blocking=True, description=described[name])
            for name in check_names(problem, source)
        ],
        tags={"mlplatform/problem": problem.name},
    )
    def _raw(
        context: dg.AssetExecutionContext, config: IngestionConfig, lake: LakeResource
    ) -> dg.MaterializeResult:
        from mlplatform.defs.metadata import check_result, frame_metadata
        from mlplatform.lib.ingestion.ingest import NothingLandedError, Override, ingest_batch
        from mlplatform.lib.ingestion.reading import MalformedFileError

        day = _partition(context, problem)
        release = (
            Override(tuple(config.override_checks), config.override_by, config.override_reason)
            if config.override_checks
            else None
        )
        try:
            batch = ingest_batch(
                lake.lake(),
                problem.name,
                source,
                spec,
                problem.schema(source),
                day,
                problem.spec.partitioning.timezone,
                override=release,
                run_id=context.run.run_id,
            )
        except (NothingLandedError, MalformedFileError, ValueError) as exc:
            raise dg.Failure(description=f"{key.to_user_string()}: {exc}") from None
        if not batch.accepted:
            context.log.error(
                f"{key.to_user_string()} {batch.partition} rejected by {batch.failed}; "
                f"quarantined at {batch.quarantine}"
            )
        overridden = (
            {
                "override": dg.MetadataValue.json(
                    {
                        "checks": batch.overridden,
                        "by": config.override_by,
                        "reason": config.override_reason,
                    }
                )
            }
            if batch.overridden
            else {}
        )
        return dg.MaterializeResult(
            metadata={
                **frame_metadata(batch.frame),
                "files": dg.MetadataValue.json([str(p) for p in batch.files]),
                "accepted": batch.accepted,
                "quarantine": dg.MetadataValue.path(str(batch.quarantine or "")),
                **overridden,
            },
            check_results=[check_result(o, key) for o in batch.outcomes],
            data_version=dg.DataVersion(batch.content_hash),
        )

    return _raw


def build_typed_asset(problem: Problem, source: str) -> dg.AssetsDefinition:
    """The validated, typed table of ``source``, built only from accepted batches."""
    spec = problem.spec.sources[source]
    key = dg.AssetKey([problem.name, source])
    check_specs = []
    if spec.drift and spec.is_daily:
        check_specs.append(
            dg.AssetCheckSpec(
                DRIFT,
                asset=key,
                blocking=False,
                description=f"Evidently {spec.drift.method} drift of "
                f"{', '.join(spec.drift.columns)} "
                f"against the {spec.drift.reference_days} previous days (WARN).",
            )
        )

    raw = dg.AssetKey([problem.name, raw_table(source)])
    hourly = is_hourly(problem.spec) and spec.is_daily

    @dg.asset(
        key=key,
        # a day of the typed table reads the day's hours (Dagster maps the time windows)
        deps=[dg.AssetDep(raw, partition_mapping=dg.TimeWindowPartitionMapping())]
        if hourly
        else [raw],
        group_name=GROUP,
        description=f"{spec.description} Validated and typed.",
        kinds={"pandas", "parquet"},
        owners=[problem.spec.owner],
        partitions_def=daily_partitions(problem.spec) if spec.is_daily else None,
        check_specs=check_specs,
        tags={"mlplatform/problem": problem.name},
    )
    def _typed(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        from mlplatform.defs.ingestion.drift import advisory_drift_result
        from mlplatform.defs.metadata import frame_metadata
        from mlplatform.lib.ingestion.ingest import (
            RejectedBatchError,
            load_accepted,
            load_accepted_hours,
        )

        day, store = _day(context), lake.lake()
        try:
            if hourly and day is not None:
                frame = load_accepted_hours(
                    store,
                    problem.name,
                    source,
                    problem.schema(source),
                    day,
                    problem.spec.partitioning.timezone,
                    spec.naive_timezone,
                )
            else:
                frame = load_accepted(
                    store, problem.name, source, problem.schema(source), day, spec.naive_timezone
                )
        except RejectedBatchError as exc:
            raise dg.Failure(description=str(exc)) from None
        path = store.write_table(problem.name, source, day, frame)
        # advisory: whatever happens in it, the table written above materializes
        checks = (
            [advisory_drift_result(store, problem, source, day, frame, key, context.log)]
            if check_specs and day
            else []
        )
        return dg.MaterializeResult(
            metadata={**frame_metadata(frame), "path": dg.MetadataValue.path(str(path))},
            check_results=checks,
        )

    return _typed
