import os
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from server.certificates import (
    create_consortium,
    read_certificate_info,
    renew_server_certificate,
)
from simulations.cli.main import app


def load_cert(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def permissive_umask():
    """Umask 0: only the mode given at creation can keep a key private."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_create_consortium_server_cert_verifies_against_its_ca(tmp_path):
    # Arrange
    files = create_consortium(tmp_path / "a", ["localhost"])
    other = create_consortium(tmp_path / "b", ["localhost"])
    # Act
    server, ca, other_ca = (load_cert(p) for p in (files.server_crt, files.ca_crt, other.ca_crt))
    # Assert
    server.verify_directly_issued_by(ca)
    with pytest.raises((InvalidSignature, ValueError)):
        server.verify_directly_issued_by(other_ca)


def test_create_consortium_sans_hold_every_host_name_and_ip(tmp_path):
    files = create_consortium(tmp_path, ["localhost", "127.0.0.1", "::1", "Link.Example.org"])
    sans = load_cert(files.server_crt).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == ["link.example.org", "localhost"]
    assert sorted(map(str, sans.get_values_for_type(x509.IPAddress))) == ["127.0.0.1", "::1"]
    assert ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)


def test_create_consortium_ca_and_leaf_constraints(tmp_path):
    files = create_consortium(tmp_path, ["localhost"])
    ca, server = load_cert(files.ca_crt), load_cert(files.server_crt)
    ca_constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert ca_constraints.critical and ca_constraints.value.ca
    assert ca_constraints.value.path_length == 0
    ca_usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ca_usage.key_cert_sign and ca_usage.crl_sign and not ca_usage.digital_signature
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ExtendedKeyUsageOID.SERVER_AUTH in server.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value


def test_create_consortium_validity_is_days_from_now(tmp_path):
    before = datetime.now(UTC)
    files = create_consortium(tmp_path, ["localhost"], days=30, ca_days=400)
    server, ca = load_cert(files.server_crt), load_cert(files.ca_crt)
    assert before + timedelta(days=30) - timedelta(seconds=1) <= server.not_valid_after_utc
    assert server.not_valid_after_utc <= datetime.now(UTC) + timedelta(days=30)
    assert server.not_valid_before_utc <= before  # already valid for a clock a bit behind
    assert abs(ca.not_valid_after_utc - (before + timedelta(days=400))) < timedelta(minutes=1)


def test_create_consortium_private_keys_match_certs(tmp_path):
    files = create_consortium(tmp_path, ["localhost"])
    for key_path, cert_path in ((files.ca_key, files.ca_crt), (files.server_key, files.server_crt)):
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert key.public_key() == load_cert(cert_path).public_key()


def test_create_consortium_private_keys_are_0600(tmp_path, permissive_umask):
    files = create_consortium(tmp_path / "certs", ["localhost"])
    assert os.stat(files.ca_key).st_mode & 0o777 == 0o600
    assert os.stat(files.server_key).st_mode & 0o777 == 0o600
    assert os.stat(files.ca_crt).st_mode & 0o777 == 0o644
    assert list(tmp_path.joinpath("certs").glob(".*")) == []  # no temporary files left


def test_create_consortium_refuses_to_overwrite_and_writes_nothing(tmp_path):
    # Arrange: only server.key exists
    (tmp_path / "server.key").write_text("precious")
    # Act / Assert
    with pytest.raises(FileExistsError, match="server.key"):
        create_consortium(tmp_path, ["localhost"])
    assert (tmp_path / "server.key").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.key"]


def test_create_consortium_force_replaces_the_ca(tmp_path):
    first = create_consortium(tmp_path, ["localhost"])
    old_ca = first.ca_crt.read_bytes()
    second = create_consortium(tmp_path, ["localhost"], force=True)
    assert second.ca_crt.read_bytes() != old_ca
    load_cert(second.server_crt).verify_directly_issued_by(load_cert(second.ca_crt))
    assert os.stat(second.server_key).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("name", ["", "host:9092", "https://link.example.org", "a b",
                                  "-bad.example", "bad..example", "x" * 64 + ".org"])
def test_create_consortium_rejects_bad_server_names(tmp_path, name):
    with pytest.raises(ValueError, match="server name"):
        create_consortium(tmp_path, [name])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("days", [0, -5])
def test_create_consortium_rejects_non_positive_days(tmp_path, days):
    with pytest.raises(ValueError, match="--days"):
        create_consortium(tmp_path, ["localhost"], days=days)


def test_create_consortium_needs_a_server_name(tmp_path):
    with pytest.raises(ValueError, match="at least one server name"):
        create_consortium(tmp_path, [])


def test_renew_keeps_the_ca_and_issues_a_new_server_pair(tmp_path):
    files = create_consortium(tmp_path, ["localhost"], days=10)
    ca_bytes, old_server = files.ca_crt.read_bytes(), files.server_crt.read_bytes()
    renew_server_certificate(tmp_path, ["localhost", "10.1.2.3"], days=90)
    info = read_certificate_info(files.server_crt)
    assert files.ca_crt.read_bytes() == ca_bytes and files.server_crt.read_bytes() != old_server
    load_cert(files.server_crt).verify_directly_issued_by(load_cert(files.ca_crt))
    assert info.ip_addresses == ("10.1.2.3",) and 89 < info.days_left() <= 90


def test_renew_without_ca_key_names_the_missing_file(tmp_path):
    create_consortium(tmp_path, ["localhost"])
    (tmp_path / "ca.key").unlink()
    with pytest.raises(FileNotFoundError, match="ca.key"):
        renew_server_certificate(tmp_path, ["localhost"])


def test_read_certificate_info_reports_names_and_role(tmp_path):
    files = create_consortium(tmp_path, ["link.example.org", "192.0.2.7"], days=20)
    server, ca = read_certificate_info(files.server_crt), read_certificate_info(files.ca_crt)
    assert server.dns_names == ("link.example.org",) and server.ip_addresses == ("192.0.2.7",)
    assert not server.is_ca and ca.is_ca and server.issuer == ca.subject
    assert 19 < server.days_left() <= 20


def test_certs_init_cli_writes_files_then_refuses_without_force(tmp_path):
    runner = CliRunner()
    args = ["certs", "init", str(tmp_path), "--server-name", "localhost",
            "--server-name", "127.0.0.1", "--days", "7"]
    first = runner.invoke(app, args)
    second = runner.invoke(app, args)
    forced = runner.invoke(app, [*args, "--force"])
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "ca.key", "server.crt",
                                                          "server.key"]
    assert second.exit_code == 2 and "ca.key already exists" in " ".join(second.output.split())
    assert forced.exit_code == 0


@pytest.mark.parametrize(("extra", "message"), [
    (["--server-name", "host:9092"], "server name 'host:9092'"),
    (["--server-name", "localhost", "--days", "0"], "--days must be > 0"),
])
def test_certs_init_cli_friendly_errors(tmp_path, extra, message):
    result = CliRunner().invoke(app, ["certs", "init", str(tmp_path / "c"), *extra])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "c").exists()


def test_certs_show_cli_prints_names_and_expiry(tmp_path):
    files = create_consortium(tmp_path, ["link.example.org"], days=12)
    result = CliRunner().invoke(app, ["certs", "show", str(files.server_crt)])
    assert result.exit_code == 0
    assert "link.example.org" in result.output and "days left" in result.output


def test_certs_init_cli_warns_when_loopback_is_not_named(tmp_path):
    runner = CliRunner()
    without = runner.invoke(app, ["certs", "init", str(tmp_path / "a"), "--server-name", "x.org"])
    with_ip = runner.invoke(app, ["certs", "init", str(tmp_path / "b"), "--server-name", "x.org",
                                  "--server-name", "127.0.0.1"])
    assert without.exit_code == 0 and "no --server-name 127.0.0.1" in without.output
    assert with_ip.exit_code == 0 and "warning" not in with_ip.output


def test_create_consortium_accepts_a_host_name_longer_than_a_common_name(tmp_path):
    long_name = ".".join(["a" * 60] * 3) + ".org"  # valid DNS name, > 64 characters
    files = create_consortium(tmp_path, [long_name])
    assert read_certificate_info(files.server_crt).dns_names == (long_name,)
