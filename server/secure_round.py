"""The server's side of a secure-aggregation round: the one driver of its message stages.

Bonawitz et al. (CCS 2017), the version secure against an active server (Section 4, with the
consistency check): hospitals are roster names, every key is signed by its hospital's roster
key over the run, the round and the round's settings, and no share is revealed before t
hospitals signed the same survivor set. The first message (``train.secagg_advertise``) sends
the global weights; hospitals train, privatize, charge their ledgers, encode their updates (no
weight coordinate) and answer the round's first stage. Keys are fresh every round, but the
next round's advertise-keys rides on this round's unmask message, and the previous round's
evaluation on this round's first message, so a steady round costs four exchanges (train +
share-keys + evaluate the previous weights, masked-input, consistency-check, unmask + next
keys). A hospital whose messages fail authentication or reconstruction is excluded by the
protocol and the round goes on while t remain. Every reply is screened
(``server.screening``); the protocol's names are the hospitals' bound identities, never what a
reply claims. The server learns only the survivors' sum: each hospital's own code enforces its
clip, and nothing proves it on a masked input, so the server checks the decoded sum of n inputs
per coordinate (n x range) and in L2 norm (n x (C + noise bound + rounding),
``common.secagg.round_settings.sum_norm_bound``): the mean then moves by at most
C + noise bound + rounding, and one hospital moves it by at most twice that
(docs/reliability-influence.md). A round whose sum cannot be rebuilt, decoded or fails that
check is aborted: nothing of it is averaged in, no hospital is blamed (the sum does not tell
whose input was at fault), the hospitals' charges for it stand, and the driver moves on to the
next round number with fresh keys (it never re-runs a round over a subset: two sums over
overlapping sets would give their difference).
"""

import logging
from dataclasses import dataclass, field, replace

from flwr.app import Message

from common.errors import SecAggProtocolError
from common.secagg.protocol import (
    Advertisement,
    Key,
    Roster,
    SecAggResult,
    SecAggServer,
    Stage,
    parse_advertisement,
)
from common.secagg.round_settings import (
    encoding_range,
    encoding_scale,
    signed_settings,
    sum_norm_bound,
)
from common.secagg.update_vector import decode_unweighted_mean
from common.types import NDArrays
from common.wire.records import pack_request
from common.wire.replies import DeclinedReply, SecAggStageReply, TrainReply
from common.wire.settings import RoundSettings
from server.round_channel import RoundChannel
from server.round_outcome import RoundOutcome
from server.screening import Screened

logger = logging.getLogger(__name__)

ADVERTISE_ACTION = "train.secagg_advertise"
STAGE_ACTIONS = {
    Stage.SHARE_KEYS: "train.secagg_share",
    Stage.MASKED_INPUT: "train.secagg_mask",
    Stage.CONSISTENCY_CHECK: "train.secagg_check",
    Stage.UNMASK: "train.secagg_unmask",
}


@dataclass(frozen=True, slots=True)
class AdvertisedKeys:
    """Signed keys hospitals advertised for the next round, and their nodes (by roster name)."""

    round_number: int
    keys: dict[str, Advertisement] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SecureRound:
    """A secure round's outcome and the keys advertised for the next round."""

    outcome: RoundOutcome
    next_keys: AdvertisedKeys | None = None


