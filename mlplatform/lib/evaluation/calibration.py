"""How often the comparison gates are wrong, measured on a problem's own data.

- A/A: pairs of models trained on the same training set with different seeds (bagging and
  feature sampling below 1, so the seed matters): no real difference, so every refusal is a
  false refusal.
- Power: the second model of each pair made worse on purpose by a known amount of the spec's
  metric, in its units, overall or on one slice (``degrade``: a binary model's probabilities
  on those rows blended with a shuffle of themselves, a regression model's values plus seeded
  Gaussian noise, the weight found by bisection so that the metric on those rows worsens by
  the injected size): the share refused per injected size.
- Thresholds: per slice, the standard error of the paired difference and the smallest drop
  the spec's rule refuses (tolerance + z * se, z of the first Holm step), so a user tunes
  tolerances and confidence with numbers.

The gates judged are the platform's own (``lib.evaluation.gates``), fed exactly as the evaluation
report feeds them. Pure: frames in, records out; no Dagster.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlplatform.lib import markdown
from mlplatform.lib.names import NO_REGRESSION, NO_SLICE_REGRESSION
from mlplatform.spec import ProblemSpec

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.figure import Figure

    from mlplatform.problems import Problem

# Cheap fixed-parameter fits: what matters is the seed-to-seed noise of a reasonable model,
# not the best model. Sampling below 1 makes each seed a different model.
CALIBRATION_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 50,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "feature_fraction": 0.8,
    # one thread: a fit is small, and OpenMP threads spin badly on a shared, busy machine
    "num_threads": 1,
}
CALIBRATION_ROUNDS = 150
OVERALL_SIZES = (0.01, 0.02, 0.03, 0.05)  # AUC drops (roc_auc's defaults)
SLICE_SIZES = (0.03, 0.05, 0.08)
# Any other metric: its sizes are these multiples of the spec's tolerances (max_regression
# overall, slice_tolerance on a slice), in the metric's units; for flight_delay's AUC gates
# (0.025, 0.03) they are the sizes above.
OVERALL_MULTIPLES = (0.4, 0.8, 1.2, 2.0)
SLICE_MULTIPLES = (1.0, 5 / 3, 8 / 3)


def default_sizes(spec: ProblemSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Injected sizes (overall, slice) in the units of the spec's metric."""
    if spec.metric.name == "roc_auc":
        return OVERALL_SIZES, SLICE_SIZES
    g = spec.gates
    return (
        tuple(round(k * g.max_regression, 6) for k in OVERALL_MULTIPLES),
        tuple(round(k * g.slice_tolerance, 6) for k in SLICE_MULTIPLES),
    )


GATES = (NO_REGRESSION, NO_SLICE_REGRESSION)


class Models:
    """Fixed-parameter LightGBM fits of one training set, scored on one holdout."""

    def __init__(
        self,
        training: pd.DataFrame,
        holdout: pd.DataFrame,
        spec: ProblemSpec,
        params: dict[str, Any] | None = None,
        rounds: int = CALIBRATION_ROUNDS,
    ) -> None:
        import lightgbm as lgb

        from mlplatform.lib.features.feature_store import feature_matrix
        from mlplatform.lib.training import model as tr

        matrix = feature_matrix(training, spec)
        self.encoding = tr.fit_encoding(matrix, spec)
        x = self.encoding.matrix(matrix)
        self.data = lgb.Dataset(
            x,
            label=training[spec.target.name].to_numpy(),
            init_score=self.encoding.offset(x),
            feature_name=self.encoding.features,
            categorical_feature=self.encoding.categorical_indices,
            free_raw_data=False,
            params={"feature_pre_filter": False, "verbosity": -1},
        )
        self.holdout = self.encoding.matrix(feature_matrix(holdout, spec))
        self.monotone = tr.monotone_constraints(spec)
        self.metric = spec.metric.name
        self.params = {**CALIBRATION_PARAMS, **(params or {})}
        self.rounds = rounds

    def predict(self, seed: int) -> np.ndarray:
        """Holdout predictions of the model fitted with ``seed``, shape (holdout rows,).

        Probabilities for a binary metric, values for a regression one (the spec's task).
        """
        import lightgbm as lgb

        from mlplatform.lib.training.model import base_params

        params = {**base_params(seed, self.monotone, self.metric), **self.params, "metric": "none"}
        booster = lgb.train(params, self.data, num_boost_round=self.rounds)
        out = np.asarray(booster.predict(self.holdout), dtype=float)
        start = self.encoding.offset(self.holdout)
        return out if start is None else out + start


