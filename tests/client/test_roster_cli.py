"""``fedcare roster key|build|show``: key files, the roster's bytes and digest, friendly errors."""

import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from typer.testing import CliRunner

from client.roster_cli import public_key_path
from common.secagg.roster import load_roster, load_signing_key
from simulations.cli.main import app

NAMES = ["st-mary", "north", "west end"]


def invoke(*args: str):
    return CliRunner().invoke(app, ["roster", *args])


def flat(text: str) -> str:
    return " ".join(text.split())


def make_keys(directory: Path, names=NAMES) -> dict[str, Path]:
    keys = {}
    for name in names:
        key = directory / "keys" / f"{name}.key"
        result = invoke("key", "--out", str(key))
        assert result.exit_code == 0, result.output
        keys[name] = key
    return keys


def build(tmp_path: Path, keys: dict[str, Path], *extra: str, out: str = "roster.json"):
    hospitals = [arg for name, key in keys.items()
                 for arg in ("--hospital", f"{name}={public_key_path(key)}")]
    return invoke("build", *hospitals, *extra, "--out", str(tmp_path / out))


def test_key_writes_a_0600_private_key_and_its_public_key_with_a_fingerprint(tmp_path):
    key = tmp_path / "new-dir" / "st-mary.key"
    result = invoke("key", "--out", str(key))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pub = tmp_path / "new-dir" / "st-mary.key.pub"
    raw = bytes.fromhex(pub.read_text().strip())
    private = load_signing_key(key.read_bytes())
    signature = private.sign(b"round 1")
    Ed25519PublicKey.from_public_bytes(raw).verify(signature, b"round 1")  # the pair matches
    assert hashlib.sha256(raw).hexdigest() in result.stdout


def test_key_never_overwrites_either_file(tmp_path):
    key = tmp_path / "st-mary.key"
    assert invoke("key", "--out", str(key)).exit_code == 0
    before = (key.read_bytes(), public_key_path(key).read_bytes())
    again = invoke("key", "--out", str(key))
    assert again.exit_code == 2
    assert f"{key} already exists" in flat(again.output)
    assert "Traceback" not in again.output
    assert (key.read_bytes(), public_key_path(key).read_bytes()) == before
    # only the .pub left behind: still refused, and no private key appears
    lone = tmp_path / "north.key"
    public_key_path(lone).write_text("00" * 32 + "\n")
    refused = invoke("key", "--out", str(lone))
    assert refused.exit_code == 2 and str(public_key_path(lone)) in flat(refused.output)
    assert not lone.exists()


def test_build_then_show_round_trip_with_load_rosters_digest(tmp_path):
    keys = make_keys(tmp_path)
    built = build(tmp_path, keys, "--colluding", "1", "--min-threshold", "3")
    assert built.exit_code == 0, built.output
    path = tmp_path / "roster.json"
    roster = load_roster(path)
    assert roster.names == tuple(NAMES)  # the order given
    assert roster.signing_keys == tuple(
        bytes.fromhex(public_key_path(key).read_text()) for key in keys.values())
    assert (roster.colluders, roster.min_threshold, roster.honest) == (1, 3, None)
    # the file is the canonical form: its sha256sum is the digest hospitals pin
    assert hashlib.sha256(path.read_bytes()).hexdigest() == roster.hex_digest
    assert built.stdout.strip().splitlines()[-1] == roster.hex_digest
    load_roster(path, expected_sha256=built.stdout.split()[-1])

    shown = invoke("show", str(path), "--sha256", roster.hex_digest.upper())
    assert shown.exit_code == 0, shown.output
    for name, key in zip(roster.names, roster.signing_keys, strict=True):
        line = next(line for line in shown.stdout.splitlines() if f" {name} " in line)
        groups = line.split()[-16:]  # read out on the phone: 16 groups of 4 hex digits
        assert all(len(group) == 4 for group in groups)
        assert "".join(groups) == hashlib.sha256(key).hexdigest()
    assert "c (colluding)   1" in shown.stdout and "min threshold   3" in shown.stdout
    assert roster.hex_digest in shown.stdout


