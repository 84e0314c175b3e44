"""Alerts: what happened, its numbers and the runbook to open; sent once, logged always.

An ``Alert`` is built from what the platform recorded (a refused version, a rollback, a
drift report, a stale asset, a failed run, a day's skew). ``deliver`` appends it to the
problem's local alert log (JSON lines, ``alerts/<problem>/alerts.jsonl`` under the data
folder) and, with a webhook, POSTs it there (the alert as JSON, or Slack's ``{"text": ...}``)
with a timeout and retries (urllib3's ``Retry``). A webhook that fails never loses the
alert: the log line records the failure. ``Cooldown`` keeps a lasting condition from
being sent on every report: one alert per dedup key per cool-down.

No Dagster here: the sensor (``defs/monitoring/alerts.py``) reads the instance and calls
these functions.
"""

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlplatform.settings import now
from mlplatform.spec import AlertKind, AlertsSpec

WEBHOOK_VAR = "MLPLATFORM_ALERT_WEBHOOK"
RUNBOOKS: dict[str, str] = {
    "gate_failed": "docs/runbooks/gate-failed.md",
    "rolled_back": "docs/runbooks/rollback.md",
    "drift": "docs/runbooks/drift.md",
    "freshness": "docs/runbooks/stale-data.md",
    "run_failed": "docs/runbooks/failed-run.md",
    "skew": "docs/runbooks/serving-skew.md",
}
TITLES: dict[str, str] = {
    "gate_failed": "a candidate failed the promotion gates",
    "rolled_back": "a rollout was rolled back",
    "drift": "drift over the threshold",
    "freshness": "an asset is late (freshness policy failed)",
    "run_failed": "a run failed",
    "skew": "train/serve skew at ERROR",
}
RETRY_STATUSES = (429, 500, 502, 503, 504)
BACKOFF_SECONDS = 0.5  # urllib3 doubles it per retry: 0.5 s, 1 s, 2 s ...
BACKOFF_MAX_SECONDS = 4.0


@dataclass(frozen=True)
class Alert:
    """One alert.

    ``key`` names the condition for the cool-down: a lasting one (``drift``) shares its
    key across reports; a one-off event (a rollback) has a key of its own.
    ``figures`` holds the numbers (scalars or short lists), ``subject`` what it is about
    (``asset``, ``partition``, ``run_id``, ``version``, ``job``: those that apply).
    """

    kind: AlertKind
    problem: str
    summary: str
    key: str
    subject: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    severity: str = "error"
    time: str = field(default_factory=lambda: now().isoformat(timespec="seconds"))

    @property
    def runbook(self) -> str:
        """The runbook to open, relative to the repository root."""
        return RUNBOOKS[self.kind]

    @property
    def title(self) -> str:
        """What kind of thing happened, in words."""
        return TITLES[self.kind]

    def to_dict(self) -> dict[str, Any]:
        """The alert as plain JSON-ready values, runbook and title included."""
        return {**asdict(self), "title": self.title, "runbook": self.runbook}

    def text(self, held_back: int = 0) -> str:
        """The alert as a few lines of text (the Slack message, the sensor's log line).

        ``held_back``: alerts of the same key the cool-down held back before this one.
        """
        about = " · ".join(f"{k} {v}" for k, v in self.subject.items() if v)
        numbers = ", ".join(f"{k}={_short(v)}" for k, v in self.figures.items())
        lines = [
            f"[{self.problem}] {self.title} ({self.severity})",
            self.summary,
            *([about] if about else []),
            *([f"figures: {numbers}"] if numbers else []),
            *(
                [f"({held_back} more held back by the cool-down since the last one)"]
                if held_back
                else []
            ),
            f"runbook: {self.runbook}",
        ]
        return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return (
            "["
            + ", ".join(_short(v) for v in value[:8])
            + (", ..." if len(value) > 8 else "")
            + "]"
        )
    return str(value)


def payload(alert: Alert, fmt: str, held_back: int = 0) -> dict[str, Any]:
    """The webhook body: ``{"text": ...}`` for ``slack``, else the alert with its text.

    The JSON body is the alert (``to_dict``) with ``held_back_before`` and ``text``.
    """
    if fmt == "slack":
        return {"text": alert.text(held_back)}
    return {**alert.to_dict(), "held_back_before": held_back, "text": alert.text(held_back)}


def webhook_url(spec: AlertsSpec) -> str:
    """The webhook to POST to: ``MLPLATFORM_ALERT_WEBHOOK`` if set, else the spec's (may be "")."""
    return os.environ.get(WEBHOOK_VAR) or spec.webhook_url


