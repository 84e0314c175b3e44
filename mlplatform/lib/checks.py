"""The outcome of a check, shared by every stage's checks (kept free of heavy imports)."""

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["WARN", "ERROR"]


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one check: pass or fail, severity, a one-line reason, JSON-able details."""

    name: str
    passed: bool
    severity: Severity
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> bool:
        """A failed ERROR check stops what depends on it."""
        return not self.passed and self.severity == "ERROR"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for reports."""
        return asdict(self)
