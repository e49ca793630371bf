"""A hospital's part in the consortium explanation: one DP release after training, or a decline.

Once the run's training is done, the server asks every hospital (``query.explain``, with the
final weights and the run's settings) for the sum of its training rows' absolute
attributions under the final model (``common.explain.consortium``). The hospital answers
with the discipline of every release (``client.evaluation_round``): under the release's lock
it checks the request (its own dp mode, a planned explanation of the final model, the pinned
split, the saved release, the budget), then draws the noise once, saves the release beside
the ledger, charges the ledger's training track at patient level (key: the run and round
``planned_rounds + 1``, the one after the last) and sends. The identical request again gets
the same release, charged once; another request for it is declined, naming what differs.

Its price: z such that the release alone costs ``explain-share`` of the hospital's budget
epsilon (``explanation_noise``); the hospital's training calibration counts that release in
advance (``planned_explanation``), so a run's training and explanation together fit the
budget. A hospital whose ledger cannot afford it declines, and nothing is drawn.

What is not offered: at hospital level (one hospital's whole data set is the unit, and its
sum of n clipped vectors moves by up to n B when the data set is replaced: no sensitivity the
hospital can state publicly), and without DP. Under secure aggregation the release does not
go through the secure sum (distributed noise would need every hospital's share in one
synchronous masked exchange); it takes this plain path with the full local noise, which is
private on its own.
"""

import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import keras
import numpy as np

from client.privacy import HospitalPrivacy, open_ledger, split_refusal
from client.release_store import ReleaseKey, ReleaseStore, release_key
from common.dp.accounting import AccountantName, Entry
from common.dp.events import GaussianRoundEvent
from common.dp.ledger import PrivacyLedger
from common.errors import LedgerError, PrivacyBudgetExceededError
from common.explain.attribution import attribute
from common.explain.consortium import (
    exact_release,
    explanation_event,
    explanation_noise,
    noised_release,
    sensitivity,
)
from common.models import build_model
from common.tasks import HospitalData, TaskSpec
from common.types import NDArrays
from common.wire.modes import DpMode, LedgerTrack, PrivacyLevel
from common.wire.settings import RoundSettings

logger = logging.getLogger(__name__)

NOISE_STREAM = 3  # HospitalPrivacy.noise_rng's stream for the explanation
HOSPITAL_LEVEL_REASON = (
    "the consortium explanation is not offered at hospital level: the unit is the hospital's "
    "whole data set, and a sum of n clipped attribution vectors moves by up to n B when it is "
    "replaced, a sensitivity no public setting bounds")


@dataclass(frozen=True, slots=True)
class ExplanationRequest:
    """One explanation to answer: the run's settings, the final weights and whose rows."""

    settings: RoundSettings
    weights: NDArrays
    task: TaskSpec
    hospital: HospitalData
    hospital_index: int
    privacy: HospitalPrivacy


@dataclass(frozen=True, slots=True)
class ExplanationResult:
    """The release (d + 1 cells) and its noise stddev, or why the hospital declined."""

    vector: np.ndarray | None
    declined: str = ""
    stddev: float = 0.0


def ledger_round(settings: RoundSettings) -> int:
    """The ledger round the explanation is charged under: the one after the last."""
    return settings.planned_rounds + 1


@lru_cache(maxsize=32)
def _noise(budget_epsilon: float, budget_delta: float, share: float,
           accountant: AccountantName) -> float:
    return explanation_noise(budget_epsilon, budget_delta, share, accountant)


def explanation_noise_for(ledger: PrivacyLedger, share: float) -> float:
    """The noise multiplier of this hospital's explanation: ``share`` of its budget, alone.

    Raises
    ------
    ValueError
        If the share cannot be priced (e.g. below what the accountant prices at all).
    """
    return _noise(ledger.budget_epsilon, ledger.budget_delta, share,
                  AccountantName(ledger.accountant))


