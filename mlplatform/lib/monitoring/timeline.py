"""A replay's timeline: per day, what was served and how it did, drift, and what changed.

Three tables under the replay's folder, rewritten after each day so an interrupted replay
keeps what it did:

- ``timeline.csv``: one row per day: requests, labelled outcomes, the deployment at the
  day's end, the spec's metric of the answers served and of the frozen first model on the
  same requests, drift, and the day's events in words;
- ``versions.csv``: per day and model version, its metric on the day's labelled requests
  (the champion's and an active challenger's scores are logged for every request);
- ``events.csv``: retrains (trigger, candidate, verdict) and rollout transitions.

Then ``timeline.png`` and ``timeline.html`` (the plot, the events, the days).
"""

import base64
import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.lib.evaluation.metrics import metric

ROLLING_DAYS = 7


@dataclass
class Event:
    """Something that changed the platform on a day."""

    day: date
    time: str
    kind: str  # retrain, shadow, canary, full, rolled_back, replaced (by a newer one), killed
    version: str
    detail: str


@dataclass
class Timeline:
    """Accumulates a replay's days; writes the tables, the plot and the page."""

    problem: str
    metric_name: str
    frozen_version: str
    folder: Path
    days: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # every labelled answer of the replay: label, served prediction, frozen prediction
    _labels: list[np.ndarray] = field(default_factory=list)
    _served: list[np.ndarray] = field(default_factory=list)
    _frozen: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def load(cls, folder: Path, problem: str, metric_name: str) -> "Timeline":
        """A written timeline read back (days, versions, events), to plot it again."""
        from mlplatform.lib.deployment.log import kind

        versions = pd.read_csv(folder / "versions.csv")
        frozen = versions.loc[versions["role"] == "frozen", "version"].iloc[0]
        events = [
            Event(
                date.fromisoformat(str(e["day"])),
                str(e["time"]),
                kind(str(e["kind"]), str(e["detail"])),
                "" if pd.isna(e["version"]) else str(e["version"]),
                str(e["detail"]),
            )
            for e in pd.read_csv(folder / "events.csv").to_dict("records")
        ]
        return cls(
            problem,
            metric_name,
            str(frozen).removeprefix("frozen "),
            folder,
            days=_records(pd.read_csv(folder / "timeline.csv")),
            versions=_records(versions),
            events=events,
        )

    def _metric(self, y: np.ndarray, p: np.ndarray) -> float:
        return metric(self.metric_name, y, p) if len(y) else math.nan

    def add_day(
        self,
        day: date,
        outcomes: pd.DataFrame,
        frozen: pd.Series,
        deployment: dict[str, Any],
        drift: dict[str, Any],
        events: list[Event],
        failed: int = 0,
        cost: dict[str, Any] | None = None,
        skew: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record one day from its monitored requests (``online_outcomes``) and their fate.

        ``skew``: the day's ``serving_skew`` figures (``skew_share``: share of compared
        requests whose served vector differs from its point-in-time rebuild;
        ``worst_feature``).
        """
        skew = skew or {}
        known = outcomes["label"].notna() if len(outcomes) else pd.Series(dtype=bool)
        y = outcomes.loc[known, "label"].to_numpy(dtype=float) if len(outcomes) else np.array([])
        served = outcomes.loc[known, "prediction"].to_numpy(dtype=float) if len(y) else y
        froze = frozen[known].to_numpy(dtype=float) if len(y) else y
        self._labels.append(y)
        self._served.append(served)
        self._frozen.append(froze)
        for role in ("champion", "challenger"):
            if f"{role}_version" not in outcomes or not len(y):
                continue
            scored = outcomes[known & outcomes[f"{role}_prediction"].notna()]
            for version, rows in scored.groupby(f"{role}_version"):
                self.versions.append(
                    {
                        "day": day.isoformat(),
                        "version": str(version),
                        "role": role,
                        "scored": len(rows),
                        "answered": int((rows["served_version"] == version).sum()),
                        self.metric_name: self._metric(
                            rows["label"].to_numpy(dtype=float),
                            rows[f"{role}_prediction"].to_numpy(dtype=float),
                        ),
                    }
                )
        self.versions.append(
            {
                "day": day.isoformat(),
                "version": f"frozen {self.frozen_version}",
                "role": "frozen",
                "scored": len(froze),
                "answered": 0,
                self.metric_name: self._metric(y, froze),
            }
        )
        self.events += events
        row = {
            "day": day.isoformat(),
            "requests": len(outcomes),
            "failed_requests": failed,
            "labelled": len(y),
            **deployment,
            f"online_{self.metric_name}": self._metric(y, served),
            f"frozen_{self.metric_name}": self._metric(y, froze),
            "drift_share": drift.get("drift_share", math.nan),
            "prediction_drift_score": drift.get("prediction_drift_score", math.nan),
            "drifted": drift.get("drifted"),
            "skew_share": skew.get("skew_share", math.nan),
            "skew_worst_feature": skew.get("worst_feature") or "",
            "events": "; ".join(f"{e.kind} {e.version}".strip() for e in events),
            **(cost or {}),
        }
        self.days.append(row)
        return row

    def summary(self) -> dict[str, Any]:
        """Totals: days, requests, retrains, promotions, rollbacks, metric served and frozen."""
        y = np.concatenate(self._labels) if self._labels else np.array([])
        served = np.concatenate(self._served) if self._served else y
        frozen = np.concatenate(self._frozen) if self._frozen else y
        kinds = [e.kind for e in self.events]
        return {
            "days": len(self.days),
            "requests": int(sum(d["requests"] for d in self.days)),
            "labelled": len(y),
            "retrains": kinds.count("retrain"),
            "promotions": kinds.count("full"),
            "rollbacks": kinds.count("rolled_back"),
            "replaced": kinds.count("replaced"),
            f"online_{self.metric_name}": self._metric(y, served),
            f"frozen_{self.metric_name}": self._metric(y, frozen),
            "frozen_version": self.frozen_version,
            "skew_share": _weighted_skew(self.days),
        }

    def write(self, plot: bool = True) -> Path:
        """Write the tables (and the plot and page); return the day table's path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        table = self.folder / "timeline.csv"
        pd.DataFrame(self.days).to_csv(table, index=False)
        pd.DataFrame(self.versions).to_csv(self.folder / "versions.csv", index=False)
        pd.DataFrame([vars(e) for e in self.events]).to_csv(self.folder / "events.csv", index=False)
        if plot and self.days:
            png = figure_png(self)
            (self.folder / "timeline.png").write_bytes(png)
            (self.folder / "timeline.html").write_text(page(self, png), encoding="utf-8")
        return table


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def replays_dir(root: Path, problem: str) -> Path:
    """Where the replays of ``problem`` keep their state and timelines."""
    return root / "replays" / problem


