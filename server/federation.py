"""The round driver: the one place that runs a federation's rounds and writes its outputs.

Each round trains on every hospital, aggregates through the strategy's hooks, evaluates the
new global model on every hospital's test set, appends a metrics.csv row and moves the progress
bar. At the end it saves ``model.keras`` (loads with plain Keras) and writes the report.
"""

import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from common import record_keys as keys
from common.config import RunConfig
from common.models import build_model
from common.server_optimizers import ServerOptimizer
from common.tasks import get_task
from common.types import NDArrays
from common.version import fedcare_version
from server.evaluation import summarize_round
from server.progress import RoundProgress
from common.secagg.update_vector import encoding_scale
from server.report import write_report
from server.secure_round import run_secure_round
from server.run_directory import MetricsWriter, metrics_columns, package_versions, write_json_atomic
from server.strategy import FedcareStrategy, FederationError

logger = logging.getLogger(__name__)

ROUND_TIMEOUT_SECONDS = 3600.0
PULL_INTERVAL_SECONDS = 0.01


def round_settings(config: RunConfig, run_id: str) -> ConfigRecord:
    """The settings every hospital receives with the global weights (a plan, not a budget)."""
    return ConfigRecord({
        keys.RUN_ID: run_id,
        keys.FEDCARE_VERSION: fedcare_version(),
        keys.PLANNED_ROUNDS: config.num_server_rounds,
        keys.DP_MODE: config.dp_mode,
        keys.CLIPPING_NORM: config.dp_clipping_norm,
        keys.UPDATE_CLIPPING_NORM: config.dp_update_clipping_norm,
        keys.LOCAL_STEPS: config.local_steps,
        keys.TASK: config.task,
        keys.HOSPITALS: config.hospitals,
        keys.SEED: config.seed,
        keys.PARTITION: config.partition,
        keys.DIRICHLET_ALPHA: config.dirichlet_alpha,
        keys.LOCAL_EPOCHS: config.local_epochs,
        keys.BATCH_SIZE: config.batch_size,
        keys.LEARNING_RATE: config.learning_rate,
        keys.WEIGHTING: config.weighting,
        keys.NOISE_MODE: config.dp_noise_mode,
        keys.SECAGG_ENABLED: config.secagg_enabled,
        keys.SECAGG_THRESHOLD: config.effective_threshold if config.secagg_enabled else 0,
        keys.SECAGG_CLIP_BOUND: config.secagg_clip_bound,
        keys.SECAGG_SCALE: secagg_scale(config),
    })


def secagg_scale(config: RunConfig) -> float:
    """The fixed-point scale every hospital encodes with (0 without secure aggregation)."""
    if not config.secagg_enabled:
        return 0.0
    return encoding_scale(clip_bound=config.secagg_clip_bound, num_hospitals=config.hospitals)


def run_federation(grid: Grid, config: RunConfig, run_dir: Path) -> NDArrays:
    """Run all rounds, writing config.json, metrics.csv, model.keras and report.md to run_dir.

    Returns the final global weights.

    Raises
    ------
    FederationError
        If the hospitals do not connect, or a round gets no usable reply (with the reasons).
    """
    task = get_task(config.task)
    hospitals = task.hospital_names(config.hospitals)
    run_id = uuid.uuid4().hex
    if hasattr(grid, "pull_interval"):
        # Flower's in-memory (simulation) grid sleeps this long between polls for replies
        # (0.1 s by default, a documented constructor argument); a round makes 2 to 5 such
        # exchanges, so a finer poll trims each round's idle time.
        grid.pull_interval = PULL_INTERVAL_SECONDS
    write_json_atomic(run_dir / "config.json", {
        "run_id": run_id,
        "started_utc": datetime.now(UTC).isoformat(),
        "settings": config.as_dict(),
        "run_config": config.to_run_config(),
        "hospitals": hospitals,
        "versions": package_versions(),
    })
    model = build_model(task, seed=config.seed)
    weights = [w.copy() for w in model.get_weights()]
    strategy = FedcareStrategy(
        hospitals=config.hospitals,
        optimizer=ServerOptimizer(config.server_optimizer, config.server_learning_rate),
        # DP replies carry no example counts: a weighted mean would need them.
        weighted=config.weighting == "examples" and not config.private,
    )
    if config.dp_mode == "patient" and not config.secagg_enabled:
        strategy.update_norm_bound = config.dp_update_clipping_norm
    writer = MetricsWriter(run_dir / "metrics.csv", metrics_columns(task.metric_names, hospitals))
    headline = ("pooled_loss", *(f"client_avg_{m}" for m in task.metric_names),
                *(("epsilon_patient_max",) if config.dp_mode == "patient" else ()),
                *(("epsilon_hospital_max",) if config.dp_mode == "hospital" else ()))
    stop_reason = ""
    aborted_rounds: list[str] = []
    settings = round_settings(config, run_id)
    # Under secure aggregation a round's evaluation rides on the next round's first message
    # (it carries the very weights to evaluate): its row waits here until then.
    pending: dict[str, Any] | None = None

    def finish(row: dict[str, Any], evaluation: dict[str, Any]) -> None:
        row.update(summarize_round(task, evaluation))
        writer.append(row)
        progress.round_done(row)

    with RoundProgress(config.num_server_rounds, headline=headline, title=task.name) as progress:
        for server_round in range(1, config.num_server_rounds + 1):
            started = time.perf_counter()
            defer = config.secagg_enabled and server_round < config.num_server_rounds
            try:
                row = _run_round(grid, strategy, server_round, weights, settings, config,
                                 evaluate=not defer)
            except FederationStopped as stop:
                stop_reason = str(stop)
                logger.warning("%s", stop_reason)
                break
            finally:
                if pending is not None and strategy.received_evaluation:
                    pending["seconds"] = started - pending.pop("started")
                    finish(pending, strategy.received_evaluation)
                    pending = None
            weights = row.pop("weights")
            if aborted := row.pop("aborted"):
                aborted_rounds.append(f"round {server_round}: {aborted}")
            row.update(privacy_columns(strategy))
            if defer:
                pending = {**row, "started": started}
            else:
                finish(row, strategy.last_evaluation)
    model.set_weights(weights)
    model.save(run_dir / "model.keras")
    write_report(run_dir, task=task, hospitals=hospitals, config=config.as_dict(),
                 epsilon=strategy.epsilon_spent, stop_reason=stop_reason,
                 aborted_rounds=aborted_rounds)
    return weights


