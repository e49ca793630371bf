"""Every reply a hospital sends passes here before anything of it is used (no reply raises).

A reply is unpacked by the wire format, checked against the request it must answer (run id and
round: a replayed reply from another round is refused), against the manifest of the run's mode,
against the identity bound to the node that sent it (or, at a node's first contact, the proof
of the identity it claims: ``server.identity``), and, for a visible update, against bounds
that come from the run's own settings (shapes and dtypes of the global weights, finiteness, the
norm bound, the example-count limit), never from a number the reply states. Each refusal is
logged with the node or hospital and the reason and counted in the round's ``rejected``.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Message

from common.types import NDArrays
from common.wire.fields import WireFormatError
from common.wire.modes import DpMode, NoiseMode
from common.wire.records import unpack_reply
from common.wire.replies import (
    DeclinedReply,
    EvaluateReply,
    ExplainReply,
    ManifestViolation,
    PrivacyReport,
    Reply,
    RoundRef,
    SecAggStageReply,
    TrainReply,
    check_manifest,
)
from common.wire.statistics import StatisticsSpec
from server.identity import IdentityBook
from server.validation import update_problem

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplyRules:
    """What the run allows in one exchange's replies (all of it from the run's own settings)."""

    run_id: str
    server_round: int
    dp_mode: DpMode
    noise_mode: NoiseMode
    secure: bool
    statistics: StatisticsSpec
    global_weights: NDArrays
    norm_bound: float | None = None  # visible updates: the L2 bound, None when unbounded
    max_examples: int = 1_000_000

    @property
    def answers(self) -> RoundRef:
        """The request every reply of this exchange must answer."""
        return RoundRef(self.run_id, self.server_round)


@dataclass
class Screened:
    """One exchange's replies, sorted out (keys are hospital names, or ``node <id>``)."""

    replies: dict[str, Reply] = field(default_factory=dict)  # accepted, by hospital
    nodes: dict[str, int] = field(default_factory=dict)  # accepted hospital -> its node id
    declined: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    privacy: dict[str, PrivacyReport] = field(default_factory=dict)
    statistics: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def of_kind(self, kind: type) -> dict[str, Reply]:
        """The accepted replies of one kind, in hospital-name order."""
        return {name: reply for name, reply in sorted(self.replies.items())
                if isinstance(reply, kind)}


def screen_replies(messages: Iterable[Message], rules: ReplyRules, book: IdentityBook,
                   expected: tuple[type, ...]) -> Screened:
    """Sort one exchange's reply messages into accepted, declined, rejected and failed.

    `expected` lists the reply kinds this exchange asked for (e.g. TrainReply, DeclinedReply).
    """
    out = Screened()
    unpacked: list[tuple[int, Reply]] = []
    for msg in messages:
        node = int(msg.metadata.src_node_id)
        if msg.has_error():
            out.failed.append(f"{book.name_of(node)}: {msg.error.reason}")
            logger.warning("round %d: %s failed: %s", rules.server_round, book.name_of(node),
                           msg.error.reason)
            continue
        try:
            reply = unpack_reply(msg.content, statistics=rules.statistics)
            _check_reply(reply, rules, expected)
        except (WireFormatError, ManifestViolation) as error:
            _reject(out, rules, book.name_of(node), f"malformed reply: {error}")
            continue
        unpacked.append((node, reply))
    accepted, refused = book.resolve(((node, reply.hospital) for node, reply in unpacked),
                                     rules.answers)
    declines = {node: reply.reason for node, reply in unpacked
                if isinstance(reply, DeclinedReply)}
    for node, reason in refused.items():
        # A refused decline keeps its reason (for the report), filed under its node only.
        said = f"; its reply declined: {declines[node]}" if node in declines else ""
        _reject(out, rules, f"node {node}", f"identity refused: {reason}{said}")
    for node, reply in unpacked:
        if node not in accepted:
            continue
        name = accepted[node].name
        problem = _content_problem(reply, rules, book, name)
        if problem:
            _reject(out, rules, name, problem)
            continue
        out.replies[name], out.nodes[name] = reply, node
        if isinstance(reply, TrainReply | DeclinedReply):
            if reply.privacy is not None:
                out.privacy[name] = reply.privacy
            if reply.statistics is not None:
                out.statistics[name] = reply.statistics
        if isinstance(reply, EvaluateReply):
            out.statistics[name] = reply.statistics
            if reply.privacy is not None:
                out.privacy[name] = reply.privacy
        if isinstance(reply, ExplainReply) and reply.privacy is not None:
            out.privacy[name] = reply.privacy  # the ledger after the explanation's charge
        if isinstance(reply, DeclinedReply):
            out.declined[name] = reply.reason
            logger.warning("round %d: hospital %s declined: %s", rules.server_round, name,
                           reply.reason)
    return out


def _check_reply(reply: Reply, rules: ReplyRules, expected: tuple[type, ...]) -> None:
    if not isinstance(reply, expected):
        raise WireFormatError("reply.kind", f"a {type(reply).__name__} does not answer this "
                              "request")
    if reply.answers != rules.answers:
        raise WireFormatError("reply.run-id/server-round",
                              f"answers run {reply.answers.run_id} round "
                              f"{reply.answers.server_round}, not this run's round "
                              f"{rules.server_round} (a replayed or stale reply)")
    if isinstance(reply, TrainReply | DeclinedReply):
        check_manifest(reply, rules.dp_mode, rules.noise_mode, rules.secure)


def _content_problem(reply: Reply, rules: ReplyRules, book: IdentityBook, name: str) -> str:
    """Why an accepted-identity reply's content is unusable ('' when it is fine)."""
    if isinstance(reply, TrainReply) and reply.update is not None:
        problem = update_problem(reply.update, rules.global_weights, max_norm=rules.norm_bound)
        if problem:
            return f"update rejected: {problem}"
    if isinstance(reply, TrainReply) and reply.num_examples is not None:
        count = reply.num_examples
        if count > rules.max_examples:
            return (f"claims {count} training examples, more than the run's max-examples "
                    f"{rules.max_examples}")
        fixed = book.examples.setdefault(name, count)
        if count != fixed:
            return f"claims {count} training examples, but {fixed} at its first reply"
    if isinstance(reply, SecAggStageReply) and not reply.secagg:
        return "empty secure-aggregation payload"
    return ""


def _reject(out: Screened, rules: ReplyRules, who: str, reason: str) -> None:
    out.rejected[who] = reason
    logger.warning("round %d: reply of %s rejected: %s", rules.server_round, who, reason)
