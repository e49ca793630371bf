"""Turn hospitals' evaluation statistics into per-hospital, client-average and pooled metrics."""

import math

from common.metrics import Statistics, metrics_from_statistics, sum_statistics
from common.tasks.base import TaskSpec


def summarize_round(task: TaskSpec, per_hospital: dict[str, Statistics]) -> dict[str, float]:
    """Return metrics.csv values for one round from each replying hospital's statistics.

    ``pooled_*``: the metric on the union of the hospitals' test sets; ``client_avg_*``: the
    unweighted mean over hospitals (FLamby's metric; NaN entries, e.g. AUC of a one-class
    test set, are left out); ``<hospital>_*``: each hospital's own.
    """
    row: dict[str, float] = {}
    pooled = metrics_from_statistics(task.kind, sum_statistics(list(per_hospital.values())))
    row["pooled_loss"] = pooled["loss"]
    own = {name: metrics_from_statistics(task.kind, s) for name, s in per_hospital.items()}
    for metric in task.metric_names:
        row[f"pooled_{metric}"] = pooled[metric]
        values = [m[metric] for m in own.values() if not math.isnan(m[metric])]
        row[f"client_avg_{metric}"] = sum(values) / len(values) if values else float("nan")
        for name, metrics in own.items():
            row[f"{name}_{metric}"] = metrics[metric]
    return row
