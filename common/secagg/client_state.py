"""The state one hospital's secure-aggregation client keeps between stages, and its record form.

It holds the round's two X25519 private keys and self-mask seed (erased once the update is
masked), the Shamir shares it received, and the one survivor set it signed, so that a server
asking twice (differencing) is refused. The record form exists only for Flower's in-memory
``Context.state``; it never holds the long-term signing key. Bonawitz et al. (CCS 2017), Sec. 4.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from common.errors import SecAggProtocolError

NO_ROUND = -1
_INT_FIELDS = ("round_number", "first_round", "threshold", "honest")
_BOOL_FIELDS = ("closed", "signed", "unmasked")
_BYTES_FIELDS = (
    "roster_digest", "settings_digest", "mask_key", "encryption_key", "self_seed",
    "seed_commitment",
)
_STR_FIELDS = ("name", "run_id", "expected")
_STR_LIST_FIELDS = (
    "hospitals", "share_owners", "masked_with", "failed_senders", "signed_survivors",
    "signed_dropped",
)
_BYTES_LIST_FIELDS = (
    "mask_public_keys", "encryption_public_keys", "seed_shares", "key_shares", "pair_keys",
)
_KEPT = ("name", "run_id", "roster_digest", "first_round")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_list_of(kind: type, value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, kind) and not isinstance(item, bool) for item in value
    )


@dataclass(slots=True)
class ClientState:
    """Everything a hospital's client remembers; lists are aligned with their name lists.

    Attributes
    ----------
    name, run_id, roster_digest
        This hospital's roster name, the run it takes part in and its pinned roster's digest.
    first_round
        Rounds below it are refused (a restarted node passes its high-water mark).
    round_number, expected
        The current round and the next stage it accepts (``""``: none).
    closed
        True once a stage failed this round: the client answers nothing more in it.
    settings_digest, threshold, honest
        The settings this hospital signed for the round, and their t and h.
    mask_key, encryption_key, self_seed, seed_commitment
        The round's raw X25519 private keys and self-mask seed (erased after masking), and
        the signed commitment to the seed.
    hospitals, mask_public_keys, encryption_public_keys
        U1 (roster order) and their verified keys.
    share_owners, seed_shares, key_shares
        Shares held of each owner's self-mask seed and mask key (66 bytes each).
    masked_with, failed_senders
        U2 as this hospital masked with it, and the peers whose shares failed to decrypt here.
    pair_keys
        The round's pairwise mask keys, aligned with ``masked_with`` minus this hospital; only
        those with hospitals in the signed dropped set are ever revealed.
    signed, signed_survivors, signed_dropped
        The one (U3, U2 minus U3) this hospital signed this round.
    unmasked
        True once it revealed shares for that set.
    """

    name: str
    run_id: str
    roster_digest: bytes
    first_round: int = 0
    round_number: int = NO_ROUND
    expected: str = ""
    closed: bool = False
    settings_digest: bytes = b""
    threshold: int = 0
    honest: int = 0
    # Secrets are kept out of repr() so that logging a state never prints them.
    mask_key: bytes = field(default=b"", repr=False)
    encryption_key: bytes = field(default=b"", repr=False)
    self_seed: bytes = field(default=b"", repr=False)
    seed_commitment: bytes = b""
    hospitals: list[str] = field(default_factory=list)
    mask_public_keys: list[bytes] = field(default_factory=list)
    encryption_public_keys: list[bytes] = field(default_factory=list)
    share_owners: list[str] = field(default_factory=list)
    seed_shares: list[bytes] = field(default_factory=list, repr=False)
    key_shares: list[bytes] = field(default_factory=list, repr=False)
    masked_with: list[str] = field(default_factory=list)
    failed_senders: list[str] = field(default_factory=list)
    pair_keys: list[bytes] = field(default_factory=list, repr=False)
    signed: bool = False
    signed_survivors: list[str] = field(default_factory=list)
    signed_dropped: list[str] = field(default_factory=list)
    unmasked: bool = False

    def begin_round(self, round_number: int, *, expected: str) -> None:
        """Forget everything of the previous round; keep identity, run and roster."""
        fresh = ClientState(name=self.name, run_id=self.run_id, roster_digest=self.roster_digest)
        for item in fields(self):
            if item.name not in _KEPT:
                setattr(self, item.name, getattr(fresh, item.name))
        self.round_number, self.expected = round_number, expected

    def add_shares(self, owner: str, *, seed_share: bytes, key_share: bytes) -> None:
        """Hold ``owner``'s shares of its self-mask seed and of its mask key."""
        self.share_owners.append(owner)
        self.seed_shares.append(seed_share)
        self.key_shares.append(key_share)

    def shares_of(self, owner: str) -> tuple[bytes, bytes]:
        """Return the (seed share, mask-key share) held of ``owner``."""
        index = self.share_owners.index(owner)
        return self.seed_shares[index], self.key_shares[index]

    def to_record(self) -> dict[str, Any]:
        """Return the state as a flat dict of int, bool, str, bytes and lists of str or bytes."""
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
            (_STR_LIST_FIELDS, lambda value: _is_list_of(str, _copy(value))),
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
