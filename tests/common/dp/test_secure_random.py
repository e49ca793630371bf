"""Tests for common.dp.secure_random: the ChaCha20 keystream, its distributions and keying.

Statistical tests draw 1e6 values and reject at p < 1e-6 (or intervals of that coverage), so
each has a false-failure rate of at most 1e-6 (about 1.5e-5 for the whole module).
"""

import pickle

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from scipy import stats

import common.dp.secure_random as secure_random
from common.dp.noise import add_gaussian_noise
from common.dp.secure_random import SecureRandom, require_rng

N = 1_000_000
ALPHA = 1e-6
KEY = bytes(range(32))


def _keystream(key: bytes, segment: int, length: int) -> bytes:
    nonce = (0).to_bytes(4, "little") + segment.to_bytes(12, "little")
    return Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor().update(bytes(length))


def test_words_are_the_chacha20_keystream_and_segments_never_reuse_a_nonce(monkeypatch):
    monkeypatch.setattr(secure_random, "SEGMENT_BYTES", 64)
    rng = SecureRandom(KEY)

    words = rng.random_raw(20)  # 160 bytes: segments 0, 1 and half of 2

    expected = b"".join(_keystream(KEY, segment, 64) for segment in range(3))[:160]
    assert words.tobytes() == expected
    assert words.dtype == np.uint64


def test_uniforms_fit_uniform_ks_and_chi_square():
    values = SecureRandom().random(N)

    assert values.dtype == np.float64 and values.min() >= 0.0 and values.max() < 1.0
    assert stats.kstest(values, "uniform").pvalue > ALPHA
    counts = np.bincount((values * 1000).astype(int), minlength=1000)
    assert stats.chisquare(counts).pvalue > ALPHA
    # 53 bits each: every value is a multiple of 2**-53, and the low bits are used
    assert np.all(values * 2.0**53 == np.floor(values * 2.0**53))
    assert np.mean((values * 2.0**53).astype(np.uint64) & np.uint64(1)) == pytest.approx(0.5,
                                                                                         abs=0.01)


def test_float32_uniforms_fit_chi_square():
    values = SecureRandom().random(N, dtype=np.float32)

    assert values.dtype == np.float32 and values.max() < 1.0
    counts = np.bincount((values.astype(np.float64) * 1000).astype(int), minlength=1000)
    assert stats.chisquare(counts).pvalue > ALPHA


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_normals_fit_ks_mean_and_stddev(dtype):
    values = SecureRandom().standard_normal(N, dtype=dtype).astype(np.float64)

    assert stats.kstest(values, "norm").pvalue > ALPHA
    z_bound = stats.norm.isf(ALPHA / 2)  # two-sided
    assert abs(values.mean()) <= z_bound / np.sqrt(N)
    low, high = stats.chi2.ppf([ALPHA / 2, 1 - ALPHA / 2], df=N)
    assert low <= np.sum(values**2) <= high
    # tails: P(|Z| > 4) = 6.3e-5; the count is Binomial(N, 6.3e-5), mean 63
    tail = np.count_nonzero(np.abs(values) > 4)
    assert stats.binomtest(tail, N, 2 * stats.norm.sf(4)).pvalue > ALPHA


def test_normal_scales_and_broadcasts_like_numpy():
    rng = SecureRandom(KEY)

    values = rng.normal(3.0, 2.0, size=(N,))
    columns = rng.normal(np.array([0.0, 10.0]), np.array([1.0, 0.5]), size=(N // 2, 2))

    assert abs(values.mean() - 3.0) <= stats.norm.isf(ALPHA / 2) * 2.0 / np.sqrt(N)
    low, high = stats.chi2.ppf([ALPHA / 2, 1 - ALPHA / 2], df=N)
    assert low <= np.sum(((values - 3.0) / 2.0) ** 2) <= high
    assert columns.shape == (N // 2, 2)
    assert columns[:, 1].std() == pytest.approx(0.5, rel=0.01)
    assert isinstance(rng.normal(), float)
    with pytest.raises(ValueError, match="scale must be finite and >= 0"):
        rng.normal(0.0, -1.0, size=3)


def test_two_generators_keyed_from_the_os_differ_and_an_explicit_key_reproduces():
    first, second = SecureRandom(), SecureRandom()
    again = [SecureRandom(KEY).standard_normal(1000) for _ in range(2)]

    assert not np.array_equal(first.random_raw(8), second.random_raw(8))
    np.testing.assert_array_equal(again[0], again[1])
    assert not np.array_equal(again[0], SecureRandom(bytes(32)).standard_normal(1000))


def test_successive_draws_continue_the_stream():
    rng, reference = SecureRandom(KEY), SecureRandom(KEY)

    parts = np.concatenate([rng.random_raw(3), rng.random_raw(5)])

    np.testing.assert_array_equal(parts, reference.random_raw(8))


def test_bernoulli_masks_have_the_right_rate():
    mask = SecureRandom().bernoulli(0.03, size=(100, N // 100))

    assert mask.dtype == np.bool_ and mask.shape == (100, N // 100)
    assert stats.binomtest(int(mask.sum()), N, 0.03).pvalue > ALPHA
    with pytest.raises(ValueError, match="p must be a probability"):
        SecureRandom().bernoulli(1.5, size=3)


def test_integers_are_unbiased_and_within_bounds():
    rng = SecureRandom()

    small = rng.integers(-3, 4, size=N)  # 7 values: not a power of two (rejection matters)
    full = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=1000,
                        dtype=np.int64, endpoint=True)

    assert small.min() == -3 and small.max() == 3
    assert stats.chisquare(np.bincount(small + 3)).pvalue > ALPHA
    assert full.dtype == np.int64 and (full < 0).any() and (full > 0).any()
    assert isinstance(rng.integers(5), int) and 0 <= rng.integers(5) < 5
    assert rng.integers(250, 256, size=10, dtype=np.uint8).min() >= 250
    with pytest.raises(ValueError, match="low < high"):
        rng.integers(3, 3)


def test_generator_refuses_bad_keys_and_pickling():
    with pytest.raises(ValueError, match="key must be 32 bytes"):
        SecureRandom(b"short")
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(SecureRandom())
    assert "ChaCha20" in repr(SecureRandom(KEY)) and KEY.hex() not in repr(SecureRandom(KEY))


def test_secure_random_drives_the_gaussian_mechanism():
    update = [np.zeros((500, 400)), np.zeros(3)]

    noised = add_gaussian_noise(update, stddev=0.25, rng=SecureRandom())

    values = np.concatenate([a.ravel() for a in noised]) / 0.25
    low, high = stats.chi2.ppf([ALPHA / 2, 1 - ALPHA / 2], df=values.size)
    assert low <= np.sum(values**2) <= high
    assert require_rng(np.random.default_rng()) is not None
    with pytest.raises(TypeError, match="numpy.random.Generator or a SecureRandom"):
        require_rng(np.random)
