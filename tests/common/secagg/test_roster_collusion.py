"""The roster's collusion rules: default c, a hospital's own minimum, who built it."""

import json

import pytest

from common.secagg.roster import (
    build_roster,
    colluders_problem,
    default_colluders,
    make_signing_key,
    roster_from_bytes,
)


def _roster(n=4, c=1, t=3, built_by=None):
    keys = [make_signing_key().public_key for _ in range(n)]
    return build_roster([f"h{i}" for i in range(n)], keys, c, t, built_by=built_by)


@pytest.mark.parametrize(("hospitals", "c"), [(3, 0), (4, 1), (5, 1), (20, 1)])
def test_collusion_is_assumed_from_four_hospitals_on(hospitals, c):
    assert default_colluders(hospitals) == c


def test_a_roster_below_the_hospitals_own_minimum_is_refused_naming_both():
    roster = _roster(c=1)
    # Act / Assert
    assert colluders_problem(roster, minimum=0) is None
    assert colluders_problem(roster, minimum=1) is None
    reason = colluders_problem(roster, minimum=2)
    assert reason is not None
    assert "c = 1" in reason and "minimum of 2" in reason and "colluding-hospitals" in reason
    assert roster.hex_digest in reason


def test_who_built_it_round_trips_and_changes_the_digest():
    roster = _roster(built_by="north")
    again = roster_from_bytes(roster.to_bytes())
    assert again == roster and again.built_by == "north"
    anonymous = build_roster(roster.names, roster.signing_keys, 1, 3)
    assert anonymous.digest != roster.digest  # the builder is part of what everyone pins


def test_a_roster_written_before_built_by_existed_loads_with_the_same_bytes():
    roster = _roster(built_by=None)
    document = {"format": "fedcare-roster/1", "colluders": 1, "min_threshold": 3,
                "honest": None, "hospitals": [{"name": n, "signing_key": k.hex()} for n, k in
                                              zip(roster.names, roster.signing_keys, strict=True)]}
    old = json.dumps(document, sort_keys=True, separators=(",", ":")).encode("ascii")
    loaded = roster_from_bytes(old)
    assert loaded.built_by is None and loaded.to_bytes() == old


@pytest.mark.parametrize("builder", ["", "a/b", 7, " x"])
def test_a_bad_builder_is_refused_naming_the_field(builder):
    with pytest.raises(ValueError, match="field 'built_by'"):
        _roster(built_by=builder)
