"""The hospital's side of secure aggregation as an in-memory state machine (no I/O, no Flower).

Per round: advertise fresh X25519 keys and a seed commitment, signed with the roster key over
run, round, name and settings digest; verify every peer's signature against the pinned roster;
Shamir-share seed and mask key; send the masked update; sign the survivor set; reveal shares
only after t signatures over that same set, and for one set per round. Against a server that
deviates, with up to c colluding hospitals: Bonawitz et al. (CCS 2017), Section 4, Figure 4.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.errors import SecAggProtocolError
from common.secagg import key_agreement as ka
from common.secagg import messages as msg
from common.secagg import signatures as sig
from common.secagg.client_state import ClientState
from common.secagg.masking import mask_update
from common.secagg.messages import MIN_PARTICIPANTS, Key, Message, Stage
from common.secagg.roster import Roster, signing_public_key
from common.secagg.shamir import SHARE_BYTES, split_secret
from common.secagg.share_encryption import decrypt_shares, encrypt_shares
from common.secagg.signatures import SecAggSettings

logger = logging.getLogger(__name__)

SEED_BYTES = 32
_NEXT_STAGE = {
    Stage.ADVERTISE_KEYS: Stage.SHARE_KEYS,
    Stage.SHARE_KEYS: Stage.MASKED_INPUT,
    Stage.MASKED_INPUT: Stage.CONSISTENCY_CHECK,
    Stage.CONSISTENCY_CHECK: Stage.UNMASK,
}


class SecAggClient:
    """One hospital's secure-aggregation client for one run; round key material lives in ``state``.

    Parameters
    ----------
    name
        This hospital's roster name (its protocol id is its roster position).
    roster
        The consortium roster this hospital pinned (checked against its node config's digest).
    signing_key
        This hospital's Ed25519 private key; its public key must be the roster's for ``name``.
    run_id
        The run this client takes part in; bound into every signature.
    first_round
        Refuse rounds below it (pass the last round this hospital answered, plus one, after a
        restart, so that a round is never re-run with the same update).

    Keep one client per run across rounds (as ``to_record()`` in the in-memory ``Context.state``,
    rebuilt with ``from_record``): the round counter is what refuses a re-run of an earlier round.

    Raises
    ------
    ValueError
        If ``name`` is not on the roster or ``signing_key`` is not its pinned key.
    """

    def __init__(
        self,
        name: str,
        *,
        roster: Roster,
        signing_key: Ed25519PrivateKey,
        run_id: str,
        first_round: int = 0,
    ) -> None:
        _check_identity(name, roster, signing_key)
        if not isinstance(run_id, str) or not run_id:
            raise ValueError(f"run_id must be a non-empty str, got {run_id!r}")
        if isinstance(first_round, bool) or not isinstance(first_round, int) or first_round < 0:
            raise ValueError(f"first_round must be an int >= 0, got {first_round!r}")
        self.roster = roster
        self._signing_key = signing_key
        self.state = ClientState(
            name=name, run_id=run_id, roster_digest=roster.digest, first_round=first_round
        )

    @classmethod
    def from_record(
        cls, record: Mapping[str, Any], *, roster: Roster, signing_key: Ed25519PrivateKey
    ) -> SecAggClient:
        """Rebuild a client from :meth:`to_record`'s dict with the hospital's roster and key.

        Raises
        ------
        SecAggProtocolError
            If the record is invalid, or was made for another roster or hospital.
        """
        state = ClientState.from_record(record)
        if state.roster_digest != roster.digest:
            raise SecAggProtocolError("state", "the client state was made under another roster")
        try:
            client = cls(state.name, roster=roster, signing_key=signing_key, run_id=state.run_id)
        except ValueError as error:
            raise SecAggProtocolError("state", str(error)) from None
        client.state = state
        return client

    def to_record(self) -> dict[str, Any]:
        """Return the state as a ConfigRecord-compatible dict (holds round secrets, not the
        signing key).
        """
        return self.state.to_record()

    @property
    def name(self) -> str:
        """The roster name of this hospital."""
        return self.state.name

    @property
    def round_number(self) -> int:
        """The round this client is in (-1 before its first advertise-keys)."""
        return self.state.round_number

    @property
    def signed_survivors(self) -> tuple[str, ...] | None:
        """The survivor set this hospital signed this round, or None."""
        return tuple(self.state.signed_survivors) if self.state.signed else None

    def handle(
        self,
        request: Mapping[str, Any],
        *,
        quantized: npt.NDArray[np.uint64] | None = None,
        settings: SecAggSettings | None = None,
    ) -> Message:
        """Answer one server request.

        Parameters
        ----------
        request
            The server's payload for this stage.
        quantized
            uint64, shape (d,): the encoded update, needed at masked-input.
        settings
            The round's settings as this hospital accepted them, needed at advertise-keys.

        Raises
        ------
        SecAggProtocolError
            If the request is out of order, for an old round, malformed, unsafe, fails a
            signature check, or asks a second time for another survivor set. Except for an
            out-of-order request, the client then answers no further stage of this round.
        """
        stage = request.get(Key.STAGE)
        if stage not in msg.STAGE_ORDER:
            raise SecAggProtocolError(str(stage), f"unknown stage {stage!r}")
        round_number = msg.get_int(request, Key.ROUND, stage=stage)
        self._check_order(stage, round_number)
        try:
            if stage == Stage.ADVERTISE_KEYS:
                reply = self._advertise_keys(request, settings)
            elif stage == Stage.SHARE_KEYS:
                reply = self._share_keys(request)
            elif stage == Stage.MASKED_INPUT:
                reply = self._masked_input(request, quantized)
            elif stage == Stage.CONSISTENCY_CHECK:
                reply = self._consistency_check(request)
            else:
                reply = self._unmask(request)
        except SecAggProtocolError:
            self._close()
            raise
        except Exception as error:  # malformed input must never escape as another type
            self._close()
            raise SecAggProtocolError(
                stage, f"malformed request ({type(error).__name__}: {error})"
            ) from None
        self.state.expected = _NEXT_STAGE.get(stage, "")
        return {Key.STAGE: stage, Key.ROUND: round_number, **reply}

    def _close(self) -> None:
        state = self.state
        state.expected, state.closed = "", True
        state.mask_key = state.encryption_key = state.self_seed = b""
        state.share_owners, state.seed_shares, state.key_shares = [], [], []
        state.pair_keys = []

    def _check_order(self, stage: str, round_number: int) -> None:
        state = self.state
        if round_number < max(state.first_round, 0):
            raise SecAggProtocolError(
                stage, f"round {round_number} is below this hospital's first allowed round "
                f"{state.first_round}: a round is never answered twice"
            )
        if round_number < state.round_number:
            raise SecAggProtocolError(
                stage, f"request for round {round_number}, but round {state.round_number} has begun"
            )
        if round_number > state.round_number:
            if stage != Stage.ADVERTISE_KEYS:
                raise SecAggProtocolError(
                    stage, f"stage {stage!r} was not asked: round {round_number} has not begun "
                    "(every round starts with fresh, signed keys at advertise-keys)"
                )
            state.begin_round(round_number, expected=stage)
            return
        if state.closed:
            raise SecAggProtocolError(
                stage, f"round {round_number} failed at this hospital: it answers no further stage"
            )
        if (stage == Stage.CONSISTENCY_CHECK and state.signed) or (
            stage == Stage.UNMASK and state.unmasked
        ):
            return  # a repeat: answered only for the identical survivor set (checked there)
        if state.expected != stage:
            expected = state.expected or "no further stage"
            raise SecAggProtocolError(
                stage, f"stage {stage!r} was not asked: round {round_number} expects {expected}"
            )

    def _advertise_keys(
        self, request: Mapping[str, Any], settings: SecAggSettings | None
    ) -> Message:
        stage, state, roster = Stage.ADVERTISE_KEYS, self.state, self.roster
        if not isinstance(settings, SecAggSettings):
            raise SecAggProtocolError(
                stage, "advertise-keys needs the round's settings as this hospital accepted them"
            )
        run_id = msg.get_str(request, Key.RUN_ID, stage=stage)
        if run_id != state.run_id:
            raise SecAggProtocolError(
                stage, f"request for run {run_id!r}, but this client takes part in {state.run_id!r}"
            )
        digest = msg.get_bytes(request, Key.ROSTER_DIGEST, stage=stage, length=32)
        if digest != state.roster_digest:
            raise SecAggProtocolError(
                stage, f"the server's roster digest {digest.hex()} is not this hospital's pinned "
                f"roster {state.roster_digest.hex()}: refused"
            )
        mine = settings.digest()
        proposed = msg.get_bytes(request, Key.SETTINGS_DIGEST, stage=stage, length=32)
        if proposed != mine:
            raise SecAggProtocolError(
                stage, f"the server's settings digest {proposed.hex()[:16]}... differs from that "
                f"of the settings this hospital accepted ({mine.hex()[:16]}...): refused"
            )
        t, c, h = settings.threshold, roster.colluders, settings.honest
        if not roster.min_threshold <= t <= roster.size:
            raise SecAggProtocolError(
                stage, f"threshold t={t} is outside [{roster.min_threshold}, {roster.size}], the "
                "roster's smallest threshold and its size"
            )
        if h > t - c or (roster.honest is not None and h > roster.honest):
            raise SecAggProtocolError(
                stage, f"the settings assume h={h} honest contributors, but t - c = {t - c}"
                + ("" if roster.honest is None else f" and the roster states h={roster.honest}")
                + ": the distributed noise would be too small"
            )
        mask_key, encryption_key = ka.generate_private_key(), ka.generate_private_key()
        state.mask_key = ka.private_key_bytes(mask_key)
        state.encryption_key = ka.private_key_bytes(encryption_key)
        state.self_seed = os.urandom(SEED_BYTES)
        state.settings_digest, state.threshold, state.honest = mine, t, h
        state.seed_commitment = sig.seed_commitment(
            state.self_seed, roster_digest=state.roster_digest, run_id=state.run_id,
            round_number=state.round_number, name=state.name,
        )
        mask_public, encryption_public = (
            ka.public_key_bytes(mask_key), ka.public_key_bytes(encryption_key)
        )
        signature = sig.sign(self._signing_key, sig.advertisement_message(
            roster_digest=state.roster_digest, run_id=state.run_id,
            round_number=state.round_number, name=state.name, mask_public_key=mask_public,
            encryption_public_key=encryption_public, settings_digest=mine,
            seed_commitment=state.seed_commitment,
        ))
        return {
            Key.HOSPITAL: state.name,
            Key.MASK_PUBLIC_KEY: mask_public,
            Key.ENCRYPTION_PUBLIC_KEY: encryption_public,
            Key.SEED_COMMITMENT: state.seed_commitment,
            Key.SETTINGS_DIGEST: mine,
            Key.KEY_SIGNATURE: signature,
        }

    def _share_keys(self, request: Mapping[str, Any]) -> Message:
        stage, state, roster, me = Stage.SHARE_KEYS, self.state, self.roster, self.name
        threshold = msg.get_int(request, Key.THRESHOLD, stage=stage)
        if threshold != state.threshold:
            raise SecAggProtocolError(
                stage, f"the server asks for t={threshold}, but this hospital signed t="
                f"{state.threshold}"
            )
        hospitals = self._roster_names(request, Key.HOSPITALS, stage=stage)
        if me not in hospitals:
            raise SecAggProtocolError(stage, f"the hospital list must include {me!r}")
        n = len(hospitals)
        problem = msg.threshold_problem(
            threshold, n, roster.colluders, min_threshold=roster.min_threshold
        )
        if problem is not None:
            raise SecAggProtocolError(stage, problem)
        mask_pks, enc_pks, commitments, digests = (
            msg.get_bytes_list(request, key, stage=stage, count=n, length=32)
            for key in (Key.MASK_PUBLIC_KEYS, Key.ENCRYPTION_PUBLIC_KEYS, Key.SEED_COMMITMENTS,
                        Key.SETTINGS_DIGESTS)
        )
        signatures = msg.get_bytes_list(
            request, Key.KEY_SIGNATURES, stage=stage, count=n, length=sig.SIGNATURE_BYTES
        )
        mask_key, encryption_key = self._keys()
        mine = hospitals.index(me)
        if (mask_pks[mine], enc_pks[mine], commitments[mine]) != (
            ka.public_key_bytes(mask_key), ka.public_key_bytes(encryption_key),
            state.seed_commitment,
        ):
            raise SecAggProtocolError(stage, "the key list does not hold this hospital's keys")
        for i, peer in enumerate(hospitals):
            if peer == me:
                continue
            if digests[i] != state.settings_digest:
                raise SecAggProtocolError(
                    stage, f"{peer!r} signed settings digest {digests[i].hex()[:16]}..., this "
                    f"hospital {state.settings_digest.hex()[:16]}...: the server showed the "
                    "hospitals different settings; refused"
                )
            message = sig.advertisement_message(
                roster_digest=state.roster_digest, run_id=state.run_id,
                round_number=state.round_number, name=peer, mask_public_key=mask_pks[i],
                encryption_public_key=enc_pks[i], settings_digest=state.settings_digest,
                seed_commitment=commitments[i],
            )
            if not sig.verify(roster.public_key(peer), signatures[i], message):
                raise SecAggProtocolError(
                    stage, f"the keys relayed for {peer!r} are not signed by its pinned roster key "
                    "for this roster, run, round and settings (substituted keys?): refused"
                )
        state.hospitals = hospitals
        state.mask_public_keys, state.encryption_public_keys = mask_pks, enc_pks
        xs = [roster.index(peer) for peer in hospitals]
        seed_shares = split_secret(state.self_seed, threshold=threshold, num_shares=n, xs=xs)
        key_shares = split_secret(state.mask_key, threshold=threshold, num_shares=n, xs=xs)
        receivers, ciphertexts = [], []
        for index, peer in enumerate(hospitals):
            seed_share, key_share = seed_shares[index][1], key_shares[index][1]
            if peer == me:
                state.add_shares(me, seed_share=seed_share, key_share=key_share)
                continue
            receivers.append(peer)
            ciphertexts.append(encrypt_shares(
                self._share_key(encryption_key, peer), seed_share + key_share,
                sender_id=roster.index(me), receiver_id=roster.index(peer),
                round_number=state.round_number,
            ))
        return {Key.RECEIVERS: receivers, Key.CIPHERTEXTS: ciphertexts}

    def _masked_input(
        self, request: Mapping[str, Any], quantized: npt.NDArray[np.uint64] | None
    ) -> Message:
        stage, state, roster, me = Stage.MASKED_INPUT, self.state, self.roster, self.name
        length = msg.get_int(request, Key.VECTOR_LENGTH, stage=stage)
        vector = np.asarray(quantized) if quantized is not None else None
        if vector is None or vector.dtype != np.uint64 or vector.shape != (length,):
            got = "nothing" if vector is None else f"{vector.dtype} {vector.shape}"
            raise SecAggProtocolError(
                stage, f"the quantised update must be uint64 of shape ({length},), got {got}"
            )
        sharers = self._roster_names(request, Key.HOSPITALS, stage=stage)
        self._check_member_set(sharers, within=state.hospitals, stage=stage)
        senders = msg.get_str_list(request, Key.SENDERS, stage=stage)
        peers = [peer for peer in sharers if peer != me]
        if senders != peers:
            raise SecAggProtocolError(
                stage, "senders must be every other listed hospital, in order"
            )
        ciphertexts = msg.get_bytes_list(request, Key.CIPHERTEXTS, stage=stage, count=len(peers))
        mask_key, encryption_key = self._keys()
        failed = []
        for sender, ciphertext in zip(senders, ciphertexts, strict=True):
            try:
                plaintext = decrypt_shares(
                    self._share_key(encryption_key, sender), ciphertext,
                    sender_id=roster.index(sender), receiver_id=roster.index(me),
                    round_number=state.round_number, stage=stage,
                )
            except SecAggProtocolError:
                plaintext = b""
            if len(plaintext) != 2 * SHARE_BYTES:
                # The server may have altered it: a report, not proof against the sender.
                logger.warning("secure aggregation round %d: ciphertext from %s failed at %s",
                               state.round_number, sender, me)
                failed.append(sender)
                continue
            state.add_shares(
                sender, seed_share=plaintext[:SHARE_BYTES], key_share=plaintext[SHARE_BYTES:]
            )
        pairwise_keys = {}
        for peer in peers:
            info = ka.build_info(ka.Purpose.MASK, round_number=state.round_number,
                                 id_a=roster.index(me), id_b=roster.index(peer))
            peer_key = state.mask_public_keys[state.hospitals.index(peer)]
            pairwise_keys[roster.index(peer)] = ka.derive_key(mask_key, peer_key, info=info)
        masked = mask_update(vector, my_id=roster.index(me), pairwise_keys=pairwise_keys,
                             self_seed=state.self_seed, round_number=state.round_number)
        # Only the shares are needed from here on.
        state.self_seed = state.mask_key = state.encryption_key = b""
        state.masked_with, state.failed_senders = sharers, failed
        state.pair_keys = [pairwise_keys[roster.index(peer)] for peer in peers]
        return {Key.MASKED_INPUT: msg.vector_to_bytes(masked), Key.FAILED_SENDERS: failed}

    def _consistency_check(self, request: Mapping[str, Any]) -> Message:
        stage, state = Stage.CONSISTENCY_CHECK, self.state
        survivors, dropped = self._survivor_split(request, stage=stage)
        if state.signed and (survivors, dropped) != (state.signed_survivors, state.signed_dropped):
            raise SecAggProtocolError(
                stage, f"this hospital already signed survivors {state.signed_survivors} for "
                f"round {state.round_number}; it signs one survivor set per round: refused"
            )
        if not set(survivors).isdisjoint(dropped) or set(survivors) | set(dropped) != set(
            state.masked_with
        ):
            raise SecAggProtocolError(
                stage, "survivors and dropped must split the hospitals that shared keys, disjointly"
            )
        self._check_member_set(survivors, within=state.masked_with, stage=stage)
        signature = sig.sign(self._signing_key, self._survivors_message(survivors, dropped))
        state.signed, state.signed_survivors, state.signed_dropped = True, survivors, dropped
        return {Key.SURVIVOR_SIGNATURE: signature}

    def _unmask(self, request: Mapping[str, Any]) -> Message:
        stage, state, roster = Stage.UNMASK, self.state, self.roster
        survivors, dropped = self._survivor_split(request, stage=stage)
        if (survivors, dropped) != (state.signed_survivors, state.signed_dropped):
            raise SecAggProtocolError(
                stage, f"declined: this hospital signed survivors {state.signed_survivors} "
                f"(dropped {state.signed_dropped}) for round {state.round_number}; it reveals "
                "shares for that one set only, never for another (differencing)"
            )
        signers = msg.get_str_list(request, Key.SIGNERS, stage=stage)
        signatures = msg.get_bytes_list(request, Key.SURVIVOR_SIGNATURES, stage=stage,
                                        count=len(signers), length=sig.SIGNATURE_BYTES)
        message = self._survivors_message(survivors, dropped)
        for signer, signature in zip(signers, signatures, strict=True):
            if signer not in survivors:
                raise SecAggProtocolError(stage, f"signer {signer!r} is not a listed survivor")
            if not sig.verify(roster.public_key(signer), signature, message):
                raise SecAggProtocolError(
                    stage, f"the signature of {signer!r} over the survivor set does not verify"
                )
        if len(signers) < state.threshold:
            raise SecAggProtocolError(
                stage, f"only {len(signers)} hospitals signed this survivor set, t="
                f"{state.threshold} are needed: the server may be showing others another set; "
                "nothing is revealed"
            )
        state.unmasked = True
        held = set(state.share_owners)
        seed_owners = [owner for owner in survivors if owner in held]
        key_owners = [owner for owner in dropped if owner in held]
        # The pair key with a dropped peer tells the server no more than that peer's mask key
        # (which it may rebuild anyway); it lets the masks go even when the peer's key shares
        # are too few (some failed to decrypt) or inconsistent.
        peers = [peer for peer in state.masked_with if peer != self.name]
        return {
            Key.SELF_SEED_OWNERS: seed_owners,
            Key.SELF_SEED_SHARES: [state.shares_of(owner)[0] for owner in seed_owners],
            Key.MASK_KEY_OWNERS: key_owners,
            Key.MASK_KEY_SHARES: [state.shares_of(owner)[1] for owner in key_owners],
            Key.PAIR_KEY_PEERS: list(dropped),
            Key.PAIR_KEYS: [state.pair_keys[peers.index(peer)] for peer in dropped],
        }

    def _survivors_message(self, survivors: list[str], dropped: list[str]) -> bytes:
        state = self.state
        return sig.survivors_message(
            roster_digest=state.roster_digest, run_id=state.run_id,
            round_number=state.round_number, settings_digest=state.settings_digest,
            survivors=survivors, dropped=dropped,
        )

    def _survivor_split(
        self, request: Mapping[str, Any], *, stage: str
    ) -> tuple[list[str], list[str]]:
        return (self._roster_names(request, Key.SURVIVORS, stage=stage),
                self._roster_names(request, Key.DROPPED, stage=stage))

    def _roster_names(self, request: Mapping[str, Any], key: str, *, stage: str) -> list[str]:
        names = msg.get_str_list(request, key, stage=stage)
        for name in names:
            if name not in self.roster.names:
                raise SecAggProtocolError(
                    stage, f"hospital {name!r} is not on this hospital's pinned roster "
                    f"({self.roster.hex_digest[:16]}...): refused"
                )
        if names != self.roster.in_roster_order(names):
            raise SecAggProtocolError(stage, f"field {key!r} must list hospitals in roster order")
        return names

    def _check_member_set(self, names: list[str], *, within: list[str], stage: str) -> None:
        state = self.state
        if self.name not in names or not set(names) <= set(within):
            raise SecAggProtocolError(
                stage, f"the hospitals listed must include {self.name!r} and be a subset of "
                "those of the previous stage"
            )
        minimum = max(state.threshold, MIN_PARTICIPANTS)
        if len(names) < minimum:
            raise SecAggProtocolError(
                stage, f"only {len(names)} hospitals remain, fewer than max(t={state.threshold}, "
                f"{MIN_PARTICIPANTS}): the round aborts"
            )

    def _share_key(self, encryption_key: Any, peer: str) -> bytes:
        state, roster = self.state, self.roster
        info = ka.build_info(ka.Purpose.SHARE_ENCRYPTION, round_number=state.round_number,
                             id_a=roster.index(self.name), id_b=roster.index(peer))
        peer_key = state.encryption_public_keys[state.hospitals.index(peer)]
        return ka.derive_key(encryption_key, peer_key, info=info)

    def _keys(self) -> tuple[Any, Any]:
        if not self.state.mask_key or not self.state.encryption_key:
            raise SecAggProtocolError(self.state.expected or "state", "no round keys")
        return (ka.load_private_key(self.state.mask_key),
                ka.load_private_key(self.state.encryption_key))


def _check_identity(name: str, roster: Roster, signing_key: Ed25519PrivateKey) -> None:
    if not isinstance(roster, Roster):
        raise ValueError("roster must be a Roster")
    if name not in roster.names:
        raise ValueError(f"hospital {name!r} is not on the roster")
    if not isinstance(signing_key, Ed25519PrivateKey):
        raise ValueError("signing_key must be an Ed25519PrivateKey")
    if signing_public_key(signing_key) != roster.signing_keys[roster.index(name) - 1]:
        raise ValueError(f"the signing key is not the one the roster pins for {name!r}")
