"""Signed advertisements, survivor sets and seed commitments: each bound field matters, and the
settings digest changes with every privacy-relevant setting.
"""

import dataclasses
import os

import pytest

from common.secagg import signatures as sig
from common.secagg.roster import load_signing_key, make_signing_key
from common.secagg.signatures import SecAggSettings

SETTINGS = SecAggSettings(clip_norm=1.0, noise_multiplier=1.1, honest=3, threshold=4,
                          encoding_scale=2.0**20, planned_rounds=10)


def _advertisement(**changes):
    fields = dict(roster_digest=bytes(32), run_id="run-1", round_number=3, name="hospital-a",
                  mask_public_key=b"m" * 32, encryption_public_key=b"e" * 32,
                  settings_digest=SETTINGS.digest(), seed_commitment=b"c" * 32)
    return sig.advertisement_message(**{**fields, **changes})


@pytest.mark.parametrize(
    "change",
    [{"clip_norm": 1.0000001}, {"noise_multiplier": 1.2}, {"honest": 2}, {"threshold": 5},
     {"encoding_scale": 2.0**19}, {"planned_rounds": 11}],
    ids=lambda change: next(iter(change)),
)
def test_settings_digest_changes_with_every_setting(change):
    assert dataclasses.replace(SETTINGS, **change).digest() != SETTINGS.digest()


def test_settings_digest_is_deterministic_and_32_bytes():
    same = SecAggSettings(1.0, 1.1, 3, 4, 2.0**20, 10)
    assert same.digest() == SETTINGS.digest() and len(SETTINGS.digest()) == 32


@pytest.mark.parametrize(
    ("change", "message"),
    [({"clip_norm": 0.0}, "clip_norm > 0"), ({"noise_multiplier": float("nan")}, "finite"),
     ({"threshold": 1}, "threshold must be an int >= 2"), ({"honest": True}, "honest")],
)
def test_settings_digest_rejects_bad_values(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SETTINGS, **change).digest()


@pytest.mark.parametrize(
    "change",
    [{"roster_digest": b"\x01" * 32}, {"run_id": "run-2"}, {"round_number": 4},
     {"name": "hospital-b"}, {"mask_public_key": b"M" * 32}, {"encryption_public_key": b"E" * 32},
     {"settings_digest": bytes(32)}, {"seed_commitment": b"C" * 32}],
    ids=lambda change: next(iter(change)),
)
def test_advertisement_signature_fails_when_any_bound_field_changes(change):
    key = load_signing_key(make_signing_key().private_pem)
    signature = sig.sign(key, _advertisement())

    assert sig.verify(key.public_key(), signature, _advertisement())
    assert not sig.verify(key.public_key(), signature, _advertisement(**change))


def test_survivor_set_encoding_is_unambiguous():
    # moving a name between survivors and dropped, or splitting a name, changes the message
    base = dict(roster_digest=bytes(32), run_id="r", round_number=1, settings_digest=bytes(32))
    a = sig.survivors_message(**base, survivors=["x", "y"], dropped=["z"])
    b = sig.survivors_message(**base, survivors=["x"], dropped=["y", "z"])
    c = sig.survivors_message(**base, survivors=["xy"], dropped=["z"])

    assert len({a, b, c}) == 3


def test_verify_rejects_wrong_key_and_malformed_signatures():
    key, other = (load_signing_key(make_signing_key().private_pem) for _ in range(2))
    signature = sig.sign(key, b"message")

    assert not sig.verify(other.public_key(), signature, b"message")
    assert not sig.verify(key.public_key(), signature[:-1], b"message")


def test_seed_commitment_binds_seed_and_context():
    seed = os.urandom(32)
    context = dict(roster_digest=bytes(32), run_id="r", round_number=1, name="a")

    commitment = sig.seed_commitment(seed, **context)

    assert commitment == sig.seed_commitment(seed, **context)
    assert commitment != sig.seed_commitment(os.urandom(32), **context)
    assert commitment != sig.seed_commitment(seed, **{**context, "round_number": 2})


@pytest.mark.parametrize("n", range(3, 31))
def test_threshold_rule_and_the_papers_choice(n):
    from common.secagg.messages import threshold_problem

    for c in range(0, n):
        needed = (n + c) // 2 + 1
        if needed <= n:
            assert threshold_problem(needed, n, c) is None
        assert threshold_problem(needed - 1, n, c) is not None
        # two survivor sets with t signatures each need 2t - c <= n distinct signers
        assert 2 * needed - c > n
        if 3 * c < n:  # Bonawitz et al.'s t = floor(2n/3) + 1 with fewer than n/3 corrupt
            assert threshold_problem(2 * n // 3 + 1, n, c) is None
