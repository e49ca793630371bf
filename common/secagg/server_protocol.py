"""The server's side of secure aggregation as a per-round state machine (no I/O, no Flower).

The server relays signed keys, encrypted shares and survivor-set signatures, sums the masked
vectors of the signed survivor set U3 mod 2**64, and rebuilds the survivors' self-mask seeds
and the dropped hospitals' mask keys, checking each against its owner's signed commitment or
public key and leaving out lying share holders, so one misbehaving hospital is excluded rather
than ending the round. Bonawitz et al. (CCS 2017), Section 4 (Figure 4), rounds 0-4.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from common.errors import SecAggProtocolError
from common.secagg import key_agreement as ka
from common.secagg import messages as msg
from common.secagg import signatures as sig
from common.secagg.masking import unmask_sum
from common.secagg.messages import (
    MIN_PARTICIPANTS,
    Advertisement,
    Key,
    Message,
    SecAggResult,
    Stage,
)
from common.secagg.reconstruction import HeldShare, recover_secret
from common.secagg.roster import Roster
from common.secagg.shamir import SHARE_BYTES
from common.secagg.share_encryption import NONCE_BYTES, TAG_BYTES
from common.secagg.signatures import SecAggSettings

logger = logging.getLogger(__name__)

SEED_BYTES = 32
CIPHERTEXT_BYTES = NONCE_BYTES + 2 * SHARE_BYTES + TAG_BYTES
_NEXT = {
    Stage.ADVERTISE_KEYS: Stage.SHARE_KEYS,
    Stage.SHARE_KEYS: Stage.MASKED_INPUT,
    Stage.MASKED_INPUT: Stage.CONSISTENCY_CHECK,
    Stage.CONSISTENCY_CHECK: Stage.UNMASK,
}


class SecAggServer:
    """Run one round: ``requests()`` -> deliver -> ``receive()`` each reply -> ``close_stage()``.

    Parameters
    ----------
    run_id
        The run; bound into every signature.
    round_number
        The round; bound into every signature, derived key and ciphertext.
    roster
        The consortium roster (the server verifies what it relays, to exclude bad peers early).
    settings
        The round's settings; their digest is what every hospital must have signed, and
        ``settings.threshold`` is t.
    hospitals
        The roster names selected for the round, n >= 3.
    vector_length
        Length d of every quantised update.
    advertisements
        Signed advertisements already received for this round (e.g. riding on the previous
        round's unmask reply); those hospitals skip ``advertise-keys``. Invalid ones are
        discarded and their hospitals asked again.

    Raises
    ------
    ValueError
        If the hospitals, settings, threshold or vector length are invalid.
    """

    def __init__(
        self,
        *,
        run_id: str,
        round_number: int,
        roster: Roster,
        settings: SecAggSettings,
        hospitals: Sequence[str],
        vector_length: int,
        advertisements: Mapping[str, Advertisement] | None = None,
    ) -> None:
        if not isinstance(roster, Roster):
            raise ValueError("roster must be a Roster")
        unknown = [name for name in hospitals if name not in roster.names]
        if unknown:
            raise ValueError(f"hospitals {unknown} are not on the roster")
        if len(set(hospitals)) != len(hospitals):
            raise ValueError(f"hospitals must be distinct, got {list(hospitals)}")
        names = roster.in_roster_order(hospitals)
        t, c = settings.threshold, roster.colluders
        problem = msg.threshold_problem(t, len(names), c, min_threshold=roster.min_threshold)
        if problem is not None:
            raise ValueError(problem)
        if settings.honest > t - c or (
            roster.honest is not None and settings.honest > roster.honest
        ):
            raise ValueError(f"settings.honest={settings.honest} exceeds what t - c = {t - c} "
                             "(and the roster) guarantee")
        if isinstance(vector_length, bool) or not isinstance(vector_length, int) \
                or vector_length < 1:
            raise ValueError(f"vector_length must be an int >= 1, got {vector_length!r}")
        if isinstance(round_number, bool) or not isinstance(round_number, int) or round_number < 0:
            raise ValueError(f"round_number must be an int >= 0, got {round_number!r}")
        if not isinstance(run_id, str) or not run_id:
            raise ValueError(f"run_id must be a non-empty str, got {run_id!r}")
        self.run_id, self.round_number, self.roster = run_id, round_number, roster
        self.settings_digest = settings.digest()
        self.threshold = t
        self.vector_length = vector_length
        self.selected = tuple(names)
        self.excluded: dict[str, str] = {}
        self.events: list[str] = []
        self._ads: dict[str, Advertisement] = {}
        for name, ad in (advertisements or {}).items():
            if name in names:
                problem = self._advertisement_problem(name, ad)
                if problem is None:
                    self._ads[name] = ad
        self._ciphertexts: dict[tuple[str, str], bytes] = {}  # (sender, receiver) -> bytes
        self._masked: dict[str, npt.NDArray[np.uint64]] = {}
        self._reports: dict[str, list[str]] = {}
        self._signatures: dict[str, bytes] = {}
        self._shares: dict[str, Message] = {}
        self._replied: set[str] = set()
        self._u1: list[str] = []
        self._u2: list[str] = []
        self._u3: list[str] = []
        self._signers: list[str] = []
        self._result: SecAggResult | None = None
        self._aborted = False
        missing = [name for name in names if name not in self._ads]
        if missing:
            self.stage: str | None = Stage.ADVERTISE_KEYS
            self._asked = missing
        else:
            self.stage, self._asked = Stage.SHARE_KEYS, list(names)
            self._u1 = list(names)

    @property
    def survivors(self) -> tuple[str, ...]:
        """U3 once the masked-input stage closed (empty before)."""
        return tuple(self._u3)

    def requests(self) -> dict[str, Message]:
        """Return the current stage's request for each hospital asked (name -> payload)."""
        stage = self._current_stage()
        base: Message = {Key.STAGE: stage, Key.ROUND: self.round_number}
        if stage == Stage.ADVERTISE_KEYS:
            advertise = {Key.RUN_ID: self.run_id, Key.ROSTER_DIGEST: self.roster.digest,
                         Key.SETTINGS_DIGEST: self.settings_digest}
            return {name: {**base, **advertise} for name in self._asked}
        if stage == Stage.SHARE_KEYS:
            ads = [self._ads[name] for name in self._u1]
            keys = {
                Key.THRESHOLD: self.threshold,
                Key.HOSPITALS: list(self._u1),
                Key.MASK_PUBLIC_KEYS: [ad.mask_public_key for ad in ads],
                Key.ENCRYPTION_PUBLIC_KEYS: [ad.encryption_public_key for ad in ads],
                Key.SEED_COMMITMENTS: [ad.seed_commitment for ad in ads],
                Key.SETTINGS_DIGESTS: [ad.settings_digest for ad in ads],
                Key.KEY_SIGNATURES: [ad.signature for ad in ads],
            }
            return {name: {**base, **keys} for name in self._asked}
        if stage == Stage.MASKED_INPUT:
            out = {}
            for name in self._asked:
                senders = [peer for peer in self._u2 if peer != name]
                out[name] = {
                    **base,
                    Key.HOSPITALS: list(self._u2),
                    Key.SENDERS: senders,
                    Key.CIPHERTEXTS: [self._ciphertexts[(peer, name)] for peer in senders],
                    Key.VECTOR_LENGTH: self.vector_length,
                }
            return out
        split = {Key.SURVIVORS: list(self._u3), Key.DROPPED: self._dropped()}
        if stage == Stage.CONSISTENCY_CHECK:
            return {name: {**base, **split} for name in self._asked}
        signed = {Key.SIGNERS: list(self._signers),
                  Key.SURVIVOR_SIGNATURES: [self._signatures[name] for name in self._signers]}
        return {name: {**base, **split, **signed} for name in self._asked}

    def receive(self, name: str, reply: Mapping[str, Any]) -> None:
        """Validate and record one hospital's reply to the current stage.

        ``name`` is the roster name the glue bound to the replying node, never one the reply
        claims.

        Raises
        ------
        SecAggProtocolError
            If the reply is for another stage or round, from a hospital not asked, a duplicate,
            or malformed or unauthentic (bad signature, wrong-length vector...). Nothing of it
            is recorded: the hospital counts as dropped (and ``excluded`` says why) unless it
            sends a valid reply before ``close_stage``.
        """
        stage = self._current_stage()
        replied_stage = reply.get(Key.STAGE)
        if replied_stage != stage:
            raise SecAggProtocolError(
                stage, f"reply to stage {replied_stage!r}, which was not asked (asked: {stage!r})"
            )
        if msg.get_int(reply, Key.ROUND, stage=stage) != self.round_number:
            raise SecAggProtocolError(stage, f"reply is not for round {self.round_number}")
        if name not in self._asked:
            raise SecAggProtocolError(stage, f"hospital {name!r} was not asked in stage {stage!r}")
        if name in self._replied:
            raise SecAggProtocolError(
                stage, f"hospital {name!r} already replied in stage {stage!r}"
            )
        try:
            self._record(stage, name, reply)
        except SecAggProtocolError as error:
            self._exclude(name, error.reason)
            raise
        except Exception as error:  # never let a malformed reply escape as another type
            reason = f"malformed reply ({type(error).__name__}: {error})"
            self._exclude(name, reason)
            raise SecAggProtocolError(stage, reason) from None
        self.excluded.pop(name, None)
        self._replied.add(name)

    def close_stage(self) -> SecAggResult | None:
        """End the current stage: hospitals that did not reply drop out. Return the result at
        the end.

        Raises
        ------
        SecAggProtocolError
            If too few hospitals remain, or a secret cannot be rebuilt from the shares: the
            round aborts and nothing more is asked.
        """
        stage = self._current_stage()
        try:
            return self._close(stage)
        except SecAggProtocolError:
            self._aborted = True
            raise
        except Exception as error:
            self._aborted = True
            raise SecAggProtocolError(
                stage, f"internal failure ({type(error).__name__}: {error})"
            ) from None

    def _close(self, stage: str) -> SecAggResult | None:
        repliers = self.roster.in_roster_order(self._replied)
        if stage == Stage.ADVERTISE_KEYS:
            repliers = self.roster.in_roster_order(set(repliers) | set(self._ads))
            problem = msg.threshold_problem(self.threshold, len(repliers), self.roster.colluders,
                                            min_threshold=self.roster.min_threshold)
            if problem is not None:
                raise SecAggProtocolError(stage, f"{len(repliers)} hospitals advertised valid "
                                          f"keys: {problem}; the round aborts")
        if stage == Stage.MASKED_INPUT:
            repliers = self._apply_reports(repliers)
        minimum = self.threshold if stage in (Stage.CONSISTENCY_CHECK, Stage.UNMASK) else max(
            self.threshold, MIN_PARTICIPANTS)
        if len(repliers) < minimum:
            raise SecAggProtocolError(
                stage,
                f"only {len(repliers)} of {len(self._asked)} hospitals remain; at least "
                f"{minimum} are needed (threshold t={self.threshold}, at least "
                f"{MIN_PARTICIPANTS} participants): the round aborts without unmasking",
            )
        self._replied = set()
        if stage == Stage.UNMASK:
            self._result = self._reconstruct(repliers)
            self.stage = None
            return self._result
        if stage == Stage.ADVERTISE_KEYS:
            self._u1 = repliers
        elif stage == Stage.SHARE_KEYS:
            self._u2 = repliers
        elif stage == Stage.MASKED_INPUT:
            self._u3 = repliers
        else:
            self._signers = repliers
        self.stage, self._asked = _NEXT[stage], repliers
        return None

    def advertisement(self, name: str) -> Advertisement | None:
        """The verified advertisement of ``name`` this round, if any."""
        return self._ads.get(name)

    def _record(self, stage: str, name: str, reply: Mapping[str, Any]) -> None:
        if stage == Stage.ADVERTISE_KEYS:
            ad = parse_advertisement(reply)
            problem = self._advertisement_problem(name, ad)
            if problem is not None:
                raise SecAggProtocolError(stage, problem)
            self._ads[name] = ad
        elif stage == Stage.SHARE_KEYS:
            receivers = msg.get_str_list(reply, Key.RECEIVERS, stage=stage)
            if receivers != [peer for peer in self._u1 if peer != name]:
                raise SecAggProtocolError(stage, f"{name!r} must send shares to every peer")
            ciphertexts = msg.get_bytes_list(reply, Key.CIPHERTEXTS, stage=stage,
                                             count=len(receivers), length=CIPHERTEXT_BYTES)
            for receiver, ciphertext in zip(receivers, ciphertexts, strict=True):
                self._ciphertexts[(name, receiver)] = ciphertext
        elif stage == Stage.MASKED_INPUT:
            vector = msg.vector_from_bytes(
                msg.get_bytes(reply, Key.MASKED_INPUT, stage=stage), length=self.vector_length,
                stage=stage, source=f"the masked vector of {name!r}",
            )
            failed = msg.get_str_list(reply, Key.FAILED_SENDERS, stage=stage)
            if not set(failed) <= set(self._u2) - {name}:
                raise SecAggProtocolError(stage, f"{name!r} reports failures of unknown senders")
            self._masked[name], self._reports[name] = vector, failed
        elif stage == Stage.CONSISTENCY_CHECK:
            signature = msg.get_bytes(reply, Key.SURVIVOR_SIGNATURE, stage=stage,
                                      length=sig.SIGNATURE_BYTES)
            message = sig.survivors_message(
                roster_digest=self.roster.digest, run_id=self.run_id,
                round_number=self.round_number, settings_digest=self.settings_digest,
                survivors=self._u3, dropped=self._dropped(),
            )
            if not sig.verify(self.roster.public_key(name), signature, message):
                raise SecAggProtocolError(stage, f"the survivor-set signature of {name!r} "
                                          "does not verify")
            self._signatures[name] = signature
        else:
            self._shares[name] = self._parse_unmask_reply(reply)

    def _advertisement_problem(self, name: str, ad: Advertisement) -> str | None:
        if ad.name != name:
            return f"the advertisement of {name!r} claims to be {ad.name!r}"
        if ad.settings_digest != self.settings_digest:
            return f"{name!r} signed other settings (digest {ad.settings_digest.hex()[:16]}...)"
        message = sig.advertisement_message(
            roster_digest=self.roster.digest, run_id=self.run_id, round_number=self.round_number,
            name=name, mask_public_key=ad.mask_public_key,
            encryption_public_key=ad.encryption_public_key, settings_digest=ad.settings_digest,
            seed_commitment=ad.seed_commitment,
        )
        if not sig.verify(self.roster.public_key(name), ad.signature, message):
            return f"the key signature of {name!r} does not verify against its roster key"
        return None

    def _apply_reports(self, repliers: list[str]) -> list[str]:
        """Exclude senders whose share ciphertexts failed to authenticate at their receivers.

        A failure may be the sender's doing or the server's, so it is logged as
        "ciphertext from S failed at R" and S is treated as dropped (never unmasked). A receiver
        reporting more senders than max(c, 1) misbehaving hospitals could explain is itself
        excluded and its reports ignored. Then, repeatedly, the sender named by most remaining
        reporters is excluded (ties: roster order) and its own reports are dropped, so a garbage
        sender named by all its receivers goes first and its counter-reports do not count.
        """
        cap = max(self.roster.colluders, 1)
        out: set[str] = set()
        for reporter in repliers:
            for sender in self._reports.get(reporter, []):
                event = f"ciphertext from {sender} failed at {reporter}"
                self.events.append(event)
                logger.warning("secure aggregation round %d: %s", self.round_number, event)
            if len(self._reports.get(reporter, [])) > cap:
                out.add(reporter)
                self._exclude(reporter, f"reported {len(self._reports[reporter])} peers' "
                              f"ciphertexts failing, more than max(c, 1) = {cap}: its reports "
                              "are ignored")
        while True:
            named: dict[str, list[str]] = {}
            for reporter in repliers:
                if reporter in out:
                    continue
                for sender in self._reports.get(reporter, []):
                    if sender in repliers and sender not in out:
                        named.setdefault(sender, []).append(reporter)
            if not named:
                break
            sender = max(self.roster.in_roster_order(named), key=lambda s: len(named[s]))
            out.add(sender)
            self._exclude(sender, f"its share ciphertexts failed authentication at "
                          f"{named[sender]} (its doing, or the server's): treated as dropped")
        return [name for name in repliers if name not in out]

    def _parse_unmask_reply(self, reply: Mapping[str, Any]) -> Message:
        stage = Stage.UNMASK
        parsed: Message = {}
        for owners_key, shares_key, expected in (
            (Key.SELF_SEED_OWNERS, Key.SELF_SEED_SHARES, self._u3),
            (Key.MASK_KEY_OWNERS, Key.MASK_KEY_SHARES, self._dropped()),
        ):
            owners = msg.get_str_list(reply, owners_key, stage=stage)
            if not set(owners) <= set(expected):
                raise SecAggProtocolError(stage, f"field {owners_key!r} must list only {expected}")
            shares = msg.get_bytes_list(reply, shares_key, stage=stage, count=len(owners),
                                        length=SHARE_BYTES)
            parsed[owners_key] = dict(zip(owners, shares, strict=True))
        peers = msg.get_str_list(reply, Key.PAIR_KEY_PEERS, stage=stage)
        if peers != self._dropped():
            raise SecAggProtocolError(stage, f"field {Key.PAIR_KEY_PEERS!r} must list "
                                      f"{self._dropped()}")
        keys = msg.get_bytes_list(reply, Key.PAIR_KEYS, stage=stage, count=len(peers), length=32)
        parsed[Key.PAIR_KEYS] = dict(zip(peers, keys, strict=True))
        return parsed

    def _reconstruct(self, holders: list[str]) -> SecAggResult:
        stage, roster = Stage.UNMASK, self.roster
        bad: set[str] = set()

        def recover(owner: str, owners_key: str, what: str, check: Any) -> bytes | None:
            shares = [
                HeldShare(holder, roster.index(holder), self._shares[holder][owners_key][owner])
                for holder in holders
                if holder not in bad and owner in self._shares[holder][owners_key]
            ]
            recovery = recover_secret(shares, threshold=self.threshold, check=check,
                                      max_liars=max(roster.colluders, 1))
            if recovery is None:
                problem = (f"no {self.threshold} of the {len(shares)} shares of {owner!r}'s "
                           f"{what} match its signed commitment (it dealt inconsistent shares, "
                           "or too many holders sent bad ones or could not decrypt theirs)")
                if owners_key == Key.SELF_SEED_OWNERS:
                    raise SecAggProtocolError(stage, f"{problem}: the round aborts")
                self.events.append(problem)
                return None
            for holder in recovery.bad_holders:
                bad.add(holder)
                self._exclude(holder, f"sent unmask shares that do not lie on {owner!r}'s "
                              "polynomial: its shares are discarded")
            return recovery.secret

        seeds = {}
        for owner in self._u3:
            commitment = self._ads[owner].seed_commitment

            def seed_ok(secret: bytes, owner: str = owner, commitment: bytes = commitment) -> bool:
                return len(secret) == SEED_BYTES and sig.seed_commitment(
                    secret, roster_digest=roster.digest, run_id=self.run_id,
                    round_number=self.round_number, name=owner) == commitment

            seed = recover(owner, Key.SELF_SEED_OWNERS, "self-mask seed", seed_ok)
            assert seed is not None  # a seed that cannot be rebuilt raised above
            seeds[roster.index(owner)] = seed
        dangling: dict[tuple[int, int], bytes] = {}
        revealed = []
        for owner in self._dropped():
            public = self._ads[owner].mask_public_key

            def key_ok(secret: bytes, public: bytes = public) -> bool:
                return len(secret) == 32 and ka.public_key_bytes(
                    ka.load_private_key(secret)) == public

            raw = recover(owner, Key.MASK_KEY_OWNERS, "mask key", key_ok)
            private_key = ka.load_private_key(raw) if raw is not None else None
            if private_key is not None:
                revealed.append(owner)
            for survivor in self._u3:
                a, b = roster.index(survivor), roster.index(owner)
                if private_key is not None:
                    info = ka.build_info(ka.Purpose.MASK, round_number=self.round_number,
                                         id_a=a, id_b=b)
                    dangling[(a, b)] = ka.derive_key(
                        private_key, self._ads[survivor].mask_public_key, info=info)
                elif survivor in self._shares:
                    dangling[(a, b)] = self._shares[survivor][Key.PAIR_KEYS][owner]
                else:
                    raise SecAggProtocolError(
                        stage, f"{owner!r}'s mask key cannot be rebuilt and {survivor!r} did not "
                        f"reveal its pair key with it: their masks cannot be removed; the round "
                        "aborts"
                    )
        masked_total = np.zeros(self.vector_length, dtype=np.uint64)
        for survivor in self._u3:
            np.add(masked_total, self._masked[survivor], out=masked_total)
        total = unmask_sum(masked_total, round_number=self.round_number, self_seeds=seeds,
                           dangling_keys=dangling)
        survivors = tuple(self._u3)
        return SecAggResult(
            total=total,
            survivors=survivors,
            dropped=tuple(name for name in self.selected if name not in survivors),
            revealed_mask_keys=tuple(revealed),
            excluded=dict(self.excluded),
        )

    def _dropped(self) -> list[str]:
        return [name for name in self._u2 if name not in self._u3]

    def _exclude(self, name: str, reason: str) -> None:
        self.excluded[name] = reason
        logger.warning("secure aggregation round %d: %s excluded: %s", self.round_number, name,
                       reason)

    def _current_stage(self) -> str:
        if self._aborted:
            raise SecAggProtocolError(str(self.stage), "the round was aborted")
        if self.stage is None:
            raise SecAggProtocolError("done", "the round is complete; start a new SecAggServer")
        return self.stage


def parse_advertisement(reply: Mapping[str, Any]) -> Advertisement:
    """Read an advertise-keys reply's signed keys (e.g. one that rode on an unmask reply).

    Raises
    ------
    SecAggProtocolError
        If a field is missing or of the wrong type or length (the signature is not checked
        here; the server checks it against the roster).
    """
    stage = Stage.ADVERTISE_KEYS
    return Advertisement(
        name=msg.get_str(reply, Key.HOSPITAL, stage=stage),
        mask_public_key=msg.get_bytes(reply, Key.MASK_PUBLIC_KEY, stage=stage, length=32),
        encryption_public_key=msg.get_bytes(reply, Key.ENCRYPTION_PUBLIC_KEY, stage=stage,
                                            length=32),
        seed_commitment=msg.get_bytes(reply, Key.SEED_COMMITMENT, stage=stage, length=32),
        settings_digest=msg.get_bytes(reply, Key.SETTINGS_DIGEST, stage=stage, length=32),
        signature=msg.get_bytes(reply, Key.KEY_SIGNATURE, stage=stage,
                                length=sig.SIGNATURE_BYTES),
    )
