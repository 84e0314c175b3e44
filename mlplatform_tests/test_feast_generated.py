"""The Feast repository generated from a spec and FEATURE_TABLES (lib.features.feast_repo)."""

import importlib.util
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from mlplatform import problems as problems_module
from mlplatform.lib.features.feast_repo import (
    LOCAL_FILE,
    PRODUCTION_FILE,
    definitions,
    store_config,
)
from mlplatform.lib.features.feature_store import apply, cli_repo, open_store
from mlplatform.lib.features.tables import EVENT_TS, GLOBAL_KEY, GLOBAL_VALUE, FeatureTable
from mlplatform.problems import Problem

CASES = Path(__file__).parent / "cases"


def _hand_written(data: Path) -> dict[str, Any]:
    """The flights' repository as it was written by hand, kept as the reference."""
    spec = importlib.util.spec_from_file_location(
        "flight_delay_feast_repo", CASES / "flight_delay_feast_repo.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.definitions(data)


def _view_facts(view: Any) -> dict[str, Any]:
    return {
        "features": [(f.name, str(f.dtype)) for f in view.schema],
        "ttl": view.ttl,
        "entities": view.entities,
        "join_keys": view.join_keys,
        "batch_source": (view.batch_source.name, view.batch_source.path),
        "timestamp_field": view.batch_source.timestamp_field,
        "stream_source": view.stream_source.name if view.stream_source else None,
    }


def test_the_generated_flights_repository_equals_the_hand_written_one(
    problem: Problem, tmp_path: Path
) -> None:
    from feast import Entity, FeatureService, FeatureView

    assert not (problem.feature_repo / "repo.py").exists(), "the flights use the generator"
    hand, generated = _hand_written(tmp_path), problem.feast_objects(tmp_path)
    assert sorted(generated) == sorted(hand)
    for name, want in hand.items():
        got = generated[name]
        assert type(got) is type(want), name
        if isinstance(want, FeatureView):
            assert _view_facts(got) == _view_facts(want), name
            assert got == want, name  # Feast's own equality: schema, sources, ttl, entities
        elif isinstance(want, Entity):
            assert isinstance(got, Entity)
            assert (got.name, got.join_key, got.value_type) == (
                want.name,
                want.join_key,
                want.value_type,
            )
        else:
            assert isinstance(got, FeatureService) and isinstance(want, FeatureService)
            assert got.name == want.name == "flight_delay_v2"
            assert [
                (p.name, [f.name for f in p.features]) for p in got.feature_view_projections
            ] == [(p.name, [f.name for f in p.features]) for p in want.feature_view_projections]


def test_the_generated_store_configuration_equals_the_hand_written_files() -> None:
    # the two files the flights shipped until the repository was generated
    local = {
        "project": "flight_delay",
        "provider": "local",
        "registry": {
            "registry_type": "file",
            "path": "${MLPLATFORM_DATA_DIR}/feast/flight_delay/registry.db",
            "cache_ttl_seconds": 0,
        },
        "online_store": {
            "type": "sqlite",
            "path": "${MLPLATFORM_DATA_DIR}/feast/flight_delay/online_store.db",
        },
        "offline_store": {"type": "duckdb"},
        "entity_key_serialization_version": 3,
    }
    production = {
        **local,
        "registry": {
            "registry_type": "sql",
            "path": "${MLPLATFORM_FEAST_REGISTRY}",
            "cache_ttl_seconds": 0,
            "sqlalchemy_config_kwargs": {"pool_pre_ping": True},
        },
        "online_store": {"type": "redis", "connection_string": "${MLPLATFORM_FEAST_REDIS}"},
    }
    assert store_config("flight_delay", LOCAL_FILE) == local
    assert store_config("flight_delay", PRODUCTION_FILE) == production
    with pytest.raises(ValueError, match="no generated Feast profile"):
        store_config("flight_delay", "feature_store.staging.yaml")


def test_the_feast_cli_gets_a_repository_of_the_generated_objects(
    problem: Problem, tmp_path: Path
) -> None:
    repo = cli_repo(problem, tmp_path)
    assert repo == tmp_path / "feast" / "flight_delay" / "repo"
    config = yaml.safe_load((repo / LOCAL_FILE).read_text())
    assert config == store_config("flight_delay", LOCAL_FILE)
    assert "get_problem('flight_delay').feast_objects" in (repo / "repo.py").read_text()


# -- a problem of another shape: one entity, a composite key, no key ----------------------------
def _shaped_tables() -> list[FeatureTable]:
    return [
        FeatureTable(
            "city_temp",
            "Last hour's temperature per city.",
            "city",
            "city_temp",
            ttl=timedelta(hours=3),
            sources=("temps",),
            features={"temp_last": "float", "readings": "int"},
        ),
        FeatureTable(
            "pair_gap",
            "Temperature gap between a city and a reference city.",
            ("city", "other"),
            "pair_gap",
            ttl=timedelta(hours=3),
            sources=("temps",),
            features={"gap": "float"},
        ),
        FeatureTable(
            "everywhere",
            "Mean temperature over every city: one value for every request.",
            None,
            "everywhere",
            ttl=timedelta(hours=3),
            sources=("temps",),
            features={"temp_all": "float", "windy": "bool", "regime": "string"},
        ),
    ]


@pytest.fixture
def shaped(problem: Problem) -> Problem:
    """The flights' spec with the entities of another shape (city, other), and no views."""
    spec = problem.spec.model_copy(
        update={
            "entities": {
                "city": problem.spec.entities["origin"].model_copy(
                    update={"join_keys": ["city"], "description": "A city."}
                ),
                "other": problem.spec.entities["origin"].model_copy(
                    update={"join_keys": ["other"], "description": "The city compared with."}
                ),
            }
        }
    )
    return Problem(name=problem.name, spec=spec, folder=problem.folder)


def test_one_key_several_keys_and_no_key_each_become_a_view(
    shaped: Problem, tmp_path: Path
) -> None:
    objects = definitions(shaped.spec, _shaped_tables(), tmp_path, 1)
    # a view names its entities (Feast fills its join keys when it is applied)
    assert objects["city_temp_fv"].entities == ["city"]  # type: ignore[attr-defined]
    assert objects["pair_gap_fv"].entities == ["city", "other"]  # type: ignore[attr-defined]
    # no key: the platform's constant entity (Feast's dummy entity cannot be materialized
    # from the DuckDB offline store on 0.67)
    assert objects["everywhere_fv"].entities == ["global"]  # type: ignore[attr-defined]
    assert objects["global"].join_key == GLOBAL_KEY  # type: ignore[attr-defined]
    assert {(f.name, str(f.dtype)) for f in objects["everywhere_fv"].schema} == {  # type: ignore[attr-defined]
        ("temp_all", "Float64"),
        ("windy", "Bool"),
        ("regime", "String"),
        ("everywhere_ts", "Int64"),
    }
    assert objects["service"].name == "flight_delay_v1"  # type: ignore[attr-defined]


def test_a_keyless_and_a_composite_view_serve_offline_and_online(
    shaped: Problem, tmp_path: Path
) -> None:
    """Real Feast stores in a temporary folder: apply, point-in-time join, materialize, read."""
    from mlplatform.lib.features.build import with_timestamps

    tables = _shaped_tables()[1:]
    hours = pd.date_range("2010-01-01T00:00Z", periods=4, freq="h")
    rows = {
        "pair_gap": pd.DataFrame(
            {"city": "sea", "other": ["sf"] * 4, EVENT_TS: hours, "gap": [1.0, 2.0, 3.0, 4.0]}
        ),
        "everywhere": pd.DataFrame(
            {
                EVENT_TS: hours,
                "temp_all": [10.0, 11.0, 12.0, 13.0],
                "windy": [False, True, False, True],
                "regime": ["calm", "wind", "calm", "wind"],
            }
        ),
    }
    for table in tables:
        frame = with_timestamps(table, rows[table.name])
        folder = tmp_path / "warehouse" / "flight_delay" / "features" / table.name
        folder.mkdir(parents=True)
        frame.to_parquet(folder / "2010-01-01.parquet", index=False)
    store = open_store(shaped, tmp_path)
    objects = definitions(shaped.spec, tables, tmp_path, 1)
    apply(store, objects)
    entity_df = pd.DataFrame(
        {
            EVENT_TS: pd.to_datetime(["2010-01-01T01:30Z", "2010-01-01T09:00Z"]),
            "city": ["sea", "sea"],
            "other": ["sf", "sf"],
            GLOBAL_KEY: GLOBAL_VALUE,
        }
    )
    joined = store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service("flight_delay_v1")
    ).to_df()
    joined = joined.sort_values(EVENT_TS).reset_index(drop=True)
    assert joined["gap"].tolist()[0] == 2.0 and joined["temp_all"].tolist()[0] == 11.0
    assert joined[["gap", "temp_all"]].iloc[1].isna().all()  # 09:00 is past the 3 h TTL
    store.materialize(datetime(2009, 12, 31, tzinfo=UTC), datetime(2010, 1, 2, tzinfo=UTC))
    online = store.get_online_features(
        features=store.get_feature_service("flight_delay_v1"),
        entity_rows=[{"city": "sea", "other": "sf", GLOBAL_KEY: GLOBAL_VALUE}],
    ).to_dict()
    assert online["gap"] == [4.0] and online["temp_all"] == [13.0] and online["regime"] == ["wind"]


