"""Training on the real training set: tracked, registered with lineage, repeatable, resumable."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlplatform.lib.storage import DataLake
from mlplatform.lib.tracking import dataset_schema, local_tracking, registered_versions
from mlplatform_tests.helpers import Platform, failure_messages

# small enough for CI: seven days of data, the last two validate
FAST = {"validation_days": 2, "n_trials": 6, "max_rounds": 80, "early_stopping_rounds": 10}
ROOT = Path(__file__).resolve().parents[1]


def _model_text(platform: Platform, version: str) -> str:
    client = local_tracking(platform.lake.root).client()
    source = client.get_model_version("flight_delay", version).source  # models:/<model id>
    location = client.get_logged_model(source.rsplit("/", 1)[-1]).artifact_location
    local = Path(location.removeprefix("file://"))
    files = list(local.glob("*.lgb"))
    assert len(files) == 1, f"one native LightGBM file expected in {local}"
    assert not list(local.glob("*.pkl")), "no pickle"
    return files[0].read_text()


def test_training_is_tracked_and_registered_with_its_lineage(featured: Platform) -> None:
    result = featured.run_training(**FAST)

    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    run_id = str(meta["mlflow_run_id"].value)
    client = local_tracking(featured.lake.root).client()
    run = client.get_run(run_id)
    latest = featured.lake.read_latest("flight_delay", "training_set")
    assert latest is not None
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlplatform.data_version"] == latest["data_version"]
    assert run.data.tags["mlplatform.dagster_run_id"] == result.run_id
    assert len(run.data.tags["mlflow.source.git.commit"]) >= 40
    assert run.data.metrics["valid_auc"] > 0.55
    assert run.data.metrics["trials_complete"] + run.data.metrics.get("trials_pruned", 0) == 6
    assert "learning_rate" in run.data.params and "search_space" in run.data.params
    assert [i.dataset.digest for i in run.inputs.dataset_inputs] == [latest["data_version"]]
    # the logged schema is the one MLflow infers from the whole training set itself
    import pandas as pd
    from mlflow.types.utils import _infer_schema

    logged = json.loads(run.inputs.dataset_inputs[0].dataset.schema)["mlflow_colspec"]
    assert logged == _infer_schema(pd.read_parquet(latest["path"])).to_dict()
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"feature_importance.png", "optimization_history.png", "param_importances.png"} <= (
        artifacts
    )
    assert "data:image/png;base64," in str(meta["feature_importance"].value)

    (version,) = registered_versions(local_tracking(featured.lake.root), "flight_delay")
    assert version == {
        "version": "1",
        "mlflow_run_id": run_id,
        "data_version": latest["data_version"],
        "git_commit": run.data.tags["mlflow.source.git.commit"],
    }
    # registering does not deploy
    assert client.get_registered_model("flight_delay").aliases == {}
    assert _model_text(featured, "1").startswith("tree")


def test_same_inputs_give_the_same_model(featured: Platform, tmp_path: Path) -> None:
    assert featured.run_training(**FAST).success
    assert featured.run_training(**FAST).success  # reuses the finished study
    other = Platform(featured.problem, tmp_path / "other", featured.instance)
    import shutil

    shutil.copytree(featured.lake.root, other.lake.root)
    shutil.rmtree(other.lake.root / "optuna")
    shutil.rmtree(other.lake.root / "mlflow")
    assert other.run_training(**FAST).success  # a fresh study, same seed

    first = _model_text(featured, "1")
    assert _model_text(featured, "2") == first
    assert _model_text(other, "1") == first


def test_a_training_set_too_short_to_validate_fails_clearly(featured: Platform) -> None:
    result = featured.run_training(**{**FAST, "validation_days": 7})

    assert not result.success
    assert "needs more than the 7 validation day(s)" in " ".join(failure_messages(result))
    assert not (featured.lake.root / "mlflow" / "mlflow.db").exists() or not registered_versions(
        local_tracking(featured.lake.root), "flight_delay"
    )


def _finished_trials(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute(
                "select count(*) from trials where state in ('COMPLETE', 'PRUNED')"
            ).fetchone()[0]
        except sqlite3.OperationalError:
            return 0


@pytest.mark.slow
def test_a_killed_training_run_resumes_its_study(featured: Platform) -> None:
    budget = {**FAST, "n_trials": 40, "max_rounds": 200, "early_stopping_rounds": 200}
    script = (
        "import dagster as dg, sys\n"
        "from pathlib import Path\n"
        "from mlplatform.problems import get_problem\n"
        "from mlplatform_tests.helpers import Platform\n"
        "with dg.instance_for_test() as inst:\n"
        "    platform = Platform(get_problem('flight_delay'), Path(sys.argv[1]), inst)\n"
        f"    platform.run_training(**{budget!r})\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(featured.lake.root)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    db = featured.lake.root / "optuna" / "flight_delay.db"
    try:
        deadline = time.monotonic() + 240
        while _finished_trials(db) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        before = _finished_trials(db)
        assert 3 <= before < 40, "the run should be killed mid-study"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(7)  # past the heartbeat grace period: the interrupted trial is stale

    result = featured.run_training(**budget)

    assert result.success
    with sqlite3.connect(db) as conn:
        states = dict(conn.execute("select state, count(*) from trials group by state").fetchall())
        studies = conn.execute("select count(*) from studies").fetchone()[0]
    assert studies == 1, "the second run continued the same study"
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 40
    assert states.get("RUNNING", 0) == 0


def test_fixed_parameters_from_the_launchpad_skip_the_search(featured: Platform) -> None:
    params = {"learning_rate": 0.1, "num_leaves": 15.0}
    result = featured.run_training(**{**FAST, "params": params})

    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["best_params"].value == params
    assert meta["trials"].value == {}
    run = local_tracking(featured.lake.root).client().get_run(str(meta["mlflow_run_id"].value))
    assert run.data.params["study"] == "none: fixed parameters"
    assert not (featured.lake.root / "optuna" / "flight_delay.db").exists()


def test_one_request_encodes_like_the_training_matrix(featured_base: Path) -> None:
    import numpy as np
    import pandas as pd

    from mlplatform.lib.features.feature_store import feature_matrix
    from mlplatform.lib.training.model import Encoding, fit_encoding
    from mlplatform.problems import get_problem

    spec = get_problem("flight_delay").spec
    latest = DataLake(featured_base).read_latest("flight_delay", "training_set")
    assert latest is not None
    matrix = feature_matrix(pd.read_parquet(latest["path"]), spec)
    encoding = Encoding.from_json(fit_encoding(matrix, spec).to_json())  # as stored with the model
    encoded = encoding.matrix(matrix)

    for i in (0, 17, len(matrix) - 1):
        one = [None if pd.isna(v) else v for v in matrix.iloc[i].tolist()]
        np.testing.assert_array_equal(np.array(encoding.row(one)), encoded[i])
    unseen = matrix.iloc[0].tolist()
    unseen[[f.name for f in spec.features].index("carrier")] = "ZZ"  # a carrier never trained on
    assert np.isnan(encoding.row(unseen)[[f.name for f in spec.features].index("carrier")])


def test_the_dataset_schema_is_mlflows_own_inference() -> None:
    """Computed over each column's distinct values: the same types and required flags."""
    import numpy as np
    import pandas as pd
    from mlflow.types.utils import _infer_schema

    frame = pd.DataFrame(
        {
            "carrier": ["UA", None, "UA", "B6"],
            "distance": [1400, 1089, 1400, 719],
            "temp": [39.0, np.nan, 39.0, 41.0],
            "cancelled": [True, False, True, True],
            "time_hour": pd.to_datetime(
                pd.Series(["2013-01-01", None, "2013-01-01", "2013-01-02"]), utc=True
            ),
            "legs": [[1], [2], [1], [1, 2]],  # unhashable: inferred whole
            "never": [None, None, None, None],
            "numbers": pd.Series([1, 1.0, 2, 2], dtype=object),  # 1 == 1.0: both types seen
            "mixed": ["a", 1, "a", 2.5],
        }
    )
    for name in frame.columns:
        part = frame[[name]]
        try:
            expected = _infer_schema(part).to_dict()
        except Exception:  # MLflow infers none (PandasDataset.schema is None): neither here
            assert dataset_schema(part) is None, name
            continue
        ours = dataset_schema(part)
        assert ours is not None and ours.to_dict() == expected, name
    assert dataset_schema(frame) is None  # one column MLflow cannot type: no schema at all
    whole = dataset_schema(frame.drop(columns="mixed"))
    assert whole is not None
    assert [c["name"] for c in whole.to_dict()] == [c for c in frame.columns if c != "mixed"]