def degrade(
    y: np.ndarray,
    p: np.ndarray,
    mask: np.ndarray,
    size: float,
    seed: int,
    metric: str = "roc_auc",
) -> tuple[np.ndarray, float]:
    """``p`` with ``metric`` on the ``mask`` rows worsened by ``size`` (in its units).

    A binary metric: the rows' probabilities are blended with a seeded shuffle of
    themselves, ``(1 - w) p + w shuffled`` (the AUC falls to ~0.5 at w=1; log loss and
    Brier score rise). A regression metric: seeded Gaussian noise of ``w`` target standard
    deviations is added to the rows' values (RMSE and MAE rise, R² falls, without bound).
    The weight ``w`` is found by bisection.

    Args:
        y: labels 0/1 or target values, shape (n,).
        p: predictions, shape (n,).
        mask: the rows to degrade, bool, shape (n,).
        size: how much worse ``metric`` must get on those rows (positive).
        seed: seeds the shuffle or the noise.
        metric: the spec's metric (``lib.evaluation.metrics.metric``'s vocabulary).

    Returns:
        The degraded predictions (a copy) and the worsening reached on the rows (at most
        what the blend can reach: a shuffle cannot take the AUC below ~0.5).
    """
    from mlplatform.lib.evaluation.metrics import metric as score
    from mlplatform.spec import METRICS

    task, direction = METRICS[metric]
    rows = np.flatnonzero(mask)
    base = p[rows]
    rng = np.random.default_rng(seed)
    if task == "binary":
        shuffled = rng.permutation(base)

        def blend(w: float) -> np.ndarray:
            return (1 - w) * base + w * shuffled

    else:
        noise = rng.standard_normal(len(rows)) * (float(np.std(y[rows])) or 1.0)

        def blend(w: float) -> np.ndarray:
            return base + w * noise

    high = 1.0
    start = score(metric, y[rows], base)

    def worse(w: float) -> float:
        now = score(metric, y[rows], blend(w))
        return start - now if direction == "maximize" else now - start

    if task == "regression":  # noise has no ceiling: widen until the size is reached
        while worse(high) < size and high < 1e6:
            high *= 2
    low = 0.0
    for _ in range(30):
        mid = (low + high) / 2
        if worse(mid) < size:
            low = mid
        else:
            high = mid
    out = p.copy()
    out[rows] = blend(high)
    return out, worse(high)


@dataclass
class Judgement:
    """What the two comparison gates decided for one candidate against one champion."""

    refused: dict[str, bool]
    overall: dict[str, Any]
    slices: list[dict[str, Any]] = field(default_factory=list)


def judge(
    problem: "Problem",
    holdout: pd.DataFrame,
    y: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    seed: int,
) -> Judgement:
    """Both comparison gates on one candidate/champion pair, fed as the evaluation report does."""
    from mlplatform.lib.evaluation import gates
    from mlplatform.lib.evaluation import metrics as ev
    from mlplatform.lib.evaluation.comparison import compare

    spec, g = problem.spec, problem.spec.gates
    predictions = {"candidate": candidate, "champion": champion}
    columns = problem.slices(holdout)
    comparison = g.comparison_settings(seed)
    slices = ev.slice_metrics(
        columns,
        y,
        predictions,
        spec.metric.name,
        g.min_slice_rows,
        g.min_slice_positives,
        spec.task,
    )
    slices = ev.paired_slices(slices, columns, y, predictions, spec.metric.name, comparison)
    paired = compare(spec.metric.name, y, candidate, champion, **comparison)
    value = paired.candidate
    outcomes = [
        gates.no_regression(value, paired, spec.metric, g),
        gates.no_slice_regression(slices, True, spec.metric, g),
    ]
    refused = {o.name: not o.passed for o in outcomes}
    rows = outcomes[1].details["slices"]
    return Judgement(
        refused, {**paired.to_dict(), "drop_high": outcomes[0].details["regression_high"]}, rows
    )


def _largest_slice(rows: list[dict[str, Any]], total: int) -> tuple[str, str] | None:
    """The largest judged slice holding at most a quarter of the holdout's rows.

    A larger one (an origin airport, a month) would move the overall metric as much as the
    slice, and measure the overall gate's power instead of the slice gate's.
    """
    judged = [r for r in rows if r["decision"] != "NOT JUDGED"]
    usable = [r for r in judged if r["rows"] <= total / 4]
    if not usable:
        return None
    best = max(usable, key=lambda r: r["rows"])
    return best["slice"], best["value"]


