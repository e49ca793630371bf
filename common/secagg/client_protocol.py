"""The hospital's side of secure aggregation as an in-memory state machine (no I/O, no Flower).

Per round: advertise two fresh X25519 public keys; Shamir-share the fresh self-mask seed and the
masking private key to every participant, encrypted per peer; send the doubly masked quantised
update; finally reveal, per peer, either its self-seed share (survivor) or its mask-key share
(dropped), never both. The server sees public keys, ciphertexts, one uniform-looking vector and
the shares it needs. Bonawitz et al. (CCS 2017), Section 4 (Figure 4, semi-honest server).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from common.errors import SecAggProtocolError
from common.secagg import key_agreement as ka
from common.secagg import messages as msg
from common.secagg.client_state import ClientState
from common.secagg.masking import mask_update
from common.secagg.messages import MIN_PARTICIPANTS, Key, Message, Stage
from common.secagg.shamir import SHARE_BYTES, split_secret
from common.secagg.share_encryption import decrypt_shares, encrypt_shares

SEED_BYTES = 32
_NEXT_STAGE = {
    Stage.ADVERTISE_KEYS: Stage.SHARE_KEYS,
    Stage.SHARE_KEYS: Stage.MASKED_INPUT,
    Stage.MASKED_INPUT: Stage.UNMASK,
}


class SecAggClient:
    """One hospital's secure-aggregation client; its key material lives only in ``state``.

    Parameters
    ----------
    node_id
        This hospital's id, as the server lists it.
    allow_key_reuse
        Accept a ``share-keys`` request without a fresh ``advertise-keys`` in the same round,
        reusing the current key pairs (masks stay per round through HKDF ``info``). Refused
        whenever the mask key may have been revealed. Trade-off: if a reused mask key is later
        revealed by a dropout recovery, the server can also unmask this hospital's updates of
        every earlier round that used the same key. Default False: fresh keys every round.

    The glue may keep a client between messages as ``to_record()`` in the in-memory
    ``Context.state`` and rebuild it with ``from_record``; the record holds private keys.
    """

    def __init__(self, node_id: int, *, allow_key_reuse: bool = False) -> None:
        self.state = ClientState(node_id=int(node_id), allow_key_reuse=bool(allow_key_reuse))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SecAggClient:
        """Rebuild a client from :meth:`to_record`'s dict (e.g. a ConfigRecord's items)."""
        client = cls(0)
        client.state = ClientState.from_record(record)
        return client

    def to_record(self) -> dict[str, Any]:
        """Return the whole state as a ConfigRecord-compatible dict (contains private keys)."""
        return self.state.to_record()

    @property
    def node_id(self) -> int:
        """This hospital's id."""
        return self.state.node_id

    @property
    def mask_key_exposed(self) -> bool:
        """Whether the current mask key may have been revealed (a re-key is then required)."""
        return self.state.mask_key_exposed

    def handle(
        self, request: Mapping[str, Any], *, quantized: npt.NDArray[np.uint64] | None = None
    ) -> Message:
        """Answer one server request; ``quantized`` (uint64, shape (d,)) is needed at masked-input.

        Raises
        ------
        SecAggProtocolError
            If the request is out of order, for an old round, malformed, unsafe, or fails
            authentication. The client then sends nothing derived from its update, and answers
            no further stage of this round (fail closed).
        """
        stage = request.get(Key.STAGE)
        if stage not in msg.STAGE_ORDER:
            raise SecAggProtocolError(str(stage), f"unknown stage {stage!r}")
        round_number = msg.get_int(request, Key.ROUND, stage=stage)
        if round_number < 0:
            raise SecAggProtocolError(stage, f"round must be >= 0, got {round_number}")
        self._check_order(stage, round_number)
        try:
            if stage == Stage.ADVERTISE_KEYS:
                reply = self._advertise_keys()
            elif stage == Stage.SHARE_KEYS:
                reply = self._share_keys(request)
            elif stage == Stage.MASKED_INPUT:
                reply = self._masked_input(request, quantized)
            else:
                reply = self._unmask(request)
        except Exception:
            self.state.expected = ""
            raise
        self.state.expected = _NEXT_STAGE.get(stage, "")
        return {Key.STAGE: stage, Key.ROUND: round_number, **reply}

    def _check_order(self, stage: str, round_number: int) -> None:
        state = self.state
        if round_number < state.round_number:
            raise SecAggProtocolError(
                stage, f"request for round {round_number}, but round {state.round_number} has begun"
            )
        if round_number > state.round_number:
            if stage not in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS):
                raise SecAggProtocolError(
                    stage, f"stage {stage!r} was not asked: round {round_number} has not begun"
                )
            if stage == Stage.SHARE_KEYS:
                self._check_key_reuse()
            state.begin_round(round_number, expected=stage)
        elif state.expected != stage:
            expected = state.expected or "no further stage"
            raise SecAggProtocolError(
                stage, f"stage {stage!r} was not asked: round {round_number} expects {expected}"
            )

    def _check_key_reuse(self) -> None:
        if not self.state.allow_key_reuse:
            raise SecAggProtocolError(
                Stage.SHARE_KEYS, "share-keys without advertise-keys: key reuse is disabled"
            )
        if not self.state.mask_key or self.state.mask_key_exposed:
            raise SecAggProtocolError(
                Stage.SHARE_KEYS,
                "this hospital's mask key may have been revealed by a dropout recovery (or "
                "there is none): it must re-key with advertise-keys before taking part again",
            )

    def _advertise_keys(self) -> Message:
        mask_key, encryption_key = ka.generate_private_key(), ka.generate_private_key()
        self.state.mask_key = ka.private_key_bytes(mask_key)
        self.state.encryption_key = ka.private_key_bytes(encryption_key)
        self.state.mask_key_exposed = False
        return {
            Key.MASK_PUBLIC_KEY: ka.public_key_bytes(mask_key),
            Key.ENCRYPTION_PUBLIC_KEY: ka.public_key_bytes(encryption_key),
        }

    def _share_keys(self, request: Mapping[str, Any]) -> Message:
        stage, state, me = Stage.SHARE_KEYS, self.state, self.node_id
        mask_key, encryption_key = self._keys()
        threshold = msg.get_int(request, Key.THRESHOLD, stage=stage)
        node_ids = msg.get_int_list(request, Key.NODE_IDS, stage=stage)
        n = len(node_ids)
        problem = msg.threshold_problem(threshold=threshold, num_participants=n)
        if problem is not None:
            raise SecAggProtocolError(stage, problem)
        if node_ids != sorted(node_ids) or me not in node_ids:
            raise SecAggProtocolError(stage, f"node ids must be sorted and include {me}")
        mask_pks, enc_pks = (
            msg.get_bytes_list(request, key, stage=stage, count=n, length=32)
            for key in (Key.MASK_PUBLIC_KEYS, Key.ENCRYPTION_PUBLIC_KEYS)
        )
        mine = node_ids.index(me)
        if (mask_pks[mine], enc_pks[mine]) != (
            ka.public_key_bytes(mask_key),
            ka.public_key_bytes(encryption_key),
        ):
            raise SecAggProtocolError(stage, "the key list does not hold this hospital's keys")
        state.threshold, state.node_ids = threshold, node_ids
        state.mask_public_keys, state.encryption_public_keys = mask_pks, enc_pks
        state.self_seed = os.urandom(SEED_BYTES)
        seed_shares = split_secret(state.self_seed, threshold=threshold, num_shares=n)
        key_shares = split_secret(state.mask_key, threshold=threshold, num_shares=n)
        receivers, ciphertexts = [], []
        for index, peer in enumerate(node_ids):
            seed_share, key_share = seed_shares[index][1], key_shares[index][1]
            if peer == me:
                state.add_shares(me, seed_share=seed_share, key_share=key_share)
                continue
            key = self._share_key(encryption_key, peer)
            receivers.append(peer)
            ciphertexts.append(
                encrypt_shares(
                    key,
                    seed_share + key_share,
                    sender_id=me,
                    receiver_id=peer,
                    round_number=state.round_number,
                )
            )
        state.mask_key_exposed = True
        return {Key.RECEIVER_IDS: receivers, Key.CIPHERTEXTS: ciphertexts}

    def _masked_input(
        self, request: Mapping[str, Any], quantized: npt.NDArray[np.uint64] | None
    ) -> Message:
        stage, state, me = Stage.MASKED_INPUT, self.state, self.node_id
        mask_key, encryption_key = self._keys()
        length = msg.get_int(request, Key.VECTOR_LENGTH, stage=stage)
        vector = np.asarray(quantized) if quantized is not None else None
        if vector is None or vector.dtype != np.uint64 or vector.shape != (length,):
            got = "nothing" if vector is None else f"{vector.dtype} {vector.shape}"
            raise SecAggProtocolError(
                stage, f"the quantised update must be uint64 of shape ({length},), got {got}"
            )
        sharers = sorted(msg.get_int_list(request, Key.NODE_IDS, stage=stage))
        self._check_member_set(sharers, stage=stage)
        senders = msg.get_int_list(request, Key.SENDER_IDS, stage=stage)
        peers = [peer for peer in sharers if peer != me]
        if sorted(senders) != peers:
            raise SecAggProtocolError(stage, "sender ids must be every other listed node")
        ciphertexts = msg.get_bytes_list(request, Key.CIPHERTEXTS, stage=stage, count=len(senders))
        for sender, ciphertext in zip(senders, ciphertexts, strict=True):
            plaintext = decrypt_shares(
                self._share_key(encryption_key, sender),
                ciphertext,
                sender_id=sender,
                receiver_id=me,
                round_number=state.round_number,
                stage=stage,
            )
            if len(plaintext) != 2 * SHARE_BYTES:
                raise SecAggProtocolError(stage, f"shares from node {sender} are malformed")
            state.add_shares(
                sender, seed_share=plaintext[:SHARE_BYTES], key_share=plaintext[SHARE_BYTES:]
            )
        pairwise_keys = {}
        for peer in peers:
            info = ka.build_info(
                ka.Purpose.MASK, round_number=state.round_number, id_a=me, id_b=peer
            )
            peer_key = state.mask_public_keys[state.node_ids.index(peer)]
            pairwise_keys[peer] = ka.derive_key(mask_key, peer_key, info=info)
        masked = mask_update(
            vector,
            my_id=me,
            pairwise_keys=pairwise_keys,
            self_seed=state.self_seed,
            round_number=state.round_number,
        )
        state.self_seed = b""  # only the shares are needed from here on
        state.masked_with = sharers
        return {Key.MASKED_INPUT: msg.vector_to_bytes(masked)}

    def _unmask(self, request: Mapping[str, Any]) -> Message:
        stage, state = Stage.UNMASK, self.state
        survivors = sorted(msg.get_int_list(request, Key.SURVIVOR_IDS, stage=stage))
        dropped = sorted(msg.get_int_list(request, Key.DROPPED_IDS, stage=stage))
        if sorted(survivors + dropped) != state.masked_with:
            raise SecAggProtocolError(
                stage, "survivors and dropped must split the nodes that shared keys, disjointly"
            )
        self._check_member_set(survivors, stage=stage)
        # Honest peers reveal only this hospital's seed share: its mask key stays secret.
        state.mask_key_exposed = False
        return {
            Key.SELF_SEED_OWNER_IDS: survivors,
            Key.SELF_SEED_SHARES: [state.shares_of(owner)[0] for owner in survivors],
            Key.MASK_KEY_OWNER_IDS: dropped,
            Key.MASK_KEY_SHARES: [state.shares_of(owner)[1] for owner in dropped],
        }

    def _check_member_set(self, ids: list[int], *, stage: str) -> None:
        state = self.state
        if self.node_id not in ids or not set(ids) <= set(state.node_ids):
            raise SecAggProtocolError(stage, f"node ids must include {self.node_id} and be shared")
        minimum = max(state.threshold, MIN_PARTICIPANTS)
        if len(ids) < minimum:
            raise SecAggProtocolError(
                stage,
                f"only {len(ids)} hospitals remain, fewer than max(t={state.threshold}, "
                f"{MIN_PARTICIPANTS}): the round aborts",
            )

    def _share_key(self, encryption_key: X25519PrivateKey, peer: int) -> bytes:
        state = self.state
        info = ka.build_info(
            ka.Purpose.SHARE_ENCRYPTION,
            round_number=state.round_number,
            id_a=self.node_id,
            id_b=peer,
        )
        peer_key = state.encryption_public_keys[state.node_ids.index(peer)]
        return ka.derive_key(encryption_key, peer_key, info=info)

    def _keys(self) -> tuple[X25519PrivateKey, X25519PrivateKey]:
        if not self.state.mask_key or not self.state.encryption_key:
            raise SecAggProtocolError(Stage.SHARE_KEYS, "no key pairs: advertise-keys first")
        return (
            ka.load_private_key(self.state.mask_key),
            ka.load_private_key(self.state.encryption_key),
        )
