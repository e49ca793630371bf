"""A hospital's personal model: the final global model with its own intercept, kept at home.

Approach (a personal head on the shared model, as FedPer and FENDA-FL keep one per client,
reduced to the output layer's bias; FLamby's local fine-tuning as an option): one global
model with one intercept serves hospitals whose positive rates run from 0.37 to 0.94, so
when the run's final global model arrives the hospital refits the output bias on its own
training rows (``fit_intercept``: maximum likelihood under a Gaussian prior on the shift;
the other weights unchanged). Which candidate it keeps (the global model as it is; the
intercept under each prior of ``INTERCEPT_PRIORS``; optionally the intercept then 1 to
``max_epochs`` epochs of plain SGD on all weights) is chosen by the mean loss on a
validation split of its **training** rows (``VALIDATION_FRACTION``, stratified), then the
choice is trained again on all its training rows. Test rows are never looked at to choose
anything. Full fine-tuning is off by default (``MAX_FINE_TUNING_EPOCHS`` = 0): on
heart-disease it lowered the test accuracy (docs/benchmarks.md).

The hospital's local-only model (its own rows alone, from the task's initial weights) is
trained the same way, epochs 1 to ``MAX_LOCAL_EPOCHS`` chosen on the same validation split:
the comparison of what joining gave the hospital (``client.hospital_report``).

Privacy: the personal and local-only models are trained **without** differential privacy, so
they carry none of fedcare's guarantees. Nothing computed from them leaves the hospital: they
are written beside the ledger (``<ledger stem>.personal.keras``), never put in a reply (the
manifest lists what a reply may carry, ``common.wire.statement``). Deleting the personal model
loses nothing: it is a function of the final global model the hospital keeps beside it
(``<ledger stem>.global.keras``), its own training rows and the run seed, and the next final
evaluation of a run trains it again.

No Flower here; Keras through ``client.training.LocalTrainer``.
"""

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import special

from client.training import LocalTrainer
from common.models import build_model
from common.tasks import HospitalData
from common.types import NDArrays

logger = logging.getLogger(__name__)

VALIDATION_FRACTION = 0.25  # of the training rows, to choose epochs (never test rows)
MAX_FINE_TUNING_EPOCHS = 0  # measured: full fine-tuning lowered test accuracy (docs)
MAX_LOCAL_EPOCHS = 60
INTERCEPT_L2 = 1.0  # prior precision on the personal intercept's shift (logit units)
INTERCEPT_PRIORS = (1.0, 0.1)  # the precisions the validation split chooses among
_EPS = 1e-7


@dataclass(frozen=True, slots=True)
class TrainingPlan:
    """How a hospital trains its own models: the run's optimizer settings and a seed.

    Attributes
    ----------
    learning_rate : float
        Plain SGD's step size (the run's ``learning-rate``).
    batch_size : int
        Rows per minibatch (the run's ``batch-size``).
    seed : int
        Seeds the validation split, the row order and the local-only model's initial weights.
    fine_tuning_rate : float
        Plain SGD's step size when fine-tuning the global model (0: ``learning_rate``).
    """

    learning_rate: float
    batch_size: int
    seed: int
    fine_tuning_rate: float = 0.0

    @property
    def tuning_rate(self) -> float:
        """The fine-tuning step size: ``fine_tuning_rate``, else ``learning_rate``."""
        return self.fine_tuning_rate if self.fine_tuning_rate > 0 else self.learning_rate


def hospital_plan(*, learning_rate: float, batch_size: int, run_seed: int,
                  hospital_index: int) -> TrainingPlan:
    """The plan a hospital trains its own models with: the run's optimizer settings, seeded
    by the run seed and its index (so a simulation reproduces; nothing here is private).
    """
    return TrainingPlan(learning_rate=learning_rate, batch_size=batch_size,
                        seed=run_seed * 1009 + hospital_index)


@dataclass(frozen=True, slots=True)
class TrainedModel:
    """A model trained at the hospital: weights (model order), epochs chosen, validation losses.

    ``validation_loss[e]`` is the validation split's mean loss after ``e`` epochs (index 0:
    the starting weights; the local-only model's starting point is untrained).
    """

    weights: NDArrays
    epochs: int
    validation_loss: tuple[float, ...]
    choice: str = ""


