"""Records shown as Dagster table metadata: typed columns, cells Dagster can store."""

import math

import dagster as dg
import numpy as np

from mlplatform.defs.metadata import table


def test_records_become_a_typed_table_with_empty_cells_for_nan_and_missing_keys() -> None:
    shown = table(
        [
            {"feature": "temp", "rate": np.float64(0.25), "rows": np.int64(3)},
            {"feature": "seats", "rate": math.nan, "rows": 4, "note": ["a list"]},
        ]
    )

    assert isinstance(shown, dg.TableMetadataValue) and shown.schema is not None
    assert [(c.name, c.type) for c in shown.schema.columns] == [
        ("feature", "string"),
        ("rate", "float"),
        ("rows", "int"),
        ("note", "string"),
    ]
    assert [r.data for r in shown.records] == [
        {"feature": "temp", "rate": 0.25, "rows": 3, "note": None},
        {"feature": "seats", "rate": None, "rows": 4, "note": "['a list']"},
    ]
