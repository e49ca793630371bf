"""Stage names, message keys, payload checks and the threshold rule of secure aggregation.

Every payload is a plain dict of str keys to int, str, bytes or lists of them, so the Flower glue
maps it 1:1 onto a ConfigRecord; peers are named by roster name. The threshold rule
t >= floor((n + c)/2) + 1 is what keeps a server that equivocates, helped by up to c hospitals,
from both halves of one hospital's secrets. Bonawitz et al. (CCS 2017), Sections 4 and 6.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from common.errors import SecAggProtocolError

MIN_PARTICIPANTS = 3
Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Stage:
    """The protocol stages, in order; each is one server request and one reply per node."""

    ADVERTISE_KEYS: str = "advertise-keys"
    SHARE_KEYS: str = "share-keys"
    MASKED_INPUT: str = "masked-input"
    CONSISTENCY_CHECK: str = "consistency-check"
    UNMASK: str = "unmask"


Stage = _Stage()
STAGE_ORDER = (
    Stage.ADVERTISE_KEYS,
    Stage.SHARE_KEYS,
    Stage.MASKED_INPUT,
    Stage.CONSISTENCY_CHECK,
    Stage.UNMASK,
)


@dataclass(frozen=True, slots=True)
class _Key:
    """The payload keys (kebab-case, as Flower's record keys)."""

    STAGE: str = "secagg-stage"
    ROUND: str = "secagg-round"
    RUN_ID: str = "run-id"
    ROSTER_DIGEST: str = "roster-digest"
    SETTINGS_DIGEST: str = "settings-digest"
    HOSPITAL: str = "hospital"
    MASK_PUBLIC_KEY: str = "mask-public-key"
    ENCRYPTION_PUBLIC_KEY: str = "encryption-public-key"
    SEED_COMMITMENT: str = "seed-commitment"
    KEY_SIGNATURE: str = "key-signature"
    THRESHOLD: str = "threshold"
    HOSPITALS: str = "hospitals"
    MASK_PUBLIC_KEYS: str = "mask-public-keys"
    ENCRYPTION_PUBLIC_KEYS: str = "encryption-public-keys"
    SEED_COMMITMENTS: str = "seed-commitments"
    SETTINGS_DIGESTS: str = "settings-digests"
    KEY_SIGNATURES: str = "key-signatures"
    RECEIVERS: str = "receivers"
    SENDERS: str = "senders"
    CIPHERTEXTS: str = "ciphertexts"
    VECTOR_LENGTH: str = "vector-length"
    MASKED_INPUT: str = "masked-input"
    FAILED_SENDERS: str = "failed-senders"
    SURVIVORS: str = "survivors"
    DROPPED: str = "dropped"
    SURVIVOR_SIGNATURE: str = "survivor-signature"
    SIGNERS: str = "signers"
    SURVIVOR_SIGNATURES: str = "survivor-signatures"
    SELF_SEED_OWNERS: str = "self-seed-owners"
    SELF_SEED_SHARES: str = "self-seed-shares"
    MASK_KEY_OWNERS: str = "mask-key-owners"
    MASK_KEY_SHARES: str = "mask-key-shares"
    PAIR_KEY_PEERS: str = "pair-key-peers"
    PAIR_KEYS: str = "pair-keys"


Key = _Key()


@dataclass(frozen=True, slots=True)
class Advertisement:
    """A hospital's signed round keys, as its advertise-keys reply carries them."""

    name: str
    mask_public_key: bytes
    encryption_public_key: bytes
    seed_commitment: bytes
    settings_digest: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SecAggResult:
    """The outcome of a completed round.

    Attributes
    ----------
    total
        uint64, shape (d,): sum mod 2**64 of the survivors' quantised updates (exact).
    survivors
        Hospitals (roster names, roster order) whose update is in ``total``: the signed U3.
    dropped
        Selected hospitals whose update is not in ``total``.
    revealed_mask_keys
        Hospitals whose mask private key the server reconstructed (they shared keys but are
        not in U3); a dropped hospital not listed had its masks removed with the pair keys the
        survivors revealed.
    excluded
        Hospital -> why it was excluded or its shares discarded (bad signature, ciphertexts
        reported as failing, malformed input, shares that do not reconstruct).
    """

    total: npt.NDArray[np.uint64]
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    revealed_mask_keys: tuple[str, ...]
    excluded: dict[str, str] = field(default_factory=dict)


def threshold_problem(
    threshold: int, num_participants: int, colluders: int = 0, *, min_threshold: int = 2
) -> str | None:
    """Explain why threshold t is unsafe for n participants and c colluders, or return None.

    The rule implemented is t >= floor((n + c)/2) + 1, with n >= 3, t <= n and
    t >= ``min_threshold``. Why: a server that tells different hospitals different survivor
    stories gets a victim's self-mask seed from t holders told "it survived" and its mask key
    from t holders told "it dropped"; the c colluders can give both, each honest holder gives
    one (it answers one unmask per round, over the one set it signed), so the server needs
    2(t - c) <= n - c honest holders, i.e. t <= (n + c)/2. The same count shows two different
    survivor sets cannot both collect t signatures. Bonawitz et al. (CCS 2017) state their
    active-adversary result (Section 6, security against active adversaries) for
    t >= floor(2n/3) + 1 with fewer than n/3 corrupt; for any c < n/3 that choice satisfies
    this rule (since (n + c)/2 < 2n/3), so the rule is the paper's condition stated for the
    roster's own c rather than the worst case c = n/3 - 1. With c = 0 it is t > n/2.
    """
    for name, value in (("threshold", threshold), ("colluders", colluders),
                        ("num_participants", num_participants)):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name} must be an int, got {value!r}"
    if colluders < 0:
        return f"colluders c must be >= 0, got {colluders}"
    if num_participants < MIN_PARTICIPANTS:
        return (
            f"secure aggregation needs at least {MIN_PARTICIPANTS} participants, got "
            f"{num_participants}: with 2, each learns the other's update from the sum"
        )
    if threshold > num_participants:
        return (
            f"threshold t={threshold} must be <= the number of participants n={num_participants}"
            ": the shares of n hospitals could never reach it"
        )
    if threshold < min_threshold:
        return f"threshold t={threshold} is below the roster's smallest threshold {min_threshold}"
    needed = (num_participants + colluders) // 2 + 1
    if threshold < needed:
        return (
            f"threshold t={threshold} must be >= floor((n + c)/2) + 1 = {needed} "
            f"(n={num_participants}, c={colluders}): with t <= (n + c)/2 a server telling "
            "different hospitals different survivor sets, helped by c colluders, could collect "
            "t shares of one hospital's self-mask seed and t of its mask key, i.e. its "
            "individual update"
        )
    return None


