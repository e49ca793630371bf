"""One hospital's part of one round, without Flower: check the budget, train, privatize, charge.

Order matters for privacy: the noised update is saved beside the ledger, the ledger is charged
(on disk), then the update is returned, so a crash between charging and sending can only
over-count. A round already charged is never charged again and no newly noised update is
released for it: a repeated request (a server resumed from its checkpoint) gets the saved one,
if it asks with the same global weights, and a decline otherwise.
"""

import logging
from dataclasses import dataclass

import numpy as np

from client.privacy import (
    HospitalPrivacy,
    distributed_round_event,
    dp_sgd_steps,
    hospital_noise_stddev,
    open_ledger,
    plan_round_event,
    privatize_update,
)
from client.release_store import Release, ReleaseStore, weights_digest
from client.training import LocalTrainer
from common.dp.clipping import clip_to_norm, compute_update
from common.dp.ledger import UNBOUNDED_REASON, PrivacyLedger
from common.errors import PrivacyBudgetExceededError
from common.tasks import HospitalData
from common.types import NDArrays
from common.wire.modes import DpMode, NoiseMode
from common.wire.settings import RoundSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RoundResult:
    """A hospital's reply: an update, or a reason it declined; and its epsilon spent so far."""

    update: NDArrays | None
    train_loss: float
    declined: str
    epsilon_patient: float
    epsilon_hospital: float
    budget_epsilon: float = float("inf")
    budget_delta: float = 0.0
    noise_stddev: float = 0.0  # hospital level: the stddev of the noise on each coordinate


def _spent(ledger: PrivacyLedger | None) -> tuple[float, float, float, float]:
    """Epsilon spent per level (Opacus on the ledger) and the budget (epsilon, delta)."""
    if ledger is None:
        return 0.0, 0.0, float("inf"), 0.0
    return (ledger.epsilon_spent("patient"), ledger.epsilon_spent("hospital"),
            ledger.budget_epsilon, ledger.budget_delta)


def _decline(reason: str, ledger: PrivacyLedger | None) -> RoundResult:
    logger.warning("declining the round: %s", reason)
    return RoundResult(None, float("nan"), reason, *_spent(ledger))


def train_round(
    request: RoundSettings,
    *,
    hospital: HospitalData,
    hospital_index: int,
    privacy: HospitalPrivacy,
    trainer: LocalTrainer,
    global_weights: NDArrays,
    secure_aggregation: bool = False,
    rounding_bound: float = 0.0,
) -> RoundResult:
    """Run the hospital's local round and return what may leave the hospital.

    `secure_aggregation` says whether the update will leave only masked; distributed noise
    (a 1/sqrt(t) share per hospital) is refused otherwise, since the update alone would not be
    private. `rounding_bound` is the worst-case L2 error of secure aggregation's encoding.

    Raises
    ------
    LedgerError
        If the ledger is unreadable or tampered with: the hospital must not train.
    """
    if request.dp_mode != privacy.mode:
        return _decline(f"this hospital applies dp mode {privacy.mode!r} but the run asks "
                        f"{request.dp_mode.value!r}", None)
    if request.noise_mode == NoiseMode.DISTRIBUTED and not secure_aggregation:
        return _decline("distributed noise without secure aggregation: this update alone "
                        "would not be private", None)
    # Shuffles are reproducible from the run seed; DP randomness (Poisson batches, noise)
    # comes from the hospital's own generator.
    shuffle_rng = np.random.default_rng([request.seed, request.server_round, hospital_index])
    if privacy.mode == DpMode.NONE:
        weights, loss = trainer.fit(global_weights, hospital.x_train, hospital.y_train,
                                    epochs=request.local_epochs, steps=request.local_steps,
                                    batch_size=request.batch_size,
                                    learning_rate=request.learning_rate, rng=shuffle_rng)
        update = compute_update(weights, global_weights)
        if request.clip_updates:
            update, _ = clip_to_norm(update, clipping_norm=request.update_clipping_norm)
        return RoundResult(update, loss, "", *_spent(None))

    ledger, refusal = open_ledger(privacy, hospital.name)
    if ledger is None:
        return _decline(refusal, None)
    store = ReleaseStore(privacy.ledger_path)
    # One release per round: a concurrent request for the same round waits here, then finds
    # the saved release (check, noise draw, save and charge happen under the lock).
    with store.round_lock(request.run_id, request.server_round, privacy.mode):
        return _private_round(request, hospital=hospital, hospital_index=hospital_index,
                              privacy=privacy, trainer=trainer, global_weights=global_weights,
                              ledger=ledger, store=store, rounding_bound=rounding_bound,
                              shuffle_rng=shuffle_rng, secure_aggregation=secure_aggregation)


