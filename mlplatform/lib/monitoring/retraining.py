"""Retraining triggers and their safety rails, as pure rules over counts and times."""

from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from mlplatform.lib.features.build import label
from mlplatform.spec import ProblemSpec, RetrainingSpec

if TYPE_CHECKING:
    from mlplatform.lib.storage import DataLake


def rails(
    rule: RetrainingSpec, now: datetime, recent: list[datetime], new_labels: int
) -> str | None:
    """Why a retrain must not start now, or None when every rail allows it.

    ``recent`` holds the start times of earlier retrains; ``new_labels`` counts labelled
    rows that arrived after the champion's training window.
    """
    if new_labels < rule.min_new_labels:
        return (
            f"only {new_labels} new labelled rows since the champion's window "
            f"(< {rule.min_new_labels})"
        )
    if recent:
        last = max(recent)
        if now - last < timedelta(hours=rule.cooldown_hours):
            return (
                f"cool-down: last retrain at {last:%Y-%m-%d %H:%M}, "
                f"{rule.cooldown_hours} h not passed"
            )
        today = [t for t in recent if now - t < timedelta(days=1)]
        if len(today) >= rule.daily_cap:
            return f"daily cap: {len(today)} retrain(s) in the last 24 h (cap {rule.daily_cap})"
    return None


def labels_after(lake: "DataLake", problem: str, spec: ProblemSpec, after: date | None) -> int:
    """Labelled rows of the target source on local days after ``after`` (all if None)."""
    days = [d for d in lake.partitions(problem, spec.target.source) if after is None or d > after]
    if not days:
        return 0
    frame = lake.read_days(problem, spec.target.source, days)
    return int(label(frame, spec.target).notna().sum())


def window_end(tags: dict[str, str]) -> date | None:
    """The last day of a version's training window, from its ``training_window`` tag."""
    window = tags.get("training_window", "")
    return date.fromisoformat(window.split("..")[-1]) if ".." in window else None
