"""Masking: masks cancel in the sum, dropped hospitals' masks are removable, one masked update
looks uniform, and different keys give different masks.
"""

import hashlib

import numpy as np
import pytest
from scipy import stats

from common.secagg.key_agreement import (
    Purpose,
    build_info,
    derive_key,
    generate_private_key,
    public_key_bytes,
)
from common.secagg.masking import mask_update, unmask_sum

ROUND = 7
# Family-wise false-rejection rate of the uniformity check, split over its two tests.
ALPHA = 1e-3
SAMPLE_WORDS = 2**17
CHI2_CRITICAL = stats.chi2.isf(ALPHA / 2, df=255)  # ~ 335.9
BIT_Z_CRITICAL = stats.norm.isf(ALPHA / 2 / 2 / 64)  # two-sided, Bonferroni, 64 bits: ~ 4.47


def _fixed_key(label):
    return hashlib.sha256(label.encode()).digest()


def _pairwise_keys(ids):
    private = {node: generate_private_key() for node in ids}
    keys = {}
    for node in ids:
        keys[node] = {
            peer: derive_key(
                private[node],
                public_key_bytes(private[peer]),
                info=build_info(Purpose.MASK, round_number=ROUND, id_a=node, id_b=peer),
            )
            for peer in ids
            if peer != node
        }
    return keys


def _quantized(rng, length):
    return rng.integers(-(2**20), 2**20, size=length).astype(np.int64).view(np.uint64)


def _sum_mod(vectors):
    total = np.zeros_like(vectors[0])
    for vector in vectors:
        total += vector
    return total


def _looks_uniform(words):
    """Return True unless the top byte or any single bit departs from uniform (alpha = 1e-3)."""
    top_byte = (words >> np.uint64(56)).astype(np.int64)
    counts = np.bincount(top_byte, minlength=256)
    chi2 = stats.chisquare(counts).statistic
    ones = np.array(
        [np.count_nonzero(words & np.uint64(1 << bit)) for bit in range(64)], dtype=np.float64
    )
    z = (ones - words.size / 2) / np.sqrt(words.size / 4)
    return chi2 < CHI2_CRITICAL and np.max(np.abs(z)) < BIT_Z_CRITICAL


def test_unmask_sum_equals_plain_sum_of_quantized_updates():
    # Arrange
    rng = np.random.default_rng(0)
    ids = [3, 8, 11, 20, 21]
    keys = _pairwise_keys(ids)
    seeds = {node: _fixed_key(f"seed-{node}") for node in ids}
    updates = {node: _quantized(rng, 1000) for node in ids}

    # Act
    masked = [
        mask_update(
            updates[node],
            my_id=node,
            pairwise_keys=keys[node],
            self_seed=seeds[node],
            round_number=ROUND,
        )
        for node in ids
    ]
    total = unmask_sum(_sum_mod(masked), round_number=ROUND, self_seeds=seeds, dangling_keys={})

    # Assert: exact, mod 2**64
    np.testing.assert_array_equal(total, _sum_mod(list(updates.values())))


@pytest.mark.parametrize("dropped", [[8], [8, 21]], ids=["one", "two"])
def test_unmask_sum_removes_dropped_hospitals_dangling_masks(dropped):
    # Arrange: everybody masks against everybody; the dropped never send their update
    rng = np.random.default_rng(1)
    ids = [3, 8, 11, 20, 21]
    survivors = [node for node in ids if node not in dropped]
    keys = _pairwise_keys(ids)
    seeds = {node: _fixed_key(f"seed-{node}") for node in ids}
    updates = {node: _quantized(rng, 500) for node in ids}
    masked = {
        node: mask_update(
            updates[node],
            my_id=node,
            pairwise_keys=keys[node],
            self_seed=seeds[node],
            round_number=ROUND,
        )
        for node in survivors
    }
    # The server rebuilds the dropped hospitals' keys with each survivor.
    dangling = {(s, d): keys[d][s] for s in survivors for d in dropped}

    # Act
    total = unmask_sum(
        _sum_mod(list(masked.values())),
        round_number=ROUND,
        self_seeds={node: seeds[node] for node in survivors},
        dangling_keys=dangling,
    )

    # Assert
    np.testing.assert_array_equal(total, _sum_mod([updates[node] for node in survivors]))


