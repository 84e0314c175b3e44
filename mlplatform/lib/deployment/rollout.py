"""Staged rollout: canary routing, the transitions, and the rules that decide the next one.

Transitions move registry aliases (the single source of truth for versions) and append
to the deployment log (stage, share, who, why). ``decide`` is the pure rule a sensor
applies to the challenger's online figures.
"""

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mlplatform.errors import PlatformError
from mlplatform.lib.deployment import registry as reg
from mlplatform.lib.deployment.log import DeploymentLog, Transition, plan
from mlplatform.lib.tracking import Tracking
from mlplatform.spec import ProblemSpec, RolloutSpec


class RolloutError(PlatformError, ValueError):
    """A transition that the current state does not allow; nothing was changed."""


def request_key(spec: ProblemSpec, request: Mapping[str, Any]) -> str:
    """The request's natural key (the target source's), as one string; times in UTC."""
    import pandas as pd

    source = spec.sources[spec.target.source]
    parts = []
    for column in source.natural_key:
        value = request.get(column)
        if column == source.event_timestamp and value is not None:
            stamp = pd.Timestamp(value)
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
            value = stamp.isoformat()
        parts.append(str(value))
    return "|".join(parts)


def canary_fraction(key: str) -> float:
    """A stable number in [0, 1) per request key: the same request always routes the same."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32


def routes_to_challenger(key: str, share: float) -> bool:
    """Whether the canary answers this request."""
    return canary_fraction(key) < share


def _state(tracking: Tracking, log: DeploymentLog, name: str):
    aliases = reg.aliases(tracking, name)
    return aliases, log.current(), plan(aliases, log.current())


def start(
    tracking: Tracking,
    log: DeploymentLog,
    name: str,
    stage: str,
    share: float,
    reason: str,
    actor: str,
) -> Transition:
    """Put the challenger in ``shadow`` or ``canary`` (share of requests it answers)."""
    _, _, p = _state(tracking, log, name)
    if p.challenger is None:
        raise RolloutError(f"{name}: no challenger alias to roll out")
    if p.champion is None:
        raise RolloutError(_no_champion(tracking, log, name))
    _require_cleared(tracking, name, p.challenger, f"{stage} not started")
    if stage == "canary" and p.stage != "shadow":
        raise RolloutError(f"{name}: canary follows shadow; version {p.challenger} is {p.stage}")
    if stage not in ("shadow", "canary"):
        raise RolloutError(f"{name}: unknown stage {stage!r}")
    return log.append(
        Transition(
            stage, p.challenger, p.champion, share if stage == "canary" else 0.0, reason, actor
        )  # type: ignore[arg-type]
    )


def promote(
    tracking: Tracking, log: DeploymentLog, name: str, reason: str, actor: str
) -> Transition:
    """Full traffic: the canary becomes ``champion``, the old champion ``previous``."""
    _, _, p = _state(tracking, log, name)
    if p.stage != "canary" or p.challenger is None or p.champion is None:
        raise RolloutError(f"{name}: only a canary is promoted (stage: {p.stage})")
    _require_cleared(tracking, name, p.challenger, "not promoted to champion")
    reg.set_alias(tracking, name, reg.PREVIOUS, p.champion)
    reg.set_alias(tracking, name, reg.CHAMPION, p.challenger)
    reg.delete_alias(tracking, name, reg.CHALLENGER)
    return log.append(Transition("full", p.challenger, p.challenger, 1.0, reason, actor))


def rollback(
    tracking: Tracking, log: DeploymentLog, name: str, reason: str, actor: str
) -> Transition:
    """Undo the latest change, in one alias move.

    With a challenger in shadow or canary, the challenger loses its alias (all traffic
    is the champion's). Otherwise the champion alias goes back to ``previous``.
    """
    aliases, _, p = _state(tracking, log, name)
    if p.challenger_active and p.challenger is not None and p.champion is not None:
        reg.delete_alias(tracking, name, reg.CHALLENGER)
        return log.append(Transition("rolled_back", p.challenger, p.champion, 0.0, reason, actor))
    previous = aliases.get(reg.PREVIOUS)
    if previous is None or previous == p.champion:
        raise RolloutError(f"{name}: nothing to roll back to (no `previous` alias)")
    _require_cleared(tracking, name, previous, "no rollback to it")
    reg.set_alias(tracking, name, reg.CHAMPION, previous)  # the move that shifts traffic
    reg.delete_alias(tracking, name, reg.PREVIOUS)
    bad = p.champion or ""
    return log.append(Transition("rolled_back", bad, previous, 0.0, reason, actor))


def _require_cleared(tracking: Tracking, name: str, version: str, refused: str) -> None:
    """Traffic goes only to a version whose recorded verdict passed (or was overridden)."""
    cleared = reg.clearance(tracking, name, version)
    if not cleared.cleared:
        raise RolloutError(f"{name}: {cleared.reason}; {refused}")


def _no_champion(tracking: Tracking, log: DeploymentLog, name: str) -> str:
    """Why there is no champion: never one yet, or the deployment log's lost its alias."""
    known = log.current().champion
    if not known:
        return f"{name}: no champion; the first model is promoted by the gates"
    gone = not reg.clearance(tracking, name, known).exists
    return (
        f"{name}: no version holds the champion alias; version {known}, the champion in the "
        f"deployment log, {'was deleted from the registry' if gone else 'lost its alias'} (a "
        "running service keeps serving it). Give the alias back to a version that passed "
        "the gates first (`mlplatform rollback` moves it to `previous`)"
    )


def kill(tracking: Tracking, log: DeploymentLog, name: str, reason: str, actor: str) -> Transition:
    """The kill switch: every request to the champion at once; the challenger keeps its alias."""
    _, _, p = _state(tracking, log, name)
    if p.champion is None:
        raise RolloutError(f"{name}: no champion to send traffic to")
    if p.challenger is None or not p.challenger_active:
        raise RolloutError(f"{name}: no challenger takes traffic; nothing to kill")
    return log.append(Transition("killed", p.challenger or "", p.champion, 0.0, reason, actor))


def apply(
    name: str,
    spec: ProblemSpec,
    root: Path,
    tracking: Tracking,
    action: str,
    reason: str,
    actor: str,
    share: float = 0.0,
) -> Transition:
    """Apply one named transition (shadow, canary, full, rollback, kill); returns its entry."""
    log = DeploymentLog(root, name)
    if action in ("shadow", "canary"):
        return start(tracking, log, name, action, share or spec.rollout.canary_share, reason, actor)
    if action == "full":
        return promote(tracking, log, name, reason, actor)
    if action == "rollback":
        return rollback(tracking, log, name, reason, actor)
    if action == "kill":
        return kill(tracking, log, name, reason, actor)
    raise RolloutError(f"{name}: unknown action {action!r}")


@dataclass(frozen=True)
class OnlineFigures:
    """The challenger's live figures since its rollout started, beside the champion's."""

    scored: int  # requests the challenger scored (shadow and canary)
    answered: int  # requests the challenger's answer was returned for (canary)
    errors: int
    p99_ms: float
    labelled: int  # scored requests whose outcome is known
    challenger_metric: float
    champion_metric: float


def decide(stage: str, figures: OnlineFigures, rollout: RolloutSpec, metric: str, direction: str):
    """The next transition for an active challenger: (action, reason) or None to wait.

    ``metric`` and ``direction`` are the spec's (``spec.metric``). Once ``min_outcomes``
    labelled requests are scored by both, the challenger is rolled back when its online
    metric is worse than the champion's by more than ``rollout.max_metric_drop``, in the
    metric's own units: an AUC lower by more than it (``maximize``), an RMSE higher by more
    than it (``minimize``, minutes for a target in minutes). Error rate and p99 latency roll
    back whatever the task.
    """
    failures = []
    if figures.scored:
        rate = figures.errors / figures.scored
        if rate > rollout.max_error_rate:
            failures.append(f"error rate {rate:.3f} > {rollout.max_error_rate}")
    if figures.answered and figures.p99_ms > rollout.max_p99_latency_ms:
        failures.append(f"p99 {figures.p99_ms:.1f} ms > {rollout.max_p99_latency_ms} ms")
    judged = figures.labelled >= rollout.min_outcomes and not math.isnan(figures.challenger_metric)
    if judged:
        drop = figures.champion_metric - figures.challenger_metric
        drop = drop if direction == "maximize" else -drop
        if drop > rollout.max_metric_drop:
            failures.append(
                f"online {metric} {figures.challenger_metric:.4f} vs champion "
                f"{figures.champion_metric:.4f} on {figures.labelled} outcomes: "
                f"{'drop' if direction == 'maximize' else 'rise'} {drop:.4f} "
                f"> {rollout.max_metric_drop}"
            )
    if failures:
        return "rollback", "; ".join(failures)
    if stage == "shadow" and figures.scored >= rollout.shadow_requests:
        return "canary", f"shadow scored {figures.scored} requests within every criterion"
    if stage == "canary" and figures.answered >= rollout.canary_requests and judged:
        return "full", (
            f"canary answered {figures.answered} requests; online {metric} "
            f"{figures.challenger_metric:.4f} vs champion {figures.champion_metric:.4f} "
            f"on {figures.labelled} outcomes"
        )
    return None


def since(transition: Transition) -> datetime:
    """When a transition happened."""
    return datetime.fromisoformat(transition.time)