@dataclass
class Calibration:
    """The measured figures: A/A false refusals, power per injected size, per-slice noise."""

    pairs: int
    aa: dict[str, float]
    power: list[dict[str, Any]]
    thresholds: list[dict[str, Any]]
    overall_noise: dict[str, float]
    power_slice: str
    differences: list[float]
    metric: str = "roc_auc"

    def headline(self) -> dict[str, Any]:
        """The few numbers a benchmark or a log line reports."""

        def share(kind: str, size: float) -> float | None:
            found = [
                r["refused"]
                for r in self.power
                if r["kind"] == kind and math.isclose(r["injected_drop"], size)
            ]
            return found[0] if found else None

        return {
            "metric": self.metric,
            "pairs": self.pairs,
            "aa_false_refusal": self.aa["any"],
            "aa_false_refusal_no_regression": self.aa[NO_REGRESSION],
            "aa_false_refusal_no_slice_regression": self.aa[NO_SLICE_REGRESSION],
            "power_overall_003": share("overall", 0.03),
            "power_slice_005": share("slice", 0.05),
            "power_slice": self.power_slice,
        }


def calibrate(
    problem: "Problem",
    training: pd.DataFrame,
    holdout: pd.DataFrame,
    pairs: int = 40,
    overall_sizes: tuple[float, ...] | None = None,
    slice_sizes: tuple[float, ...] | None = None,
    seed: int = 0,
    progress: Callable[[str], object] | None = None,
) -> Calibration:
    """Measure the comparison gates of ``problem`` on its own training set and holdout.

    Args:
        problem: whose spec (metric, gates, slices) is measured.
        training: the training set (features and target), as built by the platform.
        holdout: the later holdout set, same columns.
        pairs: A/A pairs (two fits each); the power candidates reuse them.
        overall_sizes: worsenings of the spec's metric (in its units) injected over all
            holdout rows; None: ``default_sizes`` (AUC drops of 0.01..0.05 for roc_auc,
            multiples of ``max_regression`` otherwise).
        slice_sizes: the same on the largest judged slice's rows (None: multiples of
            ``slice_tolerance``, 0.03..0.08 for roc_auc).
        seed: first model seed; pair i uses seeds seed+2i and seed+2i+1.
        progress: called with one line per pair.

    Raises:
        ValueError: fewer than one pair.
    """
    spec = problem.spec
    if pairs < 1:
        raise ValueError("calibration needs at least one A/A pair")
    defaults = default_sizes(spec)
    overall_sizes = defaults[0] if overall_sizes is None else overall_sizes
    slice_sizes = defaults[1] if slice_sizes is None else slice_sizes
    models = Models(training, holdout, spec)
    y = holdout[spec.target.name].to_numpy()
    columns = problem.slices(holdout).astype(str)
    aa_refused = {g: 0 for g in (*GATES, "any")}
    power: dict[tuple[str, float], list[tuple[bool, bool, float]]] = {}
    noise: dict[str, list[float]] = {}
    slice_refusals: dict[str, int] = {}
    differences, ses = [], []
    target: tuple[str, str] | None = None
    for i in range(pairs):
        champion = models.predict(seed + 2 * i)
        candidate = models.predict(seed + 2 * i + 1)
        aa = judge(problem, holdout, y, candidate, champion, seed + i)
        for g in GATES:
            aa_refused[g] += aa.refused[g]
        aa_refused["any"] += any(aa.refused.values())
        differences.append(aa.overall["difference"])
        ses.append(aa.overall["se"])
        for r in aa.slices:
            if r["decision"] == "NOT JUDGED":
                continue
            name = f"{r['slice']}={r['value']}"
            noise.setdefault(name, []).append(float(r["high"] - r["low"]))
            slice_refusals[name] = slice_refusals.get(name, 0) + (r["decision"] == "REFUSED")
        if target is None:
            target = _largest_slice(aa.slices, len(y))
        masks = [("overall", s, np.ones(len(y), bool)) for s in overall_sizes]
        if target is not None:
            mask = (columns[target[0]] == target[1]).to_numpy()
            masks += [("slice", s, mask) for s in slice_sizes]
        for kind, size, mask in masks:
            worse, reached = degrade(y, candidate, mask, size, seed + 1000 + i, spec.metric.name)
            judged = judge(problem, holdout, y, worse, champion, seed + i)
            power.setdefault((kind, size), []).append(
                (judged.refused[NO_REGRESSION], judged.refused[NO_SLICE_REGRESSION], reached)
            )
        if progress:
            progress(
                f"pair {i + 1}/{pairs}: A/A difference {aa.overall['difference']:+.4f} "
                f"(se {aa.overall['se']:.4f}), refused by "
                f"{[g for g, r in aa.refused.items() if r] or 'none'}"
            )
    return Calibration(
        pairs=pairs,
        aa={g: n / pairs for g, n in aa_refused.items()},
        power=[
            {
                "kind": kind,
                "injected_drop": size,
                "reached_drop": float(np.mean([r for _, _, r in got])),
                "refused": float(np.mean([a or b for a, b, _ in got])),
                "by_no_regression": float(np.mean([a for a, _, _ in got])),
                "by_no_slice_regression": float(np.mean([b for _, b, _ in got])),
                "pairs": len(got),
            }
            for (kind, size), got in sorted(power.items())
        ],
        thresholds=_thresholds(problem, noise, slice_refusals, pairs),
        overall_noise={
            "difference_sd": float(np.std(differences, ddof=1)) if pairs > 1 else math.nan,
            "median_se": float(np.median(ses)),
            "smallest_refused_drop": spec.gates.max_regression,
            "largest_passed_drop": _largest_passed(spec, float(np.median(ses))),
        },
        power_slice="=".join(target) if target else "none",
        differences=differences,
        metric=spec.metric.name,
    )