def test_mask_update_single_masked_update_looks_uniform():
    """One masked update passes uniformity tests that an unmasked update fails outright.

    Tests, at family-wise significance alpha = 1e-3 (alpha/2 each): a chi-square test of the
    top byte (256 bins, 2**17 words, df = 255, reject above 335.9) and a two-sided z test per
    bit position (Bonferroni over 64 bits, reject |z| > 4.47). Power (analytic, 2**17 words):
    the bit test rejects a single bit with P(1) = 0.51 with probability 0.997 (mean z = 7.24),
    and P(1) = 0.52 with probability ~1; the chi-square test rejects a top byte that never takes
    one of its 256 values (noncentrality 514) with probability ~1. The next test checks size
    and power empirically. The update is all-zero, the most structured input; the keys are
    fixed, so the outcome is deterministic.
    """
    # Arrange
    update = np.zeros(SAMPLE_WORDS, dtype=np.uint64)
    pairwise = {peer: _fixed_key(f"pair-{peer}") for peer in (2, 9, 14)}

    # Act
    masked = mask_update(
        update, my_id=5, pairwise_keys=pairwise, self_seed=_fixed_key("seed"), round_number=ROUND
    )

    # Assert
    assert _looks_uniform(masked)
    assert not _looks_uniform(update)


def test_uniformity_check_has_the_stated_size_and_power():
    """Empirically, on seeded samples: size <= 1e-3-ish under uniform, power >= 0.95 at 0.51."""
    rng = np.random.default_rng(2024)
    uniform_rejections = sum(
        not _looks_uniform(rng.integers(0, 2**64, size=SAMPLE_WORDS, dtype=np.uint64))
        for _ in range(100)
    )
    biased_rejections = 0
    for _ in range(100):
        words = rng.integers(0, 2**64, size=SAMPLE_WORDS, dtype=np.uint64)
        set_bit = rng.random(SAMPLE_WORDS) < 0.51  # bit 40 is 1 with probability 0.51
        words = (words & ~np.uint64(1 << 40)) | (set_bit.astype(np.uint64) << np.uint64(40))
        biased_rejections += not _looks_uniform(words)

    assert uniform_rejections <= 2
    assert biased_rejections >= 95


def test_mask_update_different_keys_give_different_masks():
    update = np.arange(4096, dtype=np.uint64)
    common = {"my_id": 1, "self_seed": _fixed_key("seed"), "round_number": ROUND}

    first = mask_update(update, pairwise_keys={2: _fixed_key("a")}, **common)
    second = mask_update(update, pairwise_keys={2: _fixed_key("b")}, **common)
    other_seed = mask_update(
        update, pairwise_keys={2: _fixed_key("a")}, **(common | {"self_seed": _fixed_key("x")})
    )

    assert np.count_nonzero(first == second) < 4  # 4096 words agree only by chance (2**-64)
    assert np.count_nonzero(first == other_seed) < 4


def test_mask_update_self_mask_depends_on_round():
    update = np.zeros(256, dtype=np.uint64)
    common = {"my_id": 1, "pairwise_keys": {}, "self_seed": _fixed_key("seed")}

    round_1 = mask_update(update, round_number=1, **common)
    round_2 = mask_update(update, round_number=2, **common)

    assert np.count_nonzero(round_1 == round_2) == 0


def test_mask_update_rejects_float_update():
    with pytest.raises(ValueError, match="flat uint64 vector"):
        mask_update(
            np.zeros(4),
            my_id=1,
            pairwise_keys={},
            self_seed=_fixed_key("seed"),
            round_number=ROUND,
        )


def test_mask_update_rejects_pairwise_key_with_itself():
    with pytest.raises(ValueError, match="no pairwise mask with itself"):
        mask_update(
            np.zeros(4, dtype=np.uint64),
            my_id=1,
            pairwise_keys={1: _fixed_key("a")},
            self_seed=_fixed_key("seed"),
            round_number=ROUND,
        )
