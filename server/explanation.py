"""The consortium explanation: asked once after training, combined, written for the report.

After the last round the driver sends every hospital one ``query.explain`` message with the
final weights and the run's settings (round = the last). Each hospital answers with its DP
release (``client.explanation_round``: the noisy sum of its training rows' clipped absolute
attributions and a weighted noisy count, charged on its training track) or declines. The
consortium's feature importance is the sum of the released sums over the sum of the released
counts (``common.explain.consortium``), with 95% intervals from the noise, written to
``explanation.json`` in the run directory for the report (``server.report_explanation``).

Only under patient-level DP with ``explain.enabled``: without DP nothing is asked (there is
no release to make), and at hospital level it is not offered (see the hospitals' reason).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import MessageType

from common.config import RunConfig
from common.explain.consortium import (
    HospitalRelease,
    consortium_importance,
    explanation_noise,
    importance_intervals,
    sensitivity,
)
from common.tasks.base import TaskSpec
from common.types import NDArrays
from common.wire.actions import EXPLAIN
from common.wire.modes import DpMode
from common.wire.records import pack_request
from common.wire.replies import DeclinedReply, ExplainReply, PrivacyReport
from common.wire.settings import RoundSettings
from server.round_channel import RoundChannel
from server.run_directory import write_json_atomic

logger = logging.getLogger(__name__)

EXPLANATION_FILE = "explanation.json"
EXPLAIN_ACTION = f"{MessageType.QUERY}.{EXPLAIN}"


def explanation_planned(config: RunConfig) -> bool:
    """Whether the run asks for the consortium explanation (patient-level DP, enabled)."""
    return config.explain_enabled and config.dp_mode == DpMode.PATIENT


def explanation_settings(config: RunConfig) -> tuple[float, float]:
    """The round settings' explanation fields (share, bound), or (0, 0) for none planned."""
    if not explanation_planned(config):
        return 0.0, 0.0
    return config.explain_share, config.explain_bound


def planned_noise(config: RunConfig) -> tuple[float, float]:
    """(z, noise stddev per cell) of a hospital with the run's budget: what the cost line says."""
    z = explanation_noise(config.dp_epsilon, config.dp_delta, config.explain_share,
                          config.dp_accountant)
    return z, z * sensitivity(config.explain_bound)


def explanation_cost_line(config: RunConfig) -> str:
    """What the consortium explanation costs, said before the run (``server.privacy_cost``)."""
    if not config.explain_enabled:
        return "privacy cost, explanation: none (explain.enabled false)"
    if config.dp_mode != DpMode.PATIENT:
        return ("privacy cost, explanation: none; not offered at hospital level (a hospital's "
                "sum of n clipped attribution vectors moves by up to n B when its whole data "
                "set is replaced: no public bound on its sensitivity), so it is not asked")
    z, stddev = planned_noise(config)
    secure = (" Under secure aggregation it does not use the secure sum: each hospital adds "
              "the full noise itself (local noise)." if config.secagg_enabled else "")
    return (f"privacy cost, explanation: once after training, each hospital's noisy sum of "
            f"its training rows' clipped absolute attributions (L2 bound "
            f"{config.explain_bound:g}) and row count, one Gaussian release at noise "
            f"multiplier {z:.3g} (stddev {stddev:.3g} per cell), on its training track: "
            f"epsilon {config.explain_share * config.dp_epsilon:.3g} alone at delta "
            f"{config.dp_delta:g} ({config.explain_share:g} of the budget); training is "
            f"calibrated around it, so both together stay within epsilon "
            f"{config.dp_epsilon:g}.{secure}")


@dataclass(frozen=True, slots=True)
class ExplanationOutcome:
    """What the hospitals answered, and the consortium's importance if any released."""

    releases: dict[str, HospitalRelease]
    declined: dict[str, str]
    rejected: dict[str, str]
    epsilon: dict[str, float]  # each releasing hospital's training-track epsilon after it
    privacy: dict[str, PrivacyReport] = field(default_factory=dict)  # each reply's report


