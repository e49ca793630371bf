"""Run one federation of an audit and keep what an attacker sees (the Flower glue of the audit).

Each federation is fedcare's real server driver (``server.federation.run_federation``) talking
to fedcare's real ClientApp through real Flower Messages on an in-process grid
(``simulations.engine.in_process_grid``): no Ray start-up per run, the same client code as
``fedcare simulate``. The audit's grid records, every round, the global weights the server
sent and the update one hospital released (what the server sees of it), and hands each
round's settings and weights to the canary hospitals, which run fedcare's own hospital-level
round (``client.local_round.train_round``: calibration, clipping, noise, ledger) on a crafted
update.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from client.app import TrainingDataHook, build_client_app
from client.local_round import train_round
from client.privacy import HospitalPrivacy
from client.training import LocalTrainer, get_trainer
from common.config import RunConfig
from common.tasks import HospitalData, TaskSpec, get_task
from common.tasks.split import split_digest
from common.types import NDArrays
from common.wire.records import unpack_reply, unpack_request
from common.wire.replies import DeclinedReply, TrainReply
from common.wire.settings import RoundSettings
from common.wire.statistics import StatisticsSpec
from simulations.audit.scores import release_scores
from simulations.engine.in_process_grid import InProcessGrid
from simulations.engine.simulate import SimulatedHospitalPrivacy

logger = logging.getLogger(__name__)

__all__ = ["CanaryHospitals", "CraftedTrainer", "FederationTrace", "RoundView", "federate",
           "node_configs", "unit_directions"]

TrainerFactory = Callable[[TaskSpec], LocalTrainer]
RoundHook = Callable[[RoundSettings, NDArrays], None]


@dataclass(frozen=True, eq=False)
class RoundView:
    """What the server saw in one round of the watched hospital.

    Attributes
    ----------
    server_round : int
        The round (1-based).
    global_weights : NDArrays
        The weights the server sent that round.
    update : NDArrays or None
        The watched hospital's released update (None if it declined).
    """

    server_round: int
    global_weights: NDArrays = field(repr=False)
    update: NDArrays | None = field(repr=False)


@dataclass(frozen=True, eq=False)
class FederationTrace:
    """One finished federation, as the audit's attackers see it.

    Attributes
    ----------
    initial_weights, final_weights : NDArrays
        The seeded initial model (public) and the final global model.
    rounds : tuple of RoundView
        One per round, in order.
    epsilon_patient, epsilon_hospital : float
        The watched hospital's accounted epsilon at each level after its last release
        (Opacus on its ledger; 0 for a non-private run).
    seconds : float
        Wall time of the federation.
    """

    initial_weights: NDArrays = field(repr=False)
    final_weights: NDArrays = field(repr=False)
    rounds: tuple[RoundView, ...] = field(repr=False)
    epsilon_patient: float
    epsilon_hospital: float
    seconds: float


def node_configs(hospitals: int) -> dict[int, dict[str, Any]]:
    """Node configs of the simulated hospitals: node id 100 + i is hospital i."""
    return {100 + i: {"partition-id": i, "num-partitions": hospitals} for i in range(hospitals)}


def statistics_spec(task: TaskSpec, private: bool = False) -> StatisticsSpec:
    """How the task's evaluation statistics travel (to read the hospitals' replies; a DP run's
    are releases).
    """
    return StatisticsSpec(task.kind, task.num_outputs if task.kind == "multiclass" else 1,
                          private)


class AuditGrid(InProcessGrid):
    """An in-process grid that records what the server sees of one hospital, round by round."""

    def __init__(self, client_app: Any, config: RunConfig, *, watched: int,
                 on_round: Iterable[RoundHook] = ()) -> None:
        super().__init__(client_app, node_configs(config.hospitals), config.to_run_config())
        self.watched = watched
        self.on_round = tuple(on_round)
        self.spec = statistics_spec(get_task(config.task), config.private)
        self.weights: dict[int, NDArrays] = {}
        self.updates: dict[int, NDArrays | None] = {}
        self.last_privacy: tuple[float, float] = (0.0, 0.0)

    def send_and_receive(self, messages: Iterable[Any], *,
                         timeout: float | None = None) -> list[Any]:
        """Deliver the messages; record the round's weights and the watched hospital's reply."""
        messages = list(messages)
        rounds: dict[int, int] = {}
        for message in messages:
            if message.metadata.message_type != "train":
                continue
            request = unpack_request(message.content)
            settings = request.settings
            if settings is None or request.weights is None:
                continue
            rounds[message.metadata.dst_node_id] = settings.server_round
            if settings.server_round not in self.weights:
                self.weights[settings.server_round] = [w.copy() for w in request.weights]
                for hook in self.on_round:
                    hook(settings, request.weights)
        replies: list[Any] = super().send_and_receive(messages, timeout=timeout)
        for reply in replies:
            if reply.has_error() or reply.metadata.message_type != "train":
                continue
            unpacked = unpack_reply(reply.content, statistics=self.spec)
            if unpacked.hospital.index != self.watched:
                continue
            server_round = rounds.get(reply.metadata.src_node_id)
            if server_round is None:
                continue
            if not isinstance(unpacked, TrainReply | DeclinedReply):
                continue
            self.updates[server_round] = (unpacked.update if isinstance(unpacked, TrainReply)
                                          else None)
            if unpacked.privacy is not None:
                self.last_privacy = (unpacked.privacy.epsilon_patient,
                                     unpacked.privacy.epsilon_hospital)
        return replies


def federate(
    config: RunConfig,
    run_dir: Path,
    *,
    watched: int = 0,
    training_data: TrainingDataHook | None = None,
    trainer_for: TrainerFactory = get_trainer,
    on_round: Iterable[RoundHook] = (),
) -> FederationTrace:
    """Run one federation in this process and return what the server saw of `watched`.

    Parameters
    ----------
    config : RunConfig
        The run's settings (validated).
    run_dir : pathlib.Path
        The run's directory (created; its ledgers are its own, under ``run_dir/ledgers``).
    watched : int
        The hospital whose released updates are recorded.
    training_data : callable, optional
        ``(data, index) -> data``: the training data each hospital's local round uses (canary
        records, shadow splits).
    trainer_for : callable, default ``client.training.get_trainer``
        The hospitals' local trainer; tests swap in a broken one.
    on_round : iterable of callables
        ``(settings, weights)`` called once per round before the hospitals train.
    """
    import time

    from common.models import build_model
    from server.federation import run_federation

    run_dir.mkdir(parents=True, exist_ok=True)
    app = build_client_app(SimulatedHospitalPrivacy(config, run_dir / "ledgers"),
                           training_data=training_data, trainer_for=trainer_for)
    grid = AuditGrid(app, config, watched=watched, on_round=on_round)
    initial = [np.asarray(w) for w in build_model(get_task(config.task), seed=config.seed)
               .get_weights()]
    start = time.perf_counter()
    final = run_federation(grid, config, run_dir)  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    views = tuple(RoundView(r, grid.weights[r], grid.updates.get(r))
                  for r in sorted(grid.weights))
    return FederationTrace(initial_weights=initial, final_weights=[np.asarray(w) for w in final],
                           rounds=views, epsilon_patient=grid.last_privacy[0],
                           epsilon_hospital=grid.last_privacy[1], seconds=seconds)


def unit_directions(m: int, shapes: list[tuple[int, ...]], seed: int) -> np.ndarray:
    """``m`` independent uniformly random unit vectors over all the model's parameters.

    Returns float64, shape (m, d), d the total parameter count; drawn from
    ``numpy.random.default_rng([seed, 0xCA11])``, independent of the inclusion coins.
    """
    d = int(sum(int(np.prod(s)) for s in shapes))
    rng = np.random.default_rng([seed, 0xCA11])
    gaussian = rng.standard_normal((m, d))
    return np.asarray(gaussian / np.linalg.norm(gaussian, axis=1, keepdims=True))


def _split(flat: np.ndarray, like: NDArrays) -> NDArrays:
    out, start = [], 0
    for w in like:
        out.append(flat[start:start + w.size].reshape(w.shape).astype(w.dtype))
        start += w.size
    return out


class CraftedTrainer:
    """A stand-in local trainer whose "training" moves the weights by a crafted update.

    Only ``fit`` is used (hospital level trains with plain SGD, then fedcare clips and noises
    the update); it returns ``weights + update``, so the round's update is exactly ``update``.
    """

    def __init__(self, update: np.ndarray) -> None:
        self.update = update

    def fit(self, weights: NDArrays, x: np.ndarray, y: np.ndarray,
            **_: Any) -> tuple[NDArrays, float]:
        """Return the weights moved by the crafted update, and a loss of 0."""
        moved = _split(self.update, weights)
        return [w + u for w, u in zip(weights, moved, strict=True)], 0.0


class CanaryHospitals:
    """Fake hospitals that run fedcare's own hospital-level round on crafted updates.

    Canary ``i`` has a random direction ``u_i`` of norm C (Andrew et al., ICLR 2024). Included,
    its local "training" moves the weights by ``u_i``; left out, by nothing (a hospital whose
    data moves no weight). Either way it runs ``client.local_round.train_round`` with its own
    ledger and noise generator: fedcare calibrates z to the budget, clips the update to C and
    adds the noise, exactly as for a real hospital, and the release is what the server sees of
    it. They do not enter the global model. Their score, summed over rounds, is
    ``<release, u_i>`` (``simulations.audit.scores.release_scores``): the server view.
    """

    def __init__(self, config: RunConfig, run_dir: Path, directions: np.ndarray,
                 included: np.ndarray) -> None:
        self.config = config
        self.directions = directions
        self.included = np.asarray(included, dtype=bool)
        self.scores = np.zeros(len(directions))
        self.declined: list[str] = []
        self.epsilon_hospital = 0.0
        self.ledger_dir = run_dir / "canary-ledgers"
        base = config.hospitals
        self._hospitals = [canary_hospital_data(f"canary-{i}") for i in range(len(directions))]
        self._index = [base + i for i in range(len(directions))]
        self._privacy = [
            HospitalPrivacy(mode=config.dp_mode.value, budget_epsilon=config.dp_epsilon,
                            budget_delta=config.dp_delta,
                            accountant=config.dp_accountant.value,
                            ledger_path=self.ledger_dir / f"canary-{i}.json",
                            noise_seed=config.seed)
            for i in range(len(directions))]

    def __call__(self, settings: RoundSettings, weights: NDArrays) -> None:
        """Run every canary hospital's round at the round's global weights; score its release."""
        clip = settings.clipping_norm
        released = np.zeros_like(self.directions)
        for i, direction in enumerate(self.directions):
            update = direction * clip if self.included[i] else np.zeros_like(direction)
            result = train_round(settings, hospital=self._hospitals[i],
                                 hospital_index=self._index[i], privacy=self._privacy[i],
                                 trainer=CraftedTrainer(update),  # type: ignore[arg-type]
                                 global_weights=weights)
            if result.update is None:
                self.declined.append(f"canary-{i} round {settings.server_round}: "
                                     f"{result.declined}")
                continue
            released[i] = np.concatenate([u.ravel() for u in result.update])
            self.epsilon_hospital = max(self.epsilon_hospital, result.epsilon_hospital)
        self.scores += release_scores([released], self.directions)


def canary_hospital_data(name: str) -> HospitalData:
    """A canary hospital's data: one zero training row and one test row, and their split digest.

    The rows are never trained on (``CraftedTrainer`` moves the weights) nor evaluated (canary
    hospitals answer training rounds only). The split digest is what every real hospital's
    loader states (``common.tasks.split``): a hospital's first charge pins it in its ledger,
    and one without it declines, so a canary without it would release nothing and the audit
    would see no release to score.
    """
    x_train, x_test = np.zeros((1, 1), np.float32), np.ones((1, 1), np.float32)
    y_train, y_test = np.zeros(1, np.float32), np.zeros(1, np.float32)
    return HospitalData(name=name, x_train=x_train, y_train=y_train, x_test=x_test,
                        y_test=y_test, split_digest=split_digest(x_train, y_train, x_test, y_test))


def with_rows(data: HospitalData, x: np.ndarray, y: np.ndarray) -> HospitalData:
    """The hospital's data with training rows `x`, `y` (its test rows unchanged)."""
    return replace(data, x_train=np.asarray(x, np.float32), y_train=np.asarray(y, np.float32))

