"""A hospital's evaluation of one model on its test rows, as one Gaussian release.

Mechanism: the model's predictions on the test rows are reduced to a vector of counts to which
each row contributes a bounded amount, and Gaussian noise N(0, (z * sensitivity)^2) is added
to every cell (Dwork and Roth 2014, Theorem A.1, through Opacus's accountant: one step, sample
rate 1). Sensitivity (L2), patient level, adding or removing one test row:

- classification: the row adds 1 to exactly one of (correct, incorrect) and, in each of the
  ``columns`` score histograms, 1 to exactly one (label, bin) cell, so sqrt(1 + columns)
  (binary: sqrt(2)). No loss sum: a loss is unbounded per row.
- regression: the row adds (1, |e|/E, (e/E)^2, y', y'^2), each in [0, 1] (e the error clipped to
  E, y' the target mapped to [0, 1] by the task's public range and clipped), so sqrt(5).

Hospital level (replacing the hospital's whole test set): the counts divided by the test-row
count, i.e. each part a distribution; two such vectors differ by at most sqrt(2) per part in
L2, so sqrt(2 (1 + columns)) for classification and 2 for regression. What the server sees:
the noised vector (and its sum over hospitals). Everything derived from it (count, accuracy,
AUC, MAE, R^2, intervals) is post-processing.

Why ``EVALUATION_BINS`` = 4 score bins per label: every bin is one more noised cell in each
AUC pair count, while fewer bins tie more pairs (a tie counts one half); the edges 0, 0.25,
0.5, 0.75, 1 keep the decision threshold 0.5 on an edge. On heart-disease (four hospitals'
254 test rows, a logistic model's scores, test epsilon 1) the pooled AUC's error is smallest
with 4 bins: RMSE 0.073, against 0.089 (2 bins), 0.095 (8) and 0.145 (16); the accuracy's
(0.035) does not depend on it (``python -m benchmarks.evaluation_release``).
"""

import math
from dataclasses import dataclass

import numpy as np

from common.metrics import histogram_auc
from common.tasks.base import TaskKind, TaskSpec
from common.wire.modes import PrivacyLevel

EVALUATION_BINS = 4
REGRESSION_PARTS = 5  # count, |e|/E, (e/E)^2, y', y'^2
TARGET_RANGE_IN_SCALES = 2.5  # regression: the public target range, offset +/- 2.5 scale
_EPS = 1e-7

Release = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class ReleaseLayout:
    """The shape of a task's evaluation release.

    Attributes
    ----------
    kind : {"binary", "multiclass", "regression"}
        The task's kind.
    columns : int
        Score histograms: 1 (binary), the class count (multiclass); 0 for regression.
    bins : int
        Score bins per label and column, equal width over [0, 1].
    target_low, target_high : float
        Regression: the public range of the target (values outside are clipped); the error
        is clipped to ``target_high - target_low``.
    """

    kind: TaskKind
    columns: int
    bins: int = EVALUATION_BINS
    target_low: float = 0.0
    target_high: float = 1.0

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each released array's shape, by name."""
        if self.kind == "regression":
            return {"sums": (REGRESSION_PARTS,)}
        return {"outcome": (2,), "score_hist": (self.columns, 2, self.bins)}

    @property
    def cells_per_row(self) -> int:
        """How many cells one test row adds to (at most 1 each)."""
        return REGRESSION_PARTS if self.kind == "regression" else 1 + self.columns

    def sensitivity(self, level: PrivacyLevel) -> float:
        """The release's L2 sensitivity at ``level`` (module docstring)."""
        if level == PrivacyLevel.PATIENT:
            return math.sqrt(self.cells_per_row)
        if self.kind == "regression":
            return 2.0
        return math.sqrt(2.0 * self.cells_per_row)


def release_layout(task: TaskSpec) -> ReleaseLayout:
    """The layout of a task's release (regression: its public target range, from the task's
    own offset and scale, ``TARGET_RANGE_IN_SCALES`` scales either side).
    """
    if task.kind == "regression":
        half = TARGET_RANGE_IN_SCALES * task.target_scale
        return ReleaseLayout("regression", 0, target_low=task.target_offset - half,
                             target_high=task.target_offset + half)
    return ReleaseLayout(task.kind, task.num_outputs if task.kind == "multiclass" else 1)


def exact_release(layout: ReleaseLayout, y_true: np.ndarray, y_pred: np.ndarray, *,
                  level: PrivacyLevel) -> Release:
    """The exact (noise-free) release of one hospital's test predictions.

    Parameters
    ----------
    y_true : np.ndarray
        Labels, shape (rows,): 0/1, class indices, or target values.
    y_pred : np.ndarray
        Model outputs: (rows,) or (rows, 1) probabilities or values; (rows, classes).
    level : PrivacyLevel
        Patient level: counts; hospital level: counts divided by the test-row count.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    rows = max(len(y_true), 1)
    if layout.kind == "regression":
        parts = _regression_parts(layout, y_true, y_pred.reshape(-1))
        release = {"sums": parts.sum(axis=0)}
    else:
        release = _classification_counts(layout, y_true, y_pred)
    if level == PrivacyLevel.HOSPITAL:
        release = {name: value / rows for name, value in release.items()}
    return release


def _regression_parts(layout: ReleaseLayout, y_true: np.ndarray, y_pred: np.ndarray
                      ) -> np.ndarray:
    """Each row's (1, |e|/E, (e/E)^2, y', y'^2), shape (rows, 5), every part in [0, 1]."""
    width = layout.target_high - layout.target_low
    error = np.minimum(np.abs(y_pred - y_true) / width, 1.0)
    target = np.clip((y_true - layout.target_low) / width, 0.0, 1.0)
    return np.stack([np.ones_like(target), error, error**2, target, target**2], axis=1)


