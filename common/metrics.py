"""Evaluation metrics from sufficient statistics, so pooled metrics need no raw predictions.

Each hospital reduces its test predictions to a few sums (and, for AUC, score histograms by
label). Summing hospitals' statistics gives the metric on the union of their test sets (the
"pooled" metric) without any prediction or label leaving a hospital. Accuracy, loss, MAE and
R^2 are exact; AUC from histograms of ``AUC_BINS`` equal-width score bins counts pairs in the
same bin as ties, an error of at most the fraction of such pairs (< 1e-3 in practice).
"""

import numpy as np

from common.tasks.base import TaskKind

AUC_BINS = 1000
_EPS = 1e-7

Statistics = dict[str, np.ndarray]


def evaluation_statistics(
    kind: TaskKind, y_true: np.ndarray, y_pred: np.ndarray, *, target_scale: float = 1.0
) -> Statistics:
    """Reduce one hospital's test predictions to summable statistics.

    Parameters
    ----------
    y_true : np.ndarray
        Labels, shape (rows,).
    y_pred : np.ndarray
        Model outputs: (rows,) or (rows, 1) probabilities/values, or (rows, classes).
    target_scale : float
        Regression: the loss is the MSE in units of ``target_scale`` (as in training).
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    stats: Statistics = {"count": np.array(float(len(y_true)))}
    if kind == "regression":
        err = y_pred.reshape(-1) - y_true
        stats["loss_sum"] = np.array(np.sum((err / target_scale) ** 2))
        stats["abs_err_sum"] = np.array(np.sum(np.abs(err)))
        stats["sq_err_sum"] = np.array(np.sum(err**2))
        stats["y_sum"] = np.array(np.sum(y_true))
        stats["y_sq_sum"] = np.array(np.sum(y_true**2))
        return stats
    if kind == "binary":
        p = np.clip(y_pred.reshape(-1), _EPS, 1 - _EPS)
        stats["loss_sum"] = np.array(-np.sum(y_true * np.log(p) + (1 - y_true) * np.log(1 - p)))
        stats["correct"] = np.array(float(np.sum((p >= 0.5) == (y_true == 1))))
        scores, labels = p[:, None], (y_true == 1)[:, None]
    else:
        classes = y_true.astype(int)
        probs = np.clip(y_pred, _EPS, 1.0)
        stats["loss_sum"] = np.array(-np.sum(np.log(probs[np.arange(len(classes)), classes])))
        stats["correct"] = np.array(float(np.sum(np.argmax(y_pred, axis=1) == classes)))
        scores, labels = y_pred, classes[:, None] == np.arange(y_pred.shape[1])[None, :]
    bins = np.minimum((scores * AUC_BINS).astype(int), AUC_BINS - 1)
    hist = np.zeros((scores.shape[1], 2, AUC_BINS))
    for column in range(scores.shape[1]):
        hist[column, 0] = np.bincount(bins[~labels[:, column], column], minlength=AUC_BINS)
        hist[column, 1] = np.bincount(bins[labels[:, column], column], minlength=AUC_BINS)
    stats["score_hist"] = hist
    return stats


def sum_statistics(all_stats: list[Statistics]) -> Statistics:
    """Add hospitals' statistics key by key (the statistics of the union of their test sets)."""
    return {key: np.sum([s[key] for s in all_stats], axis=0) for key in all_stats[0]}


def histogram_auc(hist: np.ndarray) -> float:
    """AUC (macro over columns with both labels) from (columns, 2, bins) score histograms.

    Column c, row 0 counts negatives by score bin, row 1 positives; a positive beats a
    negative in a lower bin and ties with one in its own bin. NaN when no column has both.
    """
    aucs = []
    for negatives, positives in hist:
        n_neg, n_pos = negatives.sum(), positives.sum()
        if n_neg == 0 or n_pos == 0:
            continue
        below = np.cumsum(negatives) - negatives
        wins = np.sum(positives * (below + 0.5 * negatives))
        aucs.append(wins / (n_neg * n_pos))
    return float(np.mean(aucs)) if aucs else float("nan")


def class_counts(stats: Statistics) -> np.ndarray | None:
    """Test rows per class (classification), read off the AUC score histograms; else None.

    Binary statistics hold one histogram column (row 0 negatives, row 1 positives): the
    counts are (negatives, positives). Multiclass ones hold one column per class, whose
    positives are that class's rows.
    """
    hist = stats.get("score_hist")
    if hist is None:
        return None
    hist = np.asarray(hist)
    if hist.shape[0] == 1:
        return np.asarray(hist[0].sum(axis=-1))
    return np.asarray(hist[:, 1].sum(axis=-1))


def majority_rate(stats: Statistics) -> float:
    """Accuracy of always predicting the most frequent class of this test set (chance level).

    NaN for regression statistics or an empty test set.
    """
    counts = class_counts(stats)
    if counts is None or counts.sum() <= 0:
        return float("nan")
    return float(counts.max() / counts.sum())


def metrics_from_statistics(kind: TaskKind, stats: Statistics) -> dict[str, float]:
    """Return ``loss`` and the task's metrics (accuracy, auc | mae, r2) from statistics."""
    count = float(stats["count"])
    metrics = {"loss": float(stats["loss_sum"]) / count}
    if kind == "regression":
        metrics["mae"] = float(stats["abs_err_sum"]) / count
        total = float(stats["y_sq_sum"]) - float(stats["y_sum"]) ** 2 / count
        metrics["r2"] = 1.0 - float(stats["sq_err_sum"]) / total if total > 0 else float("nan")
    else:
        metrics["accuracy"] = float(stats["correct"]) / count
        metrics["auc"] = histogram_auc(stats["score_hist"])
    return metrics
