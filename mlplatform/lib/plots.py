"""Plots a person looks at, as PNG bytes (matplotlib, no display)."""

import io
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Callable

    import lightgbm as lgb
    import numpy as np
    import optuna
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _png(fig: "Figure") -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def importance(booster: "lgb.Booster", top: int = 20) -> "Figure":
    """Total gain per feature, largest first (LightGBM's own ``plot_importance``).

    Features with no gain are left out (all are shown at zero when the booster never
    split); at most ``top`` bars.
    """
    import lightgbm as lgb
    from matplotlib.figure import Figure

    used = int((booster.feature_importance("gain") > 0).sum())
    shown = min(top, used or booster.num_feature())
    fig = Figure(figsize=(6, 0.3 * shown + 1))
    # an Axes of our own Figure: LightGBM would otherwise open a pyplot figure
    lgb.plot_importance(
        booster,
        ax=fig.subplots(),
        importance_type="gain",
        max_num_features=top,
        height=0.6,
        xlabel="total gain",
        precision=1,
        grid=False,
        ignore_zero=used > 0,  # LightGBM refuses to draw an empty importance
        xlim=None if used else (0.0, 1.0),
    )
    return fig


def mean_contributions(table: pd.DataFrame, top: int = 20, units: str = "log-odds") -> "Figure":
    """Mean absolute contribution per feature, top first (``explain.global_importance``).

    Features that contribute nothing on any row are left out. ``units``: those of the raw
    score (``log-odds`` for a binary model, the target's units for regression).
    """
    from matplotlib.figure import Figure

    rows = table[table["mean_abs_contribution"] > 0].head(top).iloc[::-1]
    fig = Figure(figsize=(6, 0.3 * len(rows) + 1))
    ax = fig.subplots()
    ax.barh(rows["feature"], rows["mean_abs_contribution"])
    ax.set_xlabel(f"mean |contribution| to the raw score ({units})")
    ax.set_title("Global importance on the holdout")
    return fig


def _detached(make: "Callable[[], Axes]") -> "Figure":
    """The figure of Optuna's matplotlib plot, without its side effects on pyplot.

    Optuna draws through pyplot: it sets the ggplot style for the whole process and leaves
    the figure open in pyplot's registry. The style is undone on leaving ``rc_context``,
    and the figure is closed in pyplot (it stays drawable: savefig, ``mlflow.log_figure``),
    so a long process (the replay, a code server) neither changes other plots nor leaks.
    """
    import warnings

    import optuna
    from matplotlib import pyplot as plt
    from matplotlib.figure import Figure

    with plt.rc_context(), warnings.catch_warnings():
        # Optuna marks its matplotlib backend experimental (since 2.2)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fig = make().get_figure(root=True)
    assert isinstance(fig, Figure)
    plt.close(fig)
    return fig


def optimization_history(study: "optuna.Study", metric: str) -> "Figure":
    """Each complete trial's value and the best so far (Optuna's own plot).

    Pruned trials have no value and are not drawn; their count is in the run's metrics.
    """
    from optuna.visualization.matplotlib import plot_optimization_history

    return _detached(lambda: plot_optimization_history(study, target_name=f"validation {metric}"))


def param_importances(study: "optuna.Study", metric: str) -> "Figure | None":
    """How much each searched hyper-parameter explains the metric (Optuna's own plot).

    ``None`` when the study cannot say: fewer than two complete trials, or no parameter
    that took more than one value.
    """
    from optuna.trial import TrialState
    from optuna.visualization.matplotlib import plot_param_importances

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varied = {n for t in done for n in t.params if len({str(u.params.get(n)) for u in done}) > 1}
    if len(done) < 2 or not varied:
        return None
    return _detached(
        lambda: plot_param_importances(
            study, params=sorted(varied), target_name=f"validation {metric}"
        )
    )


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


def residuals(y: "np.ndarray", predictions: dict[str, "np.ndarray"]) -> "Figure":
    """Residual (actual - predicted) against the prediction, for each model (regression).

    A model without bias scatters around 0 at every prediction; a funnel shows errors that
    grow with the value, a slope a bias that depends on it.
    """
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    for name, p in predictions.items():
        residual = np.asarray(y, float) - np.asarray(p, float)
        ax.scatter(p, residual, s=4, alpha=0.4, label=f"{name} (mean {residual.mean():.3g})")
    ax.axhline(0, linestyle=":", color="grey")
    ax.set_xlabel("predicted")
    ax.set_ylabel("residual (actual - predicted)")
    ax.set_title("Residuals on the holdout")
    ax.legend(loc="upper left", fontsize="small")
    return fig


def predicted_vs_actual(y: "np.ndarray", predictions: dict[str, "np.ndarray"]) -> "Figure":
    """Actual against predicted value for each model, with the diagonal (regression)."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    values = [np.asarray(y, float), *(np.asarray(p, float) for p in predictions.values())]
    low = min(float(np.nanmin(v)) for v in values)
    high = max(float(np.nanmax(v)) for v in values)
    for name, p in predictions.items():
        ax.scatter(p, y, s=4, alpha=0.4, label=name)
    ax.plot([low, high], [low, high], linestyle=":", color="grey")
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Predicted against actual on the holdout")
    ax.legend(loc="upper left", fontsize="small")
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
