"""Plots a person looks at, as PNG bytes (matplotlib, no display)."""

import io
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    import lightgbm as lgb
    from matplotlib.figure import Figure


def _png(fig: "Figure") -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def importance(booster: "lgb.Booster", top: int = 20) -> "Figure":
    """Total gain per feature, largest first."""
    from matplotlib.figure import Figure

    gains = pd.Series(booster.feature_importance("gain"), index=booster.feature_name())
    gains = gains.sort_values().tail(top)
    fig = Figure(figsize=(6, 0.3 * len(gains) + 1))
    ax = fig.subplots()
    ax.barh(gains.index, gains.to_numpy())
    ax.set_xlabel("total gain")
    ax.set_title("Feature importance")
    return fig


def optimization_history(history: pd.DataFrame, metric: str) -> "Figure":
    """Each trial's value and the best so far; pruned trials marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    done = history[history["state"] == "COMPLETE"]
    pruned = history[history["state"] == "PRUNED"]
    ax.scatter(done["trial"], done["value"], label="complete", s=18)
    ax.scatter(pruned["trial"], [done["value"].min()] * len(pruned), marker="x", label="pruned")
    ax.plot(done["trial"], done["value"].cummax(), label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("Optimization history")
    ax.legend()
    return fig


def png(fig: "Figure") -> bytes:
    """The figure as PNG bytes."""
    return _png(fig)
