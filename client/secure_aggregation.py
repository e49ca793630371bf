"""The hospital's side of secure aggregation: five message actions on the ClientApp.

The hospital holds a consortium roster it pinned by SHA-256 and its own Ed25519 signing key
(node config ``roster-path``, ``roster-sha256``, ``signing-key-path``; ``fedcare simulate``
makes ephemeral ones). ``train.secagg_advertise`` trains (with the hospital's own DP and ledger,
exactly as a plain round), encodes the update (no weight coordinate: the range and scale follow
from the round's settings, ``common.secagg.round_settings``) and answers the round's first
protocol stage: advertise-keys, or share-keys when its keys for this round were already
advertised with the previous round's unmask reply. ``share``, ``mask``, ``check`` (the
consistency check: it signs the survivor set before any share is revealed) and ``unmask``
answer the later stages. One protocol client per run lives only in the node's in-memory
``Context.state`` (its round counter refuses to re-run a round, and a second unmasking of a
round over another survivor set); key material is never logged or written.

``check_secure_round`` runs before the hospital draws any noise or charges its ledger: the
pinned roster and signing key, the round's hospital count, t and h against the roster's rules
(the protocol's own ``threshold_problem``), the encoding derived from the settings, and the
first stage's request (run, round, roster digest, settings digest, keys advertised for the
round). A refusal there costs no epsilon and saves no release.
"""

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message

from client.privacy import HospitalPrivacy
from common.errors import SecAggProtocolError
from common.secagg.client_state import ClientState
from common.secagg.messages import MIN_PARTICIPANTS
from common.secagg.protocol import (
    Key,
    Roster,
    SecAggClient,
    SecAggSettings,
    Stage,
    load_roster,
    load_signing_key,
    threshold_problem,
    vector_from_bytes,
    vector_to_bytes,
)
from common.secagg.roster import colluders_problem
from common.secagg.round_settings import honest_contributors, signed_settings
from common.wire.actions import (
    SECAGG_ADVERTISE,
    SECAGG_CHECK,
    SECAGG_MASK,
    SECAGG_SHARE,
    SECAGG_UNMASK,
)
from common.wire.fields import WireFormatError
from common.wire.records import pack_reply, unpack_request
from common.wire.replies import HospitalIdentity, RoundRef, SecAggPayload, SecAggStageReply
from common.wire.settings import RoundSettings

STATE_CLIENT = "secagg-client"
STATE_INPUT = "secagg-input"
STATE_ROUND = "secagg-round"  # who this node answered as, for which run and round, with what
STATE_PATHS = "secagg-paths"  # where its roster and signing key are (never the key itself)


@lru_cache(maxsize=8)
def _roster(path: Path, sha256: str) -> Roster:
    return load_roster(path, expected_sha256=sha256)


@lru_cache(maxsize=8)
def _signing_key(path: Path):  # type: ignore[no-untyped-def]
    return load_signing_key(path.read_bytes(), source=str(path))


def pinned_roster(privacy: HospitalPrivacy) -> Roster:
    """The hospital's pinned roster (checked against its SHA-256).

    Raises
    ------
    SecAggProtocolError
        If the hospital has none, or the file's digest differs.
    """
    if privacy.roster_path is None or privacy.roster_sha256 is None:
        raise SecAggProtocolError("roster", "this hospital has no pinned consortium roster "
                                  "(node config roster-path and roster-sha256)")
    try:
        return _roster(privacy.roster_path, privacy.roster_sha256)
    except (OSError, ValueError, LookupError) as error:
        raise SecAggProtocolError("roster", str(error)) from None


def _key(privacy: HospitalPrivacy):  # type: ignore[no-untyped-def]
    path = privacy.signing_key_path
    if path is None:
        raise SecAggProtocolError("roster", "this hospital has no signing key (node config "
                                  "signing-key-path)")
    try:
        return _signing_key(Path(path))
    except (OSError, ValueError) as error:
        raise SecAggProtocolError("roster", f"signing key {path}: {error}") from None