def validation_split(y: np.ndarray, *, seed: int,
                     fraction: float = VALIDATION_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Split training-row indices into (fit, validation), stratified by label where it can.

    Stratified (classification) when every class has at least 2 rows; at least one row on
    each side. Returns two sorted int arrays that partition ``range(len(y))``.
    """
    n = len(y)
    rng = np.random.default_rng([seed, 0x5E1F])
    labels = np.asarray(y)
    classes, counts = np.unique(labels, return_counts=True)
    stratify = len(classes) <= 20 and bool(np.all(counts >= 2))
    groups = [np.flatnonzero(labels == c) for c in classes] if stratify else [np.arange(n)]
    validation: list[int] = []
    for group in groups:
        take = max(1, round(fraction * len(group))) if len(group) > 1 else 0
        validation.extend(int(i) for i in rng.permutation(group)[:take])
    chosen = np.zeros(n, dtype=bool)
    chosen[np.array(validation, dtype=np.int64)] = True
    if chosen.all():
        chosen[np.flatnonzero(chosen)[0]] = False
    return np.flatnonzero(~chosen), np.flatnonzero(chosen)


def mean_loss(kind: str, y: np.ndarray, outputs: np.ndarray, target_scale: float = 1.0) -> float:
    """The task's mean loss of `outputs` on labels `y`: cross-entropy, or MSE / scale^2."""
    y = np.asarray(y, dtype=np.float64)
    out = np.asarray(outputs, dtype=np.float64)
    if kind == "binary":
        p = np.clip(out.reshape(-1), _EPS, 1 - _EPS)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    if kind == "multiclass":
        probs = np.clip(out, _EPS, 1.0)
        return float(-np.mean(np.log(probs[np.arange(len(y)), y.astype(int)])))
    return float(np.mean(((out.reshape(-1) - y) / target_scale) ** 2))


def _losses_by_epoch(trainer: LocalTrainer, start: NDArrays, data: HospitalData,
                     fit: np.ndarray, validation: np.ndarray, *, max_epochs: int,
                     plan: TrainingPlan) -> list[float]:
    """Validation loss after 0..max_epochs epochs on the fit rows (one run, epoch by epoch)."""
    task = trainer.task
    x_fit, y_fit = data.x_train[fit], data.y_train[fit]
    x_val, y_val = data.x_train[validation], data.y_train[validation]
    rng = np.random.default_rng([plan.seed, 0xF17])
    weights = start
    losses = [mean_loss(task.kind, y_val, trainer.predict(weights, x_val), task.target_scale)]
    for _ in range(max_epochs):
        weights, _ = trainer.fit(weights, x_fit, y_fit, epochs=1, batch_size=plan.batch_size,
                                 learning_rate=plan.learning_rate, rng=rng)
        losses.append(mean_loss(task.kind, y_val, trainer.predict(weights, x_val),
                                task.target_scale))
    return losses


def _train_chosen(trainer: LocalTrainer, start: NDArrays, data: HospitalData, *,
                  min_epochs: int, max_epochs: int, plan: TrainingPlan) -> TrainedModel:
    """Choose epochs in [min_epochs, max_epochs] on the validation split; refit on all rows."""
    fit, validation = validation_split(data.y_train, seed=plan.seed)
    losses = _losses_by_epoch(trainer, start, data, fit, validation, max_epochs=max_epochs,
                              plan=plan)
    finite = [(loss if np.isfinite(loss) else np.inf) for loss in losses]
    epochs = min_epochs + int(np.argmin(finite[min_epochs:]))
    weights = start
    if epochs > 0:
        rng = np.random.default_rng([plan.seed, 0xA11])
        weights, _ = trainer.fit(start, data.x_train, data.y_train, epochs=epochs,
                                 batch_size=plan.batch_size, learning_rate=plan.learning_rate,
                                 rng=rng)
    return TrainedModel(weights, epochs, tuple(losses))


def fit_intercept(trainer: LocalTrainer, weights: NDArrays, x: np.ndarray, y: np.ndarray, *,
                  l2: float = INTERCEPT_L2) -> NDArrays:
    """`weights` with the output layer's bias refitted to rows (x, y): a personal intercept.

    The shift b added to the output bias maximises the rows' likelihood with a Gaussian prior
    (penalty ``l2 * |b|^2 / 2``) on b: for a sigmoid output a 1-D Newton fit on the logits,
    softmax by gradient steps on the log-probabilities, regression the shrunk mean residual
    (in the output layer's units, before ``target_scale``). The other weights are unchanged.
    """
    task = trainer.task
    out = np.asarray(trainer.predict(weights, x), dtype=np.float64).reshape(len(y), -1)
    y = np.asarray(y, dtype=np.float64)
    if task.kind == "binary":
        p = np.clip(out[:, 0], _EPS, 1 - _EPS)
        z, b = np.log(p / (1 - p)), 0.0
        for _ in range(50):
            q = special.expit(z + b)  # 1 / (1 + exp(-(z + b))), without overflow
            b -= (np.sum(q - y) + l2 * b) / (np.sum(q * (1 - q)) + l2)
        shift = np.array([b])
    elif task.kind == "multiclass":
        z = np.log(np.clip(out, _EPS, 1.0))
        onehot = np.eye(out.shape[1])[y.astype(int)]
        shift = np.zeros(out.shape[1])
        for _ in range(300):
            e = np.exp(z + shift - (z + shift).max(axis=1, keepdims=True))
            q = e / e.sum(axis=1, keepdims=True)
            shift -= (np.sum(q - onehot, axis=0) + l2 * shift) / (len(y) / 2 + l2)
    else:
        residual = (y - out[:, 0]) / task.target_scale
        shift = np.array([np.sum(residual) / (len(y) + l2)])
    bias = np.asarray(weights[-1])
    return [*weights[:-1], (bias + shift.reshape(bias.shape)).astype(bias.dtype)]


def _candidates(trainer: LocalTrainer, global_weights: NDArrays, data: HospitalData,
                fit: np.ndarray, plan: TrainingPlan, *, priors: tuple[float, ...],
                max_epochs: int) -> list[tuple[str, NDArrays]]:
    """The personal model's candidates, trained on the `fit` rows: the global model kept, its
    intercept refitted under each prior, and (max_epochs > 0) the best-prior intercept
    fine-tuned for 1..max_epochs epochs at ``plan.tuning_rate``.
    """
    x_fit, y_fit = data.x_train[fit], data.y_train[fit]
    out: list[tuple[str, NDArrays]] = [("global", global_weights)]
    out += [(f"intercept (prior {l2:g})", fit_intercept(trainer, global_weights, x_fit, y_fit,
                                                          l2=l2)) for l2 in priors]
    if max_epochs > 0:
        label, weights = out[-1]
        rng = np.random.default_rng([plan.seed, 0xF17])
        for epoch in range(1, max_epochs + 1):
            weights, _ = trainer.fit(weights, x_fit, y_fit, epochs=1,
                                     batch_size=plan.batch_size,
                                     learning_rate=plan.tuning_rate, rng=rng)
            out.append((f"{label} + {epoch} epochs", weights))
    return out


def _refit(trainer: LocalTrainer, global_weights: NDArrays, data: HospitalData, choice: str,
           plan: TrainingPlan, priors: tuple[float, ...]) -> NDArrays:
    """The chosen candidate again, trained on all the training rows."""
    if choice == "global":
        return global_weights
    prior = next(l2 for l2 in priors if choice.startswith(f"intercept (prior {l2:g})"))
    weights = fit_intercept(trainer, global_weights, data.x_train, data.y_train, l2=prior)
    epochs = int(choice.split(" + ")[1].split()[0]) if " + " in choice else 0
    if epochs:
        rng = np.random.default_rng([plan.seed, 0xA11])
        weights, _ = trainer.fit(weights, data.x_train, data.y_train, epochs=epochs,
                                 batch_size=plan.batch_size, learning_rate=plan.tuning_rate,
                                 rng=rng)
    return weights


def fine_tune(trainer: LocalTrainer, global_weights: NDArrays, data: HospitalData,
              plan: TrainingPlan, *, max_epochs: int = MAX_FINE_TUNING_EPOCHS,
              priors: tuple[float, ...] = INTERCEPT_PRIORS) -> TrainedModel:
    """The personal model: the global model with the hospital's own intercept (optionally
    fine-tuned further), chosen on the training rows' validation split. No DP.

    Candidates (``_candidates``) are trained on the fit part of the training rows and scored
    by their mean loss on the validation part; the best is trained again on all training
    rows. ``epochs`` is -1 when the global model is kept, else the fine-tuning epochs after
    the intercept (0: the intercept alone); ``choice`` names it.
    """
    fit, validation = validation_split(data.y_train, seed=plan.seed)
    task = trainer.task
    x_val, y_val = data.x_train[validation], data.y_train[validation]
    scored = []
    for label, weights in _candidates(trainer, global_weights, data, fit, plan, priors=priors,
                                      max_epochs=max_epochs):
        loss = mean_loss(task.kind, y_val, trainer.predict(weights, x_val), task.target_scale)
        scored.append((label, loss if np.isfinite(loss) else np.inf))
    choice = min(scored, key=lambda item: item[1])[0]
    weights = _refit(trainer, global_weights, data, choice, plan, priors)
    epochs = -1 if choice == "global" else (
        int(choice.split(" + ")[1].split()[0]) if " + " in choice else 0)
    return TrainedModel(weights, epochs, tuple(loss for _, loss in scored), choice)


def train_local_only(trainer: LocalTrainer, data: HospitalData, plan: TrainingPlan, *,
                     max_epochs: int = MAX_LOCAL_EPOCHS) -> TrainedModel:
    """The local-only model: the task's initial model trained on this hospital's rows alone,
    for 1..max_epochs epochs chosen on the training rows' validation split. No DP.
    """
    start = [np.asarray(w) for w in build_model(trainer.task, seed=plan.seed).get_weights()]
    return _train_chosen(trainer, start, data, min_epochs=1, max_epochs=max_epochs, plan=plan)


def personal_model_path(ledger_path: Path) -> Path:
    """The hospital's personal model: ``<ledger stem>.personal.keras`` beside the ledger."""
    return ledger_path.with_name(f"{ledger_path.stem}.personal.keras")


def global_model_path(ledger_path: Path) -> Path:
    """The final global model the hospital received: ``<ledger stem>.global.keras``."""
    return ledger_path.with_name(f"{ledger_path.stem}.global.keras")


def personal_info_path(ledger_path: Path) -> Path:
    """How the personal model was trained: ``<ledger stem>.personal.jsonl`` (one line)."""
    return ledger_path.with_name(f"{ledger_path.stem}.personal.jsonl")


def weights_digest(weights: NDArrays) -> str:
    """SHA-256 (hex) over the arrays' dtypes, shapes and bytes, in order."""
    digest = hashlib.sha256()
    for array in weights:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_model(trainer: LocalTrainer, weights: NDArrays, path: Path) -> None:
    """Write `weights` as a Keras model file atomically (a temporary .keras renamed over).

    A model of its own, not the trainer's: the trainer is shared by every hospital of the
    process, and another hospital may load its weights at any moment.
    """
    model = build_model(trainer.task, seed=0)
    model.set_weights(weights)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def already_personalised(ledger_path: Path, run_id: str, digest: str) -> bool:
    """Whether the personal model on disk was trained from this run's model `digest`."""
    if not personal_model_path(ledger_path).is_file():
        return False
    try:
        info = json.loads(personal_info_path(ledger_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("run") == run_id \
        and info.get("global_sha256") == digest


def write_personal_info(ledger_path: Path, info: dict[str, object]) -> None:
    """Write the personal model's provenance line atomically."""
    path = personal_info_path(ledger_path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(info) + "\n", encoding="utf-8")
    os.replace(tmp, path)
