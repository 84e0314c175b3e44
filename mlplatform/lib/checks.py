"""The outcome of a check, shared by every stage's checks (kept free of heavy imports)."""

from dataclasses import asdict, dataclass, field, replace
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


def override(
    outcomes: list[CheckOutcome],
    checks: list[str],
    by: str,
    reason: str,
    allowed: tuple[str, ...] | None = None,
) -> tuple[list[CheckOutcome], list[str]]:
    """Failed checks named in ``checks`` become warnings that record who released them and why.

    The same shape as the promotion gates' override: explicit, named, with an author and a
    reason, never implied. Returns the outcomes and the checks actually overridden (a named
    check that passed is left as it is).

    Raises:
        ValueError: a name outside ``allowed`` (when given), or a missing author or reason.
    """
    if not checks:
        return outcomes, []
    if allowed is not None and (unknown := sorted(set(checks) - set(allowed))):
        raise ValueError(
            f"override: {unknown} cannot be overridden (only {list(allowed)}: the others "
            "guard what the typed table is built from)"
        )
    if not by.strip() or not reason.strip():
        raise ValueError("an override needs who (--by) and why (--reason)")
    out, applied = [], []
    for o in outcomes:
        if o.name in checks and not o.passed:
            applied.append(o.name)
            o = replace(
                o,
                severity="WARN",
                reason=f"OVERRIDDEN by {by} ({reason}): {o.reason}",
                details={**o.details, "override_by": by, "override_reason": reason},
            )
        out.append(o)
    return out, applied