def replay_dir(root: Path, problem: str, start: date, end: date) -> Path:
    """The folder of one replayed range's timeline."""
    return replays_dir(root, problem) / f"{start}_{end}"


def latest_timeline(root: Path, problem: str) -> Path | None:
    """The day table of the most recent replay of ``problem`` under ``root``, if any."""
    tables = sorted(
        replays_dir(root, problem).glob("*/timeline.csv"), key=lambda p: p.stat().st_mtime
    )
    return tables[-1] if tables else None


def figure_png(timeline: Timeline) -> bytes:
    """The metric served against the frozen model, drift below, events as vertical lines."""
    from matplotlib.figure import Figure

    from mlplatform.lib.plots import png

    days = pd.DataFrame(timeline.days)
    x = pd.to_datetime(days["day"])
    name = timeline.metric_name
    fig = Figure(figsize=(12, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for column, label, style, colour in (
        (f"online_{name}", "served (retrained platform)", "-", "tab:blue"),
        (f"frozen_{name}", f"frozen first model (v{timeline.frozen_version})", "--", "tab:brown"),
    ):
        values = days[column].astype(float)
        top.plot(x, values, style, color=colour, alpha=0.25, linewidth=0.8)
        smooth = values.rolling(ROLLING_DAYS, min_periods=1).mean()
        top.plot(
            x, smooth, style, color=colour, linewidth=2, label=f"{label}, {ROLLING_DAYS}-day mean"
        )
    colours = {"retrain": "grey", "full": "green", "rolled_back": "red", "killed": "black"}
    seen: set[str] = set()
    for event in timeline.events:
        if event.kind not in colours:
            continue
        label = None if event.kind in seen else event.kind.replace("_", " ")
        seen.add(event.kind)
        style = ":" if event.kind == "retrain" else "-"
        top.axvline(
            pd.Timestamp(event.day), color=colours[event.kind], linestyle=style, label=label
        )
    top.set_ylabel(f"online {name}")
    top.set_title(f"{timeline.problem}: replay {days['day'].iloc[0]} .. {days['day'].iloc[-1]}")
    top.legend(loc="lower left", fontsize=8)
    bottom.bar(x, days["drift_share"].astype(float), color="orange", label="drifted feature share")
    bottom.plot(
        x, days["prediction_drift_score"].astype(float), color="purple", label="prediction drift"
    )
    bottom.set_ylabel("drift")
    bottom.legend(loc="upper left", fontsize=8)
    return png(fig)


def page(timeline: Timeline, png: bytes) -> str:
    """A self-contained HTML page: summary, plot, events, days."""
    summary = timeline.summary()
    image = base64.b64encode(png).decode()
    events = pd.DataFrame([vars(e) for e in timeline.events])
    days = pd.DataFrame(timeline.days)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{timeline.problem} replay</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
        f"<h1>{timeline.problem}: replay timeline</h1>"
        + pd.DataFrame([summary]).to_html(index=False)
        + f"<p><img alt='timeline' src='data:image/png;base64,{image}'></p><h2>Events</h2>"
        + (events.to_html(index=False) if len(events) else "<p>none</p>")
        + "<h2>Days</h2>"
        + days.to_html(index=False, float_format=lambda v: f"{v:.4f}")
        + "</body></html>"
    )


def _weighted_skew(days: list[dict[str, Any]]) -> float:
    """Share of all requests served skewed: the days' skew shares weighted by requests."""
    known = [
        (d["skew_share"], d["requests"])
        for d in days
        if d.get("skew_share") == d.get("skew_share") and d.get("skew_share") is not None
    ]
    total = sum(n for _, n in known)
    return sum(s * n for s, n in known) / total if total else math.nan
