"""The state one hospital's secure-aggregation client keeps between stages, and its record form.

It holds the hospital's two X25519 private keys, the round's self-mask seed (until it has
masked) and the Shamir shares it received from its peers. It never leaves the hospital: the
record form exists only so that the glue can keep it in Flower's in-memory ``Context.state``
between messages, never on disk or in logs. Bonawitz et al. (CCS 2017), Section 4.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from common.errors import SecAggProtocolError

NO_ROUND = -1
_INT_FIELDS = ("node_id", "round_number", "threshold")
_BOOL_FIELDS = ("allow_key_reuse", "mask_key_exposed")
_BYTES_FIELDS = ("mask_key", "encryption_key", "self_seed")
_STR_FIELDS = ("expected",)
_INT_LIST_FIELDS = ("node_ids", "share_owner_ids", "masked_with")
_BYTES_LIST_FIELDS = ("mask_public_keys", "encryption_public_keys", "seed_shares", "key_shares")
_ROUND_FIELDS = ("threshold", "self_seed", *_INT_LIST_FIELDS, *_BYTES_LIST_FIELDS)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_list_of(kind: type, value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, kind) and not isinstance(item, bool) for item in value
    )


@dataclass(slots=True)
class ClientState:
    """Everything a hospital's client remembers; lists are aligned with their id lists.

    Attributes
    ----------
    node_id, allow_key_reuse
        Identity and policy (see ``SecAggClient``).
    mask_key, encryption_key
        Raw 32-byte X25519 private keys; ``b""`` before the first ``advertise-keys``.
    mask_key_exposed
        True from the moment shares of ``mask_key`` leave until a round confirms this hospital
        survived: until then a dropout recovery may have revealed the key.
    round_number, expected
        The current round and the next stage it accepts (``""``: none).
    threshold, node_ids, mask_public_keys, encryption_public_keys
        The round's share-keys parameters: t and the key holders, sorted, with their keys.
    self_seed
        The round's self-mask seed; erased once the update is masked.
    share_owner_ids, seed_shares, key_shares
        Shares held of each owner's self-mask seed and mask key (66 bytes each).
    masked_with
        The hospitals this one masked with (sorted).
    """

    node_id: int
    allow_key_reuse: bool = False
    # Secrets are kept out of repr() so that logging a state never prints them.
    mask_key: bytes = field(default=b"", repr=False)
    encryption_key: bytes = field(default=b"", repr=False)
    mask_key_exposed: bool = False
    round_number: int = NO_ROUND
    expected: str = ""
    threshold: int = 0
    node_ids: list[int] = field(default_factory=list)
    mask_public_keys: list[bytes] = field(default_factory=list)
    encryption_public_keys: list[bytes] = field(default_factory=list)
    self_seed: bytes = field(default=b"", repr=False)
    share_owner_ids: list[int] = field(default_factory=list)
    seed_shares: list[bytes] = field(default_factory=list, repr=False)
    key_shares: list[bytes] = field(default_factory=list, repr=False)
    masked_with: list[int] = field(default_factory=list)

    def begin_round(self, round_number: int, *, expected: str) -> None:
        """Forget the previous round's parameters and shares; keep the keys and the policy."""
        fresh = ClientState(node_id=self.node_id)
        for name in _ROUND_FIELDS:
            setattr(self, name, getattr(fresh, name))
        self.round_number, self.expected = round_number, expected

    def add_shares(self, owner_id: int, *, seed_share: bytes, key_share: bytes) -> None:
        """Hold ``owner_id``'s shares of its self-mask seed and of its mask key."""
        self.share_owner_ids.append(owner_id)
        self.seed_shares.append(seed_share)
        self.key_shares.append(key_share)

    def shares_of(self, owner_id: int) -> tuple[bytes, bytes]:
        """Return the (seed share, mask-key share) held of ``owner_id``."""
        index = self.share_owner_ids.index(owner_id)
        return self.seed_shares[index], self.key_shares[index]

    def to_record(self) -> dict[str, Any]:
        """Return the state as a flat dict of int, bool, str, bytes and lists of int or bytes."""
        return {
            item.name.replace("_", "-"): _copy(getattr(self, item.name)) for item in fields(self)
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ClientState:
        """Rebuild the state from :meth:`to_record`'s dict (or a ConfigRecord with its items).

        Raises
        ------
        SecAggProtocolError
            If a field is missing or of the wrong type.
        """
        values: dict[str, Any] = {}
        checks: tuple[tuple[tuple[str, ...], Callable[[Any], bool]], ...] = (
            (_INT_FIELDS, _is_int),
            (_BOOL_FIELDS, lambda value: isinstance(value, bool)),
            (_BYTES_FIELDS, lambda value: isinstance(value, bytes)),
            (_STR_FIELDS, lambda value: isinstance(value, str)),
            (_INT_LIST_FIELDS, lambda value: _is_list_of(int, _copy(value))),
            (_BYTES_LIST_FIELDS, lambda value: _is_list_of(bytes, _copy(value))),
        )
        for names, check in checks:
            for name in names:
                key = name.replace("_", "-")
                if key not in record or not check(record[key]):
                    raise SecAggProtocolError("state", f"client state field {key!r} is invalid")
                values[name] = _copy(record[key])
        return cls(**values)


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value
