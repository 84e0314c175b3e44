"""The code location: every problem's assets, stage by stage, and the active profile's resources.

Kept thin and light: heavy libraries are imported inside the assets that use them, since
every run's step process imports this module again.
"""

import dagster as dg

from mlplatform.defs import ingestion
from mlplatform.problems import problems
from mlplatform.resources import build_resources


@dg.definitions
def defs() -> dg.Definitions:
    """All stages of all problems, with the resources of ``MLPLATFORM_ENV``."""
    stages = [ingestion.build_defs(problem) for problem in problems().values()]
    return dg.Definitions.merge(*stages, dg.Definitions(resources=build_resources()))
