"""The consortium roster: canonical bytes and digest, validation naming file and field, loading
with a pinned digest, and signing keys whose public half is what the roster pins.
"""

import hashlib
import json

import pytest

from common.secagg.roster import (
    Roster,
    build_roster,
    load_roster,
    load_signing_key,
    make_signing_key,
    roster_from_bytes,
    signing_public_key,
)


def _roster(n=4, c=1, min_threshold=3, honest=None):
    pairs = [make_signing_key() for _ in range(n)]
    names = [f"hospital {chr(ord('A') + i)}" for i in range(n)]
    return build_roster(names, [pair.public_key for pair in pairs], c, min_threshold, honest)


def test_signing_key_pem_loads_back_to_the_public_key_it_reports():
    pair = make_signing_key()

    key = load_signing_key(pair.private_pem)

    assert pair.private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert signing_public_key(key) == pair.public_key and len(pair.public_key) == 32


def test_roster_ids_follow_roster_order_and_names_round_trip():
    roster = _roster()

    assert [roster.index(name) for name in roster.names] == [1, 2, 3, 4]
    assert roster.name_of(3) == roster.names[2]
    assert roster.in_roster_order(list(reversed(roster.names))) == list(roster.names)
    with pytest.raises(LookupError, match="'mallory' is not on the pinned roster"):
        roster.index("mallory")


def test_canonical_bytes_are_sorted_compact_json_and_digest_is_their_sha256():
    roster = _roster()

    data = roster.to_bytes()

    document = json.loads(data)
    assert data == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert roster.digest == hashlib.sha256(data).digest()
    assert roster.hex_digest == hashlib.sha256(data).hexdigest()
    assert roster_from_bytes(data) == roster
    # whitespace does not change the roster, nor its canonical digest
    assert roster_from_bytes(json.dumps(document, indent=2).encode()).digest == roster.digest


def test_any_change_to_the_roster_changes_its_digest():
    roster = _roster()
    other_key = make_signing_key().public_key

    variants = [
        Roster(roster.names, roster.signing_keys, 2, 3),
        Roster(roster.names, roster.signing_keys, 1, 4),
        Roster(roster.names, roster.signing_keys, 1, 3, honest=1),
        Roster(roster.names, (other_key,) + roster.signing_keys[1:], 1, 3),
        Roster(tuple(reversed(roster.names)), roster.signing_keys, 1, 3),
    ]

    assert len({variant.digest for variant in variants} | {roster.digest}) == len(variants) + 1


def test_honest_count_is_stated_or_derived_as_t_minus_c():
    assert _roster(c=1, min_threshold=3).honest_contributors(4) == 3
    assert _roster(c=1, min_threshold=3, honest=2).honest_contributors(4) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colluders": -1}, "field 'colluders' must be an int >= 0"),
        ({"min_threshold": 1}, "field 'min_threshold' must be an int"),
        ({"min_threshold": 5}, "field 'min_threshold' must be an int"),
        ({"colluders": 3, "min_threshold": 3}, "max\\(2, colluders \\+ 1\\) = 4"),
        ({"honest": 3}, "field 'honest' must be null or an int with 1 <= h <= min_threshold"),
    ],
)
def test_roster_rejects_bad_parameters(change, message):
    roster = _roster()
    values = {"colluders": 1, "min_threshold": 3, "honest": None, **change}

    with pytest.raises(ValueError, match=message):
        Roster(roster.names, roster.signing_keys, **values)


def test_roster_rejects_duplicate_names_keys_and_bad_keys():
    roster = _roster()

    with pytest.raises(ValueError, match="a name appears twice"):
        Roster((roster.names[0],) * 4, roster.signing_keys, 1, 3)
    with pytest.raises(ValueError, match="two hospitals share a signing key"):
        Roster(roster.names, (roster.signing_keys[0],) * 4, 1, 3)
    with pytest.raises(ValueError, match="'hospitals\\[1\\].signing_key' must be a raw 32-byte"):
        Roster(roster.names, (roster.signing_keys[0], b"x") + roster.signing_keys[2:], 1, 3)
    with pytest.raises(ValueError, match="'hospitals\\[2\\].name' must be"):
        Roster(roster.names[:2] + (" padded",) + roster.names[3:], roster.signing_keys, 1, 3)
    with pytest.raises(ValueError, match="at least 3 hospitals"):
        Roster(roster.names[:2], roster.signing_keys[:2], 0, 2)


def test_load_roster_checks_the_pinned_digest_and_names_the_file(tmp_path):
    roster = _roster()
    path = tmp_path / "roster.json"
    path.write_bytes(roster.to_bytes())

    pinned = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_roster(path, expected_sha256=pinned) == roster
    with pytest.raises(ValueError, match="roster file .*roster.json.*not the consortium's roster"):
        load_roster(path, expected_sha256="0" * 64)


def test_load_roster_names_file_and_missing_or_bad_field(tmp_path):
    roster = _roster()
    document = roster.to_json_object()
    path = tmp_path / "r.json"

    del document["hospitals"][1]["signing_key"]
    path.write_text(json.dumps(document))
    missing = "r.json.*field 'hospitals\\[1\\].signing_key' is missing"
    with pytest.raises(LookupError, match=missing):
        load_roster(path)

    document = roster.to_json_object()
    document["colluders"] = "one"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="r.json.*field 'colluders' must be an int"):
        load_roster(path)

    path.write_text("{not json")
    with pytest.raises(ValueError, match="r.json.*not valid JSON"):
        load_roster(path)
    with pytest.raises(ValueError, match="missing.json.*cannot be read"):
        load_roster(tmp_path / "missing.json")


def test_load_signing_key_rejects_other_material():
    with pytest.raises(ValueError, match="node key: not an unencrypted PEM"):
        load_signing_key(b"garbage", source="node key")
