"""The HTTP service: FastAPI over a ``Runtime``.

Scoring runs in worker threads, never on the event loop, so a batch of 1,000 (~1-2 s of
work) cannot hold the loop while a single request waits. Two lanes share the threads:
single requests (up to ``SINGLE_THREADS`` at once) and batch items, scored in chunks of
``BATCH_CHUNK`` by one thread at a time (``BATCH_THREADS``), returning to the loop between
chunks. A batch item waits while a single request is being scored (at most
``BATCH_YIELD_SECONDS`` per item, so batches still progress under a flood of singles): the
GIL would otherwise share the CPU between them and stretch the single's 1-2 ms.

Every refused request gets a 4xx whose body names the fields; the body never carries more
than ``MAX_ERRORS`` errors, and the offending ``input`` only when it is a short scalar.
"""

import logging
import math
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, create_model

from mlplatform.lib.deployment.log import status as deployment_status
from mlplatform.serving.runtime import NoChampionError, Runtime
from mlplatform.spec import ProblemSpec

log = logging.getLogger("mlplatform.serving")

MAX_BODY_BYTES = 1_000_000
MAX_BATCH = 1000
MAX_PUSH_EVENTS = 5000  # one hour of one stream source's events
SINGLE_THREADS = 4  # single requests scored at once (2 cores: more only queue on the GIL)
BATCH_THREADS = 1  # batch chunks scored at once, whatever the number of batches
BATCH_CHUNK = 50  # batch items per trip to a worker thread (~50-100 ms)
BATCH_YIELD_SECONDS = 0.05  # the longest a batch item waits for single requests to finish
MAX_ERRORS = 20  # validation errors reported per refused body
MAX_ECHO_CHARS = 80  # the longest string echoed back (input, loc, ctx)
MAX_MESSAGE_CHARS = 300  # an error's own message (which may quote the input)


class Prediction(BaseModel):
    """One answer."""

    request_id: str
    prediction: float = Field(description="Probability of the positive class")
    version: str = Field(description="Registered model version that answered")
    route: str = Field(description="champion, or challenger during a canary")
    stage: str = Field(description="Rollout stage when the request was answered")
    defaulted_features: list[str] = Field(
        description="Inputs the store had no value for that fell back to the spec's default"
    )
    missing_features: list[str] = Field(
        description="Every input the store had no value for (defaulted or left missing)"
    )
    unseen_categories: list[str] = Field(
        description="Categorical inputs whose value the model never saw in training"
    )
    contributions: dict[str, float] | None = Field(
        default=None,
        description='Only with "explain": true. Each input\'s contribution to the raw score '
        "(log-odds; LightGBM's TreeSHAP): base_value + their sum = logit(prediction)",
    )
    base_value: float | None = Field(
        default=None, description='Only with "explain": true. The expected raw score (log-odds)'
    )


def answer_model(spec: ProblemSpec) -> type[Prediction]:
    """The answer's model for ``spec``'s task: the same fields, described for what they hold.

    ``binary``: ``prediction`` is the probability of the positive class and the explanation
    is in log-odds (``Prediction`` as is). ``regression``: ``prediction`` is the predicted
    value of the target, in its own units, and ``base_value`` + the contributions add up to
    it exactly (the model's raw score is the value itself).
    """
    if not spec.is_regression:
        return Prediction
    target = spec.target
    unit = f"{target.name}'s units"
    return create_model(
        "Prediction",
        __base__=Prediction,
        __doc__="One answer: the predicted value of the target.",
        prediction=(
            float,
            Field(
                description=f"Predicted value of {target.name} ({target.column} of "
                f"{target.source}, in its own units)"
            ),
        ),
        contributions=(
            dict[str, float] | None,
            Field(
                default=None,
                description='Only with "explain": true. Each input\'s contribution to the '
                f"predicted value ({unit}; LightGBM's TreeSHAP): base_value + their sum "
                "= prediction",
            ),
        ),
        base_value=(
            float | None,
            Field(
                default=None,
                description=f'Only with "explain": true. The expected predicted value ({unit})',
            ),
        ),
    )


class Predictions(BaseModel):
    """Answers to a batch, in its order."""

    predictions: list[Prediction]


def answers_model(answer: type[Prediction]) -> type[Predictions]:
    """The batch answer holding ``answer_model``'s answers."""
    if answer is Prediction:
        return Predictions
    return create_model(
        "Predictions",
        __base__=Predictions,
        predictions=(list[answer], ...),  # pyright: ignore[reportInvalidTypeForm]
    )


