"""Robust reconstruction: with lying holders among the shares, the secret matching its check is
found by leaving holders out, and the liars are named.
"""

import hashlib
import os

import pytest

from common.secagg.reconstruction import HeldShare, recover_secret
from common.secagg.shamir import SHARE_BYTES, split_secret

SECRET = os.urandom(32)
COMMITMENT = hashlib.sha256(SECRET).digest()


def _check(secret):
    return hashlib.sha256(secret).digest() == COMMITMENT


def _shares(threshold=3, n=6):
    return [HeldShare(f"h{x}", x, y) for x, y in split_secret(SECRET, threshold=threshold,
                                                              num_shares=n)]


def _corrupt(share, how):
    y = share.y
    if how == "random":
        y = os.urandom(SHARE_BYTES - 1).rjust(SHARE_BYTES, b"\x00")
    else:  # shifted by one field step: a plausible share, wrong value
        y = (int.from_bytes(y, "big") + 1).to_bytes(SHARE_BYTES, "big")
    return HeldShare(share.holder, share.x, y)


def test_honest_shares_recover_without_naming_anyone():
    recovery = recover_secret(_shares(), threshold=3, check=_check)

    assert recovery.secret == SECRET and recovery.bad_holders == set()


@pytest.mark.parametrize("how", ["random", "shifted"])
@pytest.mark.parametrize("liar", [0, 2, 4])
def test_one_lying_holder_is_left_out_and_named(how, liar):
    shares = _shares(threshold=4, n=5)  # n = 5, t = 4: one liar leaves exactly t honest
    shares[liar] = _corrupt(shares[liar], how)

    recovery = recover_secret(shares, threshold=4, check=_check, max_liars=1)

    assert recovery.secret == SECRET
    if liar < 4:  # a liar outside the first t is never needed, so never looked at
        assert recovery.bad_holders == {f"h{liar + 1}"}


@pytest.mark.parametrize("how", ["random", "shifted"])
@pytest.mark.parametrize("liars", [[0, 4], [1, 2, 3]], ids=str)
def test_colluding_liars_never_get_an_honest_holder_named(how, liars):
    # Equal shifts on k >= 2 holders can cancel in a t-subset's Lagrange sum, making another
    # polynomial through the true secret: the secret is still sure, the naming is withheld
    # unless unambiguous.
    shares = _shares(threshold=3, n=6)
    for i in liars:
        shares[i] = _corrupt(shares[i], how)

    recovery = recover_secret(shares, threshold=3, check=_check, max_liars=len(liars))

    assert recovery.secret == SECRET
    assert recovery.bad_holders <= {f"h{i + 1}" for i in liars}


def test_two_liars_are_named_when_enough_honest_shares_make_it_unambiguous():
    shares = _shares(threshold=3, n=8)
    for i in (0, 1):
        shares[i] = _corrupt(shares[i], "random")

    recovery = recover_secret(shares, threshold=3, check=_check, max_liars=2)

    assert recovery.secret == SECRET and recovery.bad_holders == {"h1", "h2"}


def test_too_many_liars_or_too_few_shares_give_none():
    shares = _shares(threshold=3, n=5)
    for i in (0, 1, 2):
        shares[i] = _corrupt(shares[i], "random")

    assert recover_secret(shares, threshold=3, check=_check) is None
    assert recover_secret(_shares()[:2], threshold=3, check=_check) is None
