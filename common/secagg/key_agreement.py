"""X25519 key agreement and HKDF-SHA256 derivation of one key per purpose, round and pair.

Each hospital holds two X25519 key pairs (masking, share encryption); only the raw 32-byte
public keys travel. Two hospitals derive the same 32-byte key as HKDF-SHA256(X25519(sk_u, pk_v),
info), where ``info`` names the purpose, the round and the unordered pair, so one exchange never
yields the same key twice. The server, which sees only public keys, learns nothing about the
keys (CDH in Curve25519). Bonawitz et al. (CCS 2017), Section 3 (KA.agree), RFC 7748, RFC 5869.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
_INFO_PREFIX = b"fedcare/secagg/"


@dataclass(frozen=True, slots=True)
class _Purpose:
    """The HKDF ``info`` labels: one per use of a shared secret."""

    MASK: bytes = b"mask"
    SHARE_ENCRYPTION: bytes = b"share-encryption"
    SELF_MASK: bytes = b"self-mask"


Purpose = _Purpose()


def generate_private_key() -> X25519PrivateKey:
    """Generate a fresh X25519 private key from the OS CSPRNG (never persisted)."""
    return X25519PrivateKey.generate()


def public_key_bytes(private_key: X25519PrivateKey) -> bytes:
    """Return the raw 32-byte public key of ``private_key``."""
    return private_key.public_key().public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )


def private_key_bytes(private_key: X25519PrivateKey) -> bytes:
    """Return the raw 32-byte private key, for Shamir sharing only (never log or store it)."""
    return private_key.private_bytes(
        encoding=serialization.Encoding.Raw,
        format=serialization.PrivateFormat.Raw,
        encryption_algorithm=serialization.NoEncryption(),
    )


def load_private_key(data: bytes) -> X25519PrivateKey:
    """Load a raw 32-byte X25519 private key (e.g. one reconstructed from Shamir shares).

    Raises
    ------
    ValueError
        If ``data`` is not 32 bytes.
    """
    if not isinstance(data, bytes) or len(data) != KEY_BYTES:
        raise ValueError(f"an X25519 private key is {KEY_BYTES} bytes")
    return X25519PrivateKey.from_private_bytes(data)


def load_public_key(data: bytes) -> X25519PublicKey:
    """Load a raw 32-byte X25519 public key.

    Raises
    ------
    ValueError
        If ``data`` is not 32 bytes.
    """
    if not isinstance(data, bytes) or len(data) != KEY_BYTES:
        raise ValueError(f"an X25519 public key is {KEY_BYTES} bytes")
    return X25519PublicKey.from_public_bytes(data)


def build_info(purpose: bytes, *, round_number: int, id_a: int, id_b: int) -> bytes:
    """Build the HKDF ``info`` for a purpose, a round and an unordered pair of hospitals.

    Example: ``b"fedcare/secagg/mask|round=3|pair=1,2"``; the pair is sorted so both ends
    build the same label. For a hospital's own key (self mask) pass ``id_a == id_b``.
    """
    if purpose not in (Purpose.MASK, Purpose.SHARE_ENCRYPTION, Purpose.SELF_MASK):
        raise ValueError(f"unknown key purpose {purpose!r}")
    low, high = sorted((int(id_a), int(id_b)))
    return b"%s%s|round=%d|pair=%d,%d" % (_INFO_PREFIX, purpose, int(round_number), low, high)


def derive_key(private_key: X25519PrivateKey, peer_public_bytes: bytes, *, info: bytes) -> bytes:
    """Derive a 32-byte key shared with the owner of ``peer_public_bytes``.

    Parameters
    ----------
    private_key
        This hospital's X25519 private key.
    peer_public_bytes
        The peer's raw 32-byte X25519 public key.
    info
        The label from :func:`build_info`; different labels give independent keys.

    Returns
    -------
    bytes
        32 bytes, equal at both ends of the pair.

    Raises
    ------
    ValueError
        If the public key is malformed or of low order (the shared secret would be all zero).
    """
    shared = private_key.exchange(load_public_key(peer_public_bytes))
    return expand_key(shared, info=info)


def expand_key(secret: bytes, *, info: bytes) -> bytes:
    """Derive a 32-byte key from a uniformly random ``secret`` with HKDF-SHA256 (no salt)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(secret)
