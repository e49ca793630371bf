"""Double masking: a self mask plus pairwise masks that cancel in the sum, all mod 2**64.

Hospital u sends y_u = x_u + PRG(b_u) + sum_v s(u, v) PRG(k_uv) mod 2**64, with s(u, v) = +1 if
u < v else -1, so the pairwise masks of every surviving pair cancel in sum_u y_u. The server sees
y_u, which is uniform without the keys. To unmask it removes the survivors' self masks PRG(b_u)
and, for each dropped hospital d, the masks k_ud its survivors added but d never cancelled.
Bonawitz et al. (CCS 2017), Section 3 (masking with one-time pads, double masking).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from common.secagg.key_agreement import Purpose, build_info, expand_key
from common.secagg.mask_stream import expand_mask

Vector = npt.NDArray[np.uint64]


def pairwise_sign(my_id: int, peer_id: int) -> int:
    """Return +1 if ``my_id < peer_id`` else -1: the sign ``my_id`` gives the pair's mask."""
    if my_id == peer_id:
        raise ValueError(f"a hospital has no pairwise mask with itself (id {my_id})")
    return 1 if my_id < peer_id else -1


def self_mask_key(self_seed: bytes, *, round_number: int, owner_id: int) -> bytes:
    """Derive the 32-byte key of ``owner_id``'s self mask from its fresh 32-byte seed."""
    info = build_info(Purpose.SELF_MASK, round_number=round_number, id_a=owner_id, id_b=owner_id)
    return expand_key(self_seed, info=info)


def mask_update(
    quantized: Vector,
    *,
    my_id: int,
    pairwise_keys: Mapping[int, bytes],
    self_seed: bytes,
    round_number: int,
) -> Vector:
    """Add the self mask and the signed pairwise masks to a quantised update, mod 2**64.

    Parameters
    ----------
    quantized
        uint64, shape (d,): the quantised update.
    my_id
        This hospital's id.
    pairwise_keys
        Peer id -> this round's 32-byte mask key of the pair (from ``derive_key``).
    self_seed
        32 fresh random bytes, secret-shared for dropout recovery.
    round_number
        The round, which separates the self-mask keys of different rounds.

    Returns
    -------
    numpy.ndarray
        uint64, shape (d,): the masked update, a new array.

    Raises
    ------
    ValueError
        If ``quantized`` is not a flat uint64 vector or ``pairwise_keys`` contains ``my_id``.
    """
    masked = _checked_vector(quantized, "quantized").copy()
    length = masked.shape[0]
    key = self_mask_key(self_seed, round_number=round_number, owner_id=my_id)
    np.add(masked, expand_mask(key, length), out=masked)
    for peer_id, pair_key in pairwise_keys.items():
        _add_signed_inplace(masked, expand_mask(pair_key, length), pairwise_sign(my_id, peer_id))
    return masked


def unmask_sum(
    masked_sum: Vector,
    *,
    round_number: int,
    self_seeds: Mapping[int, bytes],
    dangling_keys: Mapping[tuple[int, int], bytes],
) -> Vector:
    """Remove the survivors' self masks and the dropped hospitals' dangling pairwise masks.

    Parameters
    ----------
    masked_sum
        uint64, shape (d,): sum mod 2**64 of the survivors' masked updates.
    round_number
        The round the masks were made for.
    self_seeds
        Survivor id -> its reconstructed self-mask seed; must cover every survivor.
    dangling_keys
        ``(survivor_id, dropped_id)`` -> the pair's mask key for this round, for every survivor
        and every hospital that shared keys but whose masked update is not in the sum.

    Returns
    -------
    numpy.ndarray
        uint64, shape (d,): the exact sum mod 2**64 of the survivors' quantised updates.
    """
    total = _checked_vector(masked_sum, "masked_sum").copy()
    length = total.shape[0]
    for owner_id, seed in self_seeds.items():
        key = self_mask_key(seed, round_number=round_number, owner_id=owner_id)
        np.subtract(total, expand_mask(key, length), out=total)
    for (survivor_id, dropped_id), pair_key in dangling_keys.items():
        # The survivor added sign * mask; undo exactly that.
        sign = -pairwise_sign(survivor_id, dropped_id)
        _add_signed_inplace(total, expand_mask(pair_key, length), sign)
    return total


def _add_signed_inplace(target: Vector, mask: Vector, sign: int) -> None:
    if sign > 0:
        np.add(target, mask, out=target)
    else:
        np.subtract(target, mask, out=target)


def _checked_vector(vector: Vector, name: str) -> Vector:
    array = np.asarray(vector)
    if array.ndim != 1 or array.dtype != np.uint64:
        raise ValueError(f"{name} must be a flat uint64 vector, got {array.dtype} {array.shape}")
    return array
