"""Robust reconstruction: recover a secret from Shamir shares when some holders lie.

Each secret has a check the server can run (a self-mask seed against its owner's signed SHA-256
commitment, a mask key against its owner's signed public key). If the first t shares fail it,
t-subsets leaving out 1, 2, ... holders are tried; once one passes, shares off that polynomial
name their holders (when that naming is unambiguous). Recovers the secret while t honest
shares remain. Bonawitz et al. (CCS 2017), Section 4 (robust unmasking).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from common.secagg.shamir import combine_shares, share_on_polynomial

# Bound on interpolations per secret, so a flood of bad shares cannot stall the server.
MAX_ATTEMPTS = 20_000


@dataclass(frozen=True, slots=True)
class HeldShare:
    """One holder's share of a secret: the holder's name and the Shamir point (x, y)."""

    holder: str
    x: int
    y: bytes


@dataclass(slots=True)
class Recovery:
    """A recovered secret and the holders whose shares were found not to lie on its polynomial."""

    secret: bytes
    bad_holders: set[str] = field(default_factory=set)


def recover_secret(
    shares: Sequence[HeldShare],
    *,
    threshold: int,
    check: Callable[[bytes], bool],
    max_liars: int = 1,
) -> Recovery | None:
    """Find ``threshold`` shares whose secret passes ``check``; name holders of shares that miss.

    A passing t-subset yields the true secret (the check is a commitment). Naming needs more:
    one lying share in a t-subset always shifts the secret, but k >= 2 colluding liars can pick
    shifts that cancel, giving another polynomial through the true secret. Such a polynomial
    meets at most t - 1 + ``max_liars`` shares, so holders off a passing polynomial are named
    only if ``max_liars`` <= 1 or it meets at least t + ``max_liars`` shares; otherwise the
    search goes on for one that does, and if none is found nobody is named.

    Parameters
    ----------
    shares
        The shares received, at distinct x.
    threshold
        t, the threshold the secret was split with.
    check
        True for the owner's true secret (commitment or public key match).
    max_liars
        The most holders assumed to lie (the roster's c, at least 1).

    Returns
    -------
    Recovery or None
        None if no t-subset tried passes (fewer than t honest shares, the owner dealt
        inconsistent shares, or the attempt bound was reached).
    """
    count = len(shares)
    if count < threshold:
        return None
    attempts = 0
    found: Recovery | None = None
    for left_out in range(count - threshold + 1):
        window = shares[: threshold + left_out]
        for leave in combinations(range(len(window)), left_out):
            chosen = [share for i, share in enumerate(window) if i not in leave]
            attempts += 1
            if attempts > MAX_ATTEMPTS:
                return found
            secret = _combine(chosen, threshold)
            if secret is None or not check(secret):
                continue
            if not left_out:
                return Recovery(secret)  # the first t passed: nothing to name
            points = [(share.x, share.y) for share in chosen]
            off = {share.holder for share in shares
                   if not share_on_polynomial(points, (share.x, share.y), threshold=threshold)}
            if max_liars <= 1 or count - len(off) >= threshold + max_liars:
                return Recovery(secret, off)
            found = found or Recovery(secret)  # the secret is sure; who lied is not
    return found


def _combine(shares: Sequence[HeldShare], threshold: int) -> bytes | None:
    try:
        return combine_shares([(share.x, share.y) for share in shares], threshold=threshold)
    except ValueError:
        return None
