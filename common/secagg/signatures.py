"""What hospitals sign: their round keys with a settings digest and seed commitment, and U3.

Ed25519 (``cryptography``) over length-prefixed, domain-separated byte strings that bind the
roster digest, run, round and signer's roster name, so a server can neither substitute a key,
replay one into another run or round, nor show two hospitals different settings or survivor
sets unnoticed. Bonawitz et al. (CCS 2017), Section 4, Figure 4 (rounds 0 and 3, active model).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_BYTES = 64
DIGEST_BYTES = 32
_ADVERTISE_LABEL = b"fedcare/secagg/advertise-keys/v1"
_SURVIVORS_LABEL = b"fedcare/secagg/consistency-check/v1"
_COMMITMENT_LABEL = b"fedcare/secagg/self-seed-commitment/v1"
_SETTINGS_LABEL = "fedcare/secagg/settings/v1"


@dataclass(frozen=True, slots=True)
class SecAggSettings:
    """The round's privacy-relevant settings, as the hospital itself accepted them.

    Attributes
    ----------
    clip_norm
        C, the L2 clip of an update (> 0).
    noise_multiplier
        z, the run's noise multiplier (>= 0; 0 for no DP noise).
    honest
        h, the honest contributors the distributed noise assumes (>= 1).
    threshold
        t, the Shamir threshold and the fewest survivors (>= 2).
    encoding_scale
        The fixed-point scale of the encoding (> 0).
    planned_rounds
        Rounds the run plans (>= 1).
    """

    clip_norm: float
    noise_multiplier: float
    honest: int
    threshold: int
    encoding_scale: float
    planned_rounds: int

    def digest(self) -> bytes:
        """Return :func:`settings_digest` of these values."""
        return settings_digest(
            clip_norm=self.clip_norm,
            noise_multiplier=self.noise_multiplier,
            honest=self.honest,
            threshold=self.threshold,
            encoding_scale=self.encoding_scale,
            planned_rounds=self.planned_rounds,
        )


def settings_digest(
    *,
    clip_norm: float,
    noise_multiplier: float,
    honest: int,
    threshold: int,
    encoding_scale: float,
    planned_rounds: int,
) -> bytes:
    """SHA-256 of the canonical JSON of the named settings (floats as exact hex), 32 bytes.

    Raises
    ------
    ValueError
        If a value is of the wrong type or out of range.
    """
    reals = {"clip_norm": clip_norm, "noise_multiplier": noise_multiplier,
             "encoding_scale": encoding_scale}
    for name, value in reals.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(value):
            raise ValueError(f"setting {name} must be a finite number, got {value!r}")
    if clip_norm <= 0 or encoding_scale <= 0 or noise_multiplier < 0:
        raise ValueError(
            "settings need clip_norm > 0, encoding_scale > 0 and noise_multiplier >= 0, got "
            f"{clip_norm!r}, {encoding_scale!r}, {noise_multiplier!r}"
        )
    ints = {"honest": (honest, 1), "threshold": (threshold, 2),
            "planned_rounds": (planned_rounds, 1)}
    for name, (value, low) in ints.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"setting {name} must be an int >= {low}, got {value!r}")
    document = {
        "label": _SETTINGS_LABEL,
        "clip_norm": float(clip_norm).hex(),
        "noise_multiplier": float(noise_multiplier).hex(),
        "encoding_scale": float(encoding_scale).hex(),
        "honest": honest,
        "threshold": threshold,
        "planned_rounds": planned_rounds,
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).digest()


def seed_commitment(
    seed: bytes, *, roster_digest: bytes, run_id: str, round_number: int, name: str
) -> bytes:
    """Commit to a self-mask seed: SHA-256(label, roster digest, run, round, name, seed).

    No separate nonce: the seed is itself 32 fresh bytes from the OS CSPRNG, used once, so the
    hash hides it (guessing it is a 2**256 search) and binds it (collision resistance); a nonce
    would have to be Shamir-shared too for the server to check a reconstruction.
    """
    return hashlib.sha256(
        _encode(_COMMITMENT_LABEL, roster_digest, run_id, round_number, name, seed)
    ).digest()


def advertisement_message(
    *,
    roster_digest: bytes,
    run_id: str,
    round_number: int,
    name: str,
    mask_public_key: bytes,
    encryption_public_key: bytes,
    settings_digest: bytes,
    seed_commitment: bytes,
) -> bytes:
    """The bytes a hospital signs when it advertises its round keys."""
    return _encode(
        _ADVERTISE_LABEL, roster_digest, run_id, round_number, name, mask_public_key,
        encryption_public_key, settings_digest, seed_commitment,
    )


def survivors_message(
    *,
    roster_digest: bytes,
    run_id: str,
    round_number: int,
    settings_digest: bytes,
    survivors: Sequence[str],
    dropped: Sequence[str],
) -> bytes:
    """The bytes a hospital signs in the consistency check: U3 and the dropped U2 minus U3."""
    return _encode(
        _SURVIVORS_LABEL, roster_digest, run_id, round_number, settings_digest,
        _encode(*survivors), _encode(*dropped),
    )


def sign(signing_key: Ed25519PrivateKey, message: bytes) -> bytes:
    """Sign ``message`` with Ed25519 (deterministic, 64 bytes)."""
    return signing_key.sign(message)


def verify(public_key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """Return whether ``signature`` is a valid Ed25519 signature of ``message``."""
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _encode(*parts: bytes | str | int) -> bytes:
    """Length-prefix every part (4-byte big-endian length), so no two tuples share an encoding."""
    out = bytearray()
    for part in parts:
        if isinstance(part, bool):
            raise TypeError("booleans are not encoded")
        if isinstance(part, int):
            data = part.to_bytes(8, "big", signed=True)
        elif isinstance(part, str):
            data = part.encode("utf-8")
        elif isinstance(part, bytes):
            data = part
        else:
            raise TypeError(f"cannot encode {type(part).__name__}")
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)
