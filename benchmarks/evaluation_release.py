"""Benchmark: how many score bins the DP evaluation release should have (heart-disease).

A logistic model fitted on the four hospitals' training rows (scikit-learn, the task's own
features) stands in for the federation's final model. For each number of bins, the four
hospitals' releases (``common.dp.evaluation_release``, patient level) get Gaussian noise with
the z one release at the test budget costs (Opacus), are summed, and the pooled accuracy and
AUC are compared with the exact ones (AUC from 1000 bins); the root mean squared error over
the draws is printed. Usage:
``python -m benchmarks.evaluation_release [--epsilon 1] [--draws 2000]``.
"""

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression

from common.dp.accounting import calibrate_noise_multiplier
from common.dp.evaluation_release import (
    ReleaseLayout,
    exact_release,
    noised_release,
    release_metrics,
    sum_releases,
)
from common.metrics import evaluation_statistics, metrics_from_statistics, sum_statistics
from common.tasks import get_task, load_task_hospitals
from common.wire.modes import PrivacyLevel


def main() -> None:
    """Print the pooled accuracy's and AUC's RMSE against the exact ones, per bin count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--draws", type=int, default=2000)
    args = parser.parse_args()
    task = get_task("heart-disease")
    hospitals = load_task_hospitals(task, 4, seed=0, partition="iid", alpha=0.5)
    model = LogisticRegression(max_iter=1000).fit(
        np.concatenate([h.x_train for h in hospitals]),
        np.concatenate([h.y_train for h in hospitals]))
    scores = [model.predict_proba(h.x_test)[:, 1] for h in hospitals]
    exact = metrics_from_statistics("binary", sum_statistics([
        evaluation_statistics("binary", h.y_test, s) for h, s in zip(hospitals, scores,
                                                                     strict=True)]))
    z = calibrate_noise_multiplier(target_epsilon=args.epsilon, target_delta=args.delta,
                                   sample_rate=1.0, steps=1)
    print(f"heart-disease, 4 hospitals, {sum(h.num_test for h in hospitals)} test rows; exact "
          f"pooled accuracy {exact['accuracy']:.4f}, AUC {exact['auc']:.4f}; test epsilon "
          f"{args.epsilon:g} -> z = {z:.3f}")
    print(f"{'bins':>5}{'accuracy RMSE':>15}{'AUC RMSE':>11}{'AUC bias':>10}")
    for bins in (2, 4, 8, 16):
        layout = ReleaseLayout("binary", 1, bins)
        stddev = z * layout.sensitivity(PrivacyLevel.PATIENT)
        releases = [exact_release(layout, h.y_test, s, level=PrivacyLevel.PATIENT)
                    for h, s in zip(hospitals, scores, strict=True)]
        rng = np.random.default_rng(0)
        errors = []
        for _ in range(args.draws):
            noised = sum_releases([noised_release(r, stddev=stddev, rng=rng) for r in releases])
            metrics = release_metrics(layout, noised)
            errors.append((metrics["accuracy"] - exact["accuracy"], metrics["auc"] - exact["auc"]))
        e = np.array(errors)
        print(f"{bins:>5}{np.sqrt(np.mean(e[:, 0] ** 2)):>15.4f}"
              f"{np.sqrt(np.mean(e[:, 1] ** 2)):>11.4f}{np.mean(e[:, 1]):>10.4f}")


if __name__ == "__main__":
    main()
