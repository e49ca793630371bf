"""A hospital's evaluation of a model on its test rows: exact at home, one DP release to send.

Every model the hospital receives is evaluated exactly on its test rows and the metrics are
appended to a file beside its ledger (``exact_metrics_path``), which never leaves the
hospital: its own per-round progress. What it sends, under DP, is one Gaussian release per
planned evaluation (``common.dp.evaluation_release``: correct and incorrect counts and a
4-bin score histogram per label, no loss sum), charged on its ledger's test track, with the
same discipline as an update (``client.local_round``): under the evaluation's lock it checks
the request (dp mode, a planned evaluation, the pinned split, the saved release, the budget),
then draws the noise once, saves the release beside the ledger, charges the ledger, and sends.
A release belongs to the request it was made for (run, evaluated round, level, the shaping
settings, the weights' digest): the identical request again gets the same release, charged
once; any other request for that evaluation is declined, naming what differs. A hospital whose
test budget is spent declines the evaluation and keeps training. Without DP (the hospital's
own ``dp-mode none``) the exact statistics are sent, as the hospital chose.

z is calibrated, once per run, so that the run's planned evaluations (``eval-every``: every
k-th round's model and the final one) fit the test track's remaining budget; at hospital level
an evaluation is charged on the hospital-level track with the run's own z, which the updates'
calibration already counted (``client.privacy.planned_releases``).
"""

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from client.privacy import (
    HospitalPrivacy,
    open_ledger,
    plan_round_event,
    planned_releases,
    split_refusal,
)
from client.release_store import ReleaseKey, ReleaseStore, release_key
from client.training import LocalTrainer
from common.config import evaluated_rounds, planned_evaluations
from common.dp.calibration import calibrate_to_remaining_budget
from common.dp.evaluation_release import (
    Release,
    exact_release,
    noised_release,
    release_layout,
)
from common.dp.events import GaussianRoundEvent
from common.dp.ledger import PrivacyLedger
from common.errors import LedgerError, PrivacyBudgetExceededError
from common.metrics import Statistics, evaluation_statistics, metrics_from_statistics
from common.tasks import HospitalData, TaskSpec
from common.types import NDArrays
from common.wire.modes import DpMode, LedgerTrack, NoiseMode, PrivacyLevel
from common.wire.settings import RoundSettings
from common.wire.statistics import NOISE_STDDEV

logger = logging.getLogger(__name__)

EVALUATIONS_KEPT = 8  # saved evaluation releases per hospital (older ones are pruned)


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """What leaves the hospital for one evaluation: its statistics, or why it declined."""

    statistics: Statistics | None
    declined: str = ""


@dataclass(frozen=True, slots=True)
class EvaluationRequest:
    """One evaluation to answer: the request's settings, the model and whose model it is.

    ``evaluated_round`` is the round whose model ``weights`` is (a train message carries the
    previous round's model, an evaluate message the current one).
    """

    settings: RoundSettings
    weights: NDArrays
    evaluated_round: int
    task: TaskSpec
    hospital: HospitalData
    hospital_index: int
    privacy: HospitalPrivacy
    trainer: LocalTrainer


def exact_metrics_path(ledger_path: Path) -> Path:
    """The hospital's own exact metrics file: ``<ledger stem>.metrics.jsonl`` beside it."""
    return ledger_path.with_name(f"{ledger_path.stem}.metrics.jsonl")


def record_exact_metrics(request: EvaluationRequest, outputs: np.ndarray) -> None:
    """Append the model's exact metrics on the test rows to the hospital's own file.

    One JSON line: time, run, the evaluated round, test rows and the task's metrics (and the
    loss). Never sent; a write that fails is logged, never a reason to decline. Nothing is
    made where the ledger's directory is missing (a deleted ledger directory stays deleted).
    """
    task, data = request.task, request.hospital
    stats = evaluation_statistics(task.kind, data.y_test, outputs, target_scale=task.target_scale)
    line = {"utc": time.time(), "run": request.settings.run_id,
            "round": request.evaluated_round, "hospital": data.name, "test_rows": data.num_test,
            **{k: float(v) for k, v in metrics_from_statistics(task.kind, stats).items()}}
    path = exact_metrics_path(request.privacy.ledger_path)
    if not path.parent.is_dir():
        return
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, allow_nan=True) + "\n")
    except OSError as error:
        logger.warning("could not record the exact metrics in %s: %s", path, error)


def personalise(request: EvaluationRequest) -> None:
    """Train the personal and local-only models on the final model and write the hospital's
    report beside the ledger (``client.hospital_report``); nothing of it is returned or sent.

    A failure is logged, never a reason to decline the evaluation.
    """
    from client.hospital_report import FinalModel, personalise_and_report
    from client.personalisation import hospital_plan

    settings = request.settings
    plan = hospital_plan(learning_rate=settings.learning_rate, batch_size=settings.batch_size,
                         run_seed=settings.seed, hospital_index=request.hospital_index)
    final = FinalModel(settings.run_id, request.evaluated_round, list(request.weights))
    try:
        personalise_and_report(request.trainer, request.hospital, final, plan,
                               request.privacy.ledger_path)
    except Exception:  # noqa: BLE001 - the hospital's own extra: never the reply's failure
        logger.warning("could not train the personal model or write the hospital's report",
                       exc_info=True)