def ask_hospitals(channel: RoundChannel, settings: RoundSettings, weights: NDArrays,
                  task: TaskSpec, config: RunConfig) -> ExplanationOutcome:
    """Send the explain messages, screen the replies, keep the well-formed releases.

    A release of the wrong length (not the task's d + 1 cells) is rejected, naming the
    hospital; the noise stddev of each release is derived from the hospital's reported
    budget and the run's share and bound (the server never receives it).
    """
    strategy = channel.strategy
    messages = strategy.messages(pack_request(settings, weights),
                                 strategy.select_nodes(channel.grid), EXPLAIN_ACTION)
    screened, _ = channel.exchange(messages, (ExplainReply, DeclinedReply))
    releases: dict[str, HospitalRelease] = {}
    rejected = dict(screened.rejected)
    epsilon: dict[str, float] = {}
    for name, reply in screened.of_kind(ExplainReply).items():
        assert isinstance(reply, ExplainReply)
        if reply.attributions.shape != (task.num_features + 1,):
            rejected[name] = (f"explanation of {reply.attributions.shape[0]} cells, expected "
                              f"{task.num_features + 1}")
            continue
        budget = reply.privacy.budget_epsilon if reply.privacy else config.dp_epsilon
        delta = reply.privacy.budget_delta if reply.privacy else config.dp_delta
        z = explanation_noise(budget, delta, config.explain_share, config.dp_accountant)
        releases[name] = HospitalRelease(reply.attributions, config.explain_bound,
                                         z * sensitivity(config.explain_bound))
        if reply.privacy is not None:
            epsilon[name] = reply.privacy.epsilon_patient
    return ExplanationOutcome(releases, dict(screened.declined), rejected, epsilon,
                              dict(screened.privacy))


def explanation_document(outcome: ExplanationOutcome, feature_names: tuple[str, ...],
                         config: RunConfig) -> dict[str, Any]:
    """The JSON the report reads: importance, intervals, who released, declined, epsilon."""
    z, stddev = planned_noise(config)
    document: dict[str, Any] = {
        "features": list(feature_names), "bound": config.explain_bound,
        "share": config.explain_share, "noise_multiplier": z, "stddev": stddev,
        "released": sorted(outcome.releases), "declined": outcome.declined,
        "rejected": outcome.rejected, "epsilon_after": outcome.epsilon,
        "budget_epsilon": config.dp_epsilon, "delta": config.dp_delta}
    if outcome.releases:
        releases = [outcome.releases[name] for name in sorted(outcome.releases)]
        importance, count = consortium_importance(releases)
        low, high = importance_intervals(releases)
        document.update(importance=importance.tolist(), low=low.tolist(), high=high.tolist(),
                        count=count)
    return document


def run_explanation(channel: RoundChannel, settings: RoundSettings, weights: NDArrays,
                    task: TaskSpec, config: RunConfig, run_dir: Path,
                    feature_names: tuple[str, ...],
                    keep_privacy: Callable[[dict[str, PrivacyReport]], None] | None = None,
                    ) -> dict[str, Any] | None:
    """Ask, combine and write ``explanation.json``; None when the run plans no explanation.

    ``keep_privacy`` receives each replying hospital's privacy report (its ledger after the
    release), so the round's epsilon columns include the explanation's charge.
    """
    if not explanation_planned(config):
        return None
    outcome = ask_hospitals(channel, settings, weights, task, config)
    if keep_privacy is not None:
        keep_privacy(outcome.privacy)
    document = explanation_document(outcome, feature_names, config)
    write_json_atomic(run_dir / EXPLANATION_FILE, document)
    if not outcome.releases:
        logger.warning("consortium explanation: no hospital released one (%s)",
                       "; ".join(f"{k}: {v}" for k, v in outcome.declined.items()) or "none")
    return document


def feature_names_of(task: TaskSpec) -> tuple[str, ...]:
    """The task's model input names: its public scaling's (or x0, x1, ... without one)."""
    if task.scaling is not None:
        try:
            return task.scaling().names
        except ValueError:
            pass
    return tuple(f"x{j}" for j in range(task.num_features))


__all__ = ["EXPLANATION_FILE", "explanation_settings", "feature_names_of", "run_explanation",
           "planned_noise"]
