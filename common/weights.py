"""Flatten a model's list of weight arrays into one vector and back.

Clipping, noising, quantisation and masking act on the update as one vector over all
layers together; these two functions are the only place that layout is defined. The order
is the list order, each array in C (row-major) order; 0-d arrays contribute one entry.
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["arrays_problem", "flatten_arrays", "unflatten_arrays"]


def arrays_problem(arrays: Sequence[np.ndarray], like: Sequence[object]) -> str | None:
    """Return why `arrays` do not fit the templates `like`, or None if they do.

    They fit when there are as many, each with its template's shape and dtype (a template is
    anything with ``.shape`` and ``.dtype``: an array, a Keras variable), and every value is
    finite. The reason names the first array that does not fit, by its index.
    """
    if len(arrays) != len(like):
        return f"{len(arrays)} arrays, expected {len(like)}"
    for index, (array, reference) in enumerate(zip(arrays, like, strict=True)):
        shape, expected = tuple(array.shape), tuple(reference.shape)  # type: ignore[attr-defined]
        if shape != expected:
            return f"array {index} has shape {shape}, expected {expected}"
        dtype = np.dtype(reference.dtype)  # type: ignore[attr-defined]
        if np.dtype(array.dtype) != dtype:
            return f"array {index} has dtype {array.dtype}, expected {dtype}"
        if not np.all(np.isfinite(array)):
            return f"array {index} has non-finite values (NaN or Inf)"
    return None


def flatten_arrays(arrays: Sequence[npt.ArrayLike]) -> npt.NDArray[np.float64]:
    """Concatenate arrays into one float64 vector.

    Parameters
    ----------
    arrays : sequence of array_like
        Arrays of any shape, including 0-d arrays and Python or NumPy scalars.

    Returns
    -------
    np.ndarray
        New float64 array of shape (sum of sizes,); empty when ``arrays`` is empty. float64
        holds every float32/float16 value exactly, so ``unflatten_arrays`` round-trips them.

    Raises
    ------
    ValueError
        If an array is not numeric (e.g. strings or objects).
    """
    parts = []
    for index, array in enumerate(arrays):
        values = np.asarray(array)
        if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_):
            raise ValueError(f"arrays[{index}] must be numeric, got dtype {values.dtype}")
        parts.append(values.astype(np.float64, copy=False).reshape(-1))
    if not parts:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate(parts)


def unflatten_arrays(
    flat: npt.ArrayLike, like: Sequence[npt.ArrayLike]
) -> list[np.ndarray]:
    """Split a vector into arrays with the shapes and dtypes of ``like``.

    Parameters
    ----------
    flat : array_like
        1-D vector whose length is the total size of ``like`` (as made by ``flatten_arrays``).
    like : sequence of array_like
        Template arrays; only their shapes and dtypes are used.

    Returns
    -------
    list of np.ndarray
        New arrays, one per template, each with the template's shape (0-d stays 0-d) and
        dtype. Values are cast with NumPy's rules (float64 -> float32 rounds to nearest).

    Raises
    ------
    ValueError
        If ``flat`` is not 1-D or its length differs from the templates' total size.
    """
    vector = np.asarray(flat)
    if vector.ndim != 1:
        raise ValueError(f"flat must be 1-D, got shape {vector.shape}")
    templates = [np.asarray(array) for array in like]
    total = sum(int(t.size) for t in templates)
    if vector.shape[0] != total:
        raise ValueError(
            f"flat must have {total} entries (the total size of like), got {vector.shape[0]}"
        )
    result = []
    offset = 0
    for template in templates:
        size = int(template.size)
        chunk = vector[offset : offset + size].reshape(template.shape)
        result.append(np.array(chunk, dtype=template.dtype, copy=True))
        offset += size
    return result
