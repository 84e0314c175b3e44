"""Reading landed export files, with errors that name the file and what is wrong with it."""

import csv
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mlplatform.errors import PlatformError


class MalformedFileError(PlatformError, ValueError):
    """A landed file that cannot be read as a table."""

    def __init__(self, path: Path, problem: str) -> None:
        """Name the file and the problem in the message."""
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _read_csv(path: Path, null_values: Sequence[str]) -> pd.DataFrame:
    raw = path.read_bytes()
    if not raw.strip():
        raise MalformedFileError(path, "file is empty (no header, no rows)")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedFileError(
            path, f"not valid UTF-8: byte {raw[exc.start]:#04x} at offset {exc.start}"
        ) from None
    if not raw.endswith(b"\n"):
        # Exports end every row with a newline; a missing one means the copy was cut off.
        last = raw.rsplit(b"\n", 1)[-1].decode("utf-8", errors="replace")
        raise MalformedFileError(
            path, f"truncated: the last line has no line ending ({last[:60]!r})"
        )
    try:
        # Everything as text: the schema check coerces and reports what does not convert,
        # so no value is lost or silently turned into NaN here. Only the spec's null
        # spellings are null: pandas' defaults would read "N/A", "NULL", "None" or "nan"
        # in any column as a missing value.
        return pd.read_csv(
            path,
            dtype="string",
            encoding="utf-8",
            on_bad_lines="error",
            keep_default_na=False,
            na_values=list(null_values),
        )
    except pd.errors.ParserError as exc:
        raise MalformedFileError(path, f"not a well-formed CSV: {exc}".strip()) from None


def _check_rows(path: Path, frame: pd.DataFrame) -> None:
    # pandas pads short rows with NA; a row with fewer fields than the header is malformed.
    with path.open(encoding="utf-8", newline="") as fh:
        widths = [len(row) for row in csv.reader(fh)]
    expected = len(frame.columns)
    short = [i for i, width in enumerate(widths[1:], start=2) if 0 < width < expected]
    if short:
        raise MalformedFileError(
            path,
            f"line {short[0]} has fewer fields than the header's {expected} "
            f"({len(short)} short line(s))",
        )


def read_file(path: Path, null_values: Sequence[str] = ("",)) -> pd.DataFrame:
    """Read one CSV or Parquet export file; in a CSV only ``null_values`` are null."""
    if path.suffix == ".csv":
        frame = _read_csv(path, null_values)
        _check_rows(path, frame)
        return frame
    if path.suffix == ".parquet":
        import pyarrow as pa

        try:
            return pd.read_parquet(path)
        except (OSError, pa.ArrowException) as exc:
            raise MalformedFileError(path, f"not a readable Parquet file: {exc}") from None
    raise MalformedFileError(path, f"unsupported file type {path.suffix!r} (csv or parquet)")


def read_batch(paths: list[Path], null_values: Sequence[str] = ("",)) -> pd.DataFrame:
    """Read and concatenate the files of one landed batch; all must share their columns.

    In CSV files only ``null_values`` (the source's spec, by default the empty field) are
    read as null; every other text stays a value for the schema check to judge.
    """
    frames = [read_file(p, null_values) for p in paths]
    for path, frame in zip(paths[1:], frames[1:], strict=True):
        if list(frame.columns) != list(frames[0].columns):
            raise MalformedFileError(
                path,
                f"columns {list(frame.columns)} differ from {paths[0].name}'s "
                f"{list(frames[0].columns)}",
            )
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
