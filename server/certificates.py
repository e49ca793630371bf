"""The consortium's TLS certificates: a CA and the SuperLink's server certificate it signs.

The admin runs this once, offline. ``ca.crt`` goes to every hospital (their SuperNodes trust
only it, so a man in the middle needs the CA key); ``ca.key`` stays with the admin, off the
server; ``server.crt``/``server.key`` go to the SuperLink. The server certificate names every
host name (DNS) and IP address the hospitals dial, because TLS checks the dialled name against
these subject alternative names. Keys are ECDSA P-384, signatures SHA-384.
"""

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.key_files import PRIVATE_MODE, PUBLIC_MODE, PendingFile, write_files

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
DEFAULT_DAYS = 365
DEFAULT_CA_DAYS = 3650
# Backdate notBefore so a hospital whose clock runs a little behind still accepts a new cert.
CLOCK_SKEW = timedelta(hours=1)
ORGANIZATION = "fedcare consortium"

_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True, slots=True)
class ConsortiumFiles:
    """Paths of the files ``create_consortium`` wrote."""

    ca_crt: Path
    ca_key: Path
    server_crt: Path
    server_key: Path


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What an admin checks on a certificate: who, signed by whom, valid when, for which names."""

    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    is_ca: bool

    def days_left(self, *, now: datetime | None = None) -> float:
        """Return the days until expiry (negative once expired)."""
        return (self.not_after - (now or datetime.now(UTC))) / timedelta(days=1)


def parse_server_name(name: str) -> x509.GeneralName:
    """Return the subject alternative name for a host name or an IP address (v4 or v6).

    Raises
    ------
    ValueError
        If ``name`` is neither an IP address nor a valid DNS host name (e.g. it has a port,
        a scheme, spaces or an empty label).
    """
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    labels = name.removesuffix(".").split(".")
    if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"server name {name!r} is neither an IP address nor a DNS host name "
            "(letters, digits and '-' in dot-separated labels; no scheme, port or path)"
        )
    return x509.DNSName(name.lower())


def parse_server_names(names: list[str]) -> list[x509.GeneralName]:
    """Return the subject alternative names for ``names``, duplicates removed, order kept.

    Raises
    ------
    ValueError
        If ``names`` is empty or one of them is invalid (see ``parse_server_name``).
    """
    if not names:
        raise ValueError("give at least one server name (the host name or IP address that "
                         "hospitals dial to reach the SuperLink)")
    return list(dict.fromkeys(parse_server_name(name) for name in names))


def _validate_days(days: int, what: str) -> None:
    if days <= 0:
        raise ValueError(f"{what} must be > 0 (days), got {days}")


def _private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _build_ca(key: ec.EllipticCurvePrivateKey, *, days: int, now: datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{ORGANIZATION} CA")])
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        # path_length=0: the CA signs server certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA384())
    )


def _build_server(key: ec.EllipticCurvePrivateKey, names: list[x509.GeneralName], *,
                  ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, days: int,
                  now: datetime) -> x509.Certificate:
    # TLS checks the SANs; the common name only labels the certificate (at most 64 chars).
    first = str(names[0].value)
    common_name = first if len(first) <= 64 else "fedcare SuperLink"
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_after = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA384())
    )


def create_consortium(directory: Path, server_names: list[str], *, days: int = DEFAULT_DAYS,
                      ca_days: int = DEFAULT_CA_DAYS, force: bool = False) -> ConsortiumFiles:
    """Create the consortium CA and the SuperLink's certificate in ``directory``.

    Parameters
    ----------
    directory
        Created (0700) if missing. Receives ``ca.crt``, ``ca.key``, ``server.crt``,
        ``server.key``; the keys are 0600 from creation.
    server_names
        Host names and IP addresses hospitals use to reach the SuperLink; each becomes a
        DNS or IP subject alternative name of ``server.crt``.
    days
        Validity of the server certificate, from now (capped at the CA's).
    ca_days
        Validity of the CA certificate; longer, so that renewing the server certificate
        does not mean sending every hospital a new CA.
    force
        Replace existing files; otherwise nothing is written if any of the four exists.

    Raises
    ------
    ValueError
        If a server name is invalid, none is given, or ``days``/``ca_days`` is not positive.
    FileExistsError
        If one of the four files exists and ``force`` is false (the message names it).
    """
    names = parse_server_names(server_names)
    _validate_days(days, "--days")
    _validate_days(ca_days, "ca_days")
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = ConsortiumFiles(ca_crt=directory / CA_CERT, ca_key=directory / CA_KEY,
                            server_crt=directory / SERVER_CERT, server_key=directory / SERVER_KEY)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = _build_ca(ca_key, days=ca_days, now=now)
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = _build_server(server_key, names, ca_cert=ca_cert, ca_key=ca_key, days=days,
                                now=now)
    write_files([
        PendingFile(files.ca_key, _private_key_pem(ca_key), PRIVATE_MODE),
        PendingFile(files.server_key, _private_key_pem(server_key), PRIVATE_MODE),
        PendingFile(files.ca_crt, _certificate_pem(ca_cert), PUBLIC_MODE),
        PendingFile(files.server_crt, _certificate_pem(server_cert), PUBLIC_MODE),
    ], force=force)
    return files


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    for path in (cert_path, key_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: renew with the directory that "
                                    "`fedcare certs init` wrote (it holds the CA key)")
    ca_cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    ca_public = ca_cert.public_key()
    if (not isinstance(ca_key, ec.EllipticCurvePrivateKey)
            or not isinstance(ca_public, ec.EllipticCurvePublicKey)
            or ca_key.public_key().public_numbers() != ca_public.public_numbers()):
        raise ValueError(f"{key_path} is not the private key of {cert_path}")
    return ca_cert, ca_key


def renew_server_certificate(directory: Path, server_names: list[str], *,
                             days: int = DEFAULT_DAYS) -> ConsortiumFiles:
    """Issue a new ``server.key``/``server.crt`` with the existing CA, replacing the old pair.

    The CA is kept, so hospitals need nothing new; restart the SuperLink to load the new
    pair. The new certificate's validity is capped at the CA's.

    Raises
    ------
    FileNotFoundError
        If ``ca.crt`` or ``ca.key`` is missing from ``directory``.
    ValueError
        If a server name or ``days`` is invalid, or ``ca.key`` does not match ``ca.crt``.
    """
    names = parse_server_names(server_names)
    _validate_days(days, "--days")
    directory = Path(directory)
    ca_cert, ca_key = _load_ca(directory)
    now = datetime.now(UTC)
    if ca_cert.not_valid_after_utc <= now:
        raise ValueError(f"the CA certificate {directory / CA_CERT} expired on "
                         f"{ca_cert.not_valid_after_utc:%Y-%m-%d}: run `fedcare certs init` "
                         "again and send every hospital the new ca.crt")
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = _build_server(server_key, names, ca_cert=ca_cert, ca_key=ca_key, days=days,
                                now=now)
    files = ConsortiumFiles(ca_crt=directory / CA_CERT, ca_key=directory / CA_KEY,
                            server_crt=directory / SERVER_CERT, server_key=directory / SERVER_KEY)
    write_files([
        PendingFile(files.server_key, _private_key_pem(server_key), PRIVATE_MODE),
        PendingFile(files.server_crt, _certificate_pem(server_cert), PUBLIC_MODE),
    ], force=True)
    return files


def read_certificate_info(path: Path) -> CertificateInfo:
    """Read a PEM certificate's subject, issuer, validity window and subject alternative names.

    Raises
    ------
    ValueError
        If ``path`` does not hold a PEM certificate (the message names the file).
    """
    try:
        certificate = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except ValueError as error:
        raise ValueError(f"{path} is not a PEM certificate: {error}") from None
    try:
        alt_names = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        dns_names = tuple(alt_names.get_values_for_type(x509.DNSName))
        ip_addresses = tuple(str(ip) for ip in alt_names.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns_names, ip_addresses = (), ()
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertificateInfo(
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        is_ca=is_ca,
    )
