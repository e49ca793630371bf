"""The server's side of a secure-aggregation round: the one driver of its message stages.

Stage 1 (``train.secagg_advertise``) sends the global weights; hospitals train, privatize,
charge their ledgers, encode their updates and advertise fresh keys. Then share-keys,
masked-input and unmask run as ``SecAggServer`` asks. The server learns only the sum of the
survivors' encoded updates, decodes the mean and applies its optimizer. Validation that needs
a plaintext update (a norm bound) cannot run here: each hospital's own code enforces its clip.
"""

import logging
from dataclasses import dataclass

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from common import record_keys as keys
from common.errors import SecAggProtocolError
from common.secagg.protocol import Key, SecAggServer, Stage
from common.secagg.update_vector import decode_mean
from common.types import NDArrays
from server.strategy import FedcareStrategy, HospitalUpdate

logger = logging.getLogger(__name__)

STAGE_ACTIONS = {
    Stage.SHARE_KEYS: keys.SECAGG_SHARE,
    Stage.MASKED_INPUT: keys.SECAGG_MASK,
    Stage.UNMASK: keys.SECAGG_UNMASK,
}


@dataclass(frozen=True, slots=True)
class SecureRoundResult:
    """What a secure round produced: new weights, or why the round aborted."""

    weights: NDArrays | None
    participants: list[HospitalUpdate]
    survivors: int
    aborted: str = ""


def _message(content: RecordDict, node_id: int, action: str) -> Message:
    return Message(content=content, dst_node_id=node_id, message_type=f"train.{action}")


def run_secure_round(
    grid: Grid, strategy: FedcareStrategy, server_round: int, weights: NDArrays,
    settings: ConfigRecord, *, threshold: int, clip_bound: float, scale: float, timeout: float,
) -> SecureRoundResult:
    """Run one round under secure aggregation and return the new global weights (or why not)."""
    strategy.global_weights = weights
    settings[keys.SERVER_ROUND] = server_round
    advertise = ConfigRecord({Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: server_round})
    first = RecordDict({keys.ARRAYS: ArrayRecord(weights), keys.CONFIG: settings,
                        keys.SECAGG: advertise})
    replies = list(grid.send_and_receive(
        [_message(first, node, keys.SECAGG_ADVERTISE) for node in strategy.select_nodes(grid)],
        timeout=timeout))
    participants = strategy.record_train_replies(server_round, replies)
    node_of = {int(m.content[keys.HOSPITAL][keys.HOSPITAL_INDEX]): m.metadata.src_node_id
               for m in replies if not m.has_error() and keys.SECAGG in m.content}
    index_of = {node: index for index, node in node_of.items()}
    try:
        server = SecAggServer(round_number=server_round, node_ids=sorted(node_of),
                              threshold=threshold,
                              vector_length=sum(int(w.size) for w in weights) + 1)
        for msg in replies:
            if not msg.has_error() and keys.SECAGG in msg.content:
                _receive(server, index_of[msg.metadata.src_node_id], msg)
        server.close_stage()
        result = None
        while result is None:
            action = STAGE_ACTIONS[server.stage]
            messages = [_message(RecordDict({keys.SECAGG: ConfigRecord(request)}), node_of[index],
                                 action) for index, request in server.requests().items()]
            for msg in grid.send_and_receive(messages, timeout=timeout):
                if msg.has_error():
                    logger.warning("round %d %s: hospital %s failed: %s", server_round, action,
                                   index_of.get(msg.metadata.src_node_id), msg.error.reason)
                else:
                    _receive(server, index_of[msg.metadata.src_node_id], msg)
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
                             len(result.survivor_ids))


def _receive(server: SecAggServer, index: int, msg: Message) -> None:
    """Record one reply; a malformed or out-of-stage one counts as a dropout, with its reason."""
    try:
        server.receive(index, dict(msg.content[keys.SECAGG]))
    except SecAggProtocolError as error:
        logger.warning("secure aggregation: reply of hospital %d rejected: %s", index, error)
