"""FedcareStrategy: FedAvg's message plumbing with fedcare's aggregation hooks.

Replies are sorted by hospital before averaging (float sums depend on order), the mean update
feeds a server optimizer (FedAvg, FedAdam or FedYogi), and evaluation replies are kept per
hospital so the round's per-hospital, client-average and pooled metrics can be reported.
"""

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from common import record_keys as keys
from common.aggregation import coordinate_median, trimmed_mean, weighted_mean
from common.errors import FedcareError
from common.metrics import Statistics
from common.server_optimizers import ServerOptimizer
from common.types import NDArrays
from server.validation import noise_tolerance, update_problem

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HospitalUpdate:
    """One hospital's train reply, unpacked from its Message."""

    index: int
    name: str
    update: NDArrays | None
    num_examples: int
    train_loss: float
    declined: str = ""
    epsilon_patient: float = 0.0
    epsilon_hospital: float = 0.0
    budget_epsilon: float = float("inf")
    budget_delta: float = 0.0
    noise_stddev: float = 0.0

    @classmethod
    def from_message(cls, msg: Message) -> "HospitalUpdate":
        """Unpack a train reply (update or decline, metrics and the hospital's identity)."""
        content = msg.content
        metrics, identity = content[keys.METRICS], content[keys.HOSPITAL]
        declined = str(content[keys.DECLINED][keys.REASON]) if keys.DECLINED in content else ""
        return cls(
            index=int(identity[keys.HOSPITAL_INDEX]),
            name=str(identity[keys.HOSPITAL_NAME]),
            update=content[keys.ARRAYS].to_numpy_ndarrays() if keys.ARRAYS in content else None,
            num_examples=int(metrics.get(keys.NUM_EXAMPLES, 0)),
            train_loss=float(metrics.get(keys.TRAIN_LOSS, float("nan"))),
            declined=declined,
            epsilon_patient=float(metrics.get(keys.EPSILON_PATIENT, 0.0)),
            epsilon_hospital=float(metrics.get(keys.EPSILON_HOSPITAL, 0.0)),
            budget_epsilon=float(metrics.get(keys.BUDGET_EPSILON, float("inf"))),
            budget_delta=float(metrics.get(keys.BUDGET_DELTA, 0.0)),
            noise_stddev=float(metrics.get(keys.NOISE_STDDEV, 0.0)),
        )


class FederationError(FedcareError):
    """The federation cannot go on (too few hospitals, or no usable replies)."""