def get_str(message: Mapping[str, Any], key: str, *, stage: str) -> str:
    """Read a str field or raise SecAggProtocolError naming the stage and key."""
    value = _get(message, key, stage=stage)
    if not isinstance(value, str):
        raise SecAggProtocolError(stage, f"field {key!r} must be a str, got {type(value).__name__}")
    return value


def get_str_list(message: Mapping[str, Any], key: str, *, stage: str) -> list[str]:
    """Read a list of distinct str."""
    value = _get(message, key, stage=stage)
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise SecAggProtocolError(stage, f"field {key!r} must be a list of str")
    if len(set(value)) != len(value):
        raise SecAggProtocolError(stage, f"field {key!r} repeats a name")
    return list(value)


def get_int(message: Mapping[str, Any], key: str, *, stage: str) -> int:
    """Read an int field or raise SecAggProtocolError naming the stage and key."""
    value = _get(message, key, stage=stage)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SecAggProtocolError(
            stage, f"field {key!r} must be an int, got {type(value).__name__}"
        )
    return value


def get_bytes(
    message: Mapping[str, Any], key: str, *, stage: str, length: int | None = None
) -> bytes:
    """Read a bytes field (of an exact length, if given)."""
    value = _get(message, key, stage=stage)
    if not isinstance(value, bytes):
        raise SecAggProtocolError(stage, f"field {key!r} must be bytes, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise SecAggProtocolError(stage, f"field {key!r} must be {length} bytes, got {len(value)}")
    return value


def get_int_list(message: Mapping[str, Any], key: str, *, stage: str) -> list[int]:
    """Read a list of distinct ints."""
    value = _get(message, key, stage=stage)
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    ):
        raise SecAggProtocolError(stage, f"field {key!r} must be a list of ints")
    if len(set(value)) != len(value):
        raise SecAggProtocolError(stage, f"field {key!r} repeats an id")
    return list(value)


def get_bytes_list(
    message: Mapping[str, Any], key: str, *, stage: str, count: int, length: int | None = None
) -> list[bytes]:
    """Read a list of ``count`` bytes items (each of an exact length, if given)."""
    value = _get(message, key, stage=stage)
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, bytes) for item in value):
        raise SecAggProtocolError(stage, f"field {key!r} must be a list of bytes")
    if len(value) != count:
        raise SecAggProtocolError(stage, f"field {key!r} has {len(value)} items, expected {count}")
    if length is not None and any(len(item) != length for item in value):
        raise SecAggProtocolError(stage, f"every item of field {key!r} must be {length} bytes")
    return list(value)


def vector_to_bytes(vector: npt.NDArray[np.uint64]) -> bytes:
    """Serialise a uint64 vector as little-endian 8-byte words."""
    return np.asarray(vector, dtype="<u8").tobytes()


def vector_from_bytes(
    data: bytes, *, length: int, stage: str, source: str = "masked vector"
) -> npt.NDArray[np.uint64]:
    """Parse ``length`` little-endian uint64 words; raise SecAggProtocolError naming ``source``."""
    if len(data) != 8 * length:
        raise SecAggProtocolError(
            stage, f"{source} has {len(data) / 8:g} words, expected {length}"
        )
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


def _get(message: Mapping[str, Any], key: str, *, stage: str) -> Any:
    if key not in message:
        raise SecAggProtocolError(stage, f"message lacks field {key!r}")
    return message[key]