def _z(p: float) -> float:
    from scipy.stats import norm

    return float(norm.isf(p))


def _largest_passed(spec: ProblemSpec, se: float) -> float:
    """Non-inferiority: the largest true drop still passed (its upper bound at the tolerance)."""
    return spec.gates.max_regression - _z((1 - spec.gates.confidence) / 2) * se


def _thresholds(
    problem: "Problem", widths: dict[str, list[float]], refusals: dict[str, int], pairs: int
) -> list[dict[str, Any]]:
    """Per judged slice: its interval's width, the smallest drop refused, A/A refusals."""
    g = problem.spec.gates
    alpha = (1 - g.confidence) / 2
    columns = pd.Series([name.split("=", 1)[0] for name in widths]).value_counts()
    z_interval = _z(alpha)
    out = []
    for name, w in sorted(widths.items(), key=lambda kv: -np.median(kv[1])):
        # Holm's first step tests the smallest p-value at alpha / k: the strictest a slice
        # of a family of k can face (a lone regression among equal slices)
        k = int(columns[name.split("=", 1)[0]]) if g.slice_family == "column" else len(widths)
        z_family = _z(alpha / k if g.slice_error_control == "holm" else alpha)
        se = float(np.median(w)) / (2 * z_interval)
        out.append(
            {
                "slice": name,
                "interval_width": round(float(np.median(w)), 4),
                "se": round(se, 4),
                "smallest_refused_drop": round(g.slice_tolerance + z_family * se, 4),
                "aa_refused": round(refusals.get(name, 0) / pairs, 3),
            }
        )
    return out


def _table(rows: list[dict[str, Any]]) -> str:
    return markdown.table(rows, _cell)


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def rules(problem: "Problem") -> list[str]:
    """The comparison gates' rules, in words, with the spec's numbers."""
    from mlplatform.lib.evaluation.gates import slice_rule

    g = problem.spec.gates
    level = f"{g.confidence:.0%}"
    return [
        f"no_regression (non-inferiority): refused unless the {level} interval of the drop "
        f"of {problem.spec.metric.name} lies entirely within {g.max_regression}",
        f"no_slice_regression: {slice_rule(g, problem.spec.task)}",
    ]


def report_markdown(problem: "Problem", result: Calibration, image: str = "") -> str:
    """The calibration report: the rules, A/A, power, per-slice thresholds (markdown).

    Args:
        problem: whose gates were measured.
        result: ``calibrate``'s figures.
        image: markdown of the figure (e.g. a base64 PNG or a relative link), if any.
    """
    aa = [
        {"gate": g, "A/A share refused": result.aa[g], "pairs": result.pairs}
        for g in (*GATES, "any")
    ]
    noise = result.overall_noise
    overall = [
        {
            "A/A difference sd": noise["difference_sd"],
            "median se (DeLong)"
            if problem.spec.metric.name == "roc_auc"
            and problem.spec.gates.comparison != "bootstrap"
            else "median se (bootstrap)": noise["median_se"],
            "tolerance": problem.spec.gates.max_regression,
            "largest true drop still passed": noise["largest_passed_drop"],
        }
    ]
    return "\n\n".join(
        [
            f"## {problem.name}: gates calibrated on the problem's own data",
            "\n".join(f"- {r}" for r in rules(problem)),
            "### A/A: same data, other seed (every refusal is a false one)\n" + _table(aa),
            "### Power: the candidate made worse on purpose (share refused)\n"
            f"Slice injections on `{result.power_slice}` (the largest judged slice holding at "
            "most a quarter of the holdout).\n\n" + _table(result.power),
            "### Overall metric: noise and what the tolerance means\n" + _table(overall),
            "### Slices: noise and the smallest drop the rule refuses\n"
            "`smallest_refused_drop` = tolerance + z * se, z of Holm's first step over the "
            "slice's family (a lone regression among equal slices).\n\n"
            + _table(result.thresholds),
            *([image] if image else []),
        ]
    )


