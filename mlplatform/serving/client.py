"""A small client: real rows of a day's target source as requests, sent to a running service."""

import json
import time
import urllib.error
import urllib.request
from datetime import date
from typing import TYPE_CHECKING, Any

from mlplatform.problems import Problem

if TYPE_CHECKING:
    import pandas as pd

    from mlplatform.lib.storage import DataLake


def sample_requests(
    lake: "DataLake", problem: Problem, day: date, n: int, skip: int = 0
) -> list[dict[str, Any]]:
    """``n`` rows of the day's target source, as the request model's JSON (no outcomes)."""
    frame = lake.read_days(problem.name, problem.spec.target.source, [day])
    return as_requests(problem, frame.iloc[skip : skip + n])


def as_requests(problem: Problem, frame: "pd.DataFrame") -> list[dict[str, Any]]:
    """Rows of the target source as requests: the request model's fields, validated, JSON."""
    import pandas as pd

    model = problem.request_model()
    out = []
    for row in frame[list(model.model_fields)].astype(object).to_dict("records"):
        request = {}
        for name, value in row.items():
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                request[name] = None
            elif isinstance(value, pd.Timestamp):
                request[name] = value.isoformat()
            else:
                request[name] = getattr(value, "item", lambda v=value: v)()  # numpy → python
        out.append(json.loads(model(**request).model_dump_json()))
    return out


def wait_until_up(url: str, seconds: float) -> bool:
    """Poll ``/health`` until the service answers with a champion, or time runs out."""
    deadline = time.monotonic() + seconds
    while True:  # asked at least once, whatever ``seconds`` is
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                if json.loads(resp.read()).get("status") == "ok":
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)


def post(url: str, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """POST JSON, return JSON (raises ``urllib.error.HTTPError`` on 4xx/5xx)."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())
