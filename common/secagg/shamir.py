"""Shamir t-out-of-n secret sharing over GF(2**521 - 1) for secrets of up to 32 bytes.

A hospital splits its self-mask seed and its masking private key into n shares (x = 1..n)
with a random polynomial of degree t - 1; any t shares recover the secret by Lagrange
interpolation at 0, and any t - 1 shares are uniformly distributed whatever the secret, so a
holder of fewer than t learns nothing (information-theoretic). Coefficients come from the OS
CSPRNG (`secrets`). Shamir (CACM 1979); used as in Bonawitz et al. (CCS 2017), Section 3.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

PRIME = 2**521 - 1  # Mersenne prime: every encoded 32-byte secret (< 2**264) is a field element
MAX_SECRET_BYTES = 32
SHARE_BYTES = (PRIME.bit_length() + 7) // 8  # 66: fixed width of a share's y value
# The secret is encoded behind a 0x01 marker so that leading zero bytes survive the round trip.
_MARKER = b"\x01"


def split_secret(
    secret: bytes, *, threshold: int, num_shares: int, xs: Sequence[int] | None = None
) -> list[tuple[int, bytes]]:
    """Split ``secret`` into ``num_shares`` shares, any ``threshold`` of which recover it.

    Parameters
    ----------
    secret
        1 to 32 bytes.
    threshold
        Shares needed to reconstruct, t >= 2.
    num_shares
        Shares made, n >= t; share i has x = i (1-based) unless ``xs`` is given.
    xs
        The x coordinates of the shares (``num_shares`` distinct ints in [1, 2**521 - 1)),
        e.g. the holders' roster positions.

    Returns
    -------
    list of (int, bytes)
        ``(x, y)`` with ``y`` the field element as 66 big-endian bytes.

    Raises
    ------
    ValueError
        If the secret is empty or too long, threshold < 2, or threshold > num_shares.
    """
    if not isinstance(secret, bytes) or not 1 <= len(secret) <= MAX_SECRET_BYTES:
        raise ValueError(f"secret must be 1 to {MAX_SECRET_BYTES} bytes")
    _check_threshold(threshold=threshold, num_shares=num_shares)
    points = list(range(1, num_shares + 1)) if xs is None else list(xs)
    if len(points) != num_shares or len(set(points)) != len(points) or any(
        isinstance(x, bool) or not isinstance(x, int) or not 1 <= x < PRIME for x in points
    ):
        raise ValueError(f"xs must be {num_shares} distinct ints in [1, 2**521 - 1)")
    coefficients = [int.from_bytes(_MARKER + secret, "big")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in points:
        y = 0
        for coefficient in reversed(coefficients):  # Horner's rule
            y = (y * x + coefficient) % PRIME
        shares.append((x, y.to_bytes(SHARE_BYTES, "big")))
    return shares


def combine_shares(shares: Sequence[tuple[int, bytes]], *, threshold: int) -> bytes:
    """Recover the secret from at least ``threshold`` shares made by :func:`split_secret`.

    Only the first ``threshold`` shares are used; further shares are not checked.

    Parameters
    ----------
    shares
        ``(x, y)`` pairs with distinct x in [1, PRIME) and y as made by :func:`split_secret`.
    threshold
        The threshold the secret was split with.

    Returns
    -------
    bytes
        The secret.

    Raises
    ------
    ValueError
        If threshold < 2, fewer than ``threshold`` shares are given, an x repeats or is out of
        range, a y is malformed, or the shares interpolate to no valid secret (wrong shares,
        or a wrong threshold).
    """
    if not isinstance(threshold, int) or threshold < 2:
        raise ValueError(f"threshold must be an int >= 2, got {threshold!r}")
    if len(shares) < threshold:
        raise ValueError(f"too few shares: {len(shares)} given, threshold is {threshold}")
    xs = [x for x, _ in shares]
    if len(set(xs)) != len(xs):
        raise ValueError(f"duplicate share x coordinates in {sorted(xs)}")
    points = [_parse_share(x, y) for x, y in shares[:threshold]]
    return _decode(_interpolate(points, 0))


def share_on_polynomial(
    points: Sequence[tuple[int, bytes]], share: tuple[int, bytes], *, threshold: int
) -> bool:
    """Return whether ``share`` lies on the polynomial through the first ``threshold`` points.

    Used to find which holder sent a bad share once ``threshold`` points are known to be good
    (they reconstructed a secret matching its commitment).

    Raises
    ------
    ValueError
        If fewer than ``threshold`` points are given or a point is malformed.
    """
    if len(points) < threshold:
        raise ValueError(f"too few points: {len(points)} given, threshold is {threshold}")
    parsed = [_parse_share(x, y) for x, y in points[:threshold]]
    try:
        x, y = _parse_share(*share)
    except ValueError:
        return False
    return _interpolate(parsed, x) == y


def _interpolate(points: Sequence[tuple[int, int]], at: int) -> int:
    """Lagrange-interpolate the polynomial through ``points`` at x = ``at``, mod PRIME."""
    value = 0
    for j, (x_j, y_j) in enumerate(points):
        numerator, denominator = 1, 1
        for m, (x_m, _) in enumerate(points):
            if m != j:
                numerator = numerator * (x_m - at) % PRIME
                denominator = denominator * (x_m - x_j) % PRIME
        value = (value + y_j * numerator * pow(denominator, -1, PRIME)) % PRIME
    return value


def _check_threshold(*, threshold: int, num_shares: int) -> None:
    if not isinstance(threshold, int) or threshold < 2:
        raise ValueError(
            f"threshold must be an int >= 2 (one share would be the secret), got {threshold!r}"
        )
    if not isinstance(num_shares, int) or threshold > num_shares:
        raise ValueError(f"threshold ({threshold}) must be <= num_shares ({num_shares!r})")


def _parse_share(x: int, y: bytes) -> tuple[int, int]:
    if isinstance(x, bool) or not isinstance(x, int) or not 1 <= x < PRIME:
        raise ValueError(f"share x must be an int in [1, 2**521 - 1), got {x!r}")
    if not isinstance(y, bytes) or len(y) != SHARE_BYTES:
        raise ValueError(f"share y must be {SHARE_BYTES} bytes")
    value = int.from_bytes(y, "big")
    if value >= PRIME:
        raise ValueError("share y is not a field element")
    return x, value


def _decode(value: int) -> bytes:
    length = (value.bit_length() + 7) // 8
    encoded = value.to_bytes(length, "big")
    if not 2 <= length <= MAX_SECRET_BYTES + 1 or encoded[:1] != _MARKER:
        raise ValueError("shares do not reconstruct a valid secret (wrong shares or threshold)")
    return encoded[1:]
