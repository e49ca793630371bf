"""What a hospital got by joining, at the hospital: its own report beside its ledger, never sent.

When the run's final global model arrives (``client.evaluation_round``), the hospital trains
its personal and local-only models (``client.personalisation``) and scores four predictors
on its own test rows: the global model, the personal model, the local-only model and the
majority class of its training rows. Classification: accuracy, balanced accuracy and AUC
(scikit-learn); regression: MAE and R^2. The gain of joining is the global and the personal
model's metric minus the local-only model's.

Files beside the ledger (``<ledger stem>``: e.g. ``cleveland`` for ``cleveland.json``):

- ``<stem>.report.csv``: one row per predictor (hospital, run, round, model, test_rows,
  epochs, then the metrics);
- ``<stem>.report.md``: the table, the gains, the plot and the privacy note;
- ``<stem>.report.png``: bars per metric and predictor with the hospital's own chance line;
- ``<stem>.personal.keras``, ``<stem>.global.keras``, ``<stem>.personal.jsonl``.

Everything here is exact and computed from models trained without DP: it stays at the
hospital (no reply carries it; ``common.wire.statement``).
"""

import csv
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.personalisation import (
    TrainedModel,
    TrainingPlan,
    already_personalised,
    fine_tune,
    global_model_path,
    personal_model_path,
    save_model,
    train_local_only,
    weights_digest,
    write_personal_info,
)
from client.training import LocalTrainer
from common.tasks import HospitalData
from common.types import NDArrays

logger = logging.getLogger(__name__)

MODELS = ("global", "personal", "local_only", "majority")
CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "auc")
REGRESSION_METRICS = ("mae", "r2")


@dataclass(frozen=True, slots=True)
class FinalModel:
    """The run's final global model as a hospital received it, and whose run it is."""

    run_id: str
    server_round: int
    weights: NDArrays


def report_path(ledger_path: Path, suffix: str) -> Path:
    """``<ledger stem>.report.<suffix>`` beside the ledger (csv, md or png)."""
    return ledger_path.with_name(f"{ledger_path.stem}.report.{suffix}")


def metric_names(kind: str) -> tuple[str, ...]:
    """The report's metrics for a task kind."""
    return REGRESSION_METRICS if kind == "regression" else CLASSIFICATION_METRICS


def score(kind: str, y_true: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """The report's metrics of model `outputs` (rows,) / (rows, classes) on labels `y_true`.

    AUC is NaN where the test rows hold one class only.
    """
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        mean_absolute_error,
        r2_score,
        roc_auc_score,
    )

    y = np.asarray(y_true)
    out = np.asarray(outputs, dtype=np.float64)
    if kind == "regression":
        predicted = out.reshape(-1)
        return {"mae": float(mean_absolute_error(y, predicted)),
                "r2": float(r2_score(y, predicted)) if len(y) > 1 else float("nan")}
    labels = y.astype(int)
    if kind == "binary":
        scores = out.reshape(-1)
        predicted = (scores >= 0.5).astype(int)
    else:
        scores = out
        predicted = out.argmax(axis=1)
    auc = float("nan")
    if len(np.unique(labels)) > 1:
        auc = float(roc_auc_score(labels, scores, multi_class="ovr",
                                  labels=None if kind == "binary" else np.arange(out.shape[1])))
    return {"accuracy": float(accuracy_score(labels, predicted)),
            "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
            "auc": auc}


