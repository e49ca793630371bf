"""Shamir sharing: every t-subset reconstructs, t - 1 shares do not, bad input is refused."""

import itertools

import pytest

from common.secagg.shamir import SHARE_BYTES, combine_shares, share_on_polynomial, split_secret

SECRETS = [b"\x00\x00leading zeros survive" + bytes(9), bytes(range(32)), b"\xff", bytes(32)]


@pytest.mark.parametrize("secret", SECRETS, ids=["leading-zeros", "32-bytes", "1-byte", "zeros"])
@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_combine_shares_every_t_subset_reconstructs(secret, n):
    for threshold in range(2, n + 1):
        # Arrange
        shares = split_secret(secret, threshold=threshold, num_shares=n)

        for subset in itertools.combinations(shares, threshold):
            # Act / Assert: every subset, in any order
            assert combine_shares(list(subset), threshold=threshold) == secret
            assert combine_shares(list(reversed(subset)), threshold=threshold) == secret


@pytest.mark.parametrize("n", [4, 5, 6])
def test_combine_shares_t_minus_1_shares_do_not_reconstruct(n):
    secret = bytes(range(32))
    for threshold in range(3, n + 1):
        shares = split_secret(secret, threshold=threshold, num_shares=n)
        for subset in itertools.combinations(shares, threshold - 1):
            # Interpolating t - 1 points gives another polynomial whose value at 0 is a random
            # field element: not the secret, and (but for probability ~2**-257) not even a
            # well-formed one, which combine_shares reports.
            with pytest.raises(ValueError, match="do not reconstruct a valid secret"):
                combine_shares(list(subset), threshold=threshold - 1)
            with pytest.raises(ValueError, match="too few shares"):
                combine_shares(list(subset), threshold=threshold)


def test_split_secret_uses_fresh_randomness():
    first = split_secret(b"seed", threshold=3, num_shares=5)
    second = split_secret(b"seed", threshold=3, num_shares=5)

    assert [x for x, _ in first] == [1, 2, 3, 4, 5]
    assert all(len(y) == SHARE_BYTES for _, y in first)
    assert {y for _, y in first}.isdisjoint({y for _, y in second})


def test_combine_shares_tampered_share_gives_another_secret():
    # Shamir alone does not detect tampering (AEAD and the server's public-key check do):
    # a share off by one moves the secret by its Lagrange coefficient.
    secret = bytes(range(32))
    shares = split_secret(secret, threshold=3, num_shares=5)
    x, y = shares[0]
    tampered = [(x, (int.from_bytes(y, "big") ^ 1).to_bytes(SHARE_BYTES, "big"))] + shares[1:3]

    assert combine_shares(tampered, threshold=3) != secret


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 1, "num_shares": 3}, "threshold must be an int >= 2"),
        ({"threshold": 4, "num_shares": 3}, "must be <= num_shares"),
    ],
    ids=["t<2", "t>n"],
)
def test_split_secret_rejects_bad_threshold(kwargs, message):
    with pytest.raises(ValueError, match=message):
        split_secret(b"secret", **kwargs)


@pytest.mark.parametrize("secret", [b"", bytes(33)], ids=["empty", "33-bytes"])
def test_split_secret_rejects_bad_length(secret):
    with pytest.raises(ValueError, match="1 to 32 bytes"):
        split_secret(secret, threshold=2, num_shares=3)


def test_combine_shares_rejects_duplicate_x():
    shares = split_secret(b"secret", threshold=2, num_shares=3)

    with pytest.raises(ValueError, match="duplicate share x"):
        combine_shares([shares[0], shares[0]], threshold=2)


def test_combine_shares_rejects_threshold_below_two():
    shares = split_secret(b"secret", threshold=2, num_shares=3)

    with pytest.raises(ValueError, match="threshold must be an int >= 2"):
        combine_shares(shares, threshold=1)


def test_split_secret_at_roster_positions_reconstructs_from_any_t():
    # x-coordinates are the holders' roster positions, not 1..n
    xs = [2, 5, 7, 11, 12]
    shares = split_secret(b"seed" * 8, threshold=3, num_shares=5, xs=xs)

    assert [x for x, _ in shares] == xs
    for subset in ([0, 1, 2], [4, 2, 0], [1, 3, 4]):
        assert combine_shares([shares[i] for i in subset], threshold=3) == b"seed" * 8


def test_split_secret_rejects_bad_xs():
    with pytest.raises(ValueError, match="xs must be 3 distinct ints"):
        split_secret(b"s", threshold=2, num_shares=3, xs=[1, 1, 2])
    with pytest.raises(ValueError, match="xs must be 3 distinct ints"):
        split_secret(b"s", threshold=2, num_shares=3, xs=[0, 1, 2])


def test_share_on_polynomial_accepts_honest_shares_and_flags_an_altered_one():
    shares = split_secret(b"k" * 32, threshold=3, num_shares=5)
    altered = (shares[4][0], bytes(65) + b"\x07")

    assert all(share_on_polynomial(shares[:3], share, threshold=3) for share in shares[3:])
    assert not share_on_polynomial(shares[:3], altered, threshold=3)
    assert not share_on_polynomial(shares[:3], (shares[4][0], b"short"), threshold=3)