def _private_round(
    request: RoundSettings, *, hospital: HospitalData, hospital_index: int,
    privacy: HospitalPrivacy, trainer: LocalTrainer, global_weights: NDArrays,
    ledger: PrivacyLedger, store: ReleaseStore, rounding_bound: float,
    shuffle_rng: np.random.Generator, secure_aggregation: bool,
) -> RoundResult:
    """The DP round under the round lock: saved release, plan, budget, train, save, charge."""
    level = privacy.mode
    digest = weights_digest(global_weights)
    saved = store.load(request.run_id, request.server_round, level, digest=digest)
    if saved is not None and secure_aggregation:
        # Two sums over overlapping sets would give their difference: this hospital's update.
        return _decline(f"round {request.server_round} of run {request.run_id} was already "
                        "released into a secure aggregation; a saved release is never put "
                        "into a second one", ledger)
    if saved is not None:
        # Asked again for a round already computed: resend that very update (charged once).
        try:
            ledger.charge(request.run_id, request.server_round, saved.event)
        except PrivacyBudgetExceededError as error:
            return _decline(str(error), ledger)
        return _result(saved, global_weights, ledger)
    if any(e.run == request.run_id and e.round == request.server_round and e.event.level == level
           for e in ledger.entries):
        return _decline(f"round {request.server_round} of run {request.run_id} is already "
                        "charged; a second noised update would go unaccounted", ledger)
    if level == "hospital" and ledger.is_hospital_level_unbounded():
        return _decline(UNBOUNDED_REASON, ledger)
    if level == "patient":
        sample_rate = min(1.0, request.batch_size / hospital.num_train)
        steps = dp_sgd_steps(rows=hospital.num_train, batch_size=request.batch_size,
                             local_steps=request.local_steps, local_epochs=request.local_epochs)
    else:
        sample_rate, steps = 1.0, 1  # one release per round; no amplification claimed
    # One patient, one budget: the patient-level history composes every entry on the ledger;
    # a hospital-level run must fit both levels.
    levels = ("patient",) if level == "patient" else ("hospital", "patient")
    priors = [ledger.history(at, exclude_run=request.run_id) for at in levels]  # type: ignore[arg-type]
    try:
        if request.noise_mode == NoiseMode.DISTRIBUTED:
            event = distributed_round_event(request, privacy, priors, ledger.budget_epsilon,
                                            ledger.budget_delta)
        else:
            event = plan_round_event(priors, level=level, budget_epsilon=ledger.budget_epsilon,
                                     budget_delta=ledger.budget_delta,
                                     accountant=privacy.accountant,
                                     planned_rounds=request.planned_rounds,
                                     sample_rate=sample_rate, steps_per_round=steps)
    except PrivacyBudgetExceededError as error:
        return _decline(str(error), ledger)
    if level == "hospital" and event.noise_multiplier > request.max_noise_multiplier:
        return _decline(f"hospital-level noise multiplier {event.noise_multiplier:.4g} would "
                        f"exceed the run's dp.max-noise-multiplier "
                        f"{request.max_noise_multiplier:.4g}", ledger)
    if ledger.would_exceed(event):
        return _decline(f"{level}-level epsilon would reach {ledger.projected_epsilon(event):.4g}"
                        f" > budget {ledger.budget_epsilon:.4g}", ledger)

    noise_rng = privacy.noise_rng(server_round=request.server_round, hospital_index=hospital_index)
    if level == "patient":
        weights, applied = trainer.fit_dp_sgd(
            global_weights, hospital.x_train, hospital.y_train, steps=steps,
            batch_size=request.batch_size, learning_rate=request.learning_rate,
            clipping_norm=request.clipping_norm, noise_multiplier=event.noise_multiplier,
            rng=noise_rng)
        if applied != event:
            raise RuntimeError(f"DP-SGD applied {applied}, but {event} was planned")
        # Post-processing: bounds what the server sees, for its validation.
        update, _ = clip_to_norm(compute_update(weights, global_weights),
                                 clipping_norm=request.update_clipping_norm)
        loss, stddev = float("nan"), 0.0
    else:
        weights, loss = trainer.fit(global_weights, hospital.x_train, hospital.y_train,
                                    epochs=request.local_epochs, steps=request.local_steps,
                                    batch_size=request.batch_size,
                                    learning_rate=request.learning_rate, rng=shuffle_rng)
        stddev = hospital_noise_stddev(event, clipping_norm=request.clipping_norm,
                                       noise_mode=request.noise_mode,
                                       honest_contributors=request.honest_contributors or 1,
                                       rounding_bound=rounding_bound)
        update = privatize_update(compute_update(weights, global_weights),
                                  clipping_norm=request.clipping_norm, stddev=stddev, rng=noise_rng)
    release = Release(update=[u.astype(g.dtype) for u, g in zip(update, global_weights, strict=True)],
                      event=event, train_loss=loss, noise_stddev=stddev)
    store.save(request.run_id, request.server_round, release, digest=digest)
    ledger.charge(request.run_id, request.server_round, event)  # on disk before release
    return _result(release, global_weights, ledger)


def _result(release: Release, global_weights: NDArrays, ledger: PrivacyLedger) -> RoundResult:
    update = [u.astype(g.dtype) for u, g in zip(release.update, global_weights, strict=True)]
    return RoundResult(update, release.train_loss, "", *_spent(ledger),
                       noise_stddev=release.noise_stddev)
