"""One hospital's part of one round, without Flower: check, draw, save, charge, return.

Order matters for privacy. Under the round's lock (``ReleaseStore.round_lock``, held across
processes) the hospital reads its ledger, checks the request against the release saved for the
round and against its budget, and only then trains and draws noise; it saves the noised update
beside the ledger, charges the ledger (on disk), and returns the update, so a crash between
charging and sending can only over-count. A refusal before the draw costs no epsilon.

A release belongs to the request it was made for (``client.release_store.ReleaseKey``: run,
round, level, noise mode, secure or not, the shaping settings, the weights, the roster, t, c,
h). A request with the saved release's key (a server resumed from its checkpoint) gets that
very release again, charged once. Any other request for the round is declined, naming what
differs: e.g. a release made for a secure round, which carries only its share of distributed
noise, never leaves in the clear. A release made for a secure round enters at most one secure
aggregation (two sums over different survivor sets give it by subtraction), so every second
secure request for the round is declined. A round charged without a saved release is declined.
A retry is a new round number, with a fresh, charged release.
"""

import logging
from dataclasses import dataclass

import numpy as np

from client.explanation_round import planned_explanation
from client.privacy import (
    HospitalPrivacy,
    distributed_round_event,
    dp_sgd_steps,
    hospital_noise_stddev,
    open_ledger,
    plan_round_event,
    planned_releases,
    privatize_update,
    split_refusal,
)
from client.release_store import Release, ReleaseKey, ReleaseStore, SavedRelease, release_key
from client.training import LocalTrainer
from common.dp.clipping import clip_to_norm, compute_update
from common.dp.events import GaussianRoundEvent
from common.dp.ledger import UNBOUNDED_REASON, PrivacyLedger
from common.errors import LedgerError, PrivacyBudgetExceededError
from common.secagg.roster import Roster
from common.tasks import HospitalData
from common.types import NDArrays
from common.wire.modes import DpMode, NoiseMode, PrivacyLevel
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


@dataclass(frozen=True, slots=True)
class _RoundInputs:
    """What one local round works on, fixed before it starts.

    Attributes
    ----------
    request : RoundSettings
        The round's settings from the server.
    hospital : HospitalData
        The hospital's (preprocessed) data; `hospital_index` its index in the run.
    privacy : HospitalPrivacy
        The hospital's own privacy settings (mode, ledger, budget, noise generator).
    trainer : LocalTrainer
        Trains the task's model.
    global_weights : NDArrays
        The weights the round starts from.
    rounding_bound : float
        The worst-case L2 error of secure aggregation's encoding (0 without it).
    shuffle_rng : numpy.random.Generator
        Batch shuffles, reproducible from the run seed (DP randomness is the hospital's own).
    """

    request: RoundSettings
    hospital: HospitalData
    hospital_index: int
    privacy: HospitalPrivacy
    trainer: LocalTrainer
    global_weights: NDArrays
    rounding_bound: float
    shuffle_rng: np.random.Generator


def _spent(ledger: PrivacyLedger | None) -> tuple[float, float, float, float]:
    """Epsilon spent per level (Opacus on the ledger) and the budget (epsilon, delta)."""
    if ledger is None:
        return 0.0, 0.0, float("inf"), 0.0
    return (ledger.epsilon_spent(PrivacyLevel.PATIENT), ledger.epsilon_spent(PrivacyLevel.HOSPITAL),
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
    roster: Roster | None = None,
) -> RoundResult:
    """Run the hospital's local round and return what may leave the hospital.

    `secure_aggregation` says whether the update will leave only masked; distributed noise
    (a 1/sqrt(h) share per hospital) is refused otherwise, since the update alone would not be
    private. `rounding_bound` is the worst-case L2 error of secure aggregation's encoding.
    `roster` is the pinned roster a secure round was checked against (its c counts in the
    release's key); the caller checks the round against it before calling
    (``client.secure_aggregation.check_secure_round``).

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
    inputs = _RoundInputs(request, hospital, hospital_index, privacy, trainer, global_weights,
                          rounding_bound, shuffle_rng=np.random.default_rng(
                              [request.seed, request.server_round, hospital_index]))
    if privacy.mode == DpMode.NONE:
        return _round_without_dp(inputs)
    # A missing ledger is refused before anything is made on disk (the lock's directory).
    ledger, refusal = open_ledger(privacy, hospital.name)
    if ledger is None:
        return _decline(refusal, None)
    store = ReleaseStore(privacy.ledger_path)
    key = release_key(request, level=privacy.mode, secure=secure_aggregation,
                      weights=global_weights,
                      roster_digest=(privacy.roster_sha256 or "").strip().lower(),
                      colluders=max(privacy.colluding, roster.colluders if roster else 0))
    # One release per round: a concurrent request for the same round waits here; the ledger
    # is read again inside the lock, so it sees what the first request saved and charged.
    with store.round_lock(request.run_id, request.server_round, privacy.mode):
        ledger, refusal = open_ledger(privacy, hospital.name)
        if ledger is None:
            return _decline(refusal, None)
        return _private_round(inputs, key, ledger=ledger, store=store)


def _fit(inputs: _RoundInputs) -> tuple[NDArrays, float]:
    """Train from the global weights with the round's settings: the new weights, the loss."""
    request, hospital = inputs.request, inputs.hospital
    return inputs.trainer.fit(inputs.global_weights, hospital.x_train, hospital.y_train,
                              epochs=request.local_epochs, steps=request.local_steps,
                              batch_size=request.batch_size,
                              learning_rate=request.learning_rate, rng=inputs.shuffle_rng)