def test_build_passes_h_and_show_prints_it(tmp_path):
    keys = make_keys(tmp_path)
    assert build(tmp_path, keys, "--colluding", "0", "--min-threshold", "2",
                 "--honest", "1").exit_code == 0
    assert load_roster(tmp_path / "roster.json").honest == 1
    assert "h (honest)      1" in invoke("show", str(tmp_path / "roster.json")).stdout


def test_show_refuses_another_digest(tmp_path):
    keys = make_keys(tmp_path)
    build(tmp_path, keys, "--colluding", "0", "--min-threshold", "2")
    path = tmp_path / "roster.json"
    actual = load_roster(path).hex_digest
    result = invoke("show", str(path), "--sha256", "ab" * 32)
    assert result.exit_code == 2
    assert f"roster {path} has sha256 {actual}, expected {'ab' * 32}" in flat(result.output)
    bad = invoke("show", str(path), "--sha256", "abc")
    assert bad.exit_code == 2 and "--sha256 must be 64 hex digits" in flat(bad.output)


@pytest.mark.parametrize(("extra", "named"), [
    (["--colluding", "1", "--min-threshold", "4"], "--min-threshold"),
    (["--colluding", "-1", "--min-threshold", "2"], "--colluding"),
    (["--colluding", "1", "--min-threshold", "2", "--honest", "2"], "--honest"),
])
def test_build_refuses_parameters_out_of_range_naming_the_flag(tmp_path, extra, named):
    keys = make_keys(tmp_path)
    result = build(tmp_path, keys, *extra)
    assert result.exit_code == 2 and named in flat(result.output)
    assert "Traceback" not in result.output
    assert not (tmp_path / "roster.json").exists()


def test_build_refuses_bad_hospitals_naming_the_input(tmp_path):
    keys = make_keys(tmp_path)
    a, b, c = (str(public_key_path(key)) for key in keys.values())
    rule = ["--colluding", "0", "--min-threshold", "2", "--out", str(tmp_path / "r.json")]
    cases = {
        "duplicate name": (["--hospital", f"x={a}", "--hospital", f"x={b}",
                            "--hospital", f"y={c}"], "'x' is given twice"),
        "same key twice": (["--hospital", f"x={a}", "--hospital", f"y={a}",
                            "--hospital", f"z={c}"], f"{a} and {a} hold the same public key"),
        "missing file": (["--hospital", f"x={a}", "--hospital", f"y={tmp_path / 'nope.pub'}",
                          "--hospital", f"z={c}"], f"{tmp_path / 'nope.pub'} cannot be read"),
        "private key as public": (["--hospital", f"x={a}", "--hospital", f"y={keys['north']}",
                                   "--hospital", f"z={c}"],
                                  f"public key file {keys['north']} is not a signing public"),
        "no equals sign": (["--hospital", f"x={a}", "--hospital", b, "--hospital", f"z={c}"],
                           f"--hospital '{b}' must be NAME=PUBFILE"),
        "bad name": (["--hospital", f"x={a}", "--hospital", f"y/z={b}", "--hospital", f"z={c}"],
                     "--hospital 'y/z="),
        "too few": (["--hospital", f"x={a}", "--hospital", f"y={b}"], "at least 3 hospitals"),
    }
    for case, (hospitals, message) in cases.items():
        result = invoke("build", *hospitals, *rule)
        assert result.exit_code == 2, case
        assert message in flat(result.output), (case, result.output)
        assert "Traceback" not in result.output, case
    assert not (tmp_path / "r.json").exists()


def test_build_does_not_overwrite_a_roster_without_force(tmp_path):
    keys = make_keys(tmp_path)
    assert build(tmp_path, keys, "--colluding", "0", "--min-threshold", "2").exit_code == 0
    first = (tmp_path / "roster.json").read_bytes()
    again = build(tmp_path, keys, "--colluding", "0", "--min-threshold", "3")
    assert again.exit_code == 2 and "roster.json already exists" in flat(again.output)
    assert (tmp_path / "roster.json").read_bytes() == first
    forced = build(tmp_path, keys, "--colluding", "0", "--min-threshold", "3", "--force")
    assert forced.exit_code == 0 and load_roster(tmp_path / "roster.json").min_threshold == 3