class FedcareStrategy(FedAvg):
    """Train every connected hospital each round; aggregate in hospital order.

    Parameters
    ----------
    hospitals : int
        How many hospitals take part; the first round waits for this many nodes.
    optimizer : ServerOptimizer
        Applied to the mean update each round.
    weighted : bool
        Weight the mean by each hospital's training examples (non-DP runs).
    node_wait_seconds : float
        How long to wait for the hospitals to connect before giving up with a clear error.
    aggregator : str
        ``mean`` (weighted or not), or the robust ``median`` / ``trimmed-mean``.
    trim_fraction : float
        The trimmed mean's fraction cut from each end, per coordinate.
    """

    def __init__(
        self, *, hospitals: int, optimizer: ServerOptimizer, weighted: bool,
        node_wait_seconds: float = 120.0, aggregator: str = "mean", trim_fraction: float = 0.1,
    ) -> None:
        super().__init__(
            min_train_nodes=hospitals, min_evaluate_nodes=hospitals, min_available_nodes=hospitals
        )
        self.hospitals = hospitals
        self.optimizer = optimizer
        self.weighted = weighted
        self.node_wait_seconds = node_wait_seconds
        self.aggregator = aggregator
        self.trim_fraction = trim_fraction
        self.global_weights: NDArrays = []
        self.last_evaluation: dict[str, Statistics] = {}
        # Secure rounds: the evaluation that rode on this round's first message.
        self.received_evaluation: dict[str, Statistics] = {}
        self.last_errors: list[str] = []
        self.last_declined: dict[str, str] = {}
        self.last_rejected: dict[str, str] = {}
        # The norm every visible update must respect before noise (patient-level DP and
        # clip-updates clip it exactly; hospital-level DP adds its stated noise's tolerance).
        self.update_norm_bound: float | None = None
        # Epsilon spent so far per hospital and level, as each hospital last reported it.
        self.epsilon_spent: dict[str, dict[str, float]] = {}
        # Secure aggregation: public keys hospitals advertised for the next round.
        self.advertised_keys: Any = None

    def select_nodes(self, grid: Grid) -> list[int]:
        """Return the ids of the hospitals' nodes, waiting for them to connect.

        Raises
        ------
        FederationError
            If fewer than `hospitals` nodes are connected after `node_wait_seconds`.
        """
        deadline = time.monotonic() + self.node_wait_seconds
        while len(node_ids := sorted(grid.get_node_ids())) < self.hospitals:
            if time.monotonic() > deadline:
                raise FederationError(
                    f"only {len(node_ids)} of {self.hospitals} hospitals connected after "
                    f"{self.node_wait_seconds:.0f} s; check that every hospital's node is running"
                )
            time.sleep(0.2)
        return node_ids

    def _messages(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid, kind: str
    ) -> list[Message]:
        config[keys.SERVER_ROUND] = server_round
        record = RecordDict({keys.ARRAYS: arrays, keys.CONFIG: config})
        return list(self._construct_messages(record, self.select_nodes(grid), kind))

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the global weights and the round's settings to every hospital."""
        self.global_weights = arrays.to_numpy_ndarrays()
        return self._messages(server_round, arrays, config, grid, MessageType.TRAIN)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the new global weights for evaluation on each hospital's test set."""
        return self._messages(server_round, arrays, config, grid, MessageType.EVALUATE)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average the hospitals' updates in hospital order and apply the server optimizer."""
        updates = self.record_train_replies(server_round, replies)
        if not updates:
            return None, None
        new_weights = self.aggregate_updates(updates)
        losses = [u.train_loss for u in updates if not np.isnan(u.train_loss)]
        metrics = MetricRecord({
            "participants": len(updates),
            keys.TRAIN_LOSS: float(np.mean(losses)) if losses else 0.0,
        })
        return ArrayRecord(new_weights), metrics

    def record_train_replies(
        self, server_round: int, replies: Iterable[Message]
    ) -> list[HospitalUpdate]:
        """Unpack train replies; log failures and declines; keep each hospital's epsilon.

        Returns the replies of hospitals that took part (not declined), in hospital order.
        """
        parsed = [HospitalUpdate.from_message(m) for m in self._usable(replies, "train", server_round)]
        return self.screen_replies(server_round, parsed)

    def screen_replies(self, server_round: int, replies: list[HospitalUpdate]) -> list[HospitalUpdate]:
        """Keep epsilons; log declines; reject invalid updates; return the usable, in order."""
        for reply in replies:
            self.epsilon_spent[reply.name] = {
                "patient": reply.epsilon_patient, "hospital": reply.epsilon_hospital,
                "budget_epsilon": reply.budget_epsilon, "budget_delta": reply.budget_delta,
            }
        self.last_declined = {r.name: r.declined for r in replies if r.declined}
        for name, reason in sorted(self.last_declined.items()):
            logger.warning("round %d: hospital %s declined: %s", server_round, name, reason)
        self.last_rejected = {}
        for reply in replies:
            if reply.update is None or reply.declined:
                continue
            bound = self.update_norm_bound
            if bound is not None and reply.noise_stddev > 0:
                size = sum(int(np.size(a)) for a in reply.update)
                bound += noise_tolerance(reply.noise_stddev, size)
            problem = update_problem(reply.update, self.global_weights, max_norm=bound)
            if problem:
                self.last_rejected[reply.name] = problem
                logger.warning("round %d: update of hospital %s rejected: %s", server_round,
                               reply.name, problem)
        return sorted((r for r in replies if not r.declined and r.name not in self.last_rejected),
                      key=lambda r: r.index)

    def aggregate_updates(self, updates: list[HospitalUpdate]) -> NDArrays:
        """Return the new global weights: the server optimizer applied to the mean update.

        Updates are sorted by hospital index first (node ids are random per run; float sums
        depend on their order), so the result does not depend on the order of arrival.
        """
        ordered = [u for u in sorted(updates, key=lambda u: u.index) if u.update is not None]
        arrays = [u.update for u in ordered]
        if self.aggregator == "median":
            mean_update = coordinate_median(arrays)
        elif self.aggregator == "trimmed-mean":
            mean_update = trimmed_mean(arrays, self.trim_fraction)
        else:
            weights = [float(u.num_examples) if self.weighted else 1.0 for u in ordered]
            mean_update = weighted_mean(arrays, weights)
        return self.optimizer.step(self.global_weights, mean_update)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Keep each hospital's evaluation statistics (by name) for the round's report."""
        valid = self._usable(replies, "evaluate", server_round)
        self.last_evaluation = evaluation_by_hospital(valid)
        return MetricRecord({"participants": len(valid)}) if valid else None

    def _usable(self, replies: Iterable[Message], stage: str, server_round: int) -> list[Message]:
        """Return the replies without errors; log and remember each error's reason."""
        usable, self.last_errors = [], []
        for msg in replies:
            if msg.has_error():
                self.last_errors.append(msg.error.reason)
                logger.warning(
                    "round %d %s: node %d failed: %s",
                    server_round, stage, msg.metadata.src_node_id, msg.error.reason,
                )
            else:
                usable.append(msg)
        return usable


def evaluation_by_hospital(replies: Iterable[Message]) -> dict[str, Statistics]:
    """Each replying hospital's evaluation statistics, by name (replies without them skipped)."""
    return {
        str(msg.content[keys.HOSPITAL][keys.HOSPITAL_NAME]): {
            name: array.numpy() for name, array in msg.content[keys.STATISTICS].items()
        }
        for msg in replies
        if not msg.has_error() and keys.STATISTICS in msg.content
    }
