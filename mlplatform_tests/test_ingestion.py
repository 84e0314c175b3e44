"""Ingestion of real days: landed exports become typed tables behind passing checks."""

from datetime import date

import dagster as dg
import pandas as pd

from mlplatform.lib.ingestion.ingest import content_hash
from mlplatform.problems.flight_delay.source import export_day
from mlplatform_tests.helpers import Platform, checks, materialized


def test_a_real_day_is_ingested_with_every_check_passing(platform: Platform) -> None:
    result = platform.run_day("2013-01-07")
    assert result.success
    assert materialized(result) == {"raw_flights", "flights", "raw_weather", "weather"}
    evaluations = checks(result)
    assert {name for (_, name) in evaluations} == {
        "schema",
        "no_duplicate_keys",
        "timestamps_in_partition",
        "timestamp_parts_agree",
        "null_rates",
        "volume",
        "ingestion_drift",
    }
    failed = {key: e.description for key, e in evaluations.items() if not e.passed}
    assert failed == {}
    # six earlier days are enough history to judge volume
    volume = evaluations[("raw_flights", "volume")].metadata
    assert volume["history_partitions"].value == 6


def test_typed_table_holds_every_landed_row_with_types(platform: Platform) -> None:
    assert platform.run_day("2013-01-07").success
    typed = platform.lake.read_table("flight_delay", "flights", "2013-01-07")
    expected = export_day("flights", date(2013, 1, 7))
    assert len(typed) == len(expected) > 900
    assert str(typed["time_hour"].dtype) == "datetime64[ns, UTC]"
    assert typed["sched_dep_time"].dtype == "int64"
    pd.testing.assert_series_equal(
        typed["arr_delay"].reset_index(drop=True),
        expected["arr_delay"].astype(float),
        check_names=False,
    )


def test_materialization_metadata_describes_the_table(platform: Platform) -> None:
    result = platform.run_day("2013-01-07")
    events = {
        e.asset_key.path[-1]: e for e in result.get_asset_materialization_events() if e.asset_key
    }
    meta = events["flights"].materialization.metadata
    assert meta["dagster/row_count"].value == len(export_day("flights", date(2013, 1, 7)))
    schema, preview, nulls = meta["dagster/column_schema"], meta["preview"], meta["null_rates"]
    assert isinstance(schema, dg.TableSchemaMetadataValue)
    assert isinstance(preview, dg.TableMetadataValue)
    assert isinstance(nulls, dg.JsonMetadataValue) and isinstance(nulls.value, dict)
    columns = {c.name: c.type for c in schema.value.columns}
    assert columns["time_hour"] == "datetime64[ns, UTC]"
    assert [c.name for c in preview.schema.columns][:3] == ["year", "month", "day"]
    assert preview.records[0].data["year"] == 2013 and len(preview.records) == 10
    assert 0 < nulls.value["arr_delay"] < 0.1


def test_raw_data_version_is_the_landed_content(platform: Platform) -> None:
    first = platform.run_day("2013-01-07")
    again = platform.run_day("2013-01-07")
    versions = [
        (e.materialization.tags or {})["dagster/data_version"]
        for r in (first, again)
        for e in r.get_asset_materialization_events()
        if e.asset_key and e.asset_key.path[-1] == "raw_flights"
    ]
    expected = content_hash([platform.landed_file("flights", "2013-01-07")])
    assert versions == [expected, expected]


def test_reference_sources_are_ingested_unpartitioned(platform: Platform) -> None:
    result = platform.run_reference()
    assert result.success
    assert materialized(result) == {"raw_planes", "planes", "raw_airports", "airports"}
    planes = platform.lake.read_table("flight_delay", "planes", None)
    assert planes["tailnum"].is_unique and len(planes) == 3322
