"""The server's side of a secure-aggregation round: the one driver of its message stages.

The first message (``train.secagg_advertise``) sends the global weights; hospitals train,
privatize, charge their ledgers, encode their updates and answer the first protocol stage.
Then the stages run as ``SecAggServer`` asks. Keys are fresh every round, but the next round's
advertise-keys rides on this round's unmask message, and the previous round's evaluation on this
round's first message, so a steady round costs three message exchanges (train + share-keys +
evaluate the previous weights, masked-input, unmask + next keys) instead of five.
The server learns only the sum of the survivors' encoded updates, decodes the mean and applies
its optimizer. Validation that needs a plaintext update (a norm bound) cannot run here: each
hospital's own code enforces its clip.
"""

import logging
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from common import record_keys as keys
from common.errors import SecAggProtocolError
from common.secagg.protocol import Key, PublicKeys, SecAggServer, Stage
from common.secagg.update_vector import decode_mean
from common.types import NDArrays
from server.strategy import FedcareStrategy, HospitalUpdate, evaluation_by_hospital

logger = logging.getLogger(__name__)

STAGE_ACTIONS = {
    Stage.SHARE_KEYS: keys.SECAGG_SHARE,
    Stage.MASKED_INPUT: keys.SECAGG_MASK,
    Stage.UNMASK: keys.SECAGG_UNMASK,
}


@dataclass(frozen=True, slots=True)
class AdvertisedKeys:
    """Fresh public keys hospitals advertised for the next round, and their node ids."""

    round_number: int
    keys: dict[int, PublicKeys] = field(default_factory=dict)  # hospital index -> keys
    nodes: dict[int, int] = field(default_factory=dict)  # hospital index -> node id


@dataclass(frozen=True, slots=True)
class SecureRoundResult:
    """What a secure round produced: new weights (or why the round aborted), next keys."""

    weights: NDArrays | None
    participants: list[HospitalUpdate]
    survivors: int
    aborted: str = ""
    next_keys: AdvertisedKeys | None = None


def _message(content: RecordDict, node_id: int, action: str) -> Message:
    return Message(content=content, dst_node_id=node_id, message_type=f"train.{action}")


def _first_messages(
    grid: Grid, strategy: FedcareStrategy, server_round: int, weights: NDArrays,
    settings: ConfigRecord, advertised: AdvertisedKeys | None, threshold: int,
) -> tuple[list[Message], SecAggServer | None]:
    """Train messages with the round's first stage: share-keys if every node's keys are known."""
    nodes = strategy.select_nodes(grid)
    arrays = ArrayRecord(weights)
    if (advertised is not None and advertised.round_number == server_round
            and sorted(advertised.nodes.values()) == nodes):
        server = SecAggServer(round_number=server_round, node_ids=sorted(advertised.keys),
                              threshold=threshold, known_public_keys=advertised.keys,
                              vector_length=sum(int(w.size) for w in weights) + 1)
        messages = [
            _message(RecordDict({keys.ARRAYS: arrays, keys.CONFIG: settings,
                                 keys.SECAGG: ConfigRecord(request)}),
                     advertised.nodes[index], keys.SECAGG_ADVERTISE)
            for index, request in server.requests().items()
        ]
        return messages, server
    advertise = ConfigRecord({Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: server_round})
    first = RecordDict({keys.ARRAYS: arrays, keys.CONFIG: settings, keys.SECAGG: advertise})
    return [_message(first, node, keys.SECAGG_ADVERTISE) for node in nodes], None


