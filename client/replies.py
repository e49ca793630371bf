"""The replies a hospital builds, each checked against the manifest of the run's mode.

Nothing leaves a hospital except through these functions: a train reply carries only the parts
``common.wire.replies.MANIFEST`` allows for the mode (raising ``ManifestViolation`` otherwise,
so the handler fails closed and Flower sends an error reply instead of the data).
"""

import math

import numpy as np

from client.local_round import RoundResult
from common.wire.modes import DpMode
from common.wire.replies import (
    DeclinedReply,
    EvaluateReply,
    HospitalIdentity,
    PrivacyReport,
    RoundRef,
    SecAggPayload,
    TrainReply,
    check_manifest,
)
from common.wire.settings import RoundSettings

Statistics = dict[str, np.ndarray]


def answers(settings: RoundSettings) -> RoundRef:
    """The request a reply to `settings` answers."""
    return RoundRef(settings.run_id, settings.server_round)


def privacy_report(result: RoundResult) -> PrivacyReport | None:
    """The epsilon spent and budget a DP reply states (None without a ledger)."""
    if result.budget_delta <= 0:
        return None
    return PrivacyReport(result.epsilon_patient, result.epsilon_hospital,
                         result.budget_epsilon, result.budget_delta)


def train_reply(settings: RoundSettings, identity: HospitalIdentity, result: RoundResult, *,
                num_examples: int, statistics: Statistics | None = None,
                secagg: SecAggPayload | None = None, encoding_clipped: int | None = None,
                privacy: PrivacyReport | None = None) -> TrainReply | DeclinedReply:
    """Build the reply to a train request from the local round's result (manifest-checked).

    ``privacy``: what the ledger stands at after the round (``client.privacy.ledger_report``:
    both tracks); without it the round's own figures (training track).
    """
    secure = settings.secagg_enabled
    private = settings.dp_mode != DpMode.NONE
    report = privacy if privacy is not None else privacy_report(result)
    if result.update is None:
        return declined_reply(settings, identity, result.declined, privacy=report,
                              statistics=statistics)
    reply = TrainReply(
        identity, answers(settings),
        update=None if secure else result.update,
        privacy=report if private else None,
        num_examples=None if private else num_examples,
        train_loss=(result.train_loss if not private and math.isfinite(result.train_loss)
                    else None),
        encoding_clipped=encoding_clipped if secure and not private else None,
        statistics=statistics, secagg=secagg if secure else None)
    check_manifest(reply, settings.dp_mode, settings.noise_mode, secure)
    return reply


def declined_reply(settings: RoundSettings, identity: HospitalIdentity, reason: str, *,
                   privacy: PrivacyReport | None = None,
                   statistics: Statistics | None = None) -> DeclinedReply:
    """A refusal with its reason (and the epsilon spent so far, under DP)."""
    reply = DeclinedReply(identity, answers(settings), reason,
                          privacy=privacy if settings.dp_mode != DpMode.NONE else None,
                          statistics=statistics)
    check_manifest(reply, settings.dp_mode, settings.noise_mode, settings.secagg_enabled)
    return reply


def evaluate_reply(settings: RoundSettings, identity: HospitalIdentity,
                   statistics: Statistics, privacy: PrivacyReport | None = None
                   ) -> EvaluateReply:
    """The evaluation of the weights a request carried (under DP: the release, and what the
    ledger stands at after charging it).
    """
    return EvaluateReply(identity, answers(settings), statistics,
                         privacy if settings.dp_mode != DpMode.NONE else None)
