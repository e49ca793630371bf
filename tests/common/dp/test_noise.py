"""Tests for common.dp.noise: the noise's scale, centring, reproducibility and validation.

Statistical tolerance: for N i.i.d. N(0, s^2) draws, sum(x^2) / s^2 follows chi-square with N
degrees of freedom, so the measured variance is accepted inside the chi-square interval with
probability 1 - 1e-6 (two-sided, 5e-7 per tail); the mean inside +-5.33 s / sqrt(N), the
normal interval with the same 1e-6 false-failure rate. A failure is a 1-in-a-million event.
"""

import numpy as np
import pytest
from scipy import stats

from common.dp.noise import add_gaussian_noise, gaussian_stddev

_FALSE_FAILURE = 1e-6


def _assert_gaussian(samples: np.ndarray, stddev: float) -> None:
    n = samples.size
    low, high = stats.chi2.ppf([_FALSE_FAILURE / 2, 1 - _FALSE_FAILURE / 2], df=n)
    statistic = float(np.sum(samples.astype(np.float64) ** 2) / stddev**2)
    assert low <= statistic <= high, f"variance ratio {statistic / n:.4f} outside the interval"
    z = stats.norm.ppf(1 - _FALSE_FAILURE / 2)
    assert abs(float(np.mean(samples))) <= z * stddev / np.sqrt(n)


def test_add_gaussian_noise_has_stddev_z_times_c():
    # Arrange
    stddev = gaussian_stddev(noise_multiplier=1.3, clipping_norm=0.7)
    update = [np.zeros((200, 250), dtype=np.float32), np.zeros((), dtype=np.float32)]

    # Act
    noised = add_gaussian_noise(update, stddev=stddev, rng=np.random.default_rng(11))

    # Assert
    _assert_gaussian(np.concatenate([np.ravel(a) for a in noised]), 1.3 * 0.7)
    assert noised[1].shape == () and noised[0].dtype == np.float32


def test_gaussian_stddev_distributed_shares_sum_to_full_noise():
    # Arrange: 5 hospitals each add their share; only the sum is seen under secure aggregation
    share = gaussian_stddev(noise_multiplier=1.1, clipping_norm=2.0, num_contributors=5)
    rng = np.random.default_rng(3)

    # Act
    total = sum(add_gaussian_noise([np.zeros(40_000)], stddev=share, rng=rng)[0] for _ in range(5))

    # Assert
    _assert_gaussian(total, 1.1 * 2.0)


def test_add_gaussian_noise_zero_stddev_is_identity_copy():
    # Arrange
    update = [np.array([1.0, -2.0]), np.array(3.0)]

    # Act
    noised = add_gaussian_noise(update, stddev=0.0, rng=np.random.default_rng(0))

    # Assert
    np.testing.assert_array_equal(noised[0], update[0])
    assert noised[0] is not update[0]


def test_add_gaussian_noise_same_seed_reproduces_and_input_untouched():
    # Arrange
    update = [np.ones(10)]

    # Act
    first = add_gaussian_noise(update, stddev=1.0, rng=np.random.default_rng(5))
    second = add_gaussian_noise(update, stddev=1.0, rng=np.random.default_rng(5))
    other = add_gaussian_noise(update, stddev=1.0, rng=np.random.default_rng(6))

    # Assert
    np.testing.assert_array_equal(first[0], second[0])
    assert not np.array_equal(first[0], other[0])
    np.testing.assert_array_equal(update[0], np.ones(10))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noise_multiplier": -0.1, "clipping_norm": 1.0}, "noise_multiplier must be >= 0"),
        ({"noise_multiplier": 1.0, "clipping_norm": 0.0}, "clipping_norm must be > 0"),
        ({"noise_multiplier": 1.0, "clipping_norm": -1.0}, "clipping_norm must be > 0"),
        ({"noise_multiplier": 1, "clipping_norm": 1, "num_contributors": 0}, "num_contributors"),
    ],
    ids=["negative-z", "zero-clip", "negative-clip", "no-contributors"],
)
def test_gaussian_stddev_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gaussian_stddev(**kwargs)


def test_gaussian_stddev_accepts_integers():
    assert gaussian_stddev(noise_multiplier=1, clipping_norm=10, num_contributors=4) == 5.0


def test_add_gaussian_noise_rejects_negative_stddev_and_global_random():
    with pytest.raises(ValueError, match="stddev must be >= 0"):
        add_gaussian_noise([np.zeros(2)], stddev=-1.0, rng=np.random.default_rng())
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        add_gaussian_noise([np.zeros(2)], stddev=1.0, rng=np.random)
