"""Centralised baselines, as FLamby reports them: pooled training and local-only training.

"pooled" trains one model on the union of all hospitals' training sets (each normalised as the
federated clients see them: the run's normalisation setting); "local-<hospital>" trains on one
hospital only. Every model is evaluated on every hospital's test set: ``client_avg_*`` is the
unweighted mean over hospitals, ``pooled_*`` the metric on the union of the test sets.

Baselines keep no checkpoint: Ctrl-C (SIGINT) or SIGTERM stops them at once (exit 130 / 143),
keeping only the rows of the models already trained (in ``baseline.csv``, rewritten after each
model, when the run has an output directory).
"""

import csv
import os
import sys
from pathlib import Path

import numpy as np

from common.config import RunConfig
from common.metrics import evaluation_statistics
from common.models import build_model
from common.tasks import HospitalData, get_task, load_task_hospitals
from server.evaluation import summarize_round
from simulations.engine.process_tree import exit_on_signals


def train_centrally(
    config: RunConfig, x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int
) -> list[np.ndarray]:
    """Train the task's model on (x, y) with the federation's local optimizer settings."""
    from client.training import get_trainer

    task = get_task(config.task)
    weights = build_model(task, seed=seed).get_weights()
    trainer = get_trainer(task)
    rng = np.random.default_rng([seed, 0xBA5E])
    trained, _ = trainer.fit(weights, x, y, epochs=epochs, batch_size=config.batch_size,
                             learning_rate=config.learning_rate, rng=rng)
    return trained


def evaluate_everywhere(config: RunConfig, weights: list[np.ndarray],
                        hospitals: list[HospitalData]) -> dict[str, float]:
    """Return pooled, client-average and per-hospital test metrics of one model."""
    from client.training import get_trainer

    task = get_task(config.task)
    trainer = get_trainer(task)
    stats = {
        h.name: evaluation_statistics(task.kind, h.y_test, trainer.predict(weights, h.x_test),
                                      target_scale=task.target_scale)
        for h in hospitals
    }
    return summarize_round(task, stats)


def run_baselines(config: RunConfig, *, seeds: list[int],
                  out_dir: Path | None = None) -> list[dict[str, object]]:
    """Return one row per (method, seed): pooled training and each hospital's local training.

    Each model trains for ``num_server_rounds * local_epochs`` epochs, the federation's budget.
    A line on stderr marks each model trained; with `out_dir`, ``baseline.csv`` holds the rows
    so far after each. SIGINT or SIGTERM ends the process at once (exit 130 / 143), saying
    which models' rows were kept and what was lost.
    """
    task = get_task(config.task)
    hospitals = load_task_hospitals(task, config.hospitals, seed=config.seed,
                                    partition=config.partition, alpha=config.dirichlet_alpha,
                                    normalisation=config.normalisation.value,
                                    missing_indicator=config.missing_indicator)
    epochs = config.num_server_rounds * config.local_epochs
    training_sets = {"pooled": hospitals} | {f"local-{h.name}": [h] for h in hospitals}
    rows: list[dict[str, object]] = []
    total = len(seeds) * len(training_sets)
    with exit_on_signals(lambda: _interrupted(len(rows), total, out_dir)):
        for seed in seeds:
            for method, members in training_sets.items():
                x = np.concatenate([h.x_train for h in members])
                y = np.concatenate([h.y_train for h in members])
                weights = train_centrally(config, x, y, epochs=epochs, seed=seed)
                row = {"method": method, "seed": seed,
                       **evaluate_everywhere(config, weights, hospitals)}
                if out_dir is not None:
                    write_rows([*rows, row], out_dir / "baseline.csv")
                rows.append(row)
                sys.stderr.write(f"baseline: {method} (seed {seed}) trained, "
                                 f"{len(rows)} of {total} models\n")
                sys.stderr.flush()
    return rows


def _interrupted(done: int, total: int, out_dir: Path | None) -> str:
    """What an interruption keeps and loses (baselines keep no checkpoint)."""
    if out_dir is not None and done:
        return (f"stopping the baselines. The rows of the {done} of {total} models trained so "
                f"far are kept in {out_dir / 'baseline.csv'}; the model in training and "
                "baseline.md are lost. Run `fedcare baseline` again (--force) for the table")
    return (f"stopping the baselines. {done} of {total} models were trained; baselines keep no "
            "checkpoint, so nothing is kept. Run `fedcare baseline` again for the table")


def write_rows(rows: list[dict[str, object]], path: Path) -> None:
    """Write baseline rows as CSV atomically (a temporary file renamed over `path`)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_baselines(rows: list[dict[str, object]], out_dir: Path,
                    metric_names: tuple[str, ...]) -> str:
    """Write baseline.csv and baseline.md (mean ± sd over seeds); return the markdown table."""
    write_rows(rows, out_dir / "baseline.csv")
    headline = [f"{kind}_{m}" for m in metric_names for kind in ("client_avg", "pooled")]
    lines = ["| method | " + " | ".join(headline) + " |", "|---" * (len(headline) + 1) + "|"]
    for method in dict.fromkeys(str(r["method"]) for r in rows):
        chosen = [r for r in rows if r["method"] == method]
        cells = []
        for column in headline:
            values = np.array([float(r[column]) for r in chosen])  # type: ignore[arg-type]
            cells.append(f"{np.nanmean(values):.3f} ± {np.nanstd(values):.3f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    seeds = sorted({int(r["seed"]) for r in rows})  # type: ignore[call-overload]
    table = "\n".join(lines)
    (out_dir / "baseline.md").write_text(
        f"# Centralised baselines\n\nMean ± sd over seeds {seeds}.\n\n{table}\n"
    )
    return table


