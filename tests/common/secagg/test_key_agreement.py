"""X25519 + HKDF: both ends agree, and purpose, round, pair and peer all separate the keys."""

import pytest

from common.secagg.key_agreement import (
    Purpose,
    build_info,
    derive_key,
    generate_private_key,
    load_private_key,
    load_public_key,
    private_key_bytes,
    public_key_bytes,
)


def test_derive_key_is_symmetric():
    # Arrange
    alice, bob = generate_private_key(), generate_private_key()
    info = build_info(Purpose.MASK, round_number=3, id_a=1, id_b=2)

    # Act
    at_alice = derive_key(alice, public_key_bytes(bob), info=info)
    at_bob = derive_key(bob, public_key_bytes(alice), info=info)

    # Assert
    assert at_alice == at_bob
    assert len(at_alice) == 32


def test_derive_key_differs_with_another_peer():
    alice, bob, eve = generate_private_key(), generate_private_key(), generate_private_key()
    info = build_info(Purpose.MASK, round_number=0, id_a=1, id_b=2)

    assert derive_key(alice, public_key_bytes(bob), info=info) != derive_key(
        alice, public_key_bytes(eve), info=info
    )


@pytest.mark.parametrize(
    "other",
    [
        build_info(Purpose.SHARE_ENCRYPTION, round_number=3, id_a=1, id_b=2),
        build_info(Purpose.MASK, round_number=4, id_a=1, id_b=2),
        build_info(Purpose.MASK, round_number=3, id_a=1, id_b=3),
    ],
    ids=["purpose", "round", "pair"],
)
def test_derive_key_separates_purpose_round_and_pair(other):
    alice, bob = generate_private_key(), generate_private_key()
    info = build_info(Purpose.MASK, round_number=3, id_a=1, id_b=2)

    assert derive_key(alice, public_key_bytes(bob), info=info) != derive_key(
        alice, public_key_bytes(bob), info=other
    )


def test_build_info_names_purpose_round_and_unordered_pair():
    info = build_info(Purpose.MASK, round_number=3, id_a=2, id_b=1)

    assert info == b"fedcare/secagg/mask|round=3|pair=1,2"
    assert info == build_info(Purpose.MASK, round_number=3, id_a=1, id_b=2)


def test_build_info_rejects_unknown_purpose():
    with pytest.raises(ValueError, match="unknown key purpose"):
        build_info(b"other", round_number=0, id_a=1, id_b=2)


def test_private_key_round_trips_through_raw_bytes():
    key = generate_private_key()

    restored = load_private_key(private_key_bytes(key))

    assert public_key_bytes(restored) == public_key_bytes(key)


@pytest.mark.parametrize("loader", [load_public_key, load_private_key], ids=["public", "private"])
def test_load_key_rejects_wrong_length(loader):
    with pytest.raises(ValueError, match="is 32 bytes"):
        loader(bytes(31))


def test_derive_key_rejects_low_order_public_key():
    # The all-zero point gives an all-zero shared secret, which X25519 implementations refuse.
    with pytest.raises(ValueError):
        derive_key(generate_private_key(), bytes(32), info=b"x")
