import numpy as np
import pytest

from common.server_optimizers import ServerOptimizer
from server.strategy import FedcareStrategy, HospitalUpdate
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


def test_rejected_update_is_reported_and_never_averaged():
    strategy = FedcareStrategy(hospitals=2, optimizer=ServerOptimizer("fedavg", 1.0), weighted=False)
    strategy.global_weights = [w.copy() for w in LIKE]
    strategy.update_norm_bound = 1.0
    replies = [
        HospitalUpdate(index=0, name="a", update=_good(0.1), num_examples=0, train_loss=0.1),
        HospitalUpdate(index=1, name="b", update=[a * 1000 for a in _good(0.1)], num_examples=0,
                       train_loss=0.1),
    ]
    kept = strategy.screen_replies(1, replies)
    assert [r.name for r in kept] == ["a"]
    assert "exceeds the clip bound" in strategy.last_rejected["b"]
    new = strategy.aggregate_updates(kept)
    np.testing.assert_array_equal(new[0], np.full((3, 2), 0.1, np.float32))


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


def test_hospital_level_bound_uses_the_stated_noise():
    strategy = FedcareStrategy(hospitals=2, optimizer=ServerOptimizer("fedavg", 1.0), weighted=False)
    strategy.global_weights = [np.zeros(100, np.float32)]
    strategy.update_norm_bound = 1.0
    noisy = [np.full(100, 0.5, np.float32)]  # norm 5: fine with stddev 0.4, not without noise
    replies = [HospitalUpdate(index=0, name="a", update=noisy, num_examples=0, train_loss=0.1,
                              noise_stddev=0.4),
               HospitalUpdate(index=1, name="b", update=noisy, num_examples=0, train_loss=0.1)]
    kept = strategy.screen_replies(1, replies)
    assert [r.name for r in kept] == ["a"] and "b" in strategy.last_rejected
