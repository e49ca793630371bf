"""The hospital's side of secure aggregation: four message actions on the ClientApp.

``train.secagg_advertise`` trains (with the hospital's own DP and ledger, exactly as a plain
round), encodes the update and answers the round's first protocol stage: advertise-keys, or
share-keys when its fresh keys for this round were already advertised with the previous
round's unmask reply (which saves a message round trip per round and never reuses a key).
``share``, ``mask`` and ``unmask`` answer the later stages. Between messages the protocol
client, the encoded update and which round it belongs to live only in the node's in-memory
``Context.state``; they are never logged or written, and are dropped when the round ends or
fails.
"""

from collections.abc import Callable

import numpy as np
from flwr.app import ConfigRecord, Context, Message

from common.secagg.protocol import Key, SecAggClient, Stage, vector_from_bytes, vector_to_bytes
from common.wire.actions import SECAGG_ADVERTISE, SECAGG_MASK, SECAGG_SHARE, SECAGG_UNMASK
from common.wire.fields import WireFormatError
from common.wire.records import pack_reply, unpack_request
from common.wire.replies import HospitalIdentity, RoundRef, SecAggPayload, SecAggStageReply

STATE_CLIENT = "secagg-client"
STATE_INPUT = "secagg-input"
STATE_ROUND = "secagg-round"  # who this node answered as, and for which run and round


def save_state(context: Context, client: SecAggClient, encoded: np.ndarray | None = None,
               *, identity: HospitalIdentity | None = None, answers: RoundRef | None = None,
               ) -> None:
    """Keep the protocol client (and the encoded update, and its round) in the node's memory."""
    context.state[STATE_CLIENT] = ConfigRecord(client.to_record())
    if encoded is not None:
        context.state[STATE_INPUT] = ConfigRecord({"vector": vector_to_bytes(encoded),
                                                   "length": int(encoded.size)})
    if identity is not None and answers is not None:
        context.state[STATE_ROUND] = ConfigRecord({
            "name": identity.name, "index": identity.index, "run-id": answers.run_id,
            "server-round": answers.server_round})


def forget_state(context: Context) -> None:
    """Drop all key material and the encoded update from the node's memory."""
    for name in (STATE_CLIENT, STATE_INPUT, STATE_ROUND):
        if name in context.state:
            del context.state[name]


def start_round(context: Context, request: SecAggPayload, encoded: np.ndarray,
                identity: HospitalIdentity, answers: RoundRef) -> SecAggPayload:
    """Answer a round's first stage for this hospital's freshly encoded update.

    Advertise-keys makes a new client with fresh keys. Share-keys continues the client whose
    keys for this round were advertised with the previous round's unmask reply.
    """
    if request.get(Key.STAGE) == Stage.ADVERTISE_KEYS or STATE_CLIENT not in context.state:
        client = SecAggClient(identity.index)
    else:
        client = SecAggClient.from_record(dict(context.state[STATE_CLIENT]))
    try:
        reply = client.handle(dict(request))
    except Exception:
        forget_state(context)
        raise
    save_state(context, client, encoded, identity=identity, answers=answers)
    return reply


def _round_of(context: Context) -> tuple[HospitalIdentity, RoundRef]:
    if STATE_CLIENT not in context.state or STATE_ROUND not in context.state:
        raise RuntimeError("no secure-aggregation state: this hospital did not start the round")
    stored = context.state[STATE_ROUND]
    return (HospitalIdentity(str(stored["name"]), int(stored["index"])),  # type: ignore[arg-type]
            RoundRef(str(stored["run-id"]), int(stored["server-round"])))  # type: ignore[arg-type]


def answer_stage(msg: Message, context: Context) -> Message:
    """Answer share-keys, masked-input or unmask from the state the first stage left.

    An unmask request may carry the next round's advertise-keys request: the hospital then
    makes fresh keys for that round and advertises them in the same reply.
    """
    request = unpack_request(msg.content)
    if request.secagg is None:
        raise WireFormatError("secagg", "missing")
    identity, answers = _round_of(context)
    client = SecAggClient.from_record(dict(context.state[STATE_CLIENT]))
    encoded = None
    if STATE_INPUT in context.state:
        stored = context.state[STATE_INPUT]
        encoded = vector_from_bytes(stored["vector"], length=int(stored["length"]),  # type: ignore[arg-type]
                                    stage=str(request.secagg.get(Key.STAGE)))
    try:
        reply = client.handle(dict(request.secagg), quantized=encoded)
    except Exception:
        forget_state(context)  # fail closed: nothing more is answered this round
        raise
    next_reply = None
    if request.secagg.get(Key.STAGE) == Stage.UNMASK:
        forget_state(context)
        if request.secagg_next is not None:
            next_client = SecAggClient(client.node_id)
            next_reply = next_client.handle(dict(request.secagg_next))
            save_state(context, next_client)
            context.state[STATE_ROUND] = ConfigRecord({
                "name": identity.name, "index": identity.index, "run-id": answers.run_id,
                "server-round": answers.server_round + 1})
    else:
        save_state(context, client)
    content = pack_reply(SecAggStageReply(identity, answers, reply, next_reply))
    return Message(content=content, reply_to=msg)


def register_secagg_actions(client_app: object,
                            advertise: Callable[[Message, Context], Message]) -> None:
    """Register the four secure-aggregation actions on a ClientApp."""
    client_app.train(SECAGG_ADVERTISE)(advertise)  # type: ignore[attr-defined]
    for action in (SECAGG_SHARE, SECAGG_MASK, SECAGG_UNMASK):
        client_app.train(action)(answer_stage)  # type: ignore[attr-defined]
