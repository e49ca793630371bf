"""Stage names, message keys and payload checks shared by the secure-aggregation state machines.

Every payload is a plain dict of str keys to int, bytes, list[int] or list[bytes], so the Flower
glue maps it 1:1 onto a ConfigRecord. The server relays public keys, AEAD ciphertexts, masked
vectors and, at the end, the shares it needs; nothing else crosses the wire. The participation
rules (n >= 3, n/2 < t <= n) follow Bonawitz et al. (CCS 2017), Sections 3 and 6.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
    UNMASK: str = "unmask"


Stage = _Stage()
STAGE_ORDER = (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK)


@dataclass(frozen=True, slots=True)
class _Key:
    """The payload keys (kebab-case, as Flower's record keys)."""

    STAGE: str = "secagg-stage"
    ROUND: str = "secagg-round"
    MASK_PUBLIC_KEY: str = "mask-public-key"
    ENCRYPTION_PUBLIC_KEY: str = "encryption-public-key"
    THRESHOLD: str = "threshold"
    NODE_IDS: str = "node-ids"
    MASK_PUBLIC_KEYS: str = "mask-public-keys"
    ENCRYPTION_PUBLIC_KEYS: str = "encryption-public-keys"
    RECEIVER_IDS: str = "receiver-ids"
    SENDER_IDS: str = "sender-ids"
    CIPHERTEXTS: str = "ciphertexts"
    VECTOR_LENGTH: str = "vector-length"
    MASKED_INPUT: str = "masked-input"
    SURVIVOR_IDS: str = "survivor-ids"
    DROPPED_IDS: str = "dropped-ids"
    SELF_SEED_OWNER_IDS: str = "self-seed-owner-ids"
    SELF_SEED_SHARES: str = "self-seed-shares"
    MASK_KEY_OWNER_IDS: str = "mask-key-owner-ids"
    MASK_KEY_SHARES: str = "mask-key-shares"


Key = _Key()


@dataclass(frozen=True, slots=True)
class PublicKeys:
    """A hospital's two raw 32-byte X25519 public keys."""

    mask: bytes
    encryption: bytes


@dataclass(frozen=True, slots=True)
class SecAggResult:
    """The outcome of a completed round.

    Attributes
    ----------
    total
        uint64, shape (d,): sum mod 2**64 of the survivors' quantised updates (exact).
    survivor_ids
        Hospitals whose update is in ``total``.
    dropped_ids
        Selected hospitals whose update is not in ``total``.
    revealed_mask_key_ids
        Hospitals whose mask private key the server reconstructed; they must re-key.
    """

    total: npt.NDArray[np.uint64]
    survivor_ids: tuple[int, ...]
    dropped_ids: tuple[int, ...]
    revealed_mask_key_ids: tuple[int, ...]


def threshold_problem(*, threshold: int, num_participants: int) -> str | None:
    """Explain why (threshold, participants) is unsafe or impossible, or return None if fine."""
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        return f"threshold must be an int, got {threshold!r}"
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
    if 2 * threshold <= num_participants:
        return (
            f"threshold t={threshold} must be > n/2 = {num_participants / 2:g} "
            f"(n={num_participants}): with t <= n/2 two disjoint groups of t hospitals could each "
            "unmask, so a server telling them different dropout stories could recover both a "
            "hospital's self-mask seed and its mask key, i.e. its individual update"
        )
    return None


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