def _round_without_dp(inputs: _RoundInputs) -> RoundResult:
    """A non-private round: train, optionally clip; a non-finite update is declined."""
    request = inputs.request
    weights, loss = _fit(inputs)
    update = compute_update(weights, inputs.global_weights)
    if not _finite(update):
        return _decline(f"local training diverged (a non-finite update) at learning-rate "
                        f"{request.learning_rate:g}", None)
    if request.clip_updates:
        update, _ = clip_to_norm(update, clipping_norm=request.update_clipping_norm)
    return RoundResult(update, loss, "", *_spent(None))


def _private_round(inputs: _RoundInputs, key: ReleaseKey, *, ledger: PrivacyLedger,
                   store: ReleaseStore) -> RoundResult:
    """The DP round under the round lock: saved release, plan, budget, train, save, charge."""
    request, global_weights = inputs.request, inputs.global_weights
    saved = store.load(request.run_id, request.server_round, key.level)
    charged = any(e.key == (request.run_id, request.server_round, key.level, "train")
                  for e in ledger.entries)
    refusal = _saved_release_refusal(key, saved, charged=charged)
    if refusal:
        return _decline(refusal, ledger)
    if saved is not None:
        # The identical request again (e.g. a resumed server): that very update, charged once.
        try:
            ledger.charge(request.run_id, request.server_round, saved.release.event)
        except PrivacyBudgetExceededError as error:
            return _decline(str(error), ledger)
        return _result(saved.release, global_weights, ledger)
    refusal = split_refusal(ledger, inputs.hospital.split_digest)  # pinned by the charge
    if refusal:
        return _decline(refusal, ledger)
    event = _plan(request, privacy=inputs.privacy, hospital=inputs.hospital, ledger=ledger)
    if isinstance(event, str):
        return _decline(event, ledger)
    noise_rng = inputs.privacy.noise_rng(server_round=request.server_round,
                                         hospital_index=inputs.hospital_index)
    release = _draw_release(inputs, event, noise_rng=noise_rng)
    store.save(key, release)
    return _charge(key, release, ledger=ledger, store=store, global_weights=global_weights,
                   split=inputs.hospital.split_digest)


def _saved_release_refusal(key: ReleaseKey, saved: SavedRelease | None, *,
                           charged: bool) -> str:
    """Why a request with `key` gets neither the saved release nor a new one ('' if it may)."""
    where = f"round {key.server_round} of run {key.run_id}"
    if saved is not None and key.secure and saved.key.secure:
        return (f"{where} was already released into a secure aggregation; a saved release is "
                "never put into a second one (two sums over different survivor sets give its "
                "update by subtraction); a retry is a new round number")
    if saved is not None:
        differences = saved.key.differences(key)
        if not differences:
            return ""
        has = "is already charged for" if charged else "already has"
        return (f"{where} {has} a release made for another request; it is sent for no other "
                "request, and no second release is made for the round (it would go "
                f"unaccounted): this request differs in {'; '.join(differences)}")
    if charged:
        return f"{where} is already charged; a second noised update would go unaccounted"
    return ""


