"""The feature stage: feature tables, stream pushes, the Feast registry and the online store."""

import dagster as dg

from mlplatform.defs.features.assets import (
    build_feature_asset,
    build_online_asset,
    build_registry_asset,
)
from mlplatform.defs.features.stream import stream_specs
from mlplatform.problems import Problem


def build_defs(problem: Problem) -> dg.Definitions:
    """Feature tables of ``problem``, its registry and its online store."""
    assets = [build_feature_asset(problem, t) for t in problem.feature_tables()]
    return dg.Definitions(
        assets=[
            *assets,
            *stream_specs(problem),
            build_registry_asset(problem),
            build_online_asset(problem),
        ]
    )
