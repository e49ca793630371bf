"""Tests for common.weights: flatten/unflatten round-trips shapes, dtypes and 0-d arrays."""

import numpy as np
import pytest

from common.weights import flatten_arrays, unflatten_arrays


def test_flatten_arrays_round_trips_shapes_dtypes_and_scalars():
    # Arrange
    arrays = [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array(2.5, dtype=np.float64),
        np.zeros((0, 4), dtype=np.float32),
        np.array([-1.0, 7.0], dtype=np.float16),
    ]

    # Act
    flat = flatten_arrays(arrays)
    restored = unflatten_arrays(flat, arrays)

    # Assert
    assert flat.dtype == np.float64 and flat.shape == (9,)
    for original, back in zip(arrays, restored, strict=True):
        assert back.shape == original.shape and back.dtype == original.dtype
        np.testing.assert_array_equal(back, original)
    assert restored[1].ndim == 0


def test_flatten_arrays_of_empty_list_is_empty_vector():
    assert flatten_arrays([]).shape == (0,)
    assert unflatten_arrays(np.zeros(0), []) == []


def test_unflatten_arrays_rejects_wrong_length():
    with pytest.raises(ValueError, match="flat must have 3 entries"):
        unflatten_arrays(np.zeros(4), [np.zeros(3)])


def test_unflatten_arrays_returns_copies_not_views():
    # Arrange
    flat = np.arange(4, dtype=np.float64)

    # Act
    (restored,) = unflatten_arrays(flat, [np.zeros((2, 2))])
    flat[0] = 100.0

    # Assert
    assert restored[0, 0] == 0.0
