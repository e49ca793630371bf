"""Authenticated encryption of the Shamir shares one hospital routes to another via the server.

ChaCha20-Poly1305 (AEAD) under the pair's share-encryption key (X25519 + HKDF, per round); the
associated data binds sender, receiver and round, so the server, which relays the ciphertexts,
sees only their length and cannot read, alter, swap or replay them into another round without
the receiver rejecting them. Bonawitz et al. (CCS 2017), Section 3 (AE.enc); RFC 8439.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from common.errors import SecAggProtocolError

NONCE_BYTES = 12
TAG_BYTES = 16


def share_associated_data(*, sender_id: int, receiver_id: int, round_number: int) -> bytes:
    """Build the associated data that binds a ciphertext to its direction and round."""
    return b"fedcare/secagg/shares|round=%d|from=%d|to=%d" % (
        int(round_number),
        int(sender_id),
        int(receiver_id),
    )


def encrypt_shares(
    key: bytes, plaintext: bytes, *, sender_id: int, receiver_id: int, round_number: int
) -> bytes:
    """Encrypt ``plaintext`` for ``receiver_id``; returns nonce || ciphertext || tag.

    Parameters
    ----------
    key
        The pair's 32-byte share-encryption key for this round.
    plaintext
        The serialised shares.
    sender_id, receiver_id, round_number
        Bound as associated data (authenticated, not encrypted).

    Returns
    -------
    bytes
        ``12 + len(plaintext) + 16`` bytes; the nonce is fresh from the OS CSPRNG.
    """
    nonce = os.urandom(NONCE_BYTES)
    associated = share_associated_data(
        sender_id=sender_id, receiver_id=receiver_id, round_number=round_number
    )
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def decrypt_shares(
    key: bytes,
    ciphertext: bytes,
    *,
    sender_id: int,
    receiver_id: int,
    round_number: int,
    stage: str,
) -> bytes:
    """Decrypt and authenticate shares from ``sender_id``.

    Parameters
    ----------
    key
        The pair's 32-byte share-encryption key for this round.
    ciphertext
        As made by :func:`encrypt_shares`.
    sender_id, receiver_id, round_number
        What the ciphertext must be bound to.
    stage
        The protocol stage, named in the error.

    Returns
    -------
    bytes
        The plaintext.

    Raises
    ------
    SecAggProtocolError
        If the ciphertext is truncated, was altered, or was made for another sender,
        receiver, round or key.
    """
    if not isinstance(ciphertext, bytes) or len(ciphertext) < NONCE_BYTES + TAG_BYTES:
        raise SecAggProtocolError(stage, f"shares from node {sender_id} are truncated")
    associated = share_associated_data(
        sender_id=sender_id, receiver_id=receiver_id, round_number=round_number
    )
    nonce, body = ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:]
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, body, associated)
    except InvalidTag:
        raise SecAggProtocolError(
            stage,
            f"shares from node {sender_id} to node {receiver_id} for round {round_number} "
            "failed authentication (tampered, misrouted or replayed ciphertext)",
        ) from None