def planned_explanation(request: RoundSettings, ledger: PrivacyLedger) -> list[Entry]:
    """The explanation's Opacus entry a patient-level run's training must leave room for.

    Empty when the run plans none, or when its share cannot be priced (the explanation is
    then declined after training, and training keeps the whole budget).
    """
    if request.explain_share <= 0 or request.explain_bound <= 0:
        return []
    try:
        z = explanation_noise_for(ledger, request.explain_share)
    except ValueError:
        return []
    return [explanation_event(z).as_opacus_entry()]


@lru_cache(maxsize=8)
def _model(task: TaskSpec) -> keras.Model:
    return build_model(task, seed=0)  # its weights are always overwritten


def draw_release(exact: np.ndarray, event: GaussianRoundEvent, bound: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The noised release of ``exact`` under ``event``: (vector, stddev = z B sqrt(1+w^2))."""
    stddev = event.noise_multiplier * sensitivity(bound)
    return noised_release(exact, stddev=stddev, rng=rng), stddev


def _declined(reason: str) -> ExplanationResult:
    logger.warning("declining the consortium explanation: %s", reason)
    return ExplanationResult(None, reason)


def _request_refusal(request: ExplanationRequest) -> str:
    """Why this request cannot be answered at all ('' when it can)."""
    settings, privacy = request.settings, request.privacy
    if settings.dp_mode != privacy.mode:
        return (f"this hospital applies dp mode {privacy.mode!r} but the run asks "
                f"{settings.dp_mode.value!r}")
    if privacy.mode == DpMode.NONE:
        return ("this hospital runs without DP (its own dp-mode none): the consortium "
                "explanation is released only as a DP release")
    if privacy.mode == DpMode.HOSPITAL:
        return HOSPITAL_LEVEL_REASON
    if settings.explain_share <= 0 or settings.explain_bound <= 0:
        return ("explain-share and explain-bound: the run planned no explanation (0), so its "
                "training was not calibrated around one; nothing is released")
    if settings.server_round != settings.planned_rounds:
        return (f"server-round: the explanation is of the final model (round "
                f"{settings.planned_rounds}), but the request names round "
                f"{settings.server_round}")
    return ""


def explain_model(request: ExplanationRequest) -> ExplanationResult:
    """Answer one explanation request: the DP release, or a decline with the reason.

    Raises
    ------
    LedgerError
        If the ledger is unreadable or tampered with (the caller declines).
    """
    refusal = _request_refusal(request)
    if refusal:
        return _declined(refusal)
    privacy, settings = request.privacy, request.settings
    ledger, refusal = open_ledger(privacy, request.hospital.name)
    if ledger is None:
        return _declined(refusal)
    refusal = split_refusal(ledger, request.hospital.split_digest)
    if refusal:
        return _declined(refusal)
    key = release_key(settings, level=PrivacyLevel.PATIENT, secure=False,
                      weights=request.weights)
    store = explanation_store(privacy.ledger_path)
    with store.round_lock(settings.run_id, ledger_round(settings), "patient-explain"):
        ledger, refusal = open_ledger(privacy, request.hospital.name)
        if ledger is None:
            return _declined(refusal)
        return _release(request, key, ledger, store)


def _plan(request: ExplanationRequest, ledger: PrivacyLedger) -> GaussianRoundEvent | str:
    """The explanation's event, or why the hospital's training budget cannot afford it."""
    try:
        event = explanation_event(explanation_noise_for(ledger, request.settings.explain_share))
    except ValueError as error:
        return f"explain-share {request.settings.explain_share:g} cannot be priced: {error}"
    exceeded = ledger.would_exceed(event, LedgerTrack.TRAIN)
    if exceeded:
        return f"its training budget cannot afford the explanation: {exceeded}"
    return event


def _release(request: ExplanationRequest, key: ReleaseKey, ledger: PrivacyLedger,
             store: ReleaseStore) -> ExplanationResult:
    """Under the lock: the saved release again, or plan, draw, save, charge a new one."""
    settings = request.settings
    at = ledger_round(settings)
    where = f"the explanation of run {key.run_id}'s final model"
    saved = load_explanation(store, key)
    if saved is not None:
        saved_key, vector, event, stddev = saved
        differences = saved_key.differences(key)
        if differences:
            return _declined(f"{where} was already released for another request; it is sent "
                             f"for no other: this request differs in {'; '.join(differences)}")
        ledger.charge(key.run_id, at, event, LedgerTrack.TRAIN)  # idempotent
        return ExplanationResult(vector, stddev=stddev)
    if any(e.key == (key.run_id, at, PrivacyLevel.PATIENT.value, LedgerTrack.TRAIN.value)
           for e in ledger.entries):
        return _declined(f"{where} is already charged; a second release would go unaccounted")
    planned = _plan(request, ledger)
    if isinstance(planned, str):
        return _declined(planned)
    model = _model(request.task)
    model.set_weights(request.weights)
    x = request.hospital.x_train
    values = attribute(model, x, np.zeros(x.shape[1], dtype=np.float32)).values
    rng = request.privacy.noise_rng(server_round=at, hospital_index=request.hospital_index,
                                    stream=NOISE_STREAM)
    vector, stddev = draw_release(exact_release(values, settings.explain_bound), planned,
                                  settings.explain_bound, rng)
    save_explanation(store, key, vector, planned, stddev)
    try:
        added = ledger.charge(key.run_id, at, planned, LedgerTrack.TRAIN,
                              split=request.hospital.split_digest)
    except PrivacyBudgetExceededError as error:
        discard_explanation(store, key)
        return _declined(f"its training budget cannot afford the explanation: {error}")
    except LedgerError:
        discard_explanation(store, key)
        raise
    if not added:
        discard_explanation(store, key)
        return _declined(f"{where} is already charged; a second release would go unaccounted")
    return ExplanationResult(vector, stddev=stddev)


def explanation_store(ledger_path: Path) -> ReleaseStore:
    """The store of explanation releases: ``<ledger>.explanations/`` beside the ledger."""
    store = ReleaseStore(ledger_path)
    store.directory = ledger_path.with_name(f"{ledger_path.name}.explanations")
    return store


def _path(store: ReleaseStore, key: ReleaseKey) -> Path:
    safe_run = "".join(c if c.isalnum() or c in "-_" else "_" for c in key.run_id)
    return store.directory / f"{safe_run}-explanation.npz"


def save_explanation(store: ReleaseStore, key: ReleaseKey, vector: np.ndarray,
                     event: GaussianRoundEvent, stddev: float) -> None:
    """Write the release with its key, event and stddev atomically (temp file, fsync, rename)."""
    store.directory.mkdir(parents=True, exist_ok=True)
    meta = {"key": key.to_json(), "noise_multiplier": event.noise_multiplier,
            "stddev": stddev}
    path = _path(store, key)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, meta=np.array(json.dumps(meta)), vector=vector)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_explanation(store: ReleaseStore, key: ReleaseKey
                     ) -> tuple[ReleaseKey, np.ndarray, GaussianRoundEvent, float] | None:
    """The release saved for ``key``'s run: its key, vector, event and stddev; None if none."""
    try:
        with np.load(_path(store, key)) as stored:
            meta = json.loads(str(stored["meta"]))
            vector = np.asarray(stored["vector"], dtype=np.float64)
        return (ReleaseKey.from_json(meta["key"]), vector,
                explanation_event(float(meta["noise_multiplier"])), float(meta["stddev"]))
    except FileNotFoundError:
        return None
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise LedgerError(f"saved explanation {_path(store, key)} is unreadable: {error}"
                          ) from None


def discard_explanation(store: ReleaseStore, key: ReleaseKey) -> None:
    """Remove a release that was not charged (it must never be sent)."""
    _path(store, key).unlink(missing_ok=True)
