"""A hospital's SuperNode authentication key pair, in the format Flower 1.42 expects.

The hospital keeps ``NAME.key`` (0600) and passes it to ``flower-supernode
--auth-supernode-private-key``, which reads it with cryptography's ``load_ssh_private_key``
and requires an elliptic-curve key: so it is an OpenSSH-format ECDSA key (P-384, the curve of
Flower's docs; ``ssh-keygen -t ecdsa -b 384`` writes the same). Only ``NAME.pub`` (OpenSSH
public key line) travels to the admin, who registers it with ``flwr supernode register
NAME.pub``; that command reads it with ``load_ssh_public_key`` and accepts NIST curves only.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.key_files import PRIVATE_MODE, PUBLIC_MODE, PendingFile, write_files

_HOSPITAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class HospitalKeyFiles:
    """Paths of a hospital's key pair: ``key`` stays at the hospital, ``pub`` goes to the admin."""

    key: Path
    pub: Path


def validate_hospital_name(name: str) -> str:
    """Return ``name`` if it is usable as a file name stem, else raise ``ValueError``."""
    if not _HOSPITAL_NAME.fullmatch(name):
        raise ValueError(
            f"hospital name {name!r} must be 1-64 letters, digits, '_', '.' or '-', starting "
            "with a letter or digit (it names the key files)"
        )
    return name


def create_hospital_keys(directory: Path, name: str, *, force: bool = False) -> HospitalKeyFiles:
    """Create ``NAME.key`` (private, 0600) and ``NAME.pub`` in ``directory`` (created 0700).

    Raises
    ------
    ValueError
        If ``name`` is not a valid hospital name.
    FileExistsError
        If either file exists and ``force`` is false (nothing is written; the message names it).
    """
    validate_hospital_name(name)
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = HospitalKeyFiles(key=directory / f"{name}.key", pub=directory / f"{name}.pub")
    private_key = ec.generate_private_key(ec.SECP384R1())
    private_openssh = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption())
    public_openssh = private_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    # The trailing comment names the hospital, as ssh-keygen's user@host does.
    write_files([
        PendingFile(files.key, private_openssh, PRIVATE_MODE),
        PendingFile(files.pub, public_openssh + f" {name}\n".encode(), PUBLIC_MODE),
    ], force=force)
    return files


def load_hospital_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """Load a hospital's ``.pub`` file the way ``flwr supernode register`` does.

    Raises
    ------
    ValueError
        If the file is not an OpenSSH elliptic-curve public key (the message names it).
    """
    key = serialization.load_ssh_public_key(Path(path).read_bytes())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"{path} is not an elliptic-curve public key (got {type(key).__name__})")
    return key
