"""docs/spec-reference.md: every spec field in one table, generated from the pydantic model."""

from pathlib import Path

from mlplatform.spec_docs import REFERENCE, main, spec_fields, spec_reference_markdown


def test_the_committed_reference_is_current() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == spec_reference_markdown(), (
        f"{REFERENCE} is stale: the spec model changed; run `make spec-docs` and commit it"
    )


def test_every_field_of_every_nested_section_has_a_row_and_a_description() -> None:
    rows = spec_fields()
    paths = [r.path for r in rows]
    assert len(paths) == len(set(paths))
    for path in (
        "sources.<name>.schema",  # the YAML key (alias), not the Python name
        "sources.<name>.volume.warn_range",
        "sources.<name>.stream.event_time",
        "entities.<name>.join_keys",
        "features[].monotone",
        "training.search_space.<name>.log",
        "monitoring.skew.error_share",
        "alerts.webhook_format",
    ):
        assert path in paths
    assert "sources.<name>.schema_name" not in paths
    assert [r.path for r in rows if not r.description] == []


def test_types_defaults_and_bounds_are_read_from_the_model() -> None:
    rows = {r.path: r for r in spec_fields()}
    assert (rows["gates.min_slice_rows"].type, rows["gates.min_slice_rows"].default) == (
        "int (≥ 1)",
        "`200`",
    )
    assert rows["gates.p99_latency_ms"].default == "required"
    assert rows["task"].type == '"binary" | "regression"'
    assert rows["sources.<name>.volume.warn_range"].default == "`[0.8, 1.25]`"
    assert rows["sources.<name>.null_values"].default == '`[""]`'
    assert rows["sources.<name>.volume"].type == "mapping or null"
    # a pipe inside a cell is escaped, or it would split the table's row
    owner = next(line for line in spec_reference_markdown().splitlines() if "`owner`" in line)
    assert owner.count(" | ") == 3


def test_check_mode_fails_on_a_stale_file_and_passes_once_written(tmp_path: Path) -> None:
    out = tmp_path / "spec-reference.md"
    out.write_text("# an old reference\n", encoding="utf-8")
    said: list[str] = []
    assert main(["--check", "--out", str(out)], write=said.append) == 1
    assert "is not current: run `make spec-docs`" in said[0]
    assert main(["--out", str(out)], write=said.append) == 0
    assert main(["--check", "--out", str(out)], write=said.append) == 0
    assert out.read_text(encoding="utf-8") == spec_reference_markdown()
