import argparse
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.cli.supernode.register import try_load_public_key
from flwr.supercore.primitives.asymmetric import public_key_to_bytes
from flwr.supernode.cli.flower_supernode import _try_setup_client_authentication
from typer.testing import CliRunner

from client.auth_keys import create_hospital_keys, load_hospital_public_key
from simulations.cli.main import app


def test_hospital_key_loads_with_flower_supernode_loader(tmp_path):
    # Arrange
    files = create_hospital_keys(tmp_path, "hospital-1")
    args = argparse.Namespace(auth_supernode_private_key=str(files.key),
                              auth_supernode_public_key=None)
    # Act: the function flower-supernode calls on --auth-supernode-private-key
    private_key, public_key = _try_setup_client_authentication(args)
    # Assert: a P-384 key whose public half is what the admin registers
    assert isinstance(private_key, ec.EllipticCurvePrivateKey)
    assert isinstance(private_key.curve, ec.SECP384R1)
    assert try_load_public_key(files.pub) == public_key_to_bytes(public_key)


def test_hospital_public_key_names_the_hospital(tmp_path):
    files = create_hospital_keys(tmp_path, "st-mary")
    line = files.pub.read_text()
    assert line.startswith("ecdsa-sha2-nistp384 ") and line.rstrip().endswith(" st-mary")
    assert isinstance(load_hospital_public_key(files.pub), ec.EllipticCurvePublicKey)


def test_hospital_private_key_is_0600(tmp_path):
    previous = os.umask(0)
    try:
        files = create_hospital_keys(tmp_path / "keys", "a")
    finally:
        os.umask(previous)
    assert os.stat(files.key).st_mode & 0o777 == 0o600
    assert os.stat(files.pub).st_mode & 0o777 == 0o644


def test_hospital_keys_are_never_overwritten_without_force(tmp_path):
    files = create_hospital_keys(tmp_path, "a")
    key_bytes, pub_bytes = files.key.read_bytes(), files.pub.read_bytes()
    with pytest.raises(FileExistsError, match=r"a\.key"):
        create_hospital_keys(tmp_path, "a")
    assert files.key.read_bytes() == key_bytes and files.pub.read_bytes() == pub_bytes


def test_hospital_keys_refuse_when_only_the_public_key_exists(tmp_path):
    (tmp_path / "a.pub").write_text("registered")
    with pytest.raises(FileExistsError, match=r"a\.pub"):
        create_hospital_keys(tmp_path, "a")
    assert not (tmp_path / "a.key").exists()


def test_hospital_keys_force_makes_a_new_pair(tmp_path):
    old = create_hospital_keys(tmp_path, "a").pub.read_bytes()
    files = create_hospital_keys(tmp_path, "a", force=True)
    assert files.pub.read_bytes() != old
    assert os.stat(files.key).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "has space"])
def test_hospital_keys_reject_names_that_are_not_file_stems(tmp_path, name):
    with pytest.raises(ValueError, match="hospital name"):
        create_hospital_keys(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_certs_hospital_cli(tmp_path):
    runner = CliRunner()
    first = runner.invoke(app, ["certs", "hospital", str(tmp_path), "north"])
    second = runner.invoke(app, ["certs", "hospital", str(tmp_path), "north"])
    assert first.exit_code == 0 and (tmp_path / "north.key").is_file()
    assert second.exit_code == 2 and "north.key already exists" in " ".join(second.output.split())
