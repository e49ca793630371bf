import numpy as np
import pytest

from server.validation import noise_tolerance, update_problem

LIKE = [np.zeros((3, 2), np.float32), np.zeros(2, np.float32)]


def _good(scale=0.1):
    return [np.full((3, 2), scale, np.float32), np.full(2, scale, np.float32)]


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ([np.full((3, 2), np.nan, np.float32), np.zeros(2, np.float32)], "non-finite"),
        ([np.zeros((3, 2), np.float32), np.array([np.inf, 0], np.float32)], "non-finite"),
        ([np.zeros((2, 3), np.float32), np.zeros(2, np.float32)], "shape (2, 3), expected (3, 2)"),
        ([np.zeros((3, 2), np.float32)], "1 arrays, expected 2"),
        ([np.zeros((3, 2), np.float64), np.zeros(2, np.float32)], "dtype float64"),
        ([a * 1000 for a in _good()], "exceeds the clip bound"),
    ],
    ids=["nan", "inf", "shape", "missing-array", "dtype", "scaled-1000x"],
)
def test_malformed_update_is_rejected_with_reason(update, reason):
    problem = update_problem(update, LIKE, max_norm=1.0)
    assert problem is not None and reason in problem


def test_clipped_update_passes():
    assert update_problem(_good(), LIKE, max_norm=1.0) is None
    assert update_problem([a * 1000 for a in _good()], LIKE, max_norm=None) is None


def test_noise_tolerance_admits_honest_noise_and_rejects_scaled_updates():
    rng = np.random.default_rng(0)
    stddev, size, clip = 0.3, 1000, 1.0
    bound = clip + noise_tolerance(stddev, size)
    like = [np.zeros(size, np.float32)]
    for _ in range(200):  # an honest hospital-level update: clipped to C, then noised
        direction = rng.normal(size=size)
        update = [(direction / np.linalg.norm(direction) * clip
                   + rng.normal(0, stddev, size)).astype(np.float32)]
        assert update_problem(update, like, max_norm=bound) is None
    scaled = [update[0] * 20]
    assert "exceeds the clip bound" in update_problem(scaled, like, max_norm=bound)
