"""What the service does with requests a user should not send, and with batches in flight.

One module-scoped service over a real Feast store and registry (champion: version 1), on a
free port of 127.0.0.1. Field cases from ../shared/cases are in ``cases/``:
- ``09_request_distance_NaN``, ``10_request_distance_1e309``: non-finite numbers got a 500;
- ``11_request_origin_not_new_york``: an origin the problem never serves was scored;
- ``12_request_unseen_carrier_dest``: an unseen carrier and destination were scored with
  ``defaulted_features: []`` although seven inputs were missing.
"""

import json
import math
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.typing import Series

from mlplatform.defs.jobs import monitoring_job_name
from mlplatform.lib.deployment.prediction_log import read_predictions
from mlplatform.lib.deployment.request_schema import request_model
from mlplatform.lib.deployment.scoring import degraded
from mlplatform.lib.tracking import local_tracking
from mlplatform.problems import Problem
from mlplatform.problems.flight_delay.request import Request
from mlplatform.problems.flight_delay.schemas import FlightsSchema
from mlplatform.serving.client import as_requests
from mlplatform.serving.server import Background, build_runtime, serve_in_background
from mlplatform_tests.helpers import (
    QUIET,
    STUMP,
    STUMP_TRAINING,
    Platform,
    fresh_instance,
    tuned_problem,
)

CASES = Path(__file__).parent / "cases"
RATES = [f"{k}_delay_rate_{w}d" for k in ("carrier", "route") for w in (1, 7, 28)]
WEATHER = ["humid", "precip", "temp", "visib", "wind_speed"]  # the weather inputs with defaults


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, featured_base: Path, problem: Problem
) -> Iterator[tuple[Platform, Background]]:
    root = tmp_path_factory.mktemp("requests") / "data"
    shutil.copytree(featured_base, root)
    with fresh_instance() as instance:
        platform = Platform(tuned_problem(problem), root, instance)
        assert platform.run_feature_store().success  # its checks gate the training below
        assert platform.run_gated_training(params=STUMP, **STUMP_TRAINING).success
        runtime = build_runtime(
            platform.problem, root, local_tracking(root), refresh_seconds=0.2, flush_seconds=0.2
        )
        service = serve_in_background(runtime)
        yield platform, service
        service.stop()


def _requests(platform: Platform, n: int) -> list[dict[str, Any]]:
    flights = platform.lake.read_days("flight_delay", "flights", [date(2013, 1, 6)])
    return as_requests(platform.problem, flights.iloc[:n])


def _case(name: str) -> bytes:
    return (CASES / f"{name}.json").read_bytes()


def _strict(response: httpx.Response) -> Any:
    """The body as strict JSON (NaN/Infinity refused), after checking it is UTF-8."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {constant} in {response.text[:200]}")

    return json.loads(response.content.decode("utf-8"), parse_constant=refuse)


def _locs(response: httpx.Response) -> list[list[Any]]:
    return [e["loc"] for e in _strict(response)["detail"]]


def _post(client: httpx.Client, raw: str | bytes) -> httpx.Response:
    return client.post("/predict", content=raw, headers={"content-type": "application/json"})


def _with(request: dict[str, Any], field: str, raw: str) -> str:
    """``request`` as JSON text with ``field``'s value written as ``raw`` (any JSON text)."""
    parts = [f'"{k}": {raw if k == field else json.dumps(v)}' for k, v in request.items()]
    return "{" + ", ".join(parts) + "}"


def _batch(*bodies: str) -> str:
    return '{"instances": [' + ", ".join(bodies) + "]}"


