"""What the service does per request, and how it follows the registry without a restart.

A ``Snapshot`` (plan + loaded models) is replaced whole when the aliases or the
deployment log change: new versions load first, then one reference assignment swaps
them in, so a request in flight finishes on the snapshot it started with and none fails.
"""

import json
import logging
import math
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.lib import registry as reg
from mlplatform.lib.deployment import DeploymentLog, Plan, plan
from mlplatform.lib.prediction_log import PredictionLog, monotonic_ms, now_utc
from mlplatform.lib.rollout import request_key, routes_to_challenger
from mlplatform.lib.tables import EVENT_TS
from mlplatform.lib.tracking import Tracking
from mlplatform.problems import Problem

if TYPE_CHECKING:
    from mlplatform.lib.registry import LoadedModel
    from mlplatform.lib.scoring import OnlineScorer

log = logging.getLogger("mlplatform.serving")


class NoChampionError(RuntimeError):
    """Nothing may be served: no version holds the ``champion`` alias."""


@dataclass(frozen=True)
class Snapshot:
    """The deployment as the service applies it, with its models in memory."""

    plan: Plan
    champion: "LoadedModel | None"
    challenger: "LoadedModel | None"
    loaded_at: str = field(default_factory=lambda: now_utc().isoformat(timespec="milliseconds"))


class Runtime:
    """Scores requests for one problem from the aliases in its registry."""

    def __init__(
        self,
        problem: Problem,
        root: Path,
        tracking: Tracking,
        scorer: "OnlineScorer",
        predictions: PredictionLog,
        refresh_seconds: float = 0.5,
    ) -> None:
        self.problem, self.tracking, self.scorer = problem, tracking, scorer
        self.predictions = predictions
        self.deployments = DeploymentLog(root, problem.name)
        self.refresh_seconds = refresh_seconds
        self._models: dict[str, LoadedModel] = {}
        self._probe: tuple[Any, ...] = ()
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.snapshot = Snapshot(Plan(None, None, "none", 0.0), None, None)
        self.swaps = 0

    # -- following the registry -------------------------------------------------------
    def _model(self, version: str | None) -> "LoadedModel | None":
        if version is None:
            return None
        if version not in self._models:
            self._models[version] = reg.load_version(self.tracking, self.problem.name, version)
        return self._models[version]

    def refresh(self) -> bool:
        """Re-read aliases and the deployment log; swap in a new snapshot if they changed."""
        with self._refresh_lock:
            aliases = reg.aliases(self.tracking, self.problem.name)
            probe = (tuple(sorted(aliases.items())), self.deployments.mtime())
            if probe == self._probe:
                return False
            wanted = plan(aliases, self.deployments.current())
            champion = self._model(wanted.champion)  # loads happen before the swap
            challenger = self._model(wanted.challenger) if wanted.challenger_active else None
            self.snapshot = Snapshot(wanted, champion, challenger)
            self._probe = probe
            self.swaps += 1
            keep = {wanted.champion, wanted.challenger, aliases.get(reg.PREVIOUS)}
            self._models = {v: m for v, m in self._models.items() if v in keep}
            log.info("serving %s", wanted)
            return True

    def start(self) -> "Runtime":
        """Load the current deployment, then follow it in the background."""
        self.refresh()
        self._thread = threading.Thread(target=self._follow, name="registry-follower", daemon=True)
        self._thread.start()
        return self

    def _follow(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception:  # the registry may be briefly unavailable: keep serving
                log.exception("refresh failed; serving the previous snapshot")

    def stop(self) -> None:
        """Stop following and flush the prediction log."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.predictions.close()

    # -- answering --------------------------------------------------------------------
    def predict(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Score one request; logs it whatever happens. Raises ``NoChampionError``."""
        started = monotonic_ms()
        snap = self.snapshot  # one snapshot for the whole request
        spec = self.problem.spec
        record: dict[str, Any] = {
            "request_id": uuid.uuid4().hex,
            "time": now_utc(),
            "request": json.dumps(dict(request), default=str, sort_keys=True),
            "stage": snap.plan.stage,
        }
        try:
            key = request_key(spec, request)
            record["key"] = key
            record["event_time"] = self.problem.entity_row(request)[EVENT_TS]
            if snap.champion is None:
                raise NoChampionError(
                    f"{self.problem.name}: no version holds the champion alias; nothing is "
                    "served until a model passes the gates"
                )
            features = self.scorer.features(request)
            record["features"] = json.dumps(features.vector, default=str)
            record["defaulted"] = json.dumps(features.defaulted)
            champion_p = _score(snap.champion, features.vector)
            record |= {
                "champion_version": snap.champion.version,
                "champion_prediction": champion_p,
            }
            route, served, prediction = "champion", snap.champion.version, champion_p
            if snap.challenger is not None:
                record["challenger_version"] = snap.challenger.version
                try:
                    challenger_p = _score(snap.challenger, features.vector)
                    record["challenger_prediction"] = challenger_p
                    if snap.plan.stage == "canary" and routes_to_challenger(key, snap.plan.share):
                        route, served, prediction = (
                            "challenger",
                            snap.challenger.version,
                            challenger_p,
                        )
                except Exception as exc:  # the champion answers; the error counts against it
                    record["challenger_error"] = f"{type(exc).__name__}: {exc}"
            record |= {"route": route, "served_version": served, "prediction": prediction}
            record |= {"status": "ok"}
            return {
                "request_id": record["request_id"],
                "prediction": prediction,
                "version": served,
                "route": route,
                "stage": snap.plan.stage,
                "defaulted_features": features.defaulted,
            }
        except Exception as exc:
            record |= {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            raise
        finally:
            record["latency_ms"] = monotonic_ms() - started
            self.predictions.write(record)


def _score(model: "LoadedModel", vector: list[Any]) -> float:
    p = model.predict_row(model.encoding.row(vector))
    if math.isnan(p):
        raise ValueError(f"version {model.version} returned NaN")
    return p
