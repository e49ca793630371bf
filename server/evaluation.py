"""Turn hospitals' evaluation statistics into per-hospital, client-average and pooled metrics."""

import math
from collections.abc import Mapping

from common.metrics import Statistics, majority_rate, metrics_from_statistics, sum_statistics
from common.tasks.base import TaskSpec


def covered_mean(values: list[float]) -> tuple[float, int]:
    """Mean of the finite `values` and how many there were (NaN, 0 when none is finite).

    A hospital's metric can be NaN (e.g. the AUC of a one-class test set); it is left out of
    the mean, and the count says how many hospitals the mean covers.
    """
    finite = [v for v in values if math.isfinite(v)]
    return (sum(finite) / len(finite) if finite else float("nan")), len(finite)


def summarize_round(task: TaskSpec, per_hospital: dict[str, Statistics]) -> dict[str, float]:
    """Return metrics.csv values for one round from each replying hospital's statistics.

    ``pooled_*``: the metric on the union of the hospitals' test sets; ``client_avg_*``: the
    unweighted mean over hospitals (FLamby's metric) of the finite values, and
    ``client_avg_*_hospitals`` how many hospitals that mean covers (a NaN entry, e.g. the AUC
    of a one-class test set, is left out); ``<hospital>_*``: each hospital's own.
    ``test_rows_<hospital>``: its test-set size; for classification ``majority_rate_pooled``
    and ``majority_rate_<hospital>``: the accuracy of always predicting the most frequent
    class (the chance level the plots draw).
    """
    row: dict[str, float] = {}
    pooled_stats = sum_statistics(list(per_hospital.values()))
    pooled = metrics_from_statistics(task.kind, pooled_stats)
    row["pooled_loss"] = pooled["loss"]
    own = {name: metrics_from_statistics(task.kind, s) for name, s in per_hospital.items()}
    for metric in task.metric_names:
        row[f"pooled_{metric}"] = pooled[metric]
        mean, covered = covered_mean([m[metric] for m in own.values()])
        row[f"client_avg_{metric}"] = mean
        row[f"client_avg_{metric}_hospitals"] = covered
        for name, metrics in own.items():
            row[f"{name}_{metric}"] = metrics[metric]
    for name, stats in per_hospital.items():
        row[f"test_rows_{name}"] = int(round(float(stats["count"])))
    if task.kind != "regression":
        row["majority_rate_pooled"] = majority_rate(pooled_stats)
        for name, stats in per_hospital.items():
            row[f"majority_rate_{name}"] = majority_rate(stats)
    return row


def epsilon_columns(epsilon_spent: Mapping[str, Mapping[str, float]], level: str
                    ) -> dict[str, float]:
    """``epsilon_<hospital>``: what each hospital has spent so far at `level` (a metrics.csv
    row's per-hospital epsilon, drawn by the report as one curve per hospital).

    Parameters
    ----------
    epsilon_spent : mapping
        Hospital name -> its latest reply's epsilons (``patient``, ``hospital``, ...), as the
        strategy keeps them; +inf (an unbounded epsilon) is kept as +inf.
    level : str
        ``patient`` or ``hospital`` (the run's DP mode); anything else gives no columns.
    """
    if level not in ("patient", "hospital"):
        return {}
    return {f"epsilon_{name}": float(spent[level]) for name, spent in epsilon_spent.items()
            if level in spent}