def roster_rules_problem(settings: RoundSettings, roster: Roster, *,
                         colluding: int = 0) -> str | None:
    """Why the round's hospital count, t or h breaks the pinned roster's rules (None: they hold).

    n (``hospitals``) must be at least 3 and at most the roster's members; t
    (``secagg-threshold``) must pass the protocol's own rule, ``threshold_problem`` (t <= n,
    t >= the roster's smallest threshold, t >= floor((n + c)/2) + 1), with c the larger of the
    roster's and the hospital's own (node config ``colluding-hospitals``); h (the divisor of
    distributed noise, ``honest-contributors``; 1 in other modes) must be at most t - c and at
    most the h the roster states. Each reason starts with the wire field at fault.
    """
    n, t = settings.hospitals, settings.secagg_threshold
    c = max(colluding, roster.colluders)
    if not MIN_PARTICIPANTS <= n <= roster.size:
        return (f"hospitals: the round counts {n} hospitals; this hospital's pinned roster "
                f"allows {MIN_PARTICIPANTS} to its {roster.size} members")
    problem = threshold_problem(t, n, c, min_threshold=roster.min_threshold)
    if problem is not None:
        return f"secagg-threshold: {problem}"
    h = honest_contributors(settings)
    if h > t - c or (roster.honest is not None and h > roster.honest):
        stated = "" if roster.honest is None else f" and the roster states h={roster.honest}"
        return (f"honest-contributors: the round divides the noise by h={h}, but with t={t} "
                f"and c={c} only t - c = {t - c} honest contributors are guaranteed{stated}")
    return None


def check_secure_round(context: Context, privacy: HospitalPrivacy, request: SecAggPayload,
                       settings: RoundSettings, identity: HospitalIdentity,
                       num_parameters: int) -> Roster:
    """Check a secure round before any noise is drawn or epsilon charged; return the roster.

    Checks the pinned roster and signing key, that this hospital is on the roster, that the
    roster's c is at least the hospital's own minimum (``colluders_problem``),
    ``roster_rules_problem``, that the encoding (range, scale) derives from the settings,
    and the round's first stage request (``_check_first_stage``).

    Raises
    ------
    SecAggProtocolError
        With the reason (naming the field at fault) when the hospital must refuse the round.
    """
    roster = pinned_roster(privacy)
    _key(privacy)
    if identity.name not in roster.names:
        raise SecAggProtocolError("roster", f"this hospital ({identity.name!r}) is not on its "
                                  "pinned roster")
    refusal = colluders_problem(roster, minimum=privacy.colluding)
    if refusal is not None:  # a roster assuming fewer colluders than this hospital accepts
        raise SecAggProtocolError("roster", refusal)
    problem = roster_rules_problem(settings, roster, colluding=privacy.colluding)
    if problem is not None:
        raise SecAggProtocolError("settings", problem)
    try:
        signed = signed_settings(settings, num_parameters)
    except (ValueError, OverflowError, ZeroDivisionError) as error:
        raise SecAggProtocolError("settings", "the encoding cannot be derived from the round's "
                                  "clipping-norm, update-clipping-norm, noise-multiplier, "
                                  f"max-noise-multiplier and hospitals: {error}") from None
    _check_first_stage(context, request, settings, roster, signed)
    return roster


