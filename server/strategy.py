"""FedcareStrategy: the federation's configuration and its aggregation (no per-round state).

Updates are sorted by hospital index before averaging (float sums depend on order); the mean
feeds a server optimizer (FedAvg, FedAdam or FedYogi). The rounds (``server.plain_round``,
``server.secure_round``) send messages through it and return a ``RoundOutcome``; the driver
(``server.federation``) keeps everything that lasts across rounds.
"""

import logging
import time
from collections.abc import Sequence

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from common.aggregation import coordinate_median, trimmed_mean, weighted_mean
from common.errors import FedcareError
from common.server_optimizers import ServerOptimizer
from common.types import NDArrays
from common.wire.modes import Aggregator

logger = logging.getLogger(__name__)


class FederationError(FedcareError):
    """The federation cannot go on (too few hospitals, or no usable replies)."""


class FedcareStrategy(FedAvg):
    """Train every connected hospital each round; aggregate in hospital order.

    Parameters
    ----------
    hospitals : int
        How many hospitals take part; the first round waits for this many nodes.
    optimizer : ServerOptimizer
        Applied to the mean update each round (its state is checkpointed by the driver).
    weighted : bool
        Weight the mean by each hospital's training examples (non-DP runs).
    node_wait_seconds : float
        How long to wait for the hospitals to connect before giving up with a clear error.
    aggregator : Aggregator
        ``mean`` (weighted or not), or the robust ``median`` / ``trimmed-mean``.
    trim_fraction : float
        The trimmed mean's fraction cut from each end, per coordinate.
    """

    def __init__(
        self, *, hospitals: int, optimizer: ServerOptimizer, weighted: bool,
        node_wait_seconds: float = 120.0, aggregator: str = Aggregator.MEAN,
        trim_fraction: float = 0.1,
    ) -> None:
        super().__init__(
            min_train_nodes=hospitals, min_evaluate_nodes=hospitals, min_available_nodes=hospitals
        )
        self.hospitals = hospitals
        self.optimizer = optimizer
        self.weighted = weighted
        self.node_wait_seconds = node_wait_seconds
        self.aggregator = Aggregator(aggregator)
        self.trim_fraction = trim_fraction

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

    def messages(self, content: RecordDict, nodes: Sequence[int], kind: str) -> list[Message]:
        """One message of type `kind` with `content` to each node."""
        return list(self._construct_messages(content, list(nodes), kind))

    def aggregate(self, global_weights: NDArrays, updates: Sequence[tuple[int, NDArrays, float]]
                  ) -> NDArrays:
        """Return the new global weights: the server optimizer applied to the combined update.

        `updates` holds (hospital index, update, weight) triples; they are sorted by index first
        (node ids are random per run; float sums depend on their order), so the result does not
        depend on the order of arrival. Weights matter only to a weighted mean.
        """
        ordered = sorted(updates, key=lambda u: u[0])
        arrays = [update for _, update, _ in ordered]
        if self.aggregator == Aggregator.MEDIAN:
            mean_update = coordinate_median(arrays)
        elif self.aggregator == Aggregator.TRIMMED_MEAN:
            mean_update = trimmed_mean(arrays, self.trim_fraction)
        else:
            weights = [weight if self.weighted else 1.0 for _, _, weight in ordered]
            mean_update = weighted_mean(arrays, weights)
        return self.optimizer.step(global_weights, mean_update)