class Push(BaseModel):
    """One hour of a stream source's events, as ``mlplatform push`` sends a file."""

    model_config = {"extra": "forbid"}

    hour: str = Field(
        max_length=40, description="The hour pushed, with its UTC offset: 2013-01-29T14:00:00Z"
    )
    events: list[dict[str, Any]] = Field(
        max_length=MAX_PUSH_EVENTS,
        description="The hour's events, in the columns of the stream's event model",
    )


class TransitionAsked(BaseModel):
    """One rollout transition, as ``mlplatform rollback`` and ``mlplatform rollout`` ask it."""

    model_config = {"extra": "forbid"}

    action: Literal["shadow", "canary", "full", "rollback", "kill"]
    reason: str = Field(description="Why (recorded in the deployment log)")
    actor: str = Field(default="", description="Who (recorded in the deployment log)")
    share: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Canary share; 0 takes the spec's"
    )


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, before they are read.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` costs ~0.5 ms a request.
    A body without Content-Length (chunked) is read here up to the limit, then handed on.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Check the declared length, then count the streamed body."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit():
            if int(length) > self.max_bytes:
                return await self._refuse(send)
            return await self.app(scope, receive, send)  # the server holds it to its length
        # Streamed (chunked): read it here, up to the limit, then hand it on whole. Counting
        # inside the app's own read would surface as FastAPI's 400 "error parsing the body".
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                return await self._refuse(send)
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        handed = False

        async def replay() -> Any:
            nonlocal handed
            if handed:
                return await receive()  # after the body: the disconnect, when it comes
            handed = True
            return whole

        return await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        response = JSONResponse({"detail": f"request body over {self.max_bytes} bytes"}, 413)
        await response({"type": "http"}, None, send)  # pyright: ignore[reportArgumentType]


class Lanes:
    """Bounded worker threads for single requests and batch chunks; singles go first.

    The limiters are made on the event loop (``open``). A count of the single requests being
    scored sets an event when it falls to zero; batch items wait on it (``give_way``).
    """

    def __init__(self) -> None:
        self.singles: anyio.CapacityLimiter | None = None
        self.batches: anyio.CapacityLimiter | None = None
        self._busy = 0
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()

    def open(self) -> None:
        """Create the limiters (inside the running event loop)."""
        self.singles = anyio.CapacityLimiter(SINGLE_THREADS)
        self.batches = anyio.CapacityLimiter(BATCH_THREADS)

    @contextmanager
    def single(self) -> Iterator[None]:
        """Mark a single request as being scored (in its worker thread)."""
        with self._lock:
            self._busy += 1
            self._idle.clear()
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                if self._busy == 0:
                    self._idle.set()

    def give_way(self) -> None:
        """Before each batch item: wait while single requests are scored (bounded)."""
        self._idle.wait(BATCH_YIELD_SECONDS)


def _short(value: Any, limit: int = MAX_ECHO_CHARS) -> Any:
    """A JSON-safe, short form of one scalar; None for anything that should not be echoed."""
    if value is None or (isinstance(value, bool | int) and abs(value) < 2**63):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # "nan", "inf": strict JSON
    if isinstance(value, str):
        # lone surrogates cannot be encoded as UTF-8: replaced, never a 500
        text = value.encode("utf-8", "replace").decode("utf-8")
        return text if len(text) <= limit else text[:limit] + "…"
    return None


def _error(err: Any, loc: list[Any]) -> dict[str, Any]:
    """One validation error as strict JSON: loc, msg, type, ctx, and a short scalar input."""
    out: dict[str, Any] = {
        "loc": [p if isinstance(p, int) else _short(str(p)) for p in loc],
        "msg": _short(str(err.get("msg", "")), MAX_MESSAGE_CHARS),  # ours: whole, bounded
        "type": _short(str(err.get("type", ""))),
    }
    if isinstance(err.get("ctx"), dict):
        out["ctx"] = {
            str(k): v if (v := _short(c)) is not None else _short(str(c))
            for k, c in err["ctx"].items()
        }
    if "input" in err:  # a dict or list input (the whole body of a "missing") is not echoed
        shown = _short(err["input"])
        if shown is not None or err["input"] is None:
            out["input"] = shown
    return out


def create_app(
    runtime: Runtime,
    max_body_bytes: int = MAX_BODY_BYTES,
    stop_on_shutdown: bool = False,
    on_stop: Callable[[], None] | None = None,
    transition_token: str | None = None,
) -> FastAPI:
    """The service of one problem; ``stop_on_shutdown`` when the app owns its runtime.

    ``on_stop`` runs after it at shutdown (``serve`` removes its announcement there).
    ``transition_token`` authorizes ``POST /deployment/transition`` (``Authorization:
    Bearer <token>``; ``serve`` passes its announcement's); None refuses every transition.
    """
    problem = runtime.problem
    # every request may ask for its explanation; the problem's model knows nothing of it
    declared: Any = problem.request_model()
    request_model: Any = create_model(
        declared.__name__,
        __base__=declared,
        explain=(
            bool,
            # strict: "yes", 1 or "on" are refused, not read as true
            Field(
                default=False, strict=True, description="Answer with per-feature contributions too"
            ),
        ),
    )
    batch_model: Any = create_model(
        "Batch",
        instances=(list[request_model], Field(min_length=1, max_length=MAX_BATCH)),  # pyright: ignore[reportInvalidTypeForm]
    )

    answer_one = answer_model(problem.spec)
    answer_many = answers_model(answer_one)
    lanes = Lanes()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        lanes.open()
        yield
        if stop_on_shutdown:
            runtime.stop()  # flush the prediction log
        if on_stop is not None:
            on_stop()

    app = FastAPI(
        lifespan=lifespan,
        title=f"mlplatform: {problem.name}",
        description=problem.spec.description,
        version=str(problem.spec.version),
    )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the body is one request or a batch: report the errors of the form it looks like.
        # Each error is rebuilt from JSON-safe scalars: pydantic's carries the offending
        # input (NaN, a lone surrogate, a megabyte list), which strict JSON cannot encode
        # or should not echo
        body = exc.body if isinstance(exc.body, dict) else None
        branch = "Batch" if body is not None and "instances" in body else "Request"
        errors, found = [], 0
        for err in exc.errors():
            loc = list(err.get("loc", ()))
            if len(loc) > 1 and loc[0] == "body" and loc[1] in ("Request", "Batch"):
                if loc[1] != branch:
                    continue
                loc = ["body", *loc[2:]]
            found += 1
            if len(errors) < MAX_ERRORS:
                errors.append(_error(err, loc))
        content: dict[str, Any] = {"detail": errors}
        if found > len(errors):
            content["errors_not_shown"] = found - len(errors)
        return JSONResponse(content, status_code=422)

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    def answer(item: Any) -> dict[str, Any]:
        try:
            request = item.model_dump()
            return runtime.predict(request, explain=request.pop("explain"))
        except NoChampionError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None

    def single(item: Any) -> dict[str, Any]:
        with lanes.single():
            return answer(item)

    def chunk(items: list[Any]) -> list[dict[str, Any]]:
        out = []
        for item in items:
            lanes.give_way()
            out.append(answer(item))
        return out

    # contributions only when asked: an answer without them stays as it was
    @app.post(
        "/predict",
        response_model=answer_one | answer_many,  # pyright: ignore[reportInvalidTypeForm]
        response_model_exclude_none=True,
    )
    async def predict(body: request_model | batch_model) -> Any:  # pyright: ignore
        """Score one request, or a batch as ``{"instances": [...]}``."""
        if isinstance(body, batch_model):
            items: list[Any] = body.instances  # pyright: ignore[reportAttributeAccessIssue]
            out: list[dict[str, Any]] = []
            for start in range(0, len(items), BATCH_CHUNK):
                part = items[start : start + BATCH_CHUNK]
                out += await anyio.to_thread.run_sync(chunk, part, limiter=lanes.batches)
            return {"predictions": out}
        return await anyio.to_thread.run_sync(single, body, limiter=lanes.singles)

    def push_events(source: str, body: Push) -> dict[str, Any]:
        import pandas as pd

        from mlplatform.lib.features.stream import PushRefused

        try:
            result = runtime.push(source, body.hour, pd.DataFrame.from_records(body.events))
        except PushRefused as exc:
            status = 404 if "is not a stream source" in str(exc) else 422
            raise HTTPException(status, str(exc)[: MAX_MESSAGE_CHARS * 2]) from None
        except ValueError as exc:  # an hour that is not a time
            raise HTTPException(422, f"hour: {str(exc)[:MAX_MESSAGE_CHARS]}") from None
        return {**result.to_dict(), "recorded_in_dagster": record(result)}

    instance: list[Any] = []  # the project's Dagster instance, opened at the first push

    def record(result: Any) -> bool:
        """The push as a materialization of its stream asset; False if Dagster is away."""
        try:
            import dagster as dg

            from mlplatform.defs.features.stream import report_push
            from mlplatform.settings import ensure_dagster_home

            if not instance:
                instance.append(dg.DagsterInstance.from_config(str(ensure_dagster_home())))
            report_push(instance[0], problem, result)
            return True
        except Exception:  # the push reached the store: Dagster's record is secondary
            log.warning("push of %s not recorded in Dagster", result.source, exc_info=True)
            return False

    @app.post("/push/{source}")
    async def push(source: str, body: Push) -> dict[str, Any]:
        """Push one hour of a stream source's events to the online store (Feast push source).

        A push is refused whole (422 naming the field; 404 for a source that is not a
        stream) and kept in the quarantine; pushing an hour again replaces it.
        """
        return await anyio.to_thread.run_sync(push_events, source, body, limiter=lanes.batches)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Up, whether a champion is loaded, and why the service does not follow the registry.

        ``status`` stays ``ok`` while a champion answers; ``degraded`` is true when the
        registry cannot be read (``registry``) or names versions not served (``alerts``).
        """
        snap, registry = runtime.snapshot, runtime.registry_health()
        return {
            "status": "ok" if snap.champion is not None else "no_champion",
            "problem": problem.name,
            "champion": snap.plan.champion,
            "loaded_at": snap.loaded_at,
            "degraded": bool(snap.alerts) or not registry["ok"],
            "alerts": list(snap.alerts),
            "registry": registry,
            # written / pending / lost records and the last write error of the log
            "prediction_log": runtime.predictions.health(),
        }

    @app.get("/deployment")
    async def deployment() -> dict[str, Any]:
        """Which versions serve, the stage and the canary share, as the service applies them."""
        snap = runtime.snapshot
        current = runtime.deployments.current()
        return {
            # the aliases as the follower last read them: no registry read on the event loop
            **deployment_status(runtime.registry_aliases, current),
            "serving": {
                "champion": snap.plan.champion,
                "challenger": snap.challenger.version if snap.challenger else None,
                "stage": snap.plan.stage,
                "canary_share": snap.plan.share,
                "loaded_at": snap.loaded_at,
                "alerts": list(snap.alerts),
            },
            "registry": runtime.registry_health(),
        }

    @app.post("/refresh")
    async def refresh() -> dict[str, Any]:
        """Re-read the registry now (the rollback command calls this after its alias move).

        Off the event loop: a locked registry store holds a read for up to 20 s.
        """
        try:
            changed = await anyio.to_thread.run_sync(runtime.refresh)
        except Exception as exc:  # the snapshot in service stays; /health says why
            detail = f"registry not followed: {type(exc).__name__}: {exc}"
            raise HTTPException(503, detail) from None
        snap = runtime.snapshot
        return {"changed": changed, "champion": snap.plan.champion, "alerts": list(snap.alerts)}

    def authorized(authorization: str | None = Header(default=None)) -> None:
        # a dependency: checked before the body is, so a refused caller learns nothing more
        if transition_token is None:
            raise HTTPException(403, "this service takes no transitions (none announced)")
        if authorization is None:
            raise HTTPException(401, "a transition needs the service's announcement token")
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            given.strip().encode(), transition_token.encode()
        ):
            raise HTTPException(403, "not the service's announcement token")

    @app.post("/deployment/transition", dependencies=[Depends(authorized)])
    async def transition(body: TransitionAsked) -> dict[str, Any]:
        """Apply one rollout transition here and serve it at once (the rollout commands).

        The same ``rollout.apply`` as the command's own path (registry aliases, deployment
        log), under the registry follower's lock, then the registry re-read: the answer
        comes once this service serves the new plan. Needs ``Authorization: Bearer`` with
        the token of the service's announcement (``deployments/<problem>/service.json``,
        readable by its owner only): 401 without it, 403 with another. 409 when the state
        does not allow the transition (nothing changed). The command records the Dagster
        materialization.
        """
        import time
        from dataclasses import asdict

        from mlplatform.lib.deployment.rollout import RolloutError

        started = time.perf_counter()
        try:
            done, error = await anyio.to_thread.run_sync(
                runtime.transition, body.action, body.reason, body.actor, body.share
            )
        except RolloutError as exc:
            raise HTTPException(409, str(exc)) from None
        except Exception as exc:  # a registry or log write failed part way: say which
            log.exception("transition %s failed", body.action)
            raise HTTPException(500, f"{type(exc).__name__}: {exc}"[:MAX_MESSAGE_CHARS]) from None
        snap = runtime.snapshot
        return {
            "transition": asdict(done),
            # as the re-read under the lock found them; None when it failed
            "aliases": None if error else dict(runtime.registry_aliases),
            "champion": snap.plan.champion,
            "alerts": list(snap.alerts),
            "refresh_error": error,
            "seconds": round(time.perf_counter() - started, 4),
        }

    return app
