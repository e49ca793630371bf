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


def coordinate_median(updates: list[NDArrays]) -> NDArrays:
    """Return the coordinate-wise median of the updates, array by array (Yin et al. 2018).

    With n updates, fewer than n/2 arbitrary (Byzantine) ones cannot move any coordinate
    outside the range of the honest updates' values there.
    """
    if not updates:
        raise ValueError("cannot aggregate zero updates")
    return [np.median(np.stack([np.asarray(u[layer], dtype=np.float64) for u in updates]), axis=0)
            .astype(np.asarray(updates[0][layer]).dtype) for layer in range(len(updates[0]))]


def trimmed_mean(updates: list[NDArrays], trim_fraction: float) -> NDArrays:
    """Return the coordinate-wise trimmed mean: drop the k largest and k smallest values.

    k = floor(trim_fraction * n) per side; ``trim_fraction`` in [0, 0.5). With k = 0 this is
    the plain mean.
    """
    if not updates:
        raise ValueError("cannot aggregate zero updates")
    if not 0 <= trim_fraction < 0.5:
        raise ValueError(f"trim fraction must be in [0, 0.5), got {trim_fraction!r}")
    k = int(np.floor(trim_fraction * len(updates)))
    result = []
    for layer in range(len(updates[0])):
        stacked = np.sort(np.stack([np.asarray(u[layer], dtype=np.float64) for u in updates]),
                          axis=0)
        kept = stacked[k:len(updates) - k]
        result.append(kept.mean(axis=0).astype(np.asarray(updates[0][layer]).dtype))
    return result