def _check_first_stage(context: Context, request: SecAggPayload, settings: RoundSettings,
                       roster: Roster, signed: SecAggSettings) -> None:
    """The round's first stage, as far as it can be checked before training.

    Advertise-keys must name the run, the round, this hospital's pinned roster and the digest
    of the settings it accepts, for a round this node has not begun (or only advertised keys
    for); share-keys must follow keys this node advertised for this very round under the same
    settings (signed with the previous round's unmask). Anything else is refused.
    """
    stage, number = request.get(Key.STAGE), request.get(Key.ROUND)
    if stage not in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS):
        raise SecAggProtocolError(str(stage), "a secure round starts with advertise-keys or "
                                  "share-keys")
    if number != settings.server_round:
        raise SecAggProtocolError(str(stage), f"the stage request is for round {number!r}, the "
                                  f"settings for round {settings.server_round}")
    state = _state_of_run(context, settings.run_id)
    advertised = (state is not None and state.round_number == settings.server_round
                  and state.expected == Stage.SHARE_KEYS and not state.closed)
    if stage == Stage.SHARE_KEYS:
        if not advertised or state is None or state.settings_digest != signed.digest():
            raise SecAggProtocolError(stage, f"this hospital advertised no keys for round "
                                      f"{settings.server_round} under these settings")
        return
    if state is not None and state.round_number >= settings.server_round and not advertised:
        raise SecAggProtocolError(stage, f"round {settings.server_round} was already begun at "
                                  f"this hospital (it is at round {state.round_number}): a "
                                  "round is answered at most once")
    expected = {Key.RUN_ID: settings.run_id, Key.ROSTER_DIGEST: roster.digest,
                Key.SETTINGS_DIGEST: signed.digest()}
    for key, value in expected.items():
        if request.get(key) != value:
            raise SecAggProtocolError(stage, f"the request's {key} does not match this "
                                      "hospital's run, pinned roster and accepted settings")


def _state_of_run(context: Context, run_id: str) -> ClientState | None:
    """The node's protocol state for run `run_id`, if it has one (and it is readable)."""
    if STATE_CLIENT not in context.state:
        return None
    try:
        state = ClientState.from_record(dict(context.state[STATE_CLIENT]))
    except SecAggProtocolError:
        return None
    return state if state.run_id == run_id else None


def _text(context: Context, record: str, key: str) -> str:
    """A field of one of the node's own state records, as text (the node wrote it)."""
    return str(context.state[record][key])


def _client_from_state(context: Context) -> SecAggClient:
    roster = _roster(Path(_text(context, STATE_PATHS, "roster-path")),
                     _text(context, STATE_PATHS, "roster-sha256"))
    key = _signing_key(Path(_text(context, STATE_PATHS, "signing-key-path")))
    return SecAggClient.from_record(dict(context.state[STATE_CLIENT]), roster=roster,
                                    signing_key=key)


def _save(context: Context, client: SecAggClient, *, encoded: np.ndarray | None = None,
          identity: HospitalIdentity | None = None, answers: RoundRef | None = None,
          settings: SecAggSettings | None = None) -> None:
    context.state[STATE_CLIENT] = ConfigRecord(client.to_record())
    if encoded is not None:
        context.state[STATE_INPUT] = ConfigRecord({"vector": vector_to_bytes(encoded),
                                                   "length": int(encoded.size)})
    if identity is not None and answers is not None and settings is not None:
        context.state[STATE_ROUND] = ConfigRecord({
            "name": identity.name, "index": identity.index, "run-id": answers.run_id,
            "server-round": answers.server_round, "clip-norm": settings.clip_norm,
            "noise-multiplier": settings.noise_multiplier, "honest": settings.honest,
            "threshold": settings.threshold, "encoding-scale": settings.encoding_scale,
            "planned-rounds": settings.planned_rounds})


def forget_round(context: Context) -> None:
    """Drop the round's encoded update (the run's client, with its round counter, stays)."""
    if STATE_INPUT in context.state:
        del context.state[STATE_INPUT]


def start_round(context: Context, privacy: HospitalPrivacy, request: SecAggPayload,
                encoded: np.ndarray, identity: HospitalIdentity, answers: RoundRef,
                settings: SecAggSettings) -> SecAggPayload:
    """Answer a round's first stage for this hospital's freshly encoded update.

    The run's client (kept in the node's memory) continues; a node without one for this run
    makes one that refuses rounds before this one.

    Raises
    ------
    SecAggProtocolError
        If the roster or key is missing or wrong, or the request is refused by the protocol
        (another roster, unsigned or inconsistent peers, an old round, ...).
    """
    roster, signing_key = pinned_roster(privacy), _key(privacy)
    client = None
    if STATE_CLIENT in context.state and STATE_ROUND in context.state \
            and _text(context, STATE_ROUND, "run-id") == answers.run_id:
        client = SecAggClient.from_record(dict(context.state[STATE_CLIENT]), roster=roster,
                                          signing_key=signing_key)
    if client is not None and _unused_advertisement(client, request, answers.server_round):
        # The server asks afresh for keys this hospital advertised for the round but never
        # used (a peer's keys were missing): nothing was derived from them, so new keys replace
        # them; every later stage still happens at most once.
        client = None
    if client is None:
        client = SecAggClient(identity.name, roster=roster, signing_key=signing_key,
                              run_id=answers.run_id, first_round=answers.server_round)
    context.state[STATE_PATHS] = ConfigRecord({
        "roster-path": str(privacy.roster_path), "roster-sha256": str(privacy.roster_sha256),
        "signing-key-path": str(privacy.signing_key_path)})
    try:
        reply = client.handle(dict(request), settings=settings)
    finally:
        _save(context, client, encoded=encoded, identity=identity, answers=answers,
              settings=settings)
    return reply