def test_a_problem_without_a_feature_repo_folder_loads_and_opens_its_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, problem: Problem
) -> None:
    folder = tmp_path / "problems"
    shutil.copytree(
        problem.folder, folder / "bare_delay", ignore=shutil.ignore_patterns("__pycache__")
    )
    spec_file = folder / "bare_delay" / "spec.yaml"
    spec_file.write_text(spec_file.read_text().replace("name: flight_delay", "name: bare_delay"))
    assert not (folder / "bare_delay" / "feature_repo").exists()
    monkeypatch.setenv(problems_module.PROBLEMS_PATH_ENV, str(folder))
    problems_module.problems.cache_clear()
    try:
        bare = problems_module.get_problem("bare_delay")
        store = open_store(bare, tmp_path / "data")
        assert store.config.project == "bare_delay"
        registry = store.config.registry
        assert str(getattr(registry, "path", "")).startswith(str(tmp_path / "data"))
        assert bare.feast_objects(tmp_path / "data")["service"].name == "bare_delay_v2"  # type: ignore[attr-defined]
    finally:
        problems_module.problems.cache_clear()


def test_a_builder_missing_a_declared_feature_is_named() -> None:
    from mlplatform.lib.features.build import with_timestamps

    table = _shaped_tables()[0]
    frame = pd.DataFrame(
        {"city": ["sea"], EVENT_TS: pd.to_datetime(["2010-01-01T00:00Z"]), "temp_last": [1.0]}
    )
    with pytest.raises(ValueError, match=r"city_temp\(\) returned no column\(s\) \['readings'\]"):
        with_timestamps(table, frame)
    assert with_timestamps(table, frame.assign(readings=3))["city_temp_ts"].tolist() == [1262304000]
