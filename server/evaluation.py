"""Turn hospitals' evaluation statistics into per-hospital, client-average and pooled metrics.

Exact statistics (runs without DP) give exact metrics. DP releases (each hospital's noised
counts, ``common.dp.evaluation_release``) are summed across hospitals by the server (the
release of the union of their test sets; its noise variance the sum of theirs); every metric
is post-processing of the releases, reported with a 95% interval for the DP noise.
"""

import math
from collections.abc import Mapping

import numpy as np

from common.config import RunConfig, evaluated_rounds
from common.dp.evaluation_release import (
    ReleaseLayout,
    bounded,
    metric_interval,
    release_layout,
    release_metrics,
    sum_releases,
)
from common.metrics import Statistics, majority_rate, metrics_from_statistics, sum_statistics
from common.tasks.base import TaskSpec
from common.wire.statistics import NOISE_STDDEV

INTERVAL_DRAWS = 2000


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
    if any(NOISE_STDDEV in stats for stats in per_hospital.values()):
        return summarize_releases(task, per_hospital)
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


def evaluates(config: RunConfig, server_round: int) -> bool:
    """Whether round `server_round`'s model is evaluated: every round's without DP; under DP
    only the planned ones (every eval-every-th and the last: each is a charged release).
    """
    return not config.private or server_round in evaluated_rounds(config.num_server_rounds,
                                                                  config.eval_every)


def summarize_releases(task: TaskSpec, per_hospital: dict[str, Statistics]
                       ) -> dict[str, float]:
    """metrics.csv values from the hospitals' DP evaluation releases, with 95% intervals.

    ``pooled_*``: the metric of the summed release (noise stddev sqrt of the summed
    variances); ``client_avg_*``: the mean of each hospital's metric of its own release;
    ``*_low`` / ``*_high``: a 95% interval for the DP noise (parametric bootstrap,
    ``common.dp.evaluation_release.metric_interval``); ``test_rows_<hospital>`` its noised
    count, rounded; no loss (a DP release carries no loss sum).
    """
    layout = release_layout(task)
    releases = {name: {k: v for k, v in s.items() if k != NOISE_STDDEV}
                for name, s in sorted(per_hospital.items())}
    stddevs = {name: float(s[NOISE_STDDEV]) for name, s in sorted(per_hospital.items())}
    pooled = sum_releases(list(releases.values()))
    pooled_stddev = math.sqrt(sum(v**2 for v in stddevs.values()))
    own = {name: release_metrics(layout, r) for name, r in releases.items()}
    row: dict[str, float] = {"pooled_loss": float("nan")}
    for metric in task.metric_names:
        row[f"pooled_{metric}"] = release_metrics(layout, pooled)[metric]
        row[f"pooled_{metric}_low"], row[f"pooled_{metric}_high"] = metric_interval(
            layout, pooled, stddev=pooled_stddev, metric=metric, draws=INTERVAL_DRAWS)
        mean, covered = covered_mean([m[metric] for m in own.values()])
        row[f"client_avg_{metric}"], row[f"client_avg_{metric}_hospitals"] = mean, covered
        row[f"client_avg_{metric}_low"], row[f"client_avg_{metric}_high"] = (
            client_average_interval(layout, releases, stddevs, metric))
        for name, metrics in own.items():
            row[f"{name}_{metric}"] = metrics[metric]
    for name, metrics in own.items():
        row[f"test_rows_{name}"] = int(round(metrics["count"]))
    return row


def client_average_interval(layout: ReleaseLayout, releases: dict[str, Statistics],
                            stddevs: dict[str, float], metric: str, *,
                            draws: int = INTERVAL_DRAWS, seed: int = 0) -> tuple[float, float]:
    """A 95% interval (DP noise) for the mean over hospitals of each one's ``metric``.

    The basic parametric bootstrap of ``metric_interval``, every hospital's release redrawn
    with its own stddev and the finite metrics averaged.
    """
    point = covered_mean([release_metrics(layout, r)[metric] for r in releases.values()])[0]
    if not math.isfinite(point):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        redrawn = [{k: v + rng.normal(0.0, stddevs[name], size=v.shape) for k, v in r.items()}
                   for name, r in releases.items()]
        values.append(covered_mean([release_metrics(layout, r)[metric] for r in redrawn])[0])
    finite = np.array([v for v in values if math.isfinite(v)])
    if finite.size < draws // 2:
        return float("nan"), float("nan")
    low, high = np.percentile(finite - point, [2.5, 97.5])
    return bounded(metric, point - high, point - low)


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
