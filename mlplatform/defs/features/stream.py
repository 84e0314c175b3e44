"""Stream sources in Dagster: one external asset per stream, materialized by each push.

A push happens outside any run (the replay's clock, ``mlplatform push``, an upstream
producer), so it is recorded as a runless materialization of ``<problem>/<source>_stream``
with the rows, the newest event time and the lag. The asset's freshness policy turns a
silent feed into a late one in the UI.
"""

from datetime import timedelta
from typing import TYPE_CHECKING

import dagster as dg

from mlplatform.problems import Problem

if TYPE_CHECKING:
    from mlplatform.lib.features.stream import PushResult

GROUP = "features"


def stream_key(problem: Problem, source: str) -> dg.AssetKey:
    """Key of the external asset a stream source's pushes materialize."""
    return dg.AssetKey([problem.name, f"{source}_stream"])


def stream_specs(problem: Problem) -> list[dg.AssetSpec]:
    """One external asset per stream source, with the freshness its spec promises."""
    specs = []
    for source, spec in problem.spec.stream_sources().items():
        assert spec.stream is not None
        late = timedelta(minutes=spec.stream.freshness_minutes)
        views = [t.name for t in problem.feature_tables() if t.stream == source]
        specs.append(
            dg.AssetSpec(
                stream_key(problem, source),
                description=f"{spec.stream.description} Each push is one hour of events; "
                f"it feeds the stream views {', '.join(views) or '(none)'} online.",
                group_name=GROUP,
                kinds={"feast"},
                owners=[problem.spec.owner],
                tags={"mlplatform/problem": problem.name},
                freshness_policy=dg.FreshnessPolicy.time_window(
                    fail_window=late, warn_window=late / 2
                ),
            )
        )
    return specs


def report_push(instance: dg.DagsterInstance, problem: Problem, result: "PushResult") -> None:
    """Record one accepted push as a materialization of its stream asset."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=stream_key(problem, result.source),
            description=f"{result.rows} events of {result.start}..{result.end}",
            metadata={
                "hour_start": result.start,
                "rows": result.rows,
                "newest_event_time": result.newest_event_time or "none",
                "lag_seconds": dg.MetadataValue.float(result.lag_seconds or 0.0),
                "rows_pushed": dg.MetadataValue.json(result.views),
                "replaced_earlier_push": result.replaced,
            },
        )
    )
