"""The mask PRG is ChaCha20 (RFC 7539 known answer), deterministic per key and prefix-stable."""

import numpy as np
import pytest

from common.secagg.mask_stream import expand_mask


def test_expand_mask_matches_chacha20_known_answer():
    # RFC 7539, Appendix A.1, test vector 1: zero key, zero nonce, counter 0.
    expected = bytes.fromhex(
        "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
        "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
    )

    words = expand_mask(bytes(32), 8)

    assert words.astype("<u8").tobytes() == expected


def test_expand_mask_is_deterministic_and_prefix_stable():
    key = bytes(range(32))

    long = expand_mask(key, 1000)

    np.testing.assert_array_equal(expand_mask(key, 1000), long)
    np.testing.assert_array_equal(expand_mask(key, 17), long[:17])
    assert expand_mask(key, 0).shape == (0,)


def test_expand_mask_differs_between_keys():
    first = expand_mask(bytes(range(32)), 256)
    second = expand_mask(bytes(range(1, 33)), 256)

    assert np.count_nonzero(first == second) == 0


def test_expand_mask_returns_writable_uint64():
    words = expand_mask(bytes(32), 4)

    assert words.dtype == np.uint64
    assert words.flags.writeable


@pytest.mark.parametrize(
    ("key", "length", "message"),
    [(bytes(16), 4, "is 32 bytes"), (bytes(32), -1, "length must be"), (bytes(32), 2.0, "length")],
    ids=["short-key", "negative", "float"],
)
def test_expand_mask_rejects_bad_input(key, length, message):
    with pytest.raises(ValueError, match=message):
        expand_mask(key, length)
