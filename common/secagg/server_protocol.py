"""The server's side of secure aggregation as a per-round state machine (no I/O, no Flower).

The server relays public keys and encrypted shares, sums the masked vectors mod 2**64, decides
who survived, and from t shares per hospital rebuilds the survivors' self-mask seeds and the
dropped hospitals' mask keys, which yields the exact sum of the survivors' quantised updates and
nothing more (for a semi-honest server, as long as fewer than t hospitals collude with it).
Bonawitz et al. (CCS 2017), Section 4 (Figure 4), rounds 0-4.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from common.errors import SecAggProtocolError
from common.secagg import key_agreement as ka
from common.secagg import messages as msg
from common.secagg.masking import unmask_sum
from common.secagg.messages import (
    MIN_PARTICIPANTS,
    Key,
    Message,
    PublicKeys,
    SecAggResult,
    Stage,
)
from common.secagg.shamir import SHARE_BYTES, combine_shares
from common.secagg.share_encryption import NONCE_BYTES, TAG_BYTES

SEED_BYTES = 32
_CIPHERTEXT_BYTES = NONCE_BYTES + 2 * SHARE_BYTES + TAG_BYTES


class SecAggServer:
    """Run one round: ``requests()`` -> deliver -> ``receive()`` each reply -> ``close_stage()``.

    Parameters
    ----------
    round_number
        The round; bound into every derived key and ciphertext.
    node_ids
        The hospitals selected for the round, n >= 3.
    threshold
        Shares needed to reconstruct a secret, n/2 < t <= n; also the fewest survivors.
    vector_length
        Length d of every quantised update.
    known_public_keys
        Keys kept from an earlier round (see ``reusable_public_keys``); hospitals listed here
        skip ``advertise-keys``. Never pass a hospital whose mask key was revealed.

    Raises
    ------
    ValueError
        If the participants, threshold or vector length are invalid.
    """

    def __init__(
        self,
        *,
        round_number: int,
        node_ids: Sequence[int],
        threshold: int,
        vector_length: int,
        known_public_keys: Mapping[int, PublicKeys] | None = None,
    ) -> None:
        ids = sorted(int(node) for node in node_ids)
        if len(set(ids)) != len(ids):
            raise ValueError(f"node_ids must be distinct, got {list(node_ids)}")
        problem = msg.threshold_problem(threshold=threshold, num_participants=len(ids))
        if problem is not None:
            raise ValueError(problem)
        if isinstance(vector_length, bool) or not isinstance(vector_length, int):
            raise ValueError(f"vector_length must be an int >= 1, got {vector_length!r}")
        if vector_length < 1:
            raise ValueError(f"vector_length must be an int >= 1, got {vector_length!r}")
        if isinstance(round_number, bool) or not isinstance(round_number, int) or round_number < 0:
            raise ValueError(f"round_number must be an int >= 0, got {round_number!r}")
        self.round_number = round_number
        self.threshold = threshold
        self.vector_length = vector_length
        self.selected_ids = tuple(ids)
        known = dict(known_public_keys or {})
        self._keys = {node: known[node] for node in ids if node in known}
        self._ciphertexts: dict[tuple[int, int], bytes] = {}  # (sender, receiver) -> bytes
        self._masked_total = np.zeros(vector_length, dtype=np.uint64)
        self._shares: dict[int, Message] = {}
        self._replied: set[int] = set()
        self._key_holders: list[int] = []  # share x of the i-th holder is i + 1
        self._sharers: list[int] = []
        self._survivors: list[int] = []
        self._result: SecAggResult | None = None
        self._aborted = False
        missing = [node for node in ids if node not in self._keys]
        if missing:
            self.stage: str | None = Stage.ADVERTISE_KEYS
            self._asked = missing
        else:
            self.stage, self._asked = Stage.SHARE_KEYS, list(ids)
            self._key_holders = list(ids)

    def requests(self) -> dict[int, Message]:
        """Return the current stage's request for each node asked (node id -> payload)."""
        stage = self._current_stage()
        base: Message = {Key.STAGE: stage, Key.ROUND: self.round_number}
        if stage == Stage.ADVERTISE_KEYS:
            return {node: dict(base) for node in self._asked}
        if stage == Stage.SHARE_KEYS:
            ids = self._asked
            keys = {
                Key.THRESHOLD: self.threshold,
                Key.NODE_IDS: list(ids),
                Key.MASK_PUBLIC_KEYS: [self._keys[node].mask for node in ids],
                Key.ENCRYPTION_PUBLIC_KEYS: [self._keys[node].encryption for node in ids],
            }
            return {node: {**base, **keys} for node in ids}
        if stage == Stage.MASKED_INPUT:
            out = {}
            for node in self._asked:
                senders = [peer for peer in self._asked if peer != node]
                out[node] = {
                    **base,
                    Key.NODE_IDS: list(self._asked),
                    Key.SENDER_IDS: senders,
                    Key.CIPHERTEXTS: [self._ciphertexts[(peer, node)] for peer in senders],
                    Key.VECTOR_LENGTH: self.vector_length,
                }
            return out
        dropped = [node for node in self._sharers if node not in self._survivors]
        unmask = {Key.SURVIVOR_IDS: list(self._survivors), Key.DROPPED_IDS: dropped}
        return {node: {**base, **unmask} for node in self._asked}

    def receive(self, node_id: int, reply: Mapping[str, Any]) -> None:
        """Validate and record one node's reply to the current stage.

        Raises
        ------
        SecAggProtocolError
            If the reply is for another stage or round, from a node not asked, a duplicate, or
            malformed (e.g. a masked vector of the wrong length). Nothing of it is recorded, so
            the node counts as dropped unless it sends a valid reply before ``close_stage``.
        """
        stage = self._current_stage()
        replied_stage = reply.get(Key.STAGE)
        if replied_stage != stage:
            raise SecAggProtocolError(
                stage, f"reply to stage {replied_stage!r}, which was not asked (asked: {stage!r})"
            )
        if msg.get_int(reply, Key.ROUND, stage=stage) != self.round_number:
            raise SecAggProtocolError(stage, f"reply is not for round {self.round_number}")
        if node_id not in self._asked:
            raise SecAggProtocolError(stage, f"node {node_id} was not asked in stage {stage!r}")
        if node_id in self._replied:
            raise SecAggProtocolError(stage, f"node {node_id} already replied in stage {stage!r}")
        if stage == Stage.ADVERTISE_KEYS:
            self._keys[node_id] = PublicKeys(
                mask=msg.get_bytes(reply, Key.MASK_PUBLIC_KEY, stage=stage, length=32),
                encryption=msg.get_bytes(reply, Key.ENCRYPTION_PUBLIC_KEY, stage=stage, length=32),
            )
        elif stage == Stage.SHARE_KEYS:
            receivers = msg.get_int_list(reply, Key.RECEIVER_IDS, stage=stage)
            if sorted(receivers) != [node for node in self._asked if node != node_id]:
                raise SecAggProtocolError(stage, f"node {node_id} must send shares to every peer")
            ciphertexts = msg.get_bytes_list(
                reply, Key.CIPHERTEXTS, stage=stage, count=len(receivers), length=_CIPHERTEXT_BYTES
            )
            for receiver, ciphertext in zip(receivers, ciphertexts, strict=True):
                self._ciphertexts[(node_id, receiver)] = ciphertext
        elif stage == Stage.MASKED_INPUT:
            vector = msg.vector_from_bytes(
                msg.get_bytes(reply, Key.MASKED_INPUT, stage=stage),
                length=self.vector_length,
                stage=stage,
                source=f"the masked vector of node {node_id}",
            )
            np.add(self._masked_total, vector, out=self._masked_total)
        else:
            self._shares[node_id] = self._parse_unmask_reply(reply)
        self._replied.add(node_id)

    def close_stage(self) -> SecAggResult | None:
        """End the current stage: nodes that did not reply drop out. Return the result at the end.

        Raises
        ------
        SecAggProtocolError
            If too few nodes remain (the round aborts; nothing is unmasked), or the shares do
            not reconstruct.
        """
        stage = self._current_stage()
        repliers = sorted(self._replied)
        if stage == Stage.ADVERTISE_KEYS:
            repliers = sorted(set(repliers) | (set(self._keys) - set(self._asked)))
        minimum = self.threshold if stage == Stage.UNMASK else max(self.threshold, MIN_PARTICIPANTS)
        if len(repliers) < minimum:
            self._aborted = True
            raise SecAggProtocolError(
                stage,
                f"only {len(repliers)} of {len(self._asked)} hospitals replied; at least "
                f"{minimum} are needed (threshold t={self.threshold}, at least "
                f"{MIN_PARTICIPANTS} participants): the round aborts without unmasking",
            )
        self._replied = set()
        if stage == Stage.ADVERTISE_KEYS:
            self.stage, self._asked = Stage.SHARE_KEYS, repliers
            self._key_holders = repliers
        elif stage == Stage.SHARE_KEYS:
            self._sharers = repliers
            self.stage, self._asked = Stage.MASKED_INPUT, repliers
        elif stage == Stage.MASKED_INPUT:
            self._survivors = repliers
            self.stage, self._asked = Stage.UNMASK, repliers
        else:
            try:
                self._result = self._reconstruct(repliers)
            except SecAggProtocolError:
                self._aborted = True
                raise
            self.stage = None
            return self._result
        return None

    def reusable_public_keys(self) -> dict[int, PublicKeys]:
        """Keys that may skip ``advertise-keys`` next round: survivors of a completed round only."""
        if self._result is None:
            return {}
        return {node: self._keys[node] for node in self._result.survivor_ids}

    def _parse_unmask_reply(self, reply: Mapping[str, Any]) -> Message:
        stage = Stage.UNMASK
        dropped = [node for node in self._sharers if node not in self._survivors]
        for owners_key, shares_key, expected in (
            (Key.SELF_SEED_OWNER_IDS, Key.SELF_SEED_SHARES, self._survivors),
            (Key.MASK_KEY_OWNER_IDS, Key.MASK_KEY_SHARES, dropped),
        ):
            if msg.get_int_list(reply, owners_key, stage=stage) != expected:
                raise SecAggProtocolError(stage, f"field {owners_key!r} must list {expected}")
            msg.get_bytes_list(
                reply, shares_key, stage=stage, count=len(expected), length=SHARE_BYTES
            )
        return dict(reply)

    def _reconstruct(self, holders: list[int]) -> SecAggResult:
        stage = Stage.UNMASK
        x_of = {node: index + 1 for index, node in enumerate(self._key_holders)}
        dropped = [node for node in self._sharers if node not in self._survivors]

        def secret(owner_position: int, shares_key: str) -> bytes:
            shares = [
                (x_of[holder], self._shares[holder][shares_key][owner_position])
                for holder in holders[: self.threshold]
            ]
            try:
                return combine_shares(shares, threshold=self.threshold)
            except ValueError as error:
                raise SecAggProtocolError(stage, f"reconstruction failed: {error}") from None

        seeds = {owner: secret(i, Key.SELF_SEED_SHARES) for i, owner in enumerate(self._survivors)}
        if any(len(seed) != SEED_BYTES for seed in seeds.values()):
            raise SecAggProtocolError(stage, "a reconstructed self-mask seed is not 32 bytes")
        dangling: dict[tuple[int, int], bytes] = {}
        for i, owner in enumerate(dropped):
            raw = secret(i, Key.MASK_KEY_SHARES)
            private_key = ka.load_private_key(raw) if len(raw) == 32 else None
            if private_key is None or ka.public_key_bytes(private_key) != self._keys[owner].mask:
                raise SecAggProtocolError(
                    stage, f"the shares of node {owner}'s mask key do not match its public key"
                )
            for survivor in self._survivors:
                info = ka.build_info(
                    ka.Purpose.MASK, round_number=self.round_number, id_a=survivor, id_b=owner
                )
                dangling[(survivor, owner)] = ka.derive_key(
                    private_key, self._keys[survivor].mask, info=info
                )
        total = unmask_sum(
            self._masked_total,
            round_number=self.round_number,
            self_seeds=seeds,
            dangling_keys=dangling,
        )
        survivors = tuple(self._survivors)
        return SecAggResult(
            total=total,
            survivor_ids=survivors,
            dropped_ids=tuple(node for node in self.selected_ids if node not in survivors),
            revealed_mask_key_ids=tuple(dropped),
        )

    def _current_stage(self) -> str:
        if self._aborted:
            raise SecAggProtocolError(str(self.stage), "the round was aborted")
        if self.stage is None:
            raise SecAggProtocolError("done", "the round is complete; start a new SecAggServer")
        return self.stage