def test_show_names_an_unreadable_or_invalid_roster(tmp_path):
    missing = invoke("show", str(tmp_path / "none.json"))
    assert missing.exit_code == 2 and str(tmp_path / "none.json") in flat(missing.output)
    (tmp_path / "bad.json").write_text('{"format": "fedcare-roster/1"}')
    invalid = invoke("show", str(tmp_path / "bad.json"))
    assert invalid.exit_code == 2 and "bad.json" in flat(invalid.output)
    assert "Traceback" not in invalid.output + missing.output



def _spoken(key: bytes) -> str:
    digest = hashlib.sha256(key).hexdigest()
    return " ".join(digest[i:i + 4] for i in range(0, 64, 4))


def test_show_lists_every_members_fingerprint_to_confirm_with_that_member(tmp_path):
    # Arrange: four hospitals, the roster built by "north"
    names = [*NAMES, "east"]
    keys = make_keys(tmp_path, names)
    assert build(tmp_path, keys, "--colluding", "1", "--min-threshold", "3",
                 "--built-by", "north").exit_code == 0
    roster = load_roster(tmp_path / "roster.json")
    # Act: west end checks the roster it received, with its own public key
    shown = invoke("show", str(tmp_path / "roster.json"),
                   "--own-key", str(public_key_path(keys["west end"])))
    # Assert: every member's fingerprint in groups of 4, beside its name; who built it
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert roster.built_by == "north" and "4 hospitals, built by north" in lines[0]
    for name, key in zip(roster.names, roster.signing_keys, strict=True):
        assert any(f" {name} " in line and _spoken(key) in line for line in lines), name
    assert any("west end" in line and line.endswith("(yours)") for line in lines)
    # ... and a box to tick for each other member, confirmed by phone with that member
    boxes = [line.split("[ ] ", 1)[1] for line in lines if "[ ] " in line]
    assert boxes == ["st-mary", "north", "east"]
    assert f"read out        {' '.join(roster.hex_digest[i:i + 4] for i in range(0, 64, 4))}" \
        in shown.stdout


def test_show_refuses_a_roster_without_this_hospitals_own_key(tmp_path):
    keys = make_keys(tmp_path)
    assert build(tmp_path, keys, "--colluding", "0", "--min-threshold", "2").exit_code == 0
    outsider = tmp_path / "keys" / "outsider.key"
    assert invoke("key", "--out", str(outsider)).exit_code == 0
    refused = invoke("show", str(tmp_path / "roster.json"),
                     "--own-key", str(public_key_path(outsider)))
    assert refused.exit_code == 2
    assert f"your public key {public_key_path(outsider)}" in flat(refused.output)
    assert "is not on this roster: do not pin it" in flat(refused.output)
    assert "Traceback" not in refused.output


def test_fingerprint_prints_what_the_roster_shows_for_that_member(tmp_path):
    keys = make_keys(tmp_path)
    assert build(tmp_path, keys, "--colluding", "0", "--min-threshold", "2").exit_code == 0
    own = invoke("fingerprint", str(public_key_path(keys["north"])))
    assert own.exit_code == 0, own.output
    spoken = own.stdout.splitlines()[-1].split(maxsplit=2)[-1]
    line = next(line for line in invoke("show", str(tmp_path / "roster.json")).stdout
                .splitlines() if " north " in line)
    assert line.endswith(spoken) and len(spoken.split()) == 16
    bad = invoke("fingerprint", str(keys["north"]))  # the private key, not the .pub
    assert bad.exit_code == 2 and "is not a signing public key" in flat(bad.output)


def test_a_roster_without_a_builder_still_loads_and_says_so(tmp_path):
    keys = make_keys(tmp_path)
    assert build(tmp_path, keys, "--colluding", "0", "--min-threshold", "2").exit_code == 0
    data = (tmp_path / "roster.json").read_bytes()
    assert b"built_by" not in data  # an older roster's bytes, and so its digest, unchanged
    shown = invoke("show", str(tmp_path / "roster.json"))
    assert shown.exit_code == 0 and "built by not recorded" in shown.stdout
    bad = build(tmp_path, keys, "--colluding", "0", "--min-threshold", "2", "--built-by", "a/b",
                out="other.json")
    assert bad.exit_code == 2 and "--built-by" in flat(bad.output)
