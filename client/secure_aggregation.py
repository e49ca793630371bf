"""The hospital's side of secure aggregation: four message actions on the ClientApp.

``train.secagg_advertise`` trains (with the hospital's own DP and ledger, exactly as a plain
round), encodes the update and answers the round's first protocol stage: advertise-keys, or
share-keys when its fresh keys for this round were already advertised with the previous
round's unmask reply (which saves a message round trip per round and never reuses a key).
``share``, ``mask`` and ``unmask`` answer the later stages. Between messages the protocol
client and the encoded update live only in the node's in-memory ``Context.state``; they are
never logged or written, and are dropped when the round ends or fails.
"""

from collections.abc import Callable

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict

from common import record_keys as keys
from common.secagg.protocol import Key, SecAggClient, Stage, vector_from_bytes, vector_to_bytes

STATE_CLIENT = "secagg-client"
STATE_INPUT = "secagg-input"


def save_state(context: Context, client: SecAggClient, encoded: np.ndarray | None = None) -> None:
    """Keep the protocol client (and the encoded update) in the node's memory."""
    context.state[STATE_CLIENT] = ConfigRecord(client.to_record())
    if encoded is not None:
        context.state[STATE_INPUT] = ConfigRecord({"vector": vector_to_bytes(encoded),
                                                   "length": int(encoded.size)})


def forget_state(context: Context) -> None:
    """Drop all key material and the encoded update from the node's memory."""
    for name in (STATE_CLIENT, STATE_INPUT):
        if name in context.state:
            del context.state[name]


def start_round(context: Context, request: dict, encoded: np.ndarray, index: int) -> dict:
    """Answer a round's first stage for this hospital's freshly encoded update.

    Advertise-keys makes a new client with fresh keys. Share-keys continues the client whose
    keys for this round were advertised with the previous round's unmask reply.
    """
    if request.get(Key.STAGE) == Stage.ADVERTISE_KEYS or STATE_CLIENT not in context.state:
        client = SecAggClient(index)
    else:
        client = SecAggClient.from_record(dict(context.state[STATE_CLIENT]))
    try:
        reply = client.handle(request)
    except Exception:
        forget_state(context)
        raise
    save_state(context, client, encoded)
    return reply


def answer_stage(msg: Message, context: Context) -> Message:
    """Answer share-keys, masked-input or unmask from the state the first stage left.

    An unmask request may carry the next round's advertise-keys request: the hospital then
    makes fresh keys for that round and advertises them in the same reply.
    """
    request = dict(msg.content[keys.SECAGG])
    if STATE_CLIENT not in context.state:
        raise RuntimeError("no secure-aggregation state: this hospital did not start the round")
    client = SecAggClient.from_record(dict(context.state[STATE_CLIENT]))
    encoded = None
    if STATE_INPUT in context.state:
        stored = context.state[STATE_INPUT]
        encoded = vector_from_bytes(stored["vector"], length=int(stored["length"]),
                                    stage=str(request.get(Key.STAGE)))
    try:
        reply = client.handle(request, quantized=encoded)
    except Exception:
        forget_state(context)  # fail closed: nothing more is answered this round
        raise
    content = RecordDict({keys.SECAGG: ConfigRecord(reply)})
    if request.get(Key.STAGE) == Stage.UNMASK:
        forget_state(context)
        if keys.SECAGG_NEXT in msg.content:
            next_client = SecAggClient(client.node_id)
            content[keys.SECAGG_NEXT] = ConfigRecord(
                next_client.handle(dict(msg.content[keys.SECAGG_NEXT])))
            save_state(context, next_client)
    else:
        save_state(context, client)
    return Message(content=content, reply_to=msg)


def register_secagg_actions(client_app: object, advertise: Callable[[Message, Context], Message]) -> None:
    """Register the four secure-aggregation actions on a ClientApp."""
    client_app.train(keys.SECAGG_ADVERTISE)(advertise)  # type: ignore[attr-defined]
    for action in (keys.SECAGG_SHARE, keys.SECAGG_MASK, keys.SECAGG_UNMASK):
        client_app.train(action)(answer_stage)  # type: ignore[attr-defined]
