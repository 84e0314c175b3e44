"""Deployment state: an append-only log of rollout transitions, and the rules between them.

The registry's aliases say *which* versions exist in which role (``champion``,
``challenger``, ``previous``); this log says *how* the challenger takes traffic (stage and
share), who moved it and why. The newest entry is the current state. Lines are appended
with a flush and fsync, so a transition that returned is on disk.
"""

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mlplatform.settings import now

Stage = Literal["none", "shadow", "canary", "full", "rolled_back", "killed"]
# stages in which the challenger is scored on live requests
ACTIVE: tuple[Stage, ...] = ("shadow", "canary")


@dataclass(frozen=True)
class Transition:
    """One entry of the deployment log."""

    stage: Stage
    version: str  # the version the transition is about (the challenger, or the new champion)
    champion: str  # the champion after the transition
    share: float  # the share of requests the challenger answers
    reason: str
    actor: str
    time: str = field(default_factory=lambda: now().isoformat(timespec="milliseconds"))

    def to_json(self) -> str:
        """One log line."""
        return json.dumps(asdict(self), sort_keys=True)


NONE = Transition("none", "", "", 0.0, "nothing deployed yet", "platform", "")
REPLACED = "replaced by version"  # a rollout ended by a newer challenger, not by its figures


def kind(stage: str, reason: str) -> str:
    """A transition's kind: its stage, or ``replaced`` for a rollout a newer one ended."""
    return "replaced" if stage == "rolled_back" and reason.startswith(REPLACED) else stage


def is_rollback(transition: Transition) -> bool:
    """A challenger taken back for its figures or by hand, not replaced by a newer one."""
    return kind(transition.stage, transition.reason) == "rolled_back"


class DeploymentLog:
    """The append-only log of one problem, under the data folder."""

    def __init__(self, root: Path, problem: str) -> None:
        self.path = root / "deployments" / problem / "log.jsonl"

    def append(self, transition: Transition) -> Transition:
        """Write one entry durably (flush + fsync) and return it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(transition.to_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return transition

    def entries(self) -> list[Transition]:
        """Every entry, oldest first; a torn last line (a crash mid-write) is skipped."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(Transition(**json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                continue
        return out

    def current(self) -> Transition:
        """The newest entry, or ``NONE``."""
        entries = self.entries()
        return entries[-1] if entries else NONE

    def mtime(self) -> float:
        """When the log last changed (0 when it does not exist): a cheap change probe."""
        try:
            return self.path.stat().st_mtime
        except FileNotFoundError:
            return 0.0


@dataclass(frozen=True)
class Plan:
    """Who answers requests: the champion, and the challenger with its stage and share."""

    champion: str | None
    challenger: str | None
    stage: Stage
    share: float

    @property
    def challenger_active(self) -> bool:
        """The challenger is scored on live requests (shadow or canary)."""
        return self.challenger is not None and self.stage in ACTIVE


def plan(aliases: dict[str, str], current: Transition) -> Plan:
    """What serves, from the registry's aliases and the log's newest entry.

    The challenger takes part only when the log's entry is about that very version: a
    new challenger alias without a transition waits for the rollout to start it.
    """
    champion = aliases.get("champion")
    challenger = aliases.get("challenger")
    if challenger is None or challenger == champion or current.version != challenger:
        return Plan(champion, challenger, "none", 0.0)
    share = current.share if current.stage == "canary" else 0.0
    return Plan(champion, challenger, current.stage, share)


def status(aliases: dict[str, str], current: Transition) -> dict[str, Any]:
    """The ``deployment`` block of ``mlplatform status``."""
    p = plan(aliases, current)
    if p.challenger_active:
        stage = p.stage
    elif (
        p.challenger is not None and p.challenger != p.champion and current.version != p.challenger
    ):
        stage = "pending"  # a challenger waits for the rollout sensor to start its shadow
    else:
        stage = current.stage  # full, rolled_back, killed, or none
    return {
        "stage": stage,
        "champion": p.champion,
        "challenger": p.challenger,
        "canary_share": p.share,
        "last_transition": asdict(current) if current.time else None,
    }
