"""A round without secure aggregation: train on every hospital, then evaluate the new model.

The server sees each (clipped, and under DP noised) update; every reply is screened
(``server.screening``) before anything of it is used, so a malformed, replayed or impostor
reply is refused and the round goes on with the others.
"""

import logging
from dataclasses import replace

from flwr.app import MessageType
from flwr.serverapp import Grid

from common.types import NDArrays
from common.wire.records import pack_request
from common.wire.replies import DeclinedReply, EvaluateReply, TrainReply
from common.wire.settings import RoundSettings
from server.identity import IdentityBook
from server.round_outcome import RoundOutcome
from server.screening import ReplyRules, screen_replies
from server.strategy import FedcareStrategy

logger = logging.getLogger(__name__)


def run_plain_round(
    grid: Grid, strategy: FedcareStrategy, settings: RoundSettings, weights: NDArrays,
    rules: ReplyRules, book: IdentityBook, *, timeout: float, evaluate: bool,
) -> RoundOutcome:
    """Train, aggregate and (if `evaluate`) evaluate one round; return what it produced."""
    nodes = strategy.select_nodes(grid)
    messages = strategy.messages(pack_request(settings, weights), nodes, MessageType.TRAIN)
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    missing = len(messages) - len(replies)
    if missing:
        logger.warning("round %d: %d hospital(s) sent nothing within %.0f s",
                       settings.server_round, missing, timeout)
    screened = screen_replies(replies, rules, book, (TrainReply, DeclinedReply))
    updates = []
    for name, reply in screened.of_kind(TrainReply).items():
        if not isinstance(reply, TrainReply) or reply.update is None:
            continue  # cannot happen: the manifest makes plain train replies carry an update
        count = reply.num_examples if reply.num_examples is not None else 1
        updates.append((reply.hospital.index, reply.update, float(count)))
    new_weights = strategy.aggregate(weights, updates) if updates else None
    outcome = RoundOutcome(
        server_round=settings.server_round, weights=new_weights, participants=len(updates),
        declined=screened.declined, rejected=screened.rejected, failed=screened.failed,
        missing=missing, privacy=screened.privacy)
    if not evaluate or new_weights is None:
        return outcome
    messages = strategy.messages(pack_request(settings, new_weights), nodes,
                                 MessageType.EVALUATE)
    evaluated = screen_replies(grid.send_and_receive(messages, timeout=timeout), rules, book,
                               (EvaluateReply, DeclinedReply))
    return replace(outcome, evaluation=evaluated.statistics,
                   evaluated_round=settings.server_round,
                   rejected={**outcome.rejected, **evaluated.rejected},
                   failed=outcome.failed + evaluated.failed)
