"""The ingestion stage: landed files become validated, typed tables."""

import dagster as dg

from mlplatform.defs.ingestion.assets import build_raw_asset, build_typed_asset
from mlplatform.problems import Problem


def build_defs(problem: Problem) -> dg.Definitions:
    """Raw and typed assets of every source of ``problem``."""
    assets = [
        build(problem, source)
        for source in problem.spec.sources
        for build in (build_raw_asset, build_typed_asset)
    ]
    return dg.Definitions(assets=assets)
