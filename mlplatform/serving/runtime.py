"""What the service does per request, and how it follows the registry without a restart.

A ``Snapshot`` (plan + loaded models) is replaced whole when the aliases or the
deployment log change: new versions load first, then one reference assignment swaps
them in, so a request in flight finishes on the snapshot it started with and none fails.
"""

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.errors import PlatformError
from mlplatform.lib.deployment import registry as reg
from mlplatform.lib.deployment.log import DeploymentLog, Plan, Transition, plan
from mlplatform.lib.deployment.prediction_log import PredictionLog, monotonic_ms, now_utc
from mlplatform.lib.deployment.rollout import request_key, routes_to_challenger
from mlplatform.lib.features.tables import EVENT_TS
from mlplatform.lib.tracking import Tracking
from mlplatform.problems import Problem

if TYPE_CHECKING:
    import pandas as pd

    from mlplatform.lib.deployment.registry import LoadedModel
    from mlplatform.lib.deployment.scoring import OnlineScorer
    from mlplatform.lib.features.stream import PushResult

log = logging.getLogger("mlplatform.serving")


class NoChampionError(PlatformError, RuntimeError):
    """Nothing may be served: no version holds the ``champion`` alias."""


@dataclass(frozen=True)
class Snapshot:
    """The deployment as the service applies it, with its models in memory.

    ``plan`` is what serves; it differs from the registry's aliases when ``alerts`` say
    why (a champion deleted from the registry, an alias on a version the gates did not
    clear): the service then keeps the models it has.
    """

    plan: Plan
    champion: "LoadedModel | None"
    challenger: "LoadedModel | None"
    loaded_at: str = field(default_factory=lambda: now_utc().isoformat(timespec="milliseconds"))
    alerts: tuple[dict[str, str], ...] = ()


REFUSED = "refused"  # an alias on a version without a passed (or overridden) verdict
CHAMPION_DELETED = "champion_deleted"  # the served champion's version left the registry
CHAMPION_ALIAS_MISSING = "champion_alias_missing"  # its version exists, the alias went
MAX_BACKOFF_SECONDS = 10.0  # the longest wait between registry reads during an outage
STALL_SECONDS = 5.0  # a read unanswered this long is an outage (SQLite waits 20 s on a lock)