def evaluate_model(request: EvaluationRequest, *, release: bool = True) -> EvaluationResult:
    """Evaluate ``request.weights`` on the test rows: record it at home; release it if asked.

    Parameters
    ----------
    release : bool
        Whether the server asked for this evaluation (a train message's ``evaluate-received``,
        or an evaluate message); without it only the hospital's own file gets the metrics.

    Raises
    ------
    LedgerError
        If the ledger is unreadable or tampered with (the caller declines).
    """
    outputs = request.trainer.predict(request.weights, request.hospital.x_test)
    if request.evaluated_round >= 1:
        record_exact_metrics(request, outputs)
    if request.evaluated_round == request.settings.planned_rounds >= 1:
        personalise(request)  # the final model: the personal model and the hospital's report
    if not release:
        return EvaluationResult(None)
    settings, privacy = request.settings, request.privacy
    if settings.dp_mode != privacy.mode:
        return _declined(f"this hospital applies dp mode {privacy.mode!r} but the run asks "
                         f"{settings.dp_mode.value!r}")
    if privacy.mode == DpMode.NONE:
        task, data = request.task, request.hospital
        return EvaluationResult(evaluation_statistics(task.kind, data.y_test, outputs,
                                                      target_scale=task.target_scale))
    return _private_evaluation(request, outputs)


def _declined(reason: str) -> EvaluationResult:
    logger.warning("declining the evaluation: %s", reason)
    return EvaluationResult(None, reason)


def _private_evaluation(request: EvaluationRequest, outputs: np.ndarray) -> EvaluationResult:
    """The DP release of one planned evaluation: check, draw, save, charge (module docstring)."""
    settings, privacy = request.settings, request.privacy
    planned = evaluated_rounds(settings.planned_rounds, settings.eval_every)
    if request.evaluated_round not in planned:
        return _declined(f"round {request.evaluated_round}'s model is not one of the run's "
                         f"planned evaluations (eval-every {settings.eval_every}: rounds "
                         f"{sorted(planned)[:10]}); nothing is released")
    if settings.dp_mode == DpMode.HOSPITAL and settings.noise_mode != NoiseMode.LOCAL:
        return _declined("evaluation releases use local noise; with distributed noise the "
                         "hospital-level track was planned for the updates alone")
    ledger, refusal = open_ledger(privacy, request.hospital.name)
    if ledger is None:
        return _declined(refusal)
    refusal = split_refusal(ledger, request.hospital.split_digest)
    if refusal:
        return _declined(refusal)
    key = release_key(replace(settings, server_round=request.evaluated_round,
                              evaluate_received=False), level=privacy.mode, secure=False,
                      weights=request.weights)
    store = evaluation_store(privacy.ledger_path)
    with store.round_lock(settings.run_id, request.evaluated_round, f"{privacy.mode}-test"):
        ledger, refusal = open_ledger(privacy, request.hospital.name)
        if ledger is None:
            return _declined(refusal)
        return _release(request, key, outputs, ledger, store)


def _release(request: EvaluationRequest, key: ReleaseKey, outputs: np.ndarray,
             ledger: PrivacyLedger, store: ReleaseStore) -> EvaluationResult:
    """Under the lock: the saved release again, or plan, draw, save, charge a new one."""
    privacy = request.privacy
    saved = load_evaluation(store, key)
    charged = any(e.key == (key.run_id, key.server_round, key.level, LedgerTrack.TEST.value)
                  for e in ledger.entries)
    where = f"the evaluation of round {key.server_round}'s model in run {key.run_id}"
    if saved is not None:
        saved_key, statistics, event = saved
        differences = saved_key.differences(key)
        if differences:
            return _declined(f"{where} was already released for another request; it is sent "
                             f"for no other: this request differs in {'; '.join(differences)}")
        ledger.charge(key.run_id, key.server_round, event, LedgerTrack.TEST)  # idempotent
        return EvaluationResult(statistics)
    if charged:
        return _declined(f"{where} is already charged; a second release would go unaccounted")
    planned = _plan(request, ledger)
    if isinstance(planned, str):
        return _declined(planned)
    event = planned
    layout = release_layout(request.task)
    stddev = event.noise_multiplier * layout.sensitivity(PrivacyLevel(privacy.mode))
    rng = privacy.noise_rng(server_round=key.server_round, hospital_index=request.hospital_index,
                            stream=2)
    exact = exact_release(layout, request.hospital.y_test, outputs,
                          level=PrivacyLevel(privacy.mode))
    statistics = {**noised_release(exact, stddev=stddev, rng=rng),
                  NOISE_STDDEV: np.array(stddev)}
    save_evaluation(store, key, statistics, event)
    try:
        added = ledger.charge(key.run_id, key.server_round, event, LedgerTrack.TEST,
                              split=request.hospital.split_digest)
    except PrivacyBudgetExceededError as error:
        discard_evaluation(store, key)
        return _declined(f"its test budget is spent: {error}")
    except LedgerError:
        discard_evaluation(store, key)
        raise
    if not added:
        discard_evaluation(store, key)
        return _declined(f"{where} is already charged; a second release would go unaccounted")
    return EvaluationResult(statistics)