def run_secure_round(channel: RoundChannel, settings: RoundSettings, weights: NDArrays, *,
                     roster: Roster, advertised: AdvertisedKeys | None = None,
                     last_round: bool = False) -> SecureRound:
    """Run one round under secure aggregation and return its outcome (and the next keys).

    `advertised` holds the keys hospitals advertised for this round during the previous one;
    unless this is the `last_round`, this round's unmask asks for the next round's keys. From
    round 2 on, the first message also evaluates the weights it carries (the previous round's
    result): the outcome's evaluation is of round ``server_round - 1``.
    """
    server_round = settings.server_round
    plan = _Plan(channel, replace(settings, evaluate_received=settings.evaluate_received
                                  and server_round > 1), weights,
                 roster, last_round)
    server, messages = _first_messages(plan, advertised)
    first, missing = channel.exchange(messages, (TrainReply, DeclinedReply))
    contributors = {name: first.nodes[name] for name in first.of_kind(TrainReply)}
    outcome = RoundOutcome(
        server_round=server_round, weights=None, participants=0, declined=first.declined,
        rejected=dict(first.rejected), failed=list(first.failed), missing=missing,
        privacy=first.privacy, evaluation=first.statistics, contributors=len(contributors),
        evaluated_round=server_round - 1 if server_round > 1 else None)
    next_keys = AdvertisedKeys(server_round + 1)
    result: SecAggResult | None = None
    try:
        if server is None:
            server = plan.server(sorted(contributors), None)
        for name, reply in first.of_kind(TrainReply).items():
            if isinstance(reply, TrainReply) and reply.secagg is not None:
                _receive(server, name, reply.secagg, outcome)
        result = _run_stages(plan, server, contributors, outcome, next_keys)
        mean = _decoded_mean(plan, server, result, outcome)
    except (SecAggProtocolError, ValueError) as error:
        logger.warning("round %d: secure aggregation aborted (nothing of it is averaged in; "
                       "the run goes on with round %d): %s", server_round, server_round + 1,
                       error)
        # Unmasked but not decodable: the next round's keys, advertised with the unmask
        # replies, are as good as fresh ones (signed for that round, never used).
        return SecureRound(replace(outcome, aborted=str(error)),
                           next_keys if result is not None else None)
    if result.dropped:
        logger.warning("round %d: hospitals %s dropped after sharing keys; their masks were "
                       "removed", server_round, list(result.dropped))
    return SecureRound(replace(outcome, weights=channel.strategy.optimizer.step(weights, mean),
                               participants=len(result.survivors)), next_keys)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What every stage of one secure round uses: the channel, the round's settings (with
    ``evaluate_received``), the global weights, the pinned roster, and whether it is the last
    round (no next keys asked for).
    """

    channel: RoundChannel
    settings: RoundSettings
    weights: NDArrays
    roster: Roster
    last_round: bool

    @property
    def num_parameters(self) -> int:
        """d: the length of the encoded update vector."""
        return sum(int(w.size) for w in self.weights)

    def advertise_request(self, round_number: int) -> dict[str, object]:
        """The advertise-keys stage request for `round_number` (this round's or the next)."""
        settings = self.settings
        return {Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: round_number,
                Key.RUN_ID: settings.run_id, Key.ROSTER_DIGEST: self.roster.digest,
                Key.SETTINGS_DIGEST: signed_settings(settings, self.num_parameters).digest()}

    def server(self, hospitals: list[str],
               advertisements: dict[str, Advertisement] | None) -> SecAggServer:
        """The protocol's server side for `hospitals` (with keys already advertised, if any)."""
        return _server(self.settings, self.roster, self.num_parameters, hospitals,
                       advertisements)


def _first_messages(plan: _Plan, advertised: AdvertisedKeys | None
                    ) -> tuple[SecAggServer | None, list[Message]]:
    """The round's first messages (train + this round's first stage), and the protocol's
    server when the keys advertised last round can start it (else None: fresh keys asked for).
    """
    settings, weights, strategy = plan.settings, plan.weights, plan.channel.strategy
    nodes = strategy.select_nodes(plan.channel.grid)
    known = (advertised if advertised is not None
             and advertised.round_number == settings.server_round
             and sorted(advertised.nodes.values()) == nodes else None)
    if known is not None:
        try:
            server = plan.server(sorted(known.nodes), known.keys)
        except ValueError as error:
            logger.warning("round %d: the advertised keys cannot start the round (%s); asking "
                           "for fresh ones", settings.server_round, error)
        else:
            requests = server.requests()
            return server, [strategy.messages(
                pack_request(settings, weights, secagg=requests[name]), [known.nodes[name]],
                ADVERTISE_ACTION)[0] for name in requests]
    first_request = plan.advertise_request(settings.server_round)
    return None, strategy.messages(pack_request(settings, weights, secagg=first_request),
                                   nodes, ADVERTISE_ACTION)


def _run_stages(plan: _Plan, server: SecAggServer, contributors: dict[str, int],
                outcome: RoundOutcome, next_keys: AdvertisedKeys) -> SecAggResult:
    """Drive the protocol's later stages (share keys to unmask) with the contributors until
    the server closes the round; the unmask stage also asks for the next round's keys.

    Raises
    ------
    SecAggProtocolError
        If the round cannot complete (e.g. fewer than t hospitals left).
    """
    channel = plan.channel
    result = server.close_stage()
    while result is None:
        stage = server.stage
        next_request = (plan.advertise_request(plan.settings.server_round + 1)
                        if stage == Stage.UNMASK and not plan.last_round else None)
        messages = [channel.strategy.messages(
            pack_request(None, None, secagg=request, secagg_next=next_request),
            [contributors[name]], STAGE_ACTIONS[str(stage)])[0]
            for name, request in server.requests().items() if name in contributors]
        stage_replies, _ = channel.exchange(messages, (SecAggStageReply,))
        _merge(outcome, stage_replies)
        for name, reply in stage_replies.of_kind(SecAggStageReply).items():
            if not isinstance(reply, SecAggStageReply):
                continue
            _receive(server, name, reply.secagg, outcome)
            if reply.secagg_next is not None:
                _keep_next_keys(next_keys, name, contributors[name], reply.secagg_next)
        result = server.close_stage()
    return result


def _decoded_mean(plan: _Plan, server: SecAggServer, result: SecAggResult,
                  outcome: RoundOutcome) -> NDArrays:
    """The survivors' mean update, decoded from their sum and checked against its bounds.

    Raises
    ------
    ValueError
        If the sum cannot be decoded or is beyond its norm bound.
    """
    settings, d = plan.settings, plan.num_parameters
    for event in server.events:
        logger.warning("round %d: secure aggregation: %s", settings.server_round, event)
    for name, reason in result.excluded.items():
        outcome.rejected[name] = f"excluded from secure aggregation: {reason}"
    n = len(result.survivors)
    return decode_unweighted_mean(
        result.total, num_summands=n, coordinate_range=encoding_range(settings, d),
        scale=encoding_scale(settings, d), like=plan.weights,
        max_sum_norm=sum_norm_bound(settings, d, n))


def _server(settings: RoundSettings, roster: Roster, d: int, hospitals: list[str],
            advertisements: dict[str, Advertisement] | None) -> SecAggServer:
    return SecAggServer(run_id=settings.run_id, round_number=settings.server_round,
                        roster=roster, settings=signed_settings(settings, d),
                        hospitals=hospitals, vector_length=d, advertisements=advertisements)


def _merge(outcome: RoundOutcome, screened: Screened) -> None:
    """Add a later stage's refusals and failures to the round's (the outcome is being built)."""
    outcome.rejected.update(screened.rejected)
    outcome.failed.extend(screened.failed)


def _keep_next_keys(next_keys: AdvertisedKeys, name: str, node: int,
                    reply: dict[str, object]) -> None:
    """Record a hospital's signed keys for the next round (malformed ones are skipped)."""
    try:
        advertisement = parse_advertisement(reply)
    except SecAggProtocolError as error:
        logger.warning("next round's keys of %s skipped: %s", name, error)
        return
    if advertisement.name == name:
        next_keys.keys[name] = advertisement
        next_keys.nodes[name] = node


def _receive(server: SecAggServer, name: str, payload: dict[str, object],
             outcome: RoundOutcome) -> None:
    """Record one reply; a malformed or out-of-stage one counts as a dropout, with its reason."""
    try:
        server.receive(name, payload)
    except SecAggProtocolError as error:
        outcome.rejected[name] = str(error)
        logger.warning("secure aggregation: reply of %s rejected: %s", name, error)
