"""Clip a model update to a global L2 norm C: the sensitivity bound behind DP-FedAvg.

Mechanism: delta = w_local - w_global over all trainable arrays is scaled by min(1, C/||delta||)
(McMahan et al. ICLR 2018, Algorithm 1, ClipFn). Sensitivity: a clipped update has norm <= C,
so replacing one hospital's update moves the sum by <= 2C. The adversary learns nothing from
this step alone; it only bounds what the noise must hide. Unit of privacy: the hospital.
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["clip_to_norm", "compute_update", "l2_norm"]

# After scaling, float32 rounding can leave the norm a few ulps above C; shrink by a few ulps
# at a time until the bound holds exactly as l2_norm measures it.
_MAX_SHRINK_STEPS = 16


def _require_clipping_norm(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"clipping_norm must be a number, got {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"clipping_norm must be > 0 and finite, got {value!r}")
    return float(value)


def _as_float_array(value: npt.ArrayLike) -> np.ndarray:
    array = np.asarray(value)
    if np.issubdtype(array.dtype, np.floating):
        return array
    if np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_:
        return array.astype(np.float64)
    raise ValueError(f"update arrays must be numeric, got dtype {array.dtype}")


def l2_norm(arrays: Sequence[npt.ArrayLike]) -> float:
    """Return the global L2 norm over all arrays together.

    Parameters
    ----------
    arrays : sequence of array_like
        Arrays of any shape, including 0-d arrays and scalars; an empty sequence has norm 0.

    Returns
    -------
    float
        ``sqrt(sum over arrays of sum of squares)``, accumulated in float64 (where squares of
        float32 values cannot overflow). ``inf`` or ``nan`` if any entry is.
    """
    norms = [np.linalg.norm(_as_float_array(a).astype(np.float64).reshape(-1)) for a in arrays]
    if not norms:
        return 0.0
    return float(np.linalg.norm(np.asarray(norms, dtype=np.float64)))


def compute_update(
    local: Sequence[npt.ArrayLike], global_: Sequence[npt.ArrayLike]
) -> list[np.ndarray]:
    """Return the model update ``local - global_``, array by array.

    Parameters
    ----------
    local : sequence of array_like
        The hospital's weights after local training.
    global_ : sequence of array_like
        The global weights the round started from, same shapes and order.

    Returns
    -------
    list of np.ndarray
        New arrays with the shapes of ``local``, in the floating dtype of ``local`` (integer
        inputs become float64).

    Raises
    ------
    ValueError
        If the lists differ in length or any pair differs in shape.
    """
    if len(local) != len(global_):
        raise ValueError(
            f"local and global_ must hold the same number of arrays, got {len(local)} "
            f"and {len(global_)}"
        )
    update = []
    for index, (after, before) in enumerate(zip(local, global_, strict=True)):
        after_array, before_array = _as_float_array(after), np.asarray(before)
        if after_array.shape != before_array.shape:
            raise ValueError(
                f"array {index} must have the same shape in local and global_, got "
                f"{after_array.shape} and {before_array.shape}"
            )
        update.append(np.asarray(after_array - before_array, dtype=after_array.dtype))
    return update


def clip_to_norm(
    update: Sequence[npt.ArrayLike], *, clipping_norm: float
) -> tuple[list[np.ndarray], float]:
    """Scale an update so that its global L2 norm is at most ``clipping_norm``.

    Parameters
    ----------
    update : sequence of array_like
        The update's arrays (any shapes, including 0-d and scalars). Not modified.
    clipping_norm : float
        C, the bound on the global L2 norm, in the update's units; must be > 0.

    Returns
    -------
    clipped : list of np.ndarray
        New arrays with the input's shapes and floating dtypes. Guarantee:
        ``l2_norm(clipped) <= clipping_norm`` exactly, as ``l2_norm`` computes it (float32
        rounding is absorbed by shrinking a few ulps). Direction is kept. An update with norm
        <= C, including the zero update, is returned unchanged (as copies).
    original_norm : float
        The update's global L2 norm before clipping.

    Raises
    ------
    ValueError
        If ``clipping_norm`` is not a finite number > 0, or the update holds a non-finite
        value (a NaN or infinite update cannot be bounded, so it must never be sent).
    """
    bound = _require_clipping_norm(clipping_norm)
    arrays = [_as_float_array(a) for a in update]
    norm = l2_norm(arrays)
    if not np.isfinite(norm):
        raise ValueError(f"update must be finite to be clipped, got global L2 norm {norm}")
    if norm <= bound:
        return [np.array(a, copy=True) for a in arrays], norm
    scale = bound / norm
    ulp = max((float(np.finfo(a.dtype).eps) for a in arrays), default=0.0)
    for _ in range(_MAX_SHRINK_STEPS):
        clipped = [np.asarray(a * scale, dtype=a.dtype) for a in arrays]
        if l2_norm(clipped) <= bound:
            return clipped, norm
        scale *= 1.0 - 4.0 * ulp
    raise ValueError(
        f"update could not be clipped to clipping_norm={bound!r} in its dtype "
        "(clipping_norm is below the dtype's resolution)"
    )
