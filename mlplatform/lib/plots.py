"""Plots a person looks at, as PNG bytes (matplotlib, no display)."""

import io
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    import lightgbm as lgb
    import numpy as np
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


def mean_contributions(table: pd.DataFrame, top: int = 20) -> "Figure":
    """Mean absolute contribution per feature (``lib.explain.global_importance``), top first.

    Features that contribute nothing on any row are left out.
    """
    from matplotlib.figure import Figure

    rows = table[table["mean_abs_contribution"] > 0].head(top).iloc[::-1]
    fig = Figure(figsize=(6, 0.3 * len(rows) + 1))
    ax = fig.subplots()
    ax.barh(rows["feature"], rows["mean_abs_contribution"])
    ax.set_xlabel("mean |contribution| to the raw score (log-odds)")
    ax.set_title("Global importance on the holdout")
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


def roc(y: "np.ndarray", predictions: dict[str, "np.ndarray"]) -> "Figure":
    """ROC curve of each model on the same labels."""
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    for name, p in predictions.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC on the holdout")
    ax.legend(loc="lower right")
    return fig


def calibration(tables: dict[str, pd.DataFrame]) -> "Figure":
    """Observed rate against mean prediction per probability bin, for each model."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    for name, table in tables.items():
        ax.plot(table["predicted"], table["observed"], marker="o", label=name)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate")
    ax.set_title("Calibration on the holdout")
    ax.legend(loc="upper left")
    return fig


def forest(rows: list[dict], tolerance: float, title: str = "Candidate - champion") -> "Figure":
    """Each comparison's difference with its interval, one line per slice (a forest plot).

    Args:
        rows: records with ``label``, ``difference``, ``low``, ``high`` and ``decision``
            (``REFUSED`` drawn in red, ``NOT JUDGED`` rows left out by the caller).
        tolerance: where a drop becomes a refusal, drawn as a dashed line at ``-tolerance``
            (differences in the metric's better direction, positive: the candidate is better).
        title: the figure's title.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 0.28 * len(rows) + 1.4))
    ax = fig.subplots()
    for i, r in enumerate(reversed(rows)):
        color = "tab:red" if r["decision"] == "REFUSED" else "tab:blue"
        ax.plot([r["low"], r["high"]], [i, i], color=color, linewidth=2)
        ax.plot([r["difference"]], [i], marker="o", color=color)
    ax.set_yticks(range(len(rows)), [r["label"] for r in reversed(rows)])
    ax.axvline(0, color="grey", linestyle=":")
    ax.axvline(-tolerance, color="tab:red", linestyle="--", label=f"-tolerance ({tolerance})")
    ax.set_xlabel("difference (candidate - champion), with its interval")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    return fig
