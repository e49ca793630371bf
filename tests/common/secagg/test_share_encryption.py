"""Share encryption: round trip, and any tampering or misrouting is rejected by name."""

import os

import pytest

from common.errors import SecAggProtocolError
from common.secagg.share_encryption import decrypt_shares, encrypt_shares

KEY = bytes(range(32))
BINDING = {"sender_id": 1, "receiver_id": 2, "round_number": 5}


def test_decrypt_shares_round_trips():
    plaintext = os.urandom(132)

    ciphertext = encrypt_shares(KEY, plaintext, **BINDING)

    assert decrypt_shares(KEY, ciphertext, stage="masked-input", **BINDING) == plaintext
    assert plaintext not in ciphertext


def test_encrypt_shares_uses_fresh_nonces():
    assert encrypt_shares(KEY, b"same", **BINDING) != encrypt_shares(KEY, b"same", **BINDING)


@pytest.mark.parametrize("position", [0, 12, 20, -1], ids=["nonce", "body", "body2", "tag"])
def test_decrypt_shares_rejects_tampered_ciphertext(position):
    ciphertext = bytearray(encrypt_shares(KEY, os.urandom(132), **BINDING))
    ciphertext[position] ^= 0x01

    with pytest.raises(SecAggProtocolError, match="failed authentication") as caught:
        decrypt_shares(KEY, bytes(ciphertext), stage="masked-input", **BINDING)
    assert caught.value.stage == "masked-input"


@pytest.mark.parametrize(
    "binding",
    [
        {"sender_id": 2, "receiver_id": 1, "round_number": 5},
        {"sender_id": 3, "receiver_id": 2, "round_number": 5},
        {"sender_id": 1, "receiver_id": 2, "round_number": 6},
    ],
    ids=["reversed-direction", "other-sender", "replayed-round"],
)
def test_decrypt_shares_rejects_misrouted_or_replayed_ciphertext(binding):
    ciphertext = encrypt_shares(KEY, b"shares", **BINDING)

    with pytest.raises(SecAggProtocolError, match="failed authentication"):
        decrypt_shares(KEY, ciphertext, stage="masked-input", **binding)


def test_decrypt_shares_rejects_wrong_key():
    ciphertext = encrypt_shares(KEY, b"shares", **BINDING)

    with pytest.raises(SecAggProtocolError, match="failed authentication"):
        decrypt_shares(bytes(32), ciphertext, stage="masked-input", **BINDING)


def test_decrypt_shares_rejects_truncated_ciphertext():
    with pytest.raises(SecAggProtocolError, match="truncated"):
        decrypt_shares(KEY, bytes(20), stage="masked-input", **BINDING)