def redact(url: str) -> str:
    """Scheme, host and port only: a webhook's path often carries its secret token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.netloc else "(invalid url)"


@dataclass(frozen=True)
class Delivery:
    """How a POST to the webhook went: ``ok`` on a 2xx answer."""

    url: str  # redacted
    ok: bool
    status: int | None
    attempts: int
    error: str | None = None
    seconds: float = 0.0


def post(url: str, body: Mapping[str, Any], timeout_seconds: float, retries: int) -> Delivery:
    """POST ``body`` as JSON, retrying connection errors and 429/5xx answers with backoff.

    Never raises: a webhook that cannot be reached is a ``Delivery`` with ``ok=False`` and
    the error. At most ``retries + 1`` attempts of ``timeout_seconds`` each, plus backoff
    (0.5 s doubling, at most 4 s); a ``Retry-After`` header is not waited on, so one
    alert never holds the sensor's tick for long.
    """
    import time

    import urllib3

    retry = urllib3.Retry(
        total=retries,
        backoff_factor=BACKOFF_SECONDS,
        backoff_max=BACKOFF_MAX_SECONDS,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,  # POST too: a duplicate alert beats a lost one
        raise_on_status=False,
        respect_retry_after_header=False,
    )
    started = time.perf_counter()
    shown = redact(url)
    try:
        with urllib3.PoolManager(timeout=urllib3.Timeout(total=timeout_seconds)) as http:
            response = http.request("POST", url, json=dict(body), retries=retry)
    except (urllib3.exceptions.HTTPError, ValueError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return Delivery(
            shown,
            False,
            None,
            retries + 1,
            f"{type(reason).__name__}: {reason}"[:300],
            time.perf_counter() - started,
        )
    history = response.retries.history if response.retries else ()
    ok = 200 <= response.status < 300
    return Delivery(
        shown,
        ok,
        response.status,
        len(history) + 1,
        None if ok else f"HTTP {response.status}: {response.data[:200].decode(errors='replace')}",
        time.perf_counter() - started,
    )


class AlertLog:
    """The problem's local alert log: one JSON line per alert, with how its webhook went."""

    def __init__(self, root: Path, problem: str) -> None:
        self.path = root / "alerts" / problem / "alerts.jsonl"

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one line durably (flush + fsync)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def entries(self) -> list[dict[str, Any]]:
        """Every record, oldest first; a torn last line (a crash mid-write) is skipped."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def summary(self) -> dict[str, Any]:
        """The ``alerts`` block of ``mlplatform status``.

        Returns:
            ``{sent, by_kind, webhook_delivered, webhook_failed, last, log}``: alerts
            raised (each is in the log), per kind, POSTs that succeeded and failed, the
            newest record, and the log's path.
        """
        entries = self.entries()
        hooks = [e["webhook"] for e in entries if e.get("webhook")]
        kinds: dict[str, int] = {}
        for e in entries:
            kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
        return {
            "sent": len(entries),
            "by_kind": kinds,
            "webhook_delivered": sum(1 for h in hooks if h["ok"]),
            "webhook_failed": sum(1 for h in hooks if not h["ok"]),
            "last": entries[-1] if entries else None,
            "log": str(self.path),
        }


def deliver(
    alert: Alert, spec: AlertsSpec, log: AlertLog, held_back: int = 0, try_webhook: bool = True
) -> dict[str, Any]:
    """Send ``alert`` to the webhook (if any), then append it to the log with the outcome.

    ``held_back``: alerts of the same key the cool-down held back since the last one sent.
    ``try_webhook`` False records the webhook as not attempted (it failed earlier in the
    same tick: one dead webhook must not hold a tick for every alert's retries).
    A failing webhook is recorded in the line (``webhook.ok`` false, its error), never
    raised. Returns the record written.

    Raises:
        OSError: the log cannot be written (the sensor's tick fails and is retried with
            its cursor unmoved, so the alert is not lost).
    """
    url = webhook_url(spec)
    if not url:
        delivery = None
    elif not try_webhook:
        delivery = Delivery(
            redact(url), False, None, 0, "not attempted: it failed earlier this tick"
        )
    else:
        body = payload(alert, spec.webhook_format, held_back)
        delivery = post(url, body, spec.timeout_seconds, spec.retries)
    record = {
        **alert.to_dict(),
        "held_back_before": held_back,
        "webhook": asdict(delivery) if delivery else None,
    }
    log.append(record)
    return record


@dataclass
class Cooldown:
    """When each dedup key was last sent, and how many of it were held back since.

    Kept in the alert sensor's cursor (``to_json``), so it survives ticks and restarts.
    """

    sent: dict[str, str] = field(default_factory=dict)  # key -> ISO time last sent
    held: dict[str, int] = field(default_factory=dict)  # key -> held back since then

    def admit(self, alert: Alert, at: datetime, hours: float) -> int | None:
        """Whether to send ``alert`` at ``at``: the count held back before it, or None to hold.

        Sending records ``at`` for its key; holding counts it.
        """
        last = self.sent.get(alert.key)
        if last is not None and at < datetime.fromisoformat(last) + timedelta(hours=hours):
            self.held[alert.key] = self.held.get(alert.key, 0) + 1
            return None
        self.sent[alert.key] = at.isoformat()
        return self.held.pop(alert.key, 0)

    def prune(self, at: datetime, hours: float) -> None:
        """Forget keys whose cool-down ended with nothing held back (the cursor stays small)."""
        for key, last in list(self.sent.items()):
            if at >= datetime.fromisoformat(last) + timedelta(hours=hours) and not self.held.get(
                key
            ):
                del self.sent[key]

    def to_json(self) -> dict[str, Any]:
        """Plain values for the cursor."""
        return {"sent": self.sent, "held": self.held}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "Cooldown":
        """Back from ``to_json`` (an empty one for None)."""
        data = data or {}
        return cls(dict(data.get("sent", {})), dict(data.get("held", {})))


def scalars(metadata: Mapping[str, Any], limit: int = 12) -> dict[str, Any]:
    """The numbers and short texts of a metadata mapping, for ``Alert.figures``."""
    out: dict[str, Any] = {}
    for name, value in metadata.items():
        if isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) < 200):
            out[name] = value
        if len(out) >= limit:
            break
    return out