def privacy_columns(strategy: FedcareStrategy) -> dict[str, Any]:
    """The round's ``declined`` count and the largest epsilon spent so far at each level."""
    spent = strategy.epsilon_spent.values()
    return {
        "declined": len(strategy.last_declined),
        "rejected": len(strategy.last_rejected),
        "epsilon_patient_max": max((s["patient"] for s in spent), default=0.0),
        "epsilon_hospital_max": max((s["hospital"] for s in spent), default=0.0),
    }


class FederationStopped(FederationError):
    """The run ends early, cleanly: too few hospitals can still take part."""


def _train(
    grid: Grid, strategy: FedcareStrategy, server_round: int, weights: NDArrays,
    settings: ConfigRecord, config: RunConfig,
) -> tuple[NDArrays | None, int, str]:
    """Run the round's training; return (new weights or None, participants, abort reason)."""
    if config.secagg_enabled:
        secure = run_secure_round(
            grid, strategy, server_round, weights, settings,
            threshold=config.effective_threshold, clip_bound=config.secagg_clip_bound,
            scale=secagg_scale(config), timeout=ROUND_TIMEOUT_SECONDS,
            advertised=strategy.advertised_keys,
            last_round=server_round == config.num_server_rounds)
        strategy.advertised_keys = secure.next_keys
        return secure.weights, secure.survivors, secure.aborted
    replies = grid.send_and_receive(
        strategy.configure_train(server_round, ArrayRecord(weights), settings, grid),
        timeout=ROUND_TIMEOUT_SECONDS,
    )
    arrays, train_metrics = strategy.aggregate_train(server_round, replies)
    participants = int(train_metrics["participants"]) if train_metrics else 0
    return (arrays.to_numpy_ndarrays() if arrays is not None else None), participants, ""


def _run_round(
    grid: Grid, strategy: FedcareStrategy, server_round: int, weights: NDArrays,
    settings: ConfigRecord, config: RunConfig, *, evaluate: bool = True,
) -> dict[str, Any]:
    started = time.perf_counter()
    min_hospitals = config.min_hospitals
    new_weights, participants, aborted = _train(grid, strategy, server_round, weights, settings,
                                                config)
    if strategy.last_declined and participants < min_hospitals:
        reasons = "; ".join(f"{name}: {why}" for name, why in sorted(strategy.last_declined.items()))
        raise FederationStopped(
            f"stopped before round {server_round}: {participants} hospital(s) can take part, "
            f"fewer than the minimum of {min_hospitals} ({reasons})"
        )
    if aborted:
        # Secure aggregation aborted: nothing was unmasked and the global model stays.
        new_weights = weights
    elif new_weights is None:
        reasons = strategy.last_errors + [f"{name}: {why}" for name, why
                                          in sorted(strategy.last_rejected.items())]
        raise FederationError(
            f"round {server_round}: no hospital returned a usable update "
            f"({'; '.join(reasons) or 'no replies'})"
        )
    if not evaluate:
        return {"round": server_round, "seconds": time.perf_counter() - started,
                "participants": 0 if aborted else participants, "weights": new_weights,
                "aborted": aborted}
    replies = grid.send_and_receive(
        strategy.configure_evaluate(server_round, ArrayRecord(new_weights), settings, grid),
        timeout=ROUND_TIMEOUT_SECONDS,
    )
    if strategy.aggregate_evaluate(server_round, replies) is None:
        raise FederationError(
            f"round {server_round}: no hospital returned an evaluation "
            f"({'; '.join(strategy.last_errors) or 'no replies'})"
        )
    return {
        "round": server_round,
        "seconds": time.perf_counter() - started,
        "participants": 0 if aborted else participants,
        "weights": new_weights,
        "aborted": aborted,
    }