def _plan(request: EvaluationRequest, ledger: PrivacyLedger) -> GaussianRoundEvent | str:
    """The evaluation's event (z calibrated to the planned evaluations), or why to decline."""
    settings, privacy = request.settings, request.privacy
    level = PrivacyLevel(privacy.mode)
    try:
        if level == PrivacyLevel.HOSPITAL:
            priors = [ledger.history(at, exclude_run=settings.run_id)
                      for at in (PrivacyLevel.HOSPITAL, PrivacyLevel.PATIENT)]
            event = plan_round_event(priors, level=level, budget_epsilon=ledger.budget_epsilon,
                                     budget_delta=ledger.budget_delta,
                                     accountant=privacy.accountant,
                                     planned_rounds=planned_releases(settings, level),
                                     sample_rate=1.0, steps_per_round=1)
        else:
            event = _patient_level_event(request, ledger)
    except PrivacyBudgetExceededError as error:
        return f"its test budget cannot afford the run's evaluations: {error}"
    exceeded = ledger.would_exceed(event, LedgerTrack.TEST)
    if exceeded:
        return f"its test budget is spent: {exceeded}"
    return event


def _patient_level_event(request: EvaluationRequest, ledger: PrivacyLedger) -> GaussianRoundEvent:
    """The event whose z fits the run's planned evaluations in every test-track constraint."""
    settings = request.settings
    evaluations = planned_evaluations(settings.planned_rounds, settings.eval_every)
    shape = GaussianRoundEvent(noise_multiplier=1.0, sample_rate=1.0, steps=1,
                               level=PrivacyLevel.PATIENT)
    z = max(calibrate_to_remaining_budget(c.history, budget_epsilon=c.budget_epsilon,
                                          delta=c.delta, sample_rate=1.0, steps=evaluations,
                                          accountant=request.privacy.accountant)
            for c in ledger.constraints(shape, LedgerTrack.TEST, exclude_run=settings.run_id,
                                        with_event=False))
    return GaussianRoundEvent(noise_multiplier=z, sample_rate=1.0, steps=1,
                              level=PrivacyLevel.PATIENT)


def evaluation_store(ledger_path: Path) -> ReleaseStore:
    """The store of evaluation releases: ``<ledger>.evaluations/`` beside the ledger."""
    store = ReleaseStore(ledger_path)
    store.directory = ledger_path.with_name(f"{ledger_path.name}.evaluations")
    return store


def _path(store: ReleaseStore, key: ReleaseKey) -> Path:
    safe_run = "".join(c if c.isalnum() or c in "-_" else "_" for c in key.run_id)
    return store.directory / f"{safe_run}-round-{key.server_round:05d}-{key.level}-test.npz"


def save_evaluation(store: ReleaseStore, key: ReleaseKey, statistics: Release,
                    event: GaussianRoundEvent) -> None:
    """Write the release with its key and event atomically (temp file, fsync, rename); prune."""
    store.directory.mkdir(parents=True, exist_ok=True)
    meta = {"key": key.to_json(), "level": event.level.value,
            "noise_multiplier": event.noise_multiplier, "sample_rate": event.sample_rate,
            "steps": event.steps, "noise_mode": event.noise_mode}
    path = _path(store, key)
    tmp = path.with_name(f".{path.name}.tmp")
    arrays: dict[str, Any] = {f"stat_{name}": value for name, value in statistics.items()}
    with open(tmp, "wb") as handle:
        np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    files = sorted(store.directory.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in files[EVALUATIONS_KEPT:]:
        if stale != path:
            stale.unlink(missing_ok=True)


def load_evaluation(store: ReleaseStore, key: ReleaseKey
                    ) -> tuple[ReleaseKey, Release, GaussianRoundEvent] | None:
    """The release saved for ``key``'s (run, round, level), its key and event; None if none."""
    try:
        with np.load(_path(store, key)) as stored:
            meta = json.loads(str(stored["meta"]))
            statistics = {name.removeprefix("stat_"): stored[name] for name in stored.files
                          if name.startswith("stat_")}
        saved_key = ReleaseKey.from_json(meta["key"])
        event = GaussianRoundEvent(noise_multiplier=meta["noise_multiplier"],
                                   sample_rate=meta["sample_rate"], steps=meta["steps"],
                                   level=meta["level"], noise_mode=meta.get("noise_mode"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return saved_key, statistics, event


def discard_evaluation(store: ReleaseStore, key: ReleaseKey) -> None:
    """Remove the release saved under ``key``: it will never be sent."""
    _path(store, key).unlink(missing_ok=True)
