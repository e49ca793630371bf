"""A round without secure aggregation: one train exchange with every hospital.

The server sees each (clipped, and under DP noised) update; every reply is screened
(``server.screening``) before anything of it is used, so a malformed, replayed or impostor
reply is refused and the round goes on with the others. With ``evaluate_received`` the train
message also asks each hospital to evaluate the weights it carries (the previous round's
model) before training: the statistics come back with the update (or the decline), so a steady
round is one exchange; the driver files them under the previous round.
"""

import logging

from flwr.app import MessageType

from common.types import NDArrays
from common.wire.records import pack_request
from common.wire.replies import DeclinedReply, TrainReply
from common.wire.settings import RoundSettings
from server.round_channel import RoundChannel
from server.round_outcome import RoundOutcome

logger = logging.getLogger(__name__)


def run_plain_round(channel: RoundChannel, settings: RoundSettings,
                    weights: NDArrays) -> RoundOutcome:
    """Train and aggregate one round; return what it produced (and the folded evaluation)."""
    strategy = channel.strategy
    nodes = strategy.select_nodes(channel.grid)
    messages = strategy.messages(pack_request(settings, weights), nodes, MessageType.TRAIN)
    screened, missing = channel.exchange(messages, (TrainReply, DeclinedReply))
    if missing:
        logger.warning("round %d: %d hospital(s) sent nothing within %.0f s",
                       settings.server_round, missing, channel.timeout)
    updates = []
    for reply in screened.of_kind(TrainReply).values():
        if not isinstance(reply, TrainReply) or reply.update is None:
            continue  # cannot happen: the manifest makes plain train replies carry an update
        count = reply.num_examples if reply.num_examples is not None else 1
        updates.append((reply.hospital.index, reply.update, float(count)))
    new_weights = strategy.aggregate(weights, updates) if updates else None
    folded = settings.evaluate_received
    return RoundOutcome(
        server_round=settings.server_round, weights=new_weights, participants=len(updates),
        declined=screened.declined, rejected=screened.rejected, failed=screened.failed,
        missing=missing, privacy=screened.privacy,
        evaluation=screened.statistics if folded else {},
        evaluated_round=settings.server_round - 1 if folded else None)