def test_non_finite_numbers_get_a_422_naming_the_field(
    served: tuple[Platform, Background],
) -> None:
    platform, service = served
    good = _requests(platform, 1)[0]
    nan_case = _case("09_request_distance_NaN").decode()
    with httpx.Client(base_url=service.url) as client:
        nan = _post(client, nan_case)
        huge = _post(client, _case("10_request_distance_1e309"))
        others = {
            raw: _post(client, _with(good, "distance", raw))
            for raw in ("Infinity", "-Infinity", "-1e309")
        }
        not_json = _post(client, _with(good, "distance", "-NaN"))  # not even Python reads it
        flight = _post(client, _with(good, "flight", "NaN"))
        when = _post(client, _with(good, "time_hour", "Infinity"))
        in_batch = _post(client, _batch(json.dumps(good), nan_case))

    assert nan.status_code == huge.status_code == 422
    assert _locs(nan) == _locs(huge) == [["body", "distance"]]
    assert _strict(nan)["detail"][0]["type"] == "finite_number"
    for raw, response in others.items():
        assert response.status_code == 422, raw
        assert _locs(response) == [["body", "distance"]], raw
    assert not_json.status_code == 422 and _strict(not_json)["detail"][0]["type"] == "json_invalid"
    assert flight.status_code == when.status_code == 422
    assert _locs(flight) == [["body", "flight"]] and _locs(when) == [["body", "time_hour"]]
    assert in_batch.status_code == 422
    assert _locs(in_batch) == [["body", "instances", 1, "distance"]]


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("time_hour", '"2013-01-28T15:00:00"'),  # no offset: ambiguous, not assumed UTC
        ("time_hour", '"0001-01-01T00:00:00+14:00"'),  # overflows on conversion to UTC
        ("time_hour", '"9999-12-31T23:00:00-14:00"'),
        ("time_hour", '"2300-01-01T00:00:00Z"'),  # beyond nanosecond timestamps
        ("time_hour", "1e20"),
        ("tailnum", '"N1\\u0000"'),  # a NUL byte
        ("tailnum", '"N\\ud800"'),  # a lone surrogate: no UTF-8 for it
        ("tailnum", '"N1\\n2"'),
        ("carrier", '"UA\\n"'),  # passes the pattern's "$" (it matches before a newline)
        ("flight", "100000000000000000000000000000"),
        ("flight", "0"),
        ("distance", "-1"),
        ("distance", "0"),
        ("origin", '"ewr"'),
        ("dest", '"IAH "'),
    ],
)
def test_values_that_would_crash_scoring_get_a_422_naming_the_field(
    served: tuple[Platform, Background], field: str, raw: str
) -> None:
    platform, service = served
    good = _requests(platform, 1)[0]
    body = _with(good, field, raw)
    with httpx.Client(base_url=service.url) as client:
        one = _post(client, body)
        batch = _post(client, _batch(json.dumps(good), body))

    assert one.status_code == 422, one.text
    assert _locs(one) == [["body", field]]
    assert _locs(batch) == [["body", "instances", 1, field]]


def test_error_bodies_are_short_whatever_the_input(served: tuple[Platform, Background]) -> None:
    platform, service = served
    good = _requests(platform, 1)[0]
    with httpx.Client(base_url=service.url) as client:
        long_text = client.post("/predict", json={**good, "tailnum": "N" * 900_000})
        bad_batch = client.post("/predict", json={"instances": [{**good, "flight": -1}] * 1000})
        not_an_object = client.post("/predict", json=[good] * 3000)
        surrogate = _post(client, json.dumps({**good, "dest": "\ud800" * 50}))
        wrong_key = _post(client, json.dumps({**good, "x\ud800" * 10: 1}))

    assert long_text.status_code == 422 and _locs(long_text) == [["body", "tailnum"]]
    assert len(long_text.content) < 2_000
    assert bad_batch.status_code == 422
    detail = _strict(bad_batch)
    assert len(detail["detail"]) == 20 and detail["errors_not_shown"] == 980
    assert len(bad_batch.content) < 10_000
    assert not_an_object.status_code == 422 and len(not_an_object.content) < 10_000
    assert surrogate.status_code == 422 and _locs(surrogate) == [["body", "dest"]]
    assert wrong_key.status_code == 422 and _strict(wrong_key)["detail"]  # encodable


def test_an_origin_the_problem_never_serves_is_refused_as_ingestion_would(
    served: tuple[Platform, Background],
) -> None:
    _, service = served
    with httpx.Client(base_url=service.url) as client:
        answer = _post(client, _case("11_request_origin_not_new_york"))
        schema = client.get("/openapi.json").json()

    assert answer.status_code == 422
    (error,) = _strict(answer)["detail"]
    assert error["loc"] == ["body", "origin"] and error["input"] == "LAX"
    assert "EWR, JFK, LGA" in error["msg"]
    origin = schema["components"]["schemas"]["Request"]["properties"]["origin"]
    assert origin["enum"] == ["EWR", "JFK", "LGA"]