def _unused_advertisement(client: SecAggClient, request: SecAggPayload,
                          server_round: int) -> bool:
    """Whether `request` re-asks advertise-keys for the round the client advertised for and
    has answered nothing else of (it still expects share-keys).
    """
    return (request.get(Key.STAGE) == Stage.ADVERTISE_KEYS
            and client.round_number == server_round
            and client.state.expected == Stage.SHARE_KEYS and not client.state.closed)


def _round_of(context: Context) -> tuple[HospitalIdentity, RoundRef, SecAggSettings]:
    if STATE_CLIENT not in context.state or STATE_ROUND not in context.state:
        raise SecAggProtocolError("state", "no secure-aggregation state: this hospital did not "
                                  "start the round")
    def text(key: str) -> str:
        return _text(context, STATE_ROUND, key)

    settings = SecAggSettings(
        clip_norm=float(text("clip-norm")), noise_multiplier=float(text("noise-multiplier")),
        honest=int(text("honest")), threshold=int(text("threshold")),
        encoding_scale=float(text("encoding-scale")),
        planned_rounds=int(text("planned-rounds")))
    return (HospitalIdentity(text("name"), int(text("index"))),
            RoundRef(text("run-id"), int(text("server-round"))), settings)


def answer_stage(msg: Message, context: Context) -> Message:
    """Answer share-keys, masked-input, consistency-check or unmask from the round's state.

    An unmask request may carry the next round's advertise-keys request: the run's client then
    advertises fresh keys for that round (signed over the same settings) in the same reply.
    """
    request = unpack_request(msg.content)
    if request.secagg is None:
        raise WireFormatError("secagg", "missing")
    identity, answers, settings = _round_of(context)
    client = _client_from_state(context)
    encoded = None
    stage = str(request.secagg.get(Key.STAGE))
    if stage == Stage.MASKED_INPUT:
        if STATE_INPUT not in context.state:
            raise SecAggProtocolError(stage, "no encoded update for this round")
        stored = context.state[STATE_INPUT]
        encoded = vector_from_bytes(stored["vector"], length=int(_text(context, STATE_INPUT,  # type: ignore[arg-type]
                                                                        "length")), stage=stage)
    state_round = answers  # the round the node's state belongs to after this message
    try:
        reply = client.handle(dict(request.secagg), quantized=encoded)
        next_reply = None
        if stage == Stage.UNMASK:
            forget_round(context)
            if request.secagg_next is not None:
                next_reply = client.handle(dict(request.secagg_next), settings=settings)
                state_round = RoundRef(answers.run_id, answers.server_round + 1)
    finally:
        _save(context, client, identity=identity, answers=state_round, settings=settings)
    content = pack_reply(SecAggStageReply(identity, answers, reply, next_reply))
    return Message(content=content, reply_to=msg)


def register_secagg_actions(client_app: object,
                            advertise: Callable[[Message, Context], Message]) -> None:
    """Register the five secure-aggregation actions on a ClientApp."""
    client_app.train(SECAGG_ADVERTISE)(advertise)  # type: ignore[attr-defined]
    for action in (SECAGG_SHARE, SECAGG_MASK, SECAGG_CHECK, SECAGG_UNMASK):
        client_app.train(action)(answer_stage)  # type: ignore[attr-defined]
