"""Quantisation: bounded error, unbiased rounding, clipping, and sums that never wrap."""

import numpy as np
import pytest

from common.secagg.quantization import choose_scale, dequantize_sum, quantize


def _sum_mod(vectors):
    total = np.zeros_like(vectors[0])
    for vector in vectors:
        total += vector  # uint64 wraps mod 2**64, as in the protocol
    return total


def test_dequantize_sum_within_one_step_per_summand():
    # Arrange
    rng = np.random.default_rng(1)
    scale, clip_bound, n = 2.0**10, 1.0, 7
    updates = [rng.uniform(-1.0, 1.0, size=5_000) for _ in range(n)]

    # Act
    quantized = [quantize(u, clip_bound=clip_bound, scale=scale, rng=rng).values for u in updates]
    decoded = dequantize_sum(
        _sum_mod(quantized), num_summands=n, clip_bound=clip_bound, scale=scale
    )

    # Assert: each summand errs by < 1/scale, so the mean errs by < 1/scale
    error_of_mean = np.abs(decoded / n - np.mean(updates, axis=0))
    assert np.max(error_of_mean) < 1.0 / scale
    assert np.max(error_of_mean) > 0.0  # the step is coarse enough to be visible


def test_quantize_rounding_is_unbiased():
    # Arrange: 0.3 steps above an integer, far from representable at scale 1
    rng = np.random.default_rng(2)
    values = np.full(40_000, 5.3)

    # Act
    result = quantize(values, clip_bound=10.0, scale=1.0, rng=rng)

    # Assert: only the two neighbours occur, with mean 5.3 (4 standard errors)
    signed = result.values.view(np.int64)
    assert set(np.unique(signed).tolist()) == {5, 6}
    standard_error = np.sqrt(0.3 * 0.7 / values.size)
    assert abs(signed.mean() - 5.3) < 4 * standard_error


def test_quantize_clips_and_counts_out_of_bound_values():
    # Arrange: values exactly representable at scale 2, so no rounding is involved
    values = np.array([-6.0, 0.5, 8.0, -5.0])

    # Act
    result = quantize(values, clip_bound=5.0, scale=2.0, rng=np.random.default_rng(0))
    decoded = dequantize_sum(result.values, num_summands=1, clip_bound=5.0, scale=2.0)

    # Assert
    assert result.num_clipped == 2
    np.testing.assert_array_equal(decoded, [-5.0, 0.5, 5.0, -5.0])


def test_quantize_encodes_negatives_as_twos_complement():
    result = quantize(np.array([-1.0]), clip_bound=1.0, scale=1.0, rng=np.random.default_rng(0))

    assert result.values.dtype == np.uint64
    assert int(result.values[0]) == 2**64 - 1


@pytest.mark.parametrize("n", [1, 3, 10, 1000])
def test_choose_scale_extreme_sums_do_not_wrap(n):
    # Arrange: every summand at the same extreme is the worst case for wrapping
    clip_bound = 2.5
    scale = choose_scale(clip_bound, n)
    rng = np.random.default_rng(3)

    for extreme in (clip_bound, -clip_bound):
        quantized = [
            quantize(np.full(4, extreme), clip_bound=clip_bound, scale=scale, rng=rng).values
            for _ in range(n)
        ]

        # Act
        decoded = dequantize_sum(
            _sum_mod(quantized), num_summands=n, clip_bound=clip_bound, scale=scale
        )

        # Assert: the sign survived and the value is n * extreme within n steps
        assert np.all(np.abs(decoded - n * extreme) <= n / scale)


def test_choose_scale_is_the_largest_safe_power_of_two():
    scale = choose_scale(1.0, 10)

    # Twice the scale can wrap, which dequantize_sum refuses to decode
    with pytest.raises(ValueError, match="can wrap mod 2\\*\\*64"):
        dequantize_sum(
            np.zeros(1, dtype=np.uint64), num_summands=10, clip_bound=1.0, scale=2 * scale
        )


def test_choose_scale_small_modulus_keeps_sum_in_range():
    # Arrange
    n, clip_bound = 4, 1.0
    scale = choose_scale(clip_bound, n, modulus_bits=16)
    rng = np.random.default_rng(4)

    # Act
    quantized = [
        quantize(np.full(3, clip_bound), clip_bound=clip_bound, scale=scale, rng=rng).values
        for _ in range(n)
    ]
    signed_sum = _sum_mod(quantized).view(np.int64)

    # Assert: the worst-case sum fits a 16-bit two's complement
    assert np.all(signed_sum <= 2**15 - 1)
    assert scale >= 2.0**12  # and the scale is not needlessly coarse


def test_dequantize_sum_rejects_a_still_masked_vector():
    masked = np.random.default_rng(5).integers(0, 2**64, size=64, dtype=np.uint64)

    with pytest.raises(ValueError, match="masks were not removed"):
        dequantize_sum(masked, num_summands=3, clip_bound=1.0, scale=2.0**20)


@pytest.mark.parametrize(
    ("values", "kwargs", "message"),
    [
        (np.array([1.0, np.nan]), {}, "must be finite"),
        (np.ones((2, 2)), {}, "flat float vector"),
        (np.array([1, 2]), {}, "flat float vector"),
        (np.ones(2), {"clip_bound": 0.0}, "clip_bound must be a finite number > 0"),
        (np.ones(2), {"scale": float("inf")}, "scale must be a finite number > 0"),
        (np.ones(2), {"scale": 2.0**62, "clip_bound": 2.0}, "exceeds 2\\*\\*62"),
    ],
    ids=["nan", "2-d", "int-dtype", "zero-bound", "inf-scale", "too-large"],
)
def test_quantize_rejects_bad_input(values, kwargs, message):
    arguments = {"clip_bound": 1.0, "scale": 2.0**10, "rng": np.random.default_rng(0)} | kwargs

    with pytest.raises(ValueError, match=message):
        quantize(values, **arguments)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.0, 3), "clip_bound"),
        ((1.0, 0), "max_summands"),
        ((1.0, 3, 65), "modulus_bits"),
        ((1.0, 2**20, 16), "no headroom"),
    ],
    ids=["bound", "summands", "bits", "headroom"],
)
def test_choose_scale_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        choose_scale(*args)