def _plan(request: RoundSettings, *, privacy: HospitalPrivacy, hospital: HospitalData,
          ledger: PrivacyLedger) -> GaussianRoundEvent | str:
    """The round's event, calibrated and checked against the budget, or why to decline."""
    level = PrivacyLevel(privacy.mode)  # a private round: patient or hospital
    if level == "hospital" and ledger.is_hospital_level_unbounded():
        return UNBOUNDED_REASON
    if level == "patient":
        sample_rate = min(1.0, request.batch_size / hospital.num_train)
        steps = dp_sgd_steps(rows=hospital.num_train, batch_size=request.batch_size,
                             local_steps=request.local_steps, local_epochs=request.local_epochs)
    else:
        sample_rate, steps = 1.0, 1  # one release per round; no amplification claimed
    # One patient, one budget: the patient-level history composes every entry on the ledger;
    # a hospital-level run must fit both levels.
    levels = ((PrivacyLevel.PATIENT,) if level == PrivacyLevel.PATIENT
              else (PrivacyLevel.HOSPITAL, PrivacyLevel.PATIENT))
    priors = [ledger.history(at, exclude_run=request.run_id) for at in levels]
    if level == PrivacyLevel.PATIENT:  # the run's explanation, after training, fits with it
        priors = [[*prior, *planned_explanation(request, ledger)] for prior in priors]
    try:
        if request.noise_mode == NoiseMode.DISTRIBUTED:
            event = distributed_round_event(request, privacy, priors, ledger.budget_epsilon,
                                            ledger.budget_delta)
        else:
            event = plan_round_event(priors, level=level, budget_epsilon=ledger.budget_epsilon,
                                     budget_delta=ledger.budget_delta,
                                     accountant=privacy.accountant,
                                     planned_rounds=planned_releases(request, level),
                                     sample_rate=sample_rate, steps_per_round=steps)
    except PrivacyBudgetExceededError as error:
        return str(error)
    if level == "hospital" and event.noise_multiplier > request.max_noise_multiplier:
        return (f"hospital-level noise multiplier {event.noise_multiplier:.4g} would exceed the "
                f"run's dp.max-noise-multiplier {request.max_noise_multiplier:.4g}")
    if ledger.would_exceed(event):
        return (f"{level}-level epsilon would reach {ledger.projected_epsilon(event):.4g} > "
                f"budget {ledger.budget_epsilon:.4g}")
    return event


def _draw_release(inputs: _RoundInputs, event: GaussianRoundEvent, *,
                  noise_rng: np.random.Generator) -> Release:
    """Train and privatize: the noise of the round is drawn here, once.

    A non-finite update (diverged training) counts as the zero update: what leaves is then
    still the mechanism's output for an update within the clip, so the guarantee holds and
    nothing data-dependent shows in whether the hospital replies.
    """
    request, hospital, global_weights = inputs.request, inputs.hospital, inputs.global_weights
    if event.level == "patient":
        weights, applied = inputs.trainer.fit_dp_sgd(
            global_weights, hospital.x_train, hospital.y_train, steps=event.steps,
            batch_size=request.batch_size, learning_rate=request.learning_rate,
            clipping_norm=request.clipping_norm, noise_multiplier=event.noise_multiplier,
            rng=noise_rng)
        if applied != event:
            raise RuntimeError(f"DP-SGD applied {applied}, but {event} was planned")
        # Post-processing: bounds what the server sees, for its validation.
        update, _ = clip_to_norm(_finite_or_zero(compute_update(weights, global_weights)),
                                 clipping_norm=request.update_clipping_norm)
        loss, stddev = float("nan"), 0.0
    else:
        weights, loss = _fit(inputs)
        stddev = hospital_noise_stddev(event, clipping_norm=request.clipping_norm,
                                       noise_mode=request.noise_mode,
                                       honest_contributors=request.honest_contributors or 1,
                                       rounding_bound=inputs.rounding_bound)
        update = privatize_update(_finite_or_zero(compute_update(weights, global_weights)),
                                  clipping_norm=request.clipping_norm, stddev=stddev, rng=noise_rng)
    return Release(update=[u.astype(g.dtype) for u, g in zip(update, global_weights, strict=True)],
                   event=event, train_loss=loss, noise_stddev=stddev)


def _charge(key: ReleaseKey, release: Release, *, ledger: PrivacyLedger, store: ReleaseStore,
            global_weights: NDArrays, split: str | None = None) -> RoundResult:
    """Charge the saved release (on disk; pinning ``split``) and return it; a failed charge
    discards it.

    A charge that finds the round already charged (by a request that did not hold the lock)
    sends nothing: the release just saved is discarded, never a second one for the round.
    """
    where = f"round {key.server_round} of run {key.run_id}"
    try:
        added = ledger.charge(key.run_id, key.server_round, release.event,
                              split=split)  # before release
    except PrivacyBudgetExceededError as error:
        store.discard(key)
        return _decline(str(error), ledger)
    except LedgerError:
        store.discard(key)
        raise
    if not added:
        store.discard(key)
        return _decline(f"{where} was charged meanwhile for another request; a second noised "
                        "update would go unaccounted", ledger)
    return _result(release, global_weights, ledger)


def _finite(update: NDArrays) -> bool:
    return all(bool(np.all(np.isfinite(u))) for u in update)


def _finite_or_zero(update: NDArrays) -> NDArrays:
    """The update, or zeros of its shapes if any value is not finite (diverged training)."""
    if _finite(update):
        return update
    logger.warning("local training diverged (non-finite update): the zero update is privatized")
    return [np.zeros_like(u) for u in update]


def _result(release: Release, global_weights: NDArrays, ledger: PrivacyLedger) -> RoundResult:
    update = [u.astype(g.dtype) for u, g in zip(release.update, global_weights, strict=True)]
    return RoundResult(update, release.train_loss, "", *_spent(ledger),
                       noise_stddev=release.noise_stddev)
