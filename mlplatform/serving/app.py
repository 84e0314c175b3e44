"""The HTTP service: FastAPI over a ``Runtime``.

Handlers are ``async`` and score on the event loop: one request costs ~1-2 ms (a Feast
SQLite read and a one-row predict), and one thread keeps the online store's connection
and the model snapshot free of races.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, create_model

from mlplatform.lib.deployment import status as deployment_status
from mlplatform.serving.runtime import NoChampionError, Runtime

MAX_BODY_BYTES = 1_000_000
MAX_BATCH = 1000


class Prediction(BaseModel):
    """One answer."""

    request_id: str
    prediction: float = Field(description="Probability of the positive class")
    version: str = Field(description="Registered model version that answered")
    route: str = Field(description="champion, or challenger during a canary")
    stage: str = Field(description="Rollout stage when the request was answered")
    defaulted_features: list[str] = Field(description="Features that fell back to defaults")


class Predictions(BaseModel):
    """Answers to a batch, in its order."""

    predictions: list[Prediction]


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, before they are read.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` costs ~0.5 ms a request.
    A body without Content-Length is counted as it streams and cut off at the limit.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Check the declared length, then count the streamed body."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        response = JSONResponse({"detail": f"request body over {self.max_bytes} bytes"}, 413)
        await response({"type": "http"}, None, send)  # pyright: ignore[reportArgumentType]


class BodyTooLarge(Exception):
    """A streamed body passed the limit."""


def create_app(
    runtime: Runtime,
    max_body_bytes: int = MAX_BODY_BYTES,
    stop_on_shutdown: bool = False,
    on_stop: Callable[[], None] | None = None,
) -> FastAPI:
    """The service of one problem; ``stop_on_shutdown`` when the app owns its runtime.

    ``on_stop`` runs after it at shutdown (``serve`` removes its announcement there).
    """
    problem = runtime.problem
    request_model: Any = problem.request_model()
    batch_model: Any = create_model(
        "Batch",
        instances=(list[request_model], Field(min_length=1, max_length=MAX_BATCH)),  # pyright: ignore[reportInvalidTypeForm]
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
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
        # the body is one request or a batch: report the errors of the form it looks like
        body = exc.body if isinstance(exc.body, dict) else None
        branch = "Batch" if body is not None and "instances" in body else "Request"
        errors = []
        for err in exc.errors():
            loc = list(err.get("loc", ()))
            if len(loc) > 1 and loc[0] == "body" and loc[1] in ("Request", "Batch"):
                if loc[1] != branch:
                    continue
                loc = ["body", *loc[2:]]
            errors.append({**err, "loc": loc})
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    def answer(item: Any) -> dict[str, Any]:
        try:
            return runtime.predict(item.model_dump())
        except NoChampionError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None

    @app.post("/predict", response_model=Prediction | Predictions)
    async def predict(body: request_model | batch_model) -> Any:  # pyright: ignore
        """Score one request, or a batch as ``{"instances": [...]}``."""
        if isinstance(body, batch_model):
            return {"predictions": [answer(item) for item in body.instances]}  # pyright: ignore[reportAttributeAccessIssue]
        return answer(body)

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

    return app