def test_the_request_schema_follows_the_ingestion_schema_of_the_same_fields(
    served: tuple[Platform, Background],
) -> None:
    """Every value the flights schema refuses is refused; a changed schema changes requests."""
    platform, _ = served
    good = _requests(platform, 1)[0]
    served_model = platform.problem.request_model()
    flights = platform.lake.read_days("flight_delay", "flights", [date(2013, 1, 6)]).iloc[:1]
    FlightsSchema.validate(flights)  # the real flight passes; each change below does not
    refused = {"origin": "LAX", "carrier": "U", "dest": "IA", "flight": 0, "distance": 0}
    for field, value in refused.items():
        with pytest.raises(pa.errors.SchemaError):
            FlightsSchema.validate(flights.assign(**{field: value}))
        with pytest.raises(ValueError, match=field):
            served_model(**{**good, field: value})

    class OnlyNewark(FlightsSchema):
        origin: Series[str] = pa.Field(isin=["EWR"])

    newark = request_model(Request, OnlyNewark)
    assert newark(**{**good, "origin": "EWR"}).origin == "EWR"  # pyright: ignore[reportAttributeAccessIssue]
    with pytest.raises(ValueError, match="origin"):
        newark(**{**good, "origin": "JFK"})


def test_unseen_categories_and_missing_inputs_are_answered_and_logged(
    served: tuple[Platform, Background],
) -> None:
    platform, service = served
    # a flight of the day after the store's newest day, as a live service serves them: the
    # daily rates are then from before its prediction time (values stamped after it are
    # missing, as in the point-in-time join: see test_ttl_parity)
    good = {**_requests(platform, 1)[0], "time_hour": "2013-01-08T15:00:00+00:00"}
    with httpx.Client(base_url=service.url) as client:
        unseen = _post(client, _case("12_request_unseen_carrier_dest"))
        known = client.post("/predict", json=good)
        no_plane = client.post("/predict", json={**good, "tailnum": "N0NE"})

    assert unseen.status_code == 200, unseen.text
    answer = unseen.json()
    assert answer["unseen_categories"] == ["carrier", "dest"]
    assert set(RATES) <= set(answer["missing_features"])
    # the rates have no default: missing to the model (the weather, newer in this store than
    # the request's prediction time, may fall back to its defaults: see test_ttl_parity)
    assert not set(RATES) & set(answer["defaulted_features"])
    assert known.json()["unseen_categories"] == []
    assert not set(RATES) & set(known.json()["missing_features"])
    plane = ["engines", "plane_age", "plane_type", "seats"]
    assert set(plane) <= set(no_plane.json()["missing_features"])
    assert no_plane.json()["unseen_categories"] == []

    service.runtime.predictions.flush()
    logged = read_predictions(platform.lake.root, "flight_delay").set_index("request_id")
    row = logged.loc[answer["request_id"]]
    assert json.loads(row["unseen"]) == ["carrier", "dest"]
    assert json.loads(row["missing"]) == answer["missing_features"]
    assert bool(degraded(logged).loc[answer["request_id"]])
    assert bool(degraded(logged).loc[no_plane.json()["request_id"]])