def majority_outputs(kind: str, y_train: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """A constant predictor's outputs: the training rows' majority class (its score 1), or
    their mean (regression), for `rows` test rows.
    """
    if kind == "regression":
        return np.full((rows, 1), float(np.mean(y_train)))
    counts = np.bincount(np.asarray(y_train, dtype=int), minlength=max(columns, 2))
    majority = int(np.argmax(counts))
    if kind == "binary":
        return np.full((rows, 1), float(majority))
    out = np.zeros((rows, columns))
    out[:, majority] = 1.0
    return out


def hospital_rows(trainer: LocalTrainer, data: HospitalData, final: FinalModel,
                  personal: TrainedModel, local: TrainedModel) -> list[dict[str, object]]:
    """The report's rows: each predictor's metrics on the hospital's test rows."""
    kind = trainer.task.kind
    outputs = {"global": trainer.predict(final.weights, data.x_test),
               "personal": trainer.predict(personal.weights, data.x_test),
               "local_only": trainer.predict(local.weights, data.x_test)}
    columns = outputs["global"].reshape(data.num_test, -1).shape[1]
    outputs["majority"] = majority_outputs(kind, data.y_train, data.num_test, columns)
    epochs = {"global": "", "personal": personal.epochs, "local_only": local.epochs,
              "majority": ""}
    return [{"hospital": data.name, "run": final.run_id, "round": final.server_round,
             "model": model, "test_rows": data.num_test, "epochs": epochs[model],
             **score(kind, data.y_test, outputs[model])} for model in MODELS]


def personalise_and_report(trainer: LocalTrainer, data: HospitalData, final: FinalModel,
                           plan: TrainingPlan, ledger_path: Path) -> list[dict[str, object]]:
    """Train the personal and local-only models, save them and write the hospital's report.

    Returns the report's rows ([] when the personal model on disk already comes from this
    run's final model: nothing is trained twice). Nothing is written where the ledger's
    directory is missing.
    """
    if not ledger_path.parent.is_dir():
        return []
    digest = weights_digest(final.weights)
    if already_personalised(ledger_path, final.run_id, digest):
        return []
    started = time.monotonic()
    personal = fine_tune(trainer, final.weights, data, plan)
    local = train_local_only(trainer, data, plan)
    rows = hospital_rows(trainer, data, final, personal, local)
    save_model(trainer, final.weights, global_model_path(ledger_path))
    save_model(trainer, personal.weights, personal_model_path(ledger_path))
    write_personal_info(ledger_path, {
        "utc": time.time(), "run": final.run_id, "round": final.server_round,
        "global_sha256": digest, "choice": personal.choice, "epochs": personal.epochs,
        "local_only_epochs": local.epochs, "learning_rate": plan.learning_rate,
        "batch_size": plan.batch_size, "seed": plan.seed, "dp": False,
        "validation_loss": [round(v, 6) for v in personal.validation_loss]})
    write_report(rows, ledger_path, kind=trainer.task.kind)
    logger.info("%s: personal model (%s) and report written in %.2f s", data.name,
                personal.choice, time.monotonic() - started)
    return rows


def write_rows(rows: list[dict[str, object]], path: Path) -> None:
    """Write dict rows as CSV atomically (a temporary file renamed over `path`)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def write_report(rows: list[dict[str, object]], ledger_path: Path, *, kind: str) -> None:
    """Write ``<stem>.report.csv``, ``.md`` and ``.png`` beside the ledger."""
    write_rows(rows, report_path(ledger_path, "csv"))
    plot = report_path(ledger_path, "png")
    plot_report(rows, plot, kind=kind)
    text = report_markdown(rows, kind=kind, plot_name=plot.name)
    report_path(ledger_path, "md").write_text(text, encoding="utf-8")


def _cell(value: object) -> str:
    number = float(value)  # type: ignore[arg-type]
    return "n/a" if not np.isfinite(number) else f"{number:.3f}"


def report_markdown(rows: list[dict[str, object]], *, kind: str, plot_name: str) -> str:
    """The hospital's report as markdown: table, gains of joining, plot, privacy note."""
    names = metric_names(kind)
    first = rows[0]
    by_model = {str(r["model"]): r for r in rows}
    lines = [f"# What {first['hospital']} got by joining (run {first['run']})", "",
             f"Exact, on this hospital's own {first['test_rows']} test rows (one row moves "
             f"accuracy by {1 / max(1, int(str(first['test_rows']))):.3f}). Never sent.", "",
             "| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {model} | " + " | ".join(_cell(by_model[model][m]) for m in names) + " |"
              for model in MODELS]
    lines += ["", "Gain of joining (minus the local-only model; for MAE lower is better):", "",
              "| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for model in ("global", "personal"):
        gains = [float(by_model[model][m]) - float(by_model["local_only"][m])  # type: ignore[arg-type]
                 for m in names]
        lines.append(f"| {model} | " + " | ".join(_cell(g) for g in gains) + " |")
    lines += ["", f"![what this hospital got]({plot_name})", "",
              "global: the federation's final model; personal: it with this hospital's own "
              "intercept, fitted here on its training rows where a validation split of them "
              "favoured it (how: `<ledger stem>.personal.jsonl`); "
              "local_only: trained on this hospital's rows alone; majority: always the "
              "training rows' most frequent class (the chance line).", "",
              "The personal and local-only models are trained without differential privacy: "
              "they, and every figure above, stay at this hospital.", ""]
    return "\n".join(lines)


def plot_report(rows: list[dict[str, object]], path: Path, *, kind: str) -> None:
    """Bars per metric and predictor, the hospital's own chance line dotted (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = metric_names(kind)
    by_model = {str(r["model"]): r for r in rows}
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / 3
    for offset, model in enumerate(("global", "personal", "local_only")):
        values = [float(by_model[model][m]) for m in names]  # type: ignore[arg-type]
        ax.bar(np.arange(len(names)) + (offset - 1) * width, np.nan_to_num(values), width,
               label=model)
    for position, metric in enumerate(names):
        chance = float(by_model["majority"][metric])  # type: ignore[arg-type]
        if metric == "auc" or not np.isfinite(chance):
            chance = 0.5
        ax.hlines(chance, position - 0.45, position + 0.45, colors="black", linestyles="dotted",
                  label="chance (majority class)" if position == 0 else "_nolegend_")
    ax.set_xticks(np.arange(len(names)), list(names))
    ax.set_title(f"{rows[0]['hospital']}: {rows[0]['test_rows']} test rows")
    if kind != "regression":
        ax.set_ylim(0, 1.2)  # room for the legend above the bars
    ax.legend(fontsize="small", loc="upper center", ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