def _classification_counts(layout: ReleaseLayout, y_true: np.ndarray, y_pred: np.ndarray
                           ) -> Release:
    if layout.kind == "binary":
        p = np.clip(y_pred.reshape(-1), _EPS, 1 - _EPS)
        correct = (p >= 0.5) == (y_true == 1)
        scores, labels = p[:, None], (y_true == 1)[:, None]
    else:
        classes = y_true.astype(int)
        correct = np.argmax(y_pred, axis=1) == classes
        scores = np.clip(y_pred, 0.0, 1.0)
        labels = classes[:, None] == np.arange(y_pred.shape[1])[None, :]
    bins = np.minimum((scores * layout.bins).astype(int), layout.bins - 1)
    hist = np.zeros((layout.columns, 2, layout.bins))
    for column in range(layout.columns):
        hist[column, 0] = np.bincount(bins[~labels[:, column], column], minlength=layout.bins)
        hist[column, 1] = np.bincount(bins[labels[:, column], column], minlength=layout.bins)
    outcome = np.array([float(correct.sum()), float((~correct).sum())])
    return {"outcome": outcome, "score_hist": hist}


def noised_release(exact: Release, *, stddev: float, rng: np.random.Generator) -> Release:
    """Add N(0, stddev^2) to every cell of ``exact`` (new arrays; the draw happens here, once)."""
    if not stddev >= 0 or not math.isfinite(stddev):
        raise ValueError(f"stddev must be a finite number >= 0, got {stddev!r}")
    return {name: value + rng.normal(0.0, stddev, size=value.shape)
            for name, value in sorted(exact.items())}


def release_metrics(layout: ReleaseLayout, release: Release) -> dict[str, float]:
    """The metrics a release gives (post-processing; negative noised cells count as 0).

    Classification: ``count`` (correct + incorrect), ``accuracy``, ``auc`` (from the score
    histograms, macro over columns). Regression: ``count``, ``mae`` (in target units) and
    ``r2``. At hospital level the release holds fractions: ``count`` is then about 1.
    """
    if layout.kind == "regression":
        count, error, error_sq, target, target_sq = np.maximum(release["sums"], 0.0)
        count = max(float(count), _EPS)
        width = layout.target_high - layout.target_low
        total = (float(target_sq) - float(target) ** 2 / count) * width**2
        r2 = 1.0 - float(error_sq) * width**2 / total if total > 0 else float("nan")
        return {"count": count, "mae": float(error) * width / count, "r2": r2}
    correct, incorrect = np.maximum(release["outcome"], 0.0)
    count = float(correct + incorrect)
    accuracy = float(correct) / count if count > 0 else float("nan")
    auc = histogram_auc(np.maximum(release["score_hist"], 0.0))
    return {"count": count, "accuracy": min(max(accuracy, 0.0), 1.0), "auc": auc}


def sum_releases(releases: list[Release]) -> Release:
    """Add hospitals' releases cell by cell (the release of the union of their test sets)."""
    return {name: np.sum([r[name] for r in releases], axis=0) for name in releases[0]}


def metric_interval(layout: ReleaseLayout, release: Release, *, stddev: float, metric: str,
                    draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A 95% interval for ``metric`` of the exact counts, from a release with noise ``stddev``.

    Parametric bootstrap over the noise: ``draws`` times, N(0, stddev^2) is added to every
    cell again and the metric recomputed; the 2.5th and 97.5th percentiles of the differences
    are turned around the released value (the basic bootstrap), cut to the metric's range. It
    covers the DP noise (the exact metric of these test rows is the estimand), not the
    sampling of the test rows.
    """
    point = release_metrics(layout, release)[metric]
    if not math.isfinite(point):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        again = {name: value + rng.normal(0.0, stddev, size=value.shape)
                 for name, value in release.items()}
        values.append(release_metrics(layout, again)[metric])
    finite = np.array([v for v in values if math.isfinite(v)])
    if finite.size < draws // 2:
        return float("nan"), float("nan")
    low, high = np.percentile(finite - point, [2.5, 97.5])
    return bounded(metric, point - high, point - low)


def bounded(metric: str, low: float, high: float) -> tuple[float, float]:
    """An interval cut to the metric's range (accuracy and AUC lie in [0, 1])."""
    if metric in ("accuracy", "auc"):
        return float(min(max(low, 0.0), 1.0)), float(min(max(high, 0.0), 1.0))
    return float(low), float(high)