def test_a_weather_feed_that_is_down_is_answered_with_defaults_and_counted_as_degraded(
    served: tuple[Platform, Background],
) -> None:
    platform, service = served
    requests = _requests(platform, 5)
    online = platform.lake.root / "feast" / "flight_delay" / "online_store.db"
    with sqlite3.connect(online) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        (weather,) = [t for t in tables if "weather" in t]
        db.execute(f'delete from "{weather}"')
    with httpx.Client(base_url=service.url) as client:
        answers = [client.post("/predict", json=r).json() for r in requests]

    for answer in answers:
        assert answer["defaulted_features"] == WEATHER
        assert set(answer["missing_features"]) >= {*WEATHER, "pressure"}  # no default: missing
    service.runtime.predictions.flush()
    logged = read_predictions(platform.lake.root, "flight_delay")
    local = pd.to_datetime(logged["event_time"], utc=True).dt.tz_convert("America/New_York")
    of_day = logged[(local.dt.date == date(2013, 1, 6)) & (logged["status"] == "ok")]

    job = platform.defs.resolve_job_def(monitoring_job_name(platform.problem))
    result = job.execute_in_process(
        instance=platform.instance,
        partition_key="2013-01-06",
        run_config=QUIET,
        op_selection=["flight_delay__served_predictions"],
    )

    assert result.success
    (event,) = result.get_asset_materialization_events()
    count = event.materialization.metadata["degraded_answers"].value
    assert count == int(degraded(of_day).sum()) >= len(answers)


def test_a_single_request_is_answered_while_batches_run(
    served: tuple[Platform, Background],
) -> None:
    """Three batches of 1,000 in flight: singles sent after them are answered before any ends."""
    platform, service = served
    requests = _requests(platform, 100)
    batch = {"instances": (requests * 10)[:1000]}
    finished: dict[str, float] = {}
    answers: dict[str, Any] = {}

    def send(name: str, body: dict[str, Any]) -> None:
        with httpx.Client(base_url=service.url, timeout=120) as client:
            answers[name] = client.post("/predict", json=body)
        finished[name] = time.monotonic()

    batches = [threading.Thread(target=send, args=(f"b{i}", batch)) for i in range(3)]
    for thread in batches:
        thread.start()
    before = len(read_predictions(platform.lake.root, "flight_delay"))
    while len(read_predictions(platform.lake.root, "flight_delay")) < before + 100:
        service.runtime.predictions.flush()  # batch items are being scored
        time.sleep(0.05)
    for i in range(5):
        send(f"s{i}", requests[i])
    for thread in batches:
        thread.join()

    assert all(answers[f"b{i}"].status_code == 200 for i in range(3))
    assert all(len(answers[f"b{i}"].json()["predictions"]) == 1000 for i in range(3))
    assert all(answers[f"s{i}"].status_code == 200 for i in range(5))
    assert max(finished[f"s{i}"] for i in range(5)) < min(finished[f"b{i}"] for i in range(3))
    single = answers["s0"].json()["prediction"]
    assert answers["b0"].json()["predictions"][0]["prediction"] == single


def test_an_explained_answer_carries_contributions_that_sum_to_its_score(
    served: tuple[Platform, Background],
) -> None:
    platform, service = served
    requests = _requests(platform, 3)
    with httpx.Client(base_url=service.url) as client:
        plain = client.post("/predict", json=requests[0])
        explained = client.post("/predict", json={**requests[0], "explain": True})
        batch = client.post(
            "/predict",
            json={"instances": [{**r, "explain": i == 1} for i, r in enumerate(requests)]},
        )
        bad = [
            client.post("/predict", json={**requests[0], "explain": value})
            for value in ("perhaps", "yes", "true", 1, 0, None)
        ]
    time.sleep(0.5)  # the prediction log flushes every 0.2 s

    assert plain.status_code == explained.status_code == batch.status_code == 200
    assert "contributions" not in plain.json() and "base_value" not in plain.json()
    body = explained.json()
    assert body["prediction"] == plain.json()["prediction"]  # explaining changes no answer
    names = [f.name for f in platform.problem.spec.features]
    assert sorted(body["contributions"]) == sorted(names)
    logit = math.log(body["prediction"] / (1 - body["prediction"]))
    assert body["base_value"] + sum(body["contributions"].values()) == pytest.approx(
        logit, abs=1e-9
    )
    answers = batch.json()["predictions"]
    assert ["contributions" in a for a in answers] == [False, True, False]
    for response in bad:  # only JSON true and false
        assert response.status_code == 422 and _locs(response) == [["body", "explain"]]
    # the log keeps the request as the problem defines it, without the explain flag
    logged = read_predictions(platform.lake.root, "flight_delay")
    assert logged["request"].str.contains('"explain"').sum() == 0