@dataclass(frozen=True)
class RegistryHealth:
    """How the follower's registry reads go: counters since start, the current outage."""

    ok: bool = True
    error: str | None = None
    since: str | None = None  # when the current outage began
    failures: int = 0  # failed reads in a row (the current outage)
    failures_total: int = 0
    reads_total: int = 0
    last_ok: str | None = None
    retry_in_seconds: float = 0.0


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
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        self.problem, self.tracking, self.scorer = problem, tracking, scorer
        self.predictions = predictions
        self.root = root
        self.deployments = DeploymentLog(root, problem.name)
        self.refresh_seconds, self.stall_seconds = refresh_seconds, stall_seconds
        self._models: dict[str, LoadedModel] = {}
        self._probe: tuple[Any, ...] | None = ()
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reading: tuple[float, str] | None = None  # (monotonic, wall) of a read under way
        self.snapshot = Snapshot(Plan(None, None, "none", 0.0), None, None)
        self.registry = RegistryHealth()  # replaced whole, like the snapshot
        self.registry_aliases: dict[str, str] = {}  # as last read (None of it on the loop)
        self.swaps = 0

    # -- following the registry -------------------------------------------------------
    def _model(self, version: str | None) -> "LoadedModel | None":
        if version is None:
            return None
        if version not in self._models:
            self._models[version] = reg.load_version(self.tracking, self.problem.name, version)
        return self._models[version]

    def refresh(self) -> bool:
        """Re-read aliases and the deployment log; swap in a new snapshot if they changed.

        The snapshot in service stays whatever happens here: a read that fails or hangs
        never takes a loaded model away.

        Raises:
            RegistryError: the registry could not be read (counted in ``registry``).
            ModelFilesError: a version the aliases name cannot be loaded.
        """
        with self._refresh_lock:
            return self._refresh_held()

    def _refresh_held(self) -> bool:
        """``refresh`` with ``_refresh_lock`` held by the caller."""
        self._reading = (time.monotonic(), _now())
        try:
            changed = self._refresh()
        except Exception as exc:
            self._read_failed(exc)
            raise
        finally:
            self._reading = None
        r = self.registry
        self.registry = RegistryHealth(
            failures_total=r.failures_total, reads_total=r.reads_total + 1, last_ok=_now()
        )
        if not r.ok:
            log.warning("registry readable again after %d failed reads", r.failures)
        return changed

    def transition(
        self, action: str, reason: str, actor: str, share: float = 0.0
    ) -> tuple[Transition, str | None]:
        """Apply one rollout transition (``rollout.apply``), then serve it at once.

        Under the follower's lock: the follower reads neither between the alias moves of
        one transition nor a registry from before it that it would swap in after.
        Returns the deployment log's entry and, when the re-read after it failed, why (the
        transition stands; the follower retries and ``/health`` says so).

        Raises:
            RolloutError: The current state does not allow it; nothing was changed.
        """
        from mlplatform.lib.deployment.rollout import apply

        spec = self.problem.spec
        with self._refresh_lock:
            done = apply(
                self.problem.name, spec, self.root, self.tracking, action, reason, actor, share
            )
            try:
                self._refresh_held()
            except Exception as exc:  # counted in ``registry`` by the refresh
                return done, f"{type(exc).__name__}: {exc}"[:500]
        log.info("transition %s by %s: %s", action, actor, done)
        return done, None

    def _refresh(self) -> bool:
        aliases = reg.aliases(self.tracking, self.problem.name)
        self.registry_aliases = aliases
        probe = (tuple(sorted(aliases.items())), self.deployments.mtime())
        if probe == self._probe:
            return False
        old = self.snapshot
        new = self._follow_aliases(plan(aliases, self.deployments.current()), old)
        # a refused version is looked at again next time: its verdict may be recorded since
        self._probe = None if any(a["kind"] == REFUSED for a in new.alerts) else probe
        keep = {new.plan.champion, new.plan.challenger, aliases.get(reg.PREVIOUS)}
        self._models = {v: m for v, m in self._models.items() if v in keep}
        same = (new.plan, new.champion, new.challenger, new.alerts) == (
            old.plan,
            old.champion,
            old.challenger,
            old.alerts,
        )
        if same:
            return False
        self.snapshot = new  # loads happened before: one assignment swaps
        self.swaps += 1
        log.info("serving %s", new.plan)
        for alert in new.alerts:
            if alert not in old.alerts:
                log.warning("not following the registry: %s", alert["reason"])
        return True

    def _follow_aliases(self, wanted: Plan, old: Snapshot) -> Snapshot:
        """The snapshot to serve: the aliases' versions if the gates cleared them.

        A champion alias that vanished (its version deleted: MLflow deletes the version's
        aliases too) or that points at a version without a passed or overridden verdict
        leaves the loaded champion serving; an uncleared challenger is not scored.
        """
        name, alerts = self.problem.name, []
        champion = old.champion
        if wanted.champion is None and champion is not None:
            alerts.append(self._champion_missing(champion.version))
        elif wanted.champion is not None and (
            champion is None or champion.version != wanted.champion
        ):
            cleared = reg.clearance(self.tracking, name, wanted.champion)
            if cleared.cleared:
                champion = self._model(wanted.champion)
            else:
                keeps = (
                    f"version {champion.version} keeps serving" if champion else "no model serves"
                )
                alerts.append(
                    {
                        "kind": REFUSED,
                        "alias": reg.CHAMPION,
                        "version": wanted.champion,
                        "reason": f"champion alias on {cleared.reason}: {keeps}",
                    }
                )
        challenger, stage, share = None, wanted.stage, wanted.share
        if wanted.challenger_active and wanted.challenger is not None:
            if old.challenger is not None and old.challenger.version == wanted.challenger:
                challenger = old.challenger
            else:
                cleared = reg.clearance(self.tracking, name, wanted.challenger)
                if cleared.cleared:
                    challenger = self._model(wanted.challenger)
                else:
                    alerts.append(
                        {
                            "kind": REFUSED,
                            "alias": reg.CHALLENGER,
                            "version": wanted.challenger,
                            "reason": f"challenger alias on {cleared.reason}: it is not "
                            f"scored ({wanted.stage} not applied)",
                        }
                    )
            if challenger is None:
                stage, share = "none", 0.0
        served = Plan(champion.version if champion else None, wanted.challenger, stage, share)
        if (served, champion, challenger, tuple(alerts)) == (
            old.plan,
            old.champion,
            old.challenger,
            old.alerts,
        ):
            return old
        return Snapshot(served, champion, challenger, alerts=tuple(alerts))

    def _champion_missing(self, version: str) -> dict[str, str]:
        if reg.clearance(self.tracking, self.problem.name, version).exists:
            kind, what = (
                CHAMPION_ALIAS_MISSING,
                f"the champion alias was removed from version {version}",
            )
        else:
            kind, what = (
                CHAMPION_DELETED,
                f"champion version {version} was deleted from the registry",
            )
        return {
            "kind": kind,
            "alias": reg.CHAMPION,
            "version": version,
            "reason": f"{what}: the loaded version {version} keeps serving until a version "
            "that passed the gates holds the champion alias (e.g. `mlplatform rollback`)",
        }

    def _read_failed(self, exc: Exception) -> None:
        r = self.registry
        failures = r.failures + 1
        retry = min(
            self.refresh_seconds * 2**failures, max(MAX_BACKOFF_SECONDS, self.refresh_seconds)
        )
        self.registry = RegistryHealth(
            ok=False,
            error=f"{type(exc).__name__}: {exc}"[:500],
            since=r.since or _now(),
            failures=failures,
            failures_total=r.failures_total + 1,
            reads_total=r.reads_total + 1,
            last_ok=r.last_ok,
            retry_in_seconds=retry,
        )

    def registry_health(self) -> dict[str, Any]:
        """The ``registry`` block of ``/health``, with its counters.

        A read hanging past ``stall_seconds`` is an outage too: an SQLite store waits
        20 s on a lock before it fails.
        """
        out = asdict(self.registry)
        reading = self._reading
        if reading is not None and time.monotonic() - reading[0] > self.stall_seconds:
            waited = time.monotonic() - reading[0]
            out |= {
                "ok": False,
                "error": f"a registry read has not answered for {waited:.1f} s "
                "(store locked or unreachable)",
                "since": out["since"] or reading[1],
            }
        return out

    def start(self) -> "Runtime":
        """Load the current deployment, then follow it in the background.

        An unreadable registry does not stop the start: nothing serves (503) until the
        follower reads it.
        """
        try:
            self.refresh()
        except Exception:
            log.exception("the registry could not be followed at start; retrying")
        self._thread = threading.Thread(target=self._follow, name="registry-follower", daemon=True)
        self._thread.start()
        return self

    def _follow(self) -> None:
        delay = self.refresh_seconds
        while not self._stop.wait(delay):
            try:
                self.refresh()
                delay = self.refresh_seconds
            except Exception as exc:  # keep serving the snapshot; back off, bounded
                delay = self.registry.retry_in_seconds or self.refresh_seconds
                log.warning(
                    "registry read failed (%d in a row), serving %s; next try in %.1f s: %s",
                    self.registry.failures,
                    self.snapshot.plan,
                    delay,
                    exc,
                    exc_info=self.registry.failures == 1,
                )

    def stop(self) -> None:
        """Stop following and flush the prediction log."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.predictions.close()

    # -- pushes -----------------------------------------------------------------------
    def push(self, source: str, hour: Any, events: "pd.DataFrame") -> "PushResult":
        """One hour of a stream source's events into the online store the service reads.

        Raises:
            PushRefused: the push was refused whole (kept in the quarantine).
        """
        from mlplatform.lib.features.stream import push_hour

        return push_hour(
            self.root,
            self.problem,
            self.scorer.store,
            source,
            hour,
            events,
            now_utc(),
            store_lock=self.scorer.store_lock,
        )

    # -- answering --------------------------------------------------------------------
    def predict(self, request: Mapping[str, Any], explain: bool = False) -> dict[str, Any]:
        """Score one request; logs it whatever happens. Raises ``NoChampionError``.

        ``prediction`` is the answering version's output: the probability of the positive
        class for a ``binary`` problem, the predicted value of the target (its own units,
        never clipped) for a ``regression`` one.

        With ``explain``, the answer also carries ``contributions`` (feature → its share
        of the answering version's raw score) and ``base_value`` (the expected raw score):
        ``base_value + sum(contributions)`` is the raw score, which is the logit of
        ``prediction`` for a binary problem and ``prediction`` itself for a regression.
        """
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
            record["missing"] = json.dumps(features.missing)
            champion_p = _score(snap.champion, features.values)
            record |= {
                "champion_version": snap.champion.version,
                "champion_prediction": champion_p,
            }
            route, served, prediction = "champion", snap.champion.version, champion_p
            if snap.challenger is not None:
                record["challenger_version"] = snap.challenger.version
                try:
                    challenger_p = _score(snap.challenger, features.values)
                    record["challenger_prediction"] = challenger_p
                    if snap.plan.stage == "canary" and routes_to_challenger(key, snap.plan.share):
                        route, served, prediction = (
                            "challenger",
                            snap.challenger.version,
                            challenger_p,
                        )
                except Exception as exc:  # the champion answers; the error counts against it
                    record["challenger_error"] = f"{type(exc).__name__}: {exc}"
            answered = snap.challenger if route == "challenger" else snap.champion
            unseen = features.unseen(answered.encoding) if answered is not None else []
            record |= {"route": route, "served_version": served, "prediction": prediction}
            record |= {"unseen": json.dumps(unseen), "status": "ok"}
            answer: dict[str, Any] = {
                "request_id": record["request_id"],
                "prediction": prediction,
                "version": served,
                "route": route,
                "stage": snap.plan.stage,
                "defaulted_features": features.defaulted,
                "missing_features": features.missing,
                "unseen_categories": unseen,
            }
            if explain and answered is not None:
                values, base = answered.contributions_row(answered.encoding.row(features.values))
                contributions = dict(zip(answered.encoding.features, values, strict=True))
                answer |= {"contributions": contributions, "base_value": base}
            return answer
        except Exception as exc:
            record |= {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            raise
        finally:
            record["latency_ms"] = monotonic_ms() - started
            self.predictions.write(record)


def _score(model: "LoadedModel", values: dict[str, Any]) -> float:
    row = model.encoding.row(values)
    p = model.predict_row(row)
    if math.isnan(p):
        raise ValueError(f"version {model.version} returned NaN")
    return p


def _now() -> str:
    return now_utc().isoformat(timespec="milliseconds")