def power_figure(result: Calibration) -> "Figure":
    """Share refused against the injected worsening, overall and on one slice; A/A marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.8))
    left, right = fig.subplots(1, 2)
    for kind, label in (("overall", "overall"), ("slice", f"slice {result.power_slice}")):
        rows = [r for r in result.power if r["kind"] == kind]
        if rows:
            left.plot(
                [0.0] + [r["injected_drop"] for r in rows],
                [result.aa["any"]] + [r["refused"] for r in rows],
                marker="o",
                label=label,
            )
    left.axhline(0.05, color="grey", linestyle=":", label="5%")
    left.axhline(0.9, color="grey", linestyle="--", label="90%")
    left.set_xlabel(f"injected worsening of {result.metric} (0: A/A)")
    left.set_ylabel("share refused")
    left.set_ylim(-0.02, 1.02)
    left.set_title(f"Power and false refusals ({result.pairs} pairs)")
    left.legend(fontsize="small")
    right.hist(result.differences, bins=min(20, max(5, result.pairs // 2)))
    right.set_xlabel(f"A/A {result.metric} difference (same data, other seed)")
    right.set_ylabel("pairs")
    right.set_title("A/A: the noise a gate must tolerate")
    return fig


def write_report(
    folder: "Path", problem: "Problem", result: Calibration, stamp: str
) -> dict[str, "Path"]:
    """Markdown, HTML, PNG and JSON of a calibration into ``folder`` (created).

    Returns:
        kind (``md``, ``html``, ``png``, ``json``) → path written.
    """
    import base64
    import html
    import json

    from mlplatform.lib.plots import png

    folder.mkdir(parents=True, exist_ok=True)
    paths = {k: folder / f"calibration-{stamp}.{k}" for k in ("md", "html", "png", "json")}
    figure = png(power_figure(result))
    paths["png"].write_bytes(figure)
    paths["md"].write_text(
        report_markdown(problem, result, f"![power and A/A]({paths['png'].name})"),
        encoding="utf-8",
    )

    def table(rows: list[dict[str, Any]]) -> str:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rows[0]) if rows else ""
        cells = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in r.values()) + "</tr>"
            for r in rows
        )
        return f"<table border=1 cellpadding=4><tr>{head}</tr>{cells}</table>"

    aa = [{"gate": g, "A/A share refused": result.aa[g]} for g in (*GATES, "any")]
    image = base64.b64encode(figure).decode()
    sections = [
        f"<h2>{html.escape(problem.name)}: gates calibrated on the problem's own data "
        f"({result.pairs} pairs)</h2>",
        "<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in rules(problem)) + "</ul>",
        "<h3>A/A: same data, other seed</h3>" + table(aa),
        f"<h3>Power (slice injections on {html.escape(result.power_slice)})</h3>"
        + table(result.power),
        "<h3>Overall metric: noise</h3>" + table([result.overall_noise]),
        "<h3>Slices: noise and the smallest drop refused</h3>" + table(result.thresholds),
        f"<img alt='power and A/A' src='data:image/png;base64,{image}'/>",
    ]
    paths["html"].write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        f"{html.escape(problem.name)} gate calibration</title></head>"
        "<body style='font-family:sans-serif'>" + "".join(sections) + "</body></html>",
        encoding="utf-8",
    )
    paths["json"].write_text(
        json.dumps(
            {
                "headline": result.headline(),
                "aa": result.aa,
                "power": result.power,
                "thresholds": result.thresholds,
                "overall_noise": result.overall_noise,
                "rules": rules(problem),
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return paths


def log_report(tracking: Any, problem: "Problem", result: Calibration, paths: dict) -> str:
    """Log the calibration's figures and files to an MLflow run of ``<problem>-gates``.

    Returns:
        The MLflow run id.
    """
    client = tracking.client()
    run = client.create_run(
        tracking.experiment_id(f"{problem.name}-gates"),
        run_name=f"gate calibration ({result.pairs} pairs)",
        tags={"mlplatform/problem": problem.name, "mlplatform/kind": "gate_calibration"},
    )
    run_id = run.info.run_id
    for key, value in result.headline().items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isnan(value):
                client.log_metric(run_id, key, float(value))
    for path in paths.values():
        client.log_artifact(run_id, str(path), "gates")
    client.set_terminated(run_id)
    return run_id
