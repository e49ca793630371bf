"""Tests for common.dp.clipping: the global-norm bound, direction, identity and edge cases."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from common.dp.clipping import clip_to_norm, compute_update, l2_norm

_values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)
_update = st.lists(
    st.one_of(
        arrays(np.float32, array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
               elements=_values),
        arrays(np.float64, st.just(()), elements=_values),
        st.just(np.zeros((3, 2), dtype=np.float32)),
        _values,
    ),
    min_size=0,
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(update=_update, clipping_norm=st.floats(min_value=1e-3, max_value=1e4))
def test_clip_to_norm_bounds_global_norm(update, clipping_norm):
    # Act
    clipped, original = clip_to_norm(update, clipping_norm=clipping_norm)

    # Assert: the bound holds exactly (no tolerance), shapes are kept, norms <= C are untouched
    assert l2_norm(clipped) <= clipping_norm
    assert [np.shape(c) for c in clipped] == [np.shape(u) for u in update]
    assert original == pytest.approx(l2_norm(update))
    if original <= clipping_norm:
        for before, after in zip(update, clipped, strict=True):
            np.testing.assert_array_equal(after, before)


@settings(max_examples=100, deadline=None)
@given(update=_update, clipping_norm=st.floats(min_value=1e-3, max_value=10.0))
def test_clip_to_norm_keeps_direction(update, clipping_norm):
    # Arrange
    before = np.concatenate([np.ravel(np.asarray(u, dtype=np.float64)) for u in update] + [[0.0]])

    # Act
    clipped, _ = clip_to_norm(update, clipping_norm=clipping_norm)

    # Assert
    after = np.concatenate([np.ravel(c).astype(np.float64) for c in clipped] + [[0.0]])
    if np.linalg.norm(before) > 1e-3 and np.linalg.norm(after) > 1e-6:
        cosine = before @ after / (np.linalg.norm(before) * np.linalg.norm(after))
        assert cosine == pytest.approx(1.0, abs=1e-5)


def test_clip_to_norm_three_four_five():
    # Act
    (clipped,), norm = clip_to_norm([np.array([-6.0, 8.0])], clipping_norm=5.0)

    # Assert
    assert norm == 10.0
    np.testing.assert_allclose(clipped, [-3.0, 4.0])


def test_clip_to_norm_global_over_layers_and_scalar():
    # Arrange: a 0-d layer alone carries norm 12, so it must be scaled with the others
    update = [np.array([3.0, 4.0], dtype=np.float32), np.array(12.0, dtype=np.float32)]

    # Act
    clipped, norm = clip_to_norm(update, clipping_norm=6.5)

    # Assert
    assert norm == pytest.approx(13.0)
    assert clipped[1].shape == () and clipped[1].dtype == np.float32
    np.testing.assert_allclose(clipped[1], 6.0, rtol=1e-6)
    np.testing.assert_allclose(clipped[0], [1.5, 2.0], rtol=1e-6)


def test_clip_to_norm_zero_update_is_unchanged():
    # Act
    clipped, norm = clip_to_norm([np.zeros(3), np.float64(0.0)], clipping_norm=1.0)

    # Assert
    assert norm == 0.0
    np.testing.assert_array_equal(clipped[0], np.zeros(3))
    assert clipped[1].shape == ()


def test_clip_to_norm_does_not_mutate_input():
    # Arrange
    update = [np.array([30.0, 40.0])]

    # Act
    clip_to_norm(update, clipping_norm=1.0)

    # Assert
    np.testing.assert_array_equal(update[0], [30.0, 40.0])


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")], ids=str)
def test_clip_to_norm_rejects_bad_clipping_norm(bad):
    with pytest.raises(ValueError, match="clipping_norm must be > 0"):
        clip_to_norm([np.ones(2)], clipping_norm=bad)


def test_clip_to_norm_rejects_non_finite_update():
    with pytest.raises(ValueError, match="update must be finite"):
        clip_to_norm([np.array([1.0, np.nan])], clipping_norm=1.0)


def test_compute_update_is_local_minus_global():
    # Act
    local = [np.array([3.0, 5.0]), np.array(2.0)]
    update = compute_update(local, [np.array([1.0, 1.0]), np.array(0.5)])

    # Assert
    np.testing.assert_array_equal(update[0], [2.0, 4.0])
    assert update[1].shape == () and float(update[1]) == 1.5


def test_compute_update_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="array 0 must have the same shape"):
        compute_update([np.zeros(3)], [np.zeros(2)])
    with pytest.raises(ValueError, match="same number of arrays"):
        compute_update([np.zeros(3)], [])
