"""A bare FastAPI endpoint: the floor ``bench/serving.py`` measures the service against.

``POST /predict`` reads the JSON body as FastAPI reads the service's (a dict, no model
validation) and answers a constant of the service's answer's shape: no feature read, no
model, no prediction log, no worker thread. It is started as ``mlplatform serve`` starts
the service, in its own process: a socket bound and listening (backlog 2048) handed to
``uvicorn.Server`` with ``log_level="warning"``, or to uvicorn's ``Multiprocess`` with
``--workers`` > 1. So what separates the two at the same request rate is the service's
own work per request.

    .venv/bin/python bench/serving_bare.py --port 8123 [--workers 2]
"""

import argparse
import socket
from typing import Any

ANSWER = {
    "request_id": "0" * 32,
    "prediction": 0.5,
    "version": "1",
    "route": "champion",
    "stage": "none",
    "defaulted_features": [],
    "missing_features": [],
    "unseen_categories": [],
}


def create_app() -> Any:
    """The app: ``/predict`` answers ``ANSWER``, ``/health`` says ok."""
    from fastapi import FastAPI

    app = FastAPI(title="bare")

    @app.post("/predict")
    async def predict(body: dict[str, Any]) -> dict[str, Any]:
        return ANSWER

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    return app


def main() -> None:
    """Listen as ``mlplatform serve`` does, then serve until SIGTERM/SIGINT."""
    import uvicorn

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    sock.set_inheritable(True)
    if args.workers > 1:
        from uvicorn.supervisors import Multiprocess

        config = uvicorn.Config(
            "serving_bare:create_app",
            factory=True,
            workers=args.workers,
            host=args.host,
            port=args.port,
            log_level="warning",
        )
        Multiprocess(config, sockets=[sock]).run()
        return
    config = uvicorn.Config(create_app(), host=args.host, port=args.port, log_level="warning")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
