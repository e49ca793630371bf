"""Aggregation of hospitals' updates: the (weighted) mean, in a fixed order.

Float sums depend on their order, so callers pass updates sorted by hospital; the mean is
accumulated in float64 and cast back to each array's dtype, which makes repeated runs
bit-identical.
"""

import numpy as np

from common.types import NDArrays


def weighted_mean(updates: list[NDArrays], weights: list[float]) -> NDArrays:
    """Return sum_i w_i * u_i / sum_i w_i, array by array.

    Parameters
    ----------
    updates : list[NDArrays]
        One list of arrays per hospital, all with the same shapes, in a fixed order.
    weights : list[float]
        Non-negative weight per hospital (examples, or 1 for an unweighted mean).
    """
    if not updates:
        raise ValueError("cannot aggregate zero updates")
    if len(weights) != len(updates):
        raise ValueError(f"{len(updates)} updates but {len(weights)} weights")
    total = float(np.sum(weights))
    if total <= 0 or min(weights) < 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {weights}")
    mean = []
    for layer in range(len(updates[0])):
        acc = np.zeros(np.shape(updates[0][layer]), dtype=np.float64)
        for update, weight in zip(updates, weights, strict=True):
            acc += float(weight) * np.asarray(update[layer], dtype=np.float64)
        mean.append((acc / total).astype(np.asarray(updates[0][layer]).dtype))
    return mean