def run_secure_round(
    grid: Grid, strategy: FedcareStrategy, server_round: int, weights: NDArrays,
    settings: ConfigRecord, *, threshold: int, clip_bound: float, scale: float, timeout: float,
    advertised: AdvertisedKeys | None = None, last_round: bool = False,
) -> SecureRoundResult:
    """Run one round under secure aggregation and return the new global weights (or why not).

    `advertised` holds the keys hospitals advertised for this round during the previous one;
    unless this is the `last_round`, this round's unmask asks for the next round's keys.
    """
    strategy.global_weights = weights
    settings[keys.SERVER_ROUND] = server_round
    # From round 2 on, the first message also evaluates the weights it carries (the previous
    # round's result); the driver files that evaluation under the previous round.
    settings[keys.EVALUATE_RECEIVED] = server_round > 1
    messages, server = _first_messages(grid, strategy, server_round, weights, settings,
                                       advertised, threshold)
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    strategy.received_evaluation = evaluation_by_hospital(replies)
    participants = strategy.record_train_replies(server_round, replies)
    node_of = {int(m.content[keys.HOSPITAL][keys.HOSPITAL_INDEX]): m.metadata.src_node_id
               for m in replies if not m.has_error()}
    index_of = {node: index for index, node in node_of.items()}
    next_keys = AdvertisedKeys(server_round + 1)
    try:
        if server is None:
            server = SecAggServer(round_number=server_round, threshold=threshold,
                                  node_ids=sorted(i for i, n in node_of.items()
                                                  if any(m.metadata.src_node_id == n
                                                         and keys.SECAGG in m.content
                                                         for m in replies)),
                                  vector_length=sum(int(w.size) for w in weights) + 1)
        for msg in replies:
            if not msg.has_error() and keys.SECAGG in msg.content:
                _receive(server, index_of[msg.metadata.src_node_id], msg)
        server.close_stage()
        result = None
        while result is None:
            stage = server.stage
            action = STAGE_ACTIONS[stage]
            messages = []
            for index, request in server.requests().items():
                content = RecordDict({keys.SECAGG: ConfigRecord(request)})
                if stage == Stage.UNMASK and not last_round:
                    content[keys.SECAGG_NEXT] = ConfigRecord(
                        {Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: server_round + 1})
                messages.append(_message(content, node_of[index], action))
            for msg in grid.send_and_receive(messages, timeout=timeout):
                index = index_of.get(msg.metadata.src_node_id, -1)
                if msg.has_error():
                    logger.warning("round %d %s: hospital %s failed: %s", server_round, action,
                                   index, msg.error.reason)
                    continue
                _receive(server, index, msg)
                if keys.SECAGG_NEXT in msg.content:
                    _keep_next_keys(next_keys, index, msg)
            result = server.close_stage()
    except (SecAggProtocolError, ValueError) as error:
        logger.warning("round %d: secure aggregation aborted: %s", server_round, error)
        return SecureRoundResult(None, participants, 0, aborted=str(error))
    mean = decode_mean(result.total, num_summands=len(result.survivor_ids), clip_bound=clip_bound,
                       scale=scale, like=weights)
    if result.dropped_ids:
        logger.warning("round %d: hospitals %s dropped after sharing keys; their pairwise masks "
                       "were removed", server_round, list(result.dropped_ids))
    return SecureRoundResult(strategy.optimizer.step(weights, mean), participants,
                             len(result.survivor_ids), next_keys=next_keys)


def _keep_next_keys(next_keys: AdvertisedKeys, index: int, msg: Message) -> None:
    """Record a hospital's fresh public keys for the next round (malformed ones are skipped)."""
    reply = msg.content[keys.SECAGG_NEXT]
    try:
        mask, encryption = bytes(reply[Key.MASK_PUBLIC_KEY]), bytes(reply[Key.ENCRYPTION_PUBLIC_KEY])
    except (KeyError, TypeError):
        return
    if len(mask) == 32 and len(encryption) == 32:
        next_keys.keys[index] = PublicKeys(mask=mask, encryption=encryption)
        next_keys.nodes[index] = msg.metadata.src_node_id


def _receive(server: SecAggServer, index: int, msg: Message) -> None:
    """Record one reply; a malformed or out-of-stage one counts as a dropout, with its reason."""
    try:
        server.receive(index, dict(msg.content[keys.SECAGG]))
    except SecAggProtocolError as error:
        logger.warning("secure aggregation: reply of hospital %d rejected: %s", index, error)
