"""The consortium roster every hospital pins: names, Ed25519 signing keys and the trust parameters.

A hospital checks a round only against its own pinned copy (its SHA-256 compared over the phone,
and every member's key fingerprint confirmed with that member itself: docs/roster-procedure.md),
so a server cannot add Sybil peers or substitute keys: every key it relays must carry a roster
member's signature. Protocol ids (Shamir x-coordinates, HKDF and AEAD labels) are roster
positions, never claimed indices. Bonawitz et al. (CCS 2017), Section 4 (PKI of the active model).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ROSTER_FORMAT = "fedcare-roster/1"
SIGNING_KEY_BYTES = 32
MIN_HOSPITALS = 3
MAX_NAME_LENGTH = 128
# From this many hospitals on, c defaults to 1 (one colluding or curious hospital assumed).
COLLUSION_ASSUMED_FROM = 4
PHONE_GROUP = 4  # hex digits per group when a fingerprint is read out
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+-]*(?: [A-Za-z0-9._@:+-]+)*")


@dataclass(frozen=True, slots=True)
class SigningKeyPair:
    """A hospital's fresh Ed25519 pair: PEM private key (write it 0600) and raw public key."""

    private_pem: bytes
    public_key: bytes


@dataclass(frozen=True, slots=True)
class Roster:
    """The consortium's hospitals (in roster order) and the parameters every round must respect.

    Attributes
    ----------
    names
        The hospitals' names; position i (0-based) is protocol id i + 1.
    signing_keys
        Raw 32-byte Ed25519 public keys, aligned with ``names``.
    colluders
        c: the most hospitals assumed to collude with the server (or be curious), c >= 0.
    min_threshold
        The smallest Shamir threshold t any round may use, c < min_threshold <= len(names).
    honest
        h, the honest-contributor count the distributed noise may assume, if the roster states
        it (1 <= h <= min_threshold - c); ``None`` derives it per round as h = t - c.
    built_by
        Who built the roster (a name, as the builder gave it), so that every hospital knows
        whom to ask about it; ``None`` when not recorded (rosters made before it existed).
        Recorded only when set, so an older roster's bytes and digest are unchanged.

    Raises
    ------
    ValueError
        If a field is invalid (the message names the field).
    """

    names: tuple[str, ...]
    signing_keys: tuple[bytes, ...]
    colluders: int
    min_threshold: int
    honest: int | None = None
    built_by: str | None = None

    def __post_init__(self) -> None:
        """Check every field (ValueError naming the field)."""
        _check_roster(self)

    @property
    def size(self) -> int:
        """The number of hospitals on the roster."""
        return len(self.names)

    def index(self, name: str) -> int:
        """Return the protocol id of ``name``: its 1-based roster position.

        Raises
        ------
        LookupError
            If ``name`` is not on the roster.
        """
        try:
            return self.names.index(name) + 1
        except ValueError:
            raise LookupError(f"hospital {name!r} is not on the pinned roster") from None

    def name_of(self, index: int) -> str:
        """Return the name whose protocol id is ``index`` (LookupError if none)."""
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= self.size:
            raise LookupError(f"no hospital has roster id {index!r}")
        return self.names[index - 1]

    def public_key(self, name: str) -> Ed25519PublicKey:
        """Return the Ed25519 public key pinned for ``name`` (LookupError if not on the roster)."""
        return Ed25519PublicKey.from_public_bytes(self.signing_keys[self.index(name) - 1])

    def in_roster_order(self, names: Iterable[str]) -> list[str]:
        """Return ``names`` sorted by roster position (LookupError if one is not on it)."""
        return sorted(names, key=self.index)

    def honest_contributors(self, threshold: int) -> int:
        """H for a round with threshold t: the stated h, else t - c."""
        return self.honest if self.honest is not None else threshold - self.colluders

    def to_json_object(self) -> dict[str, Any]:
        """Return the roster as the JSON object :meth:`to_bytes` serialises.

        ``built_by`` appears only when recorded.
        """
        document: dict[str, Any] = {
            "format": ROSTER_FORMAT,
            "colluders": self.colluders,
            "min_threshold": self.min_threshold,
            "honest": self.honest,
            "hospitals": [
                {"name": name, "signing_key": key.hex()}
                for name, key in zip(self.names, self.signing_keys, strict=True)
            ],
        }
        if self.built_by is not None:
            document["built_by"] = self.built_by
        return document

    def to_bytes(self) -> bytes:
        """Canonical serialisation: JSON, sorted keys, no whitespace, ASCII, no final newline."""
        return json.dumps(
            self.to_json_object(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")

    @property
    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes` (32 raw bytes); bound into every signature."""
        return hashlib.sha256(self.to_bytes()).digest()

    @property
    def hex_digest(self) -> str:
        """:attr:`digest` as 64 hex digits: what hospitals compare over the phone."""
        return self.digest.hex()


def build_roster(
    names: Sequence[str],
    public_keys: Sequence[bytes | Ed25519PublicKey],
    c: int,
    min_threshold: int,
    honest: int | None = None,
    *,
    built_by: str | None = None,
) -> Roster:
    """Build a roster from names and their Ed25519 public keys (raw 32 bytes or key objects).

    ``built_by`` records who built it (optional).

    Raises
    ------
    ValueError
        If the lists differ in length or a field is invalid.
    """
    if len(names) != len(public_keys):
        raise ValueError(f"{len(names)} names but {len(public_keys)} public keys")
    raw = tuple(
        key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if isinstance(key, Ed25519PublicKey)
        else key
        for key in public_keys
    )
    return Roster(
        names=tuple(names),
        signing_keys=raw,
        colluders=c,
        min_threshold=min_threshold,
        honest=honest,
        built_by=built_by,
    )


def default_colluders(hospitals: int) -> int:
    """Return c when nobody states another: 1 from 4 hospitals on, else 0.

    With n >= 4 a round of t contributors holds, besides the victim, at least two others, so a
    single curious or colluding hospital is a realistic threat: it subtracts its own share
    from the sum and, with c = 0, faces less noise than the ledger accounts. With 3 hospitals
    (t = 2) assuming c = 1 would leave h = 1: every hospital adds the whole noise itself.
    """
    return 1 if hospitals >= COLLUSION_ASSUMED_FROM else 0


def colluders_problem(roster: Roster, *, minimum: int) -> str | None:
    """Why a hospital that assumes up to ``minimum`` colluding hospitals refuses ``roster``.

    A pure check, to run before any noise is drawn or anything charged: the roster's c is what
    the consortium (and the server's h = t - c) assumes, so a roster whose c is below the
    hospital's own stated minimum (node config ``colluding-hospitals``) would let the server
    plan rounds whose noise and thresholds hold against fewer colluders than the hospital
    accepts. Returns None when the roster's c >= ``minimum``, else the reason (naming both).
    """
    if roster.colluders >= minimum:
        return None
    return (f"the consortium roster assumes c = {roster.colluders} colluding hospitals, fewer "
            f"than this hospital's own minimum of {minimum} (node config "
            f"colluding-hospitals): it refuses the roster (sha256 {roster.hex_digest})")


def phone_form(hex_digits: str) -> str:
    """Hex digits in space-separated groups of 4, to be read out on the phone."""
    return " ".join(hex_digits[i:i + PHONE_GROUP] for i in range(0, len(hex_digits), PHONE_GROUP))


def key_fingerprint(public_key: bytes) -> str:
    """SHA-256 (64 hex digits) of a raw 32-byte Ed25519 public key: what members confirm."""
    return hashlib.sha256(public_key).hexdigest()


def roster_from_bytes(data: bytes, *, source: str = "roster") -> Roster:
    """Parse a roster's JSON (canonical or not); errors name ``source`` and the field.

    Raises
    ------
    LookupError
        If a required field is missing.
    ValueError
        If the JSON is invalid or a field has a wrong type or value.
    """
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{source}: not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{source}: the roster must be a JSON object")
    fmt = _field(document, "format", source)
    if fmt != ROSTER_FORMAT:
        raise ValueError(f"{source}: field 'format' must be {ROSTER_FORMAT!r}, got {fmt!r}")
    unknown = set(document) - {"format", "colluders", "min_threshold", "honest", "hospitals",
                               "built_by"}
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {sorted(unknown)}")
    hospitals = _field(document, "hospitals", source)
    if not isinstance(hospitals, list):
        raise ValueError(f"{source}: field 'hospitals' must be a list")
    names, keys = [], []
    for position, entry in enumerate(hospitals):
        where = f"hospitals[{position}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{source}: field {where!r} must be an object")
        name = _field(entry, "name", source, where=f"{where}.name")
        key_hex = _field(entry, "signing_key", source, where=f"{where}.signing_key")
        if not isinstance(key_hex, str) or not re.fullmatch(r"[0-9a-f]{64}", key_hex):
            raise ValueError(
                f"{source}: field '{where}.signing_key' must be 64 lowercase hex digits "
                "(a raw 32-byte Ed25519 public key)"
            )
        names.append(name)
        keys.append(bytes.fromhex(key_hex))
    try:
        return Roster(
            names=tuple(names),
            signing_keys=tuple(keys),
            colluders=_field(document, "colluders", source),
            min_threshold=_field(document, "min_threshold", source),
            honest=document.get("honest"),
            built_by=document.get("built_by"),
        )
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def load_roster(path: str | PathLike[str], *, expected_sha256: str | None = None) -> Roster:
    """Read and check a roster file; with ``expected_sha256``, refuse any other roster.

    The digest compared is :attr:`Roster.hex_digest` (SHA-256 of the canonical form), which is
    the SHA-256 of the file itself when the file was written with :meth:`Roster.to_bytes`.

    Raises
    ------
    ValueError
        If the file cannot be read, is invalid, or its digest differs from ``expected_sha256``.
    LookupError
        If a required field is missing.
    """
    source = f"roster file {str(path)!r}"
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{source}: cannot be read: {error.strerror or error}") from None
    roster = roster_from_bytes(data, source=source)
    if expected_sha256 is not None:
        expected = str(expected_sha256).strip().lower()
        if roster.hex_digest != expected:
            raise ValueError(
                f"{source}: its SHA-256 is {roster.hex_digest}, but the node config pins "
                f"{expected}: this is not the consortium's roster"
            )
    return roster


def make_signing_key() -> SigningKeyPair:
    """Make a hospital's Ed25519 signing key pair (PKCS#8 PEM, unencrypted; write it 0600)."""
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningKeyPair(private_pem=pem, public_key=signing_public_key(private_key))


def load_signing_key(pem: bytes, *, source: str = "signing key") -> Ed25519PrivateKey:
    """Load an Ed25519 private key from PEM; ValueError naming ``source`` if it is not one."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{source}: not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{source}: not an Ed25519 private key")
    return key


def signing_public_key(private_key: Ed25519PrivateKey) -> bytes:
    """Return the raw 32-byte public key of an Ed25519 private key."""
    return private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def _field(document: Mapping[str, Any], key: str, source: str, *, where: str = "") -> Any:
    if key not in document:
        raise LookupError(f"{source}: roster field {where or key!r} is missing")
    return document[key]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_roster(roster: Roster) -> None:
    names, keys = roster.names, roster.signing_keys
    if not isinstance(names, tuple) or not isinstance(keys, tuple):
        raise ValueError("field 'hospitals': names and signing keys must be tuples")
    if len(names) < MIN_HOSPITALS:
        raise ValueError(
            f"field 'hospitals': at least {MIN_HOSPITALS} hospitals are needed, got {len(names)}"
        )
    if len(names) != len(keys):
        raise ValueError("field 'hospitals': every hospital needs exactly one signing key")
    for position, name in enumerate(names):
        if (
            not isinstance(name, str)
            or not 1 <= len(name) <= MAX_NAME_LENGTH
            or not _NAME.fullmatch(name)
        ):
            raise ValueError(
                f"field 'hospitals[{position}].name' must be 1 to {MAX_NAME_LENGTH} letters, "
                f"digits, single inner spaces or ._@:+- (starting with a letter or digit), "
                f"got {name!r}"
            )
    if len(set(names)) != len(names):
        raise ValueError("field 'hospitals': a name appears twice")
    for position, key in enumerate(keys):
        where = f"hospitals[{position}].signing_key"
        if not isinstance(key, bytes) or len(key) != SIGNING_KEY_BYTES:
            raise ValueError(f"field {where!r} must be a raw {SIGNING_KEY_BYTES}-byte key")
        try:
            Ed25519PublicKey.from_public_bytes(key)
        except ValueError:
            raise ValueError(f"field {where!r} is not an Ed25519 public key") from None
    if len(set(keys)) != len(keys):
        raise ValueError("field 'hospitals': two hospitals share a signing key")
    builder = roster.built_by
    if builder is not None and (not isinstance(builder, str)
                                or not 1 <= len(builder) <= MAX_NAME_LENGTH
                                or not _NAME.fullmatch(builder)):
        raise ValueError(f"field 'built_by' must be null or a name of 1 to {MAX_NAME_LENGTH} "
                         f"letters, digits, single inner spaces or ._@:+-, got {builder!r}")
    c, t_min, h = roster.colluders, roster.min_threshold, roster.honest
    if not _is_int(c) or c < 0:
        raise ValueError(f"field 'colluders' must be an int >= 0, got {c!r}")
    if not _is_int(t_min) or not max(2, c + 1) <= t_min <= len(names):
        raise ValueError(
            f"field 'min_threshold' must be an int with max(2, colluders + 1) = {max(2, c + 1)} "
            f"<= t <= {len(names)} hospitals, got {t_min!r}"
        )
    if h is not None and (not _is_int(h) or not 1 <= h <= t_min - c):
        raise ValueError(
            f"field 'honest' must be null or an int with 1 <= h <= min_threshold - colluders "
            f"= {t_min - c} (a round with t = min_threshold guarantees only t - c honest "
            f"contributors), got {h!r}"
        )
