"""Centralised baselines, as FLamby reports them: pooled training and local-only training.

"pooled" trains one model on the union of all hospitals' training sets (each z-scored with its
own hospital's statistics, as the federated clients see them); "local-<hospital>" trains on one
hospital only. Every model is evaluated on every hospital's test set: ``client_avg_*`` is the
unweighted mean over hospitals, ``pooled_*`` the metric on the union of the test sets.
"""

import csv
from pathlib import Path

import numpy as np

from common.config import RunConfig
from common.metrics import evaluation_statistics
from common.models import build_model
from common.tasks import HospitalData, get_task, load_task_hospitals
from server.evaluation import summarize_round


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


def run_baselines(config: RunConfig, *, seeds: list[int]) -> list[dict[str, object]]:
    """Return one row per (method, seed): pooled training and each hospital's local training.

    Each model trains for ``num_server_rounds * local_epochs`` epochs, the federation's budget.
    """
    task = get_task(config.task)
    hospitals = load_task_hospitals(task, config.hospitals, seed=config.seed,
                                    partition=config.partition, alpha=config.dirichlet_alpha)
    epochs = config.num_server_rounds * config.local_epochs
    training_sets = {"pooled": hospitals} | {f"local-{h.name}": [h] for h in hospitals}
    rows: list[dict[str, object]] = []
    for seed in seeds:
        for method, members in training_sets.items():
            x = np.concatenate([h.x_train for h in members])
            y = np.concatenate([h.y_train for h in members])
            weights = train_centrally(config, x, y, epochs=epochs, seed=seed)
            rows.append({"method": method, "seed": seed,
                         **evaluate_everywhere(config, weights, hospitals)})
    return rows


def write_baselines(rows: list[dict[str, object]], out_dir: Path, metric_names: tuple[str, ...]) -> str:
    """Write baseline.csv and baseline.md (mean ± sd over seeds); return the markdown table."""
    columns = list(rows[0])
    with open(out_dir / "baseline.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
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


