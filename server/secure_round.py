"""The server's side of a secure-aggregation round: the one driver of its message stages.

The first message (``train.secagg_advertise``) sends the global weights; hospitals train,
privatize, charge their ledgers, encode their updates and answer the first protocol stage.
Then the stages run as ``SecAggServer`` asks. Keys are fresh every round, but the next round's
advertise-keys rides on this round's unmask message, and the previous round's evaluation on this
round's first message, so a steady round costs three message exchanges (train + share-keys +
evaluate the previous weights, masked-input, unmask + next keys) instead of five.
The server learns only the sum of the survivors' encoded updates, decodes the mean and applies
its optimizer. Every reply is screened (``server.screening``) and the protocol's ids are the
hospitals' bound identities, never what a reply claims. Validation that needs a plaintext update
(a norm bound) cannot run here: each hospital's own code enforces its clip.
"""

import logging
from dataclasses import dataclass, field, replace

from flwr.serverapp import Grid

from common.errors import SecAggProtocolError
from common.secagg.protocol import Key, PublicKeys, SecAggServer, Stage
from common.secagg.update_vector import decode_mean
from common.types import NDArrays
from common.wire.records import pack_request
from common.wire.replies import DeclinedReply, SecAggStageReply, TrainReply
from common.wire.settings import RoundSettings
from server.identity import IdentityBook
from server.round_outcome import RoundOutcome
from server.screening import ReplyRules, Screened, screen_replies
from server.strategy import FedcareStrategy

logger = logging.getLogger(__name__)

ADVERTISE_ACTION = "train.secagg_advertise"
STAGE_ACTIONS = {
    Stage.SHARE_KEYS: "train.secagg_share",
    Stage.MASKED_INPUT: "train.secagg_mask",
    Stage.UNMASK: "train.secagg_unmask",
}


@dataclass(frozen=True, slots=True)
class AdvertisedKeys:
    """Fresh public keys hospitals advertised for the next round, and their node ids."""

    round_number: int
    keys: dict[int, PublicKeys] = field(default_factory=dict)  # hospital index -> keys
    nodes: dict[int, int] = field(default_factory=dict)  # hospital index -> node id


@dataclass(frozen=True, slots=True)
class SecureRound:
    """A secure round's outcome and the keys advertised for the next round."""

    outcome: RoundOutcome
    next_keys: AdvertisedKeys | None = None


def _first_messages(
    grid: Grid, strategy: FedcareStrategy, settings: RoundSettings, weights: NDArrays,
    advertised: AdvertisedKeys | None, threshold: int,
) -> tuple[list, SecAggServer | None]:
    """Train messages with the round's first stage: share-keys if every node's keys are known."""
    nodes = strategy.select_nodes(grid)
    if (advertised is not None and advertised.round_number == settings.server_round
            and sorted(advertised.nodes.values()) == nodes):
        server = SecAggServer(round_number=settings.server_round, node_ids=sorted(advertised.keys),
                              threshold=threshold, known_public_keys=advertised.keys,
                              vector_length=sum(int(w.size) for w in weights) + 1)
        messages = [
            strategy.messages(pack_request(settings, weights, secagg=request),
                              [advertised.nodes[index]], ADVERTISE_ACTION)[0]
            for index, request in server.requests().items()
        ]
        return messages, server
    advertise = {Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: settings.server_round}
    return strategy.messages(pack_request(settings, weights, secagg=advertise), nodes,
                             ADVERTISE_ACTION), None


def run_secure_round(
    grid: Grid, strategy: FedcareStrategy, settings: RoundSettings, weights: NDArrays,
    rules: ReplyRules, book: IdentityBook, *, timeout: float,
    advertised: AdvertisedKeys | None = None, last_round: bool = False,
) -> SecureRound:
    """Run one round under secure aggregation and return its outcome (and the next keys).

    `advertised` holds the keys hospitals advertised for this round during the previous one;
    unless this is the `last_round`, this round's unmask asks for the next round's keys. From
    round 2 on, the first message also evaluates the weights it carries (the previous round's
    result): the outcome's evaluation is of round ``server_round - 1``.
    """
    server_round = settings.server_round
    settings = replace(settings, evaluate_received=server_round > 1)
    threshold = settings.secagg_threshold
    messages, server = _first_messages(grid, strategy, settings, weights, advertised, threshold)
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    first = screen_replies(replies, rules, book, (TrainReply, DeclinedReply))
    outcome = RoundOutcome(
        server_round=server_round, weights=None, participants=0, declined=first.declined,
        rejected=dict(first.rejected), failed=list(first.failed),
        missing=len(messages) - len(replies), privacy=first.privacy,
        evaluation=first.statistics, evaluated_round=server_round - 1 if server_round > 1 else None)
    contributors = {reply.hospital.index: first.nodes[name]
                    for name, reply in first.of_kind(TrainReply).items()}
    next_keys = AdvertisedKeys(server_round + 1)
    try:
        if server is None:
            server = SecAggServer(round_number=server_round, threshold=threshold,
                                  node_ids=sorted(contributors),
                                  vector_length=sum(int(w.size) for w in weights) + 1)
        for name, reply in first.of_kind(TrainReply).items():
            if isinstance(reply, TrainReply) and reply.secagg is not None:
                _receive(server, reply.hospital.index, reply.secagg, outcome)
        server.close_stage()
        result = None
        while result is None:
            stage = server.stage
            next_request = ({Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: server_round + 1}
                            if stage == Stage.UNMASK and not last_round else None)
            messages = [strategy.messages(pack_request(None, None, secagg=request,
                                                       secagg_next=next_request),
                                          [contributors[index]], STAGE_ACTIONS[stage])[0]
                        for index, request in server.requests().items()]
            stage_replies = screen_replies(grid.send_and_receive(messages, timeout=timeout),
                                           rules, book, (SecAggStageReply,))
            _merge(outcome, stage_replies)
            for reply in stage_replies.of_kind(SecAggStageReply).values():
                if not isinstance(reply, SecAggStageReply):
                    continue
                index = reply.hospital.index
                _receive(server, index, reply.secagg, outcome)
                if reply.secagg_next is not None:
                    _keep_next_keys(next_keys, index, contributors[index], reply.secagg_next)
            result = server.close_stage()
        mean = decode_mean(result.total, num_summands=len(result.survivor_ids),
                           clip_bound=settings.secagg_clip_bound, scale=settings.secagg_scale,
                           like=weights)
    except (SecAggProtocolError, ValueError) as error:
        logger.warning("round %d: secure aggregation aborted: %s", server_round, error)
        return SecureRound(replace(outcome, aborted=str(error)))
    if result.dropped_ids:
        logger.warning("round %d: hospitals %s dropped after sharing keys; their pairwise masks "
                       "were removed", server_round, list(result.dropped_ids))
    return SecureRound(replace(outcome, weights=strategy.optimizer.step(weights, mean),
                               participants=len(result.survivor_ids)), next_keys)


def _merge(outcome: RoundOutcome, screened: Screened) -> None:
    """Add a later stage's refusals and failures to the round's (the outcome is being built)."""
    outcome.rejected.update(screened.rejected)
    outcome.failed.extend(screened.failed)


def _keep_next_keys(next_keys: AdvertisedKeys, index: int, node: int, reply: dict) -> None:
    """Record a hospital's fresh public keys for the next round (malformed ones are skipped)."""
    mask, encryption = reply.get(Key.MASK_PUBLIC_KEY), reply.get(Key.ENCRYPTION_PUBLIC_KEY)
    if isinstance(mask, bytes) and isinstance(encryption, bytes) \
            and len(mask) == 32 and len(encryption) == 32:
        next_keys.keys[index] = PublicKeys(mask=mask, encryption=encryption)
        next_keys.nodes[index] = node


def _receive(server: SecAggServer, index: int, payload: dict, outcome: RoundOutcome) -> None:
    """Record one reply; a malformed or out-of-stage one counts as a dropout, with its reason."""
    try:
        server.receive(index, payload)
    except SecAggProtocolError as error:
        outcome.rejected[f"hospital {index}"] = str(error)
        logger.warning("secure aggregation: reply of hospital %d rejected: %s", index, error)
