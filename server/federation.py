"""The round driver: the one place that runs a federation's rounds and writes its outputs.

Each round trains on every hospital, aggregates through the strategy's hooks, evaluates the
new global model on every hospital's test set, appends a metrics.csv row and moves the progress
bar. At the end it saves ``model.keras`` (loads with plain Keras) and writes the report.
"""

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from common import record_keys as keys
from common.config import RunConfig
from common.models import build_model
from common.server_optimizers import ServerOptimizer
from common.tasks import task_for_config
from common.types import NDArrays
from common.version import fedcare_version
from server.checkpoint import Checkpoint, load_latest_checkpoint, save_checkpoint
from server.evaluation import summarize_round
from server.progress import RoundProgress
from common.secagg.update_vector import encoding_scale
from server.report import write_report
from server.secure_round import run_secure_round
from server.run_directory import MetricsWriter, metrics_columns, package_versions, write_json_atomic
from server.strategy import FedcareStrategy, FederationError

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
# The first round a server process runs also waits for the hospitals' apps to start (Ray
# workers or SuperNode app processes import TensorFlow: 10-30 s here); its deadline gets this
# much on top of round-timeout.
STARTUP_ALLOWANCE_SECONDS = 300.0
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
        keys.CLIP_UPDATES: config.clip_updates,
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
    """Run all rounds, writing config.json, metrics.csv, checkpoint/, model.keras and report.md.

    With ``config.resume`` it continues from the last intact checkpoint in ``run_dir``: same
    run id (so hospitals' ledgers key the repeated round the same way), weights, optimizer
    state and metrics rows. Returns the final global weights.

    Raises
    ------
    FederationError
        If the hospitals do not connect, or a round gets no usable reply (with the reasons).
    CheckpointError
        If resuming and no intact checkpoint exists.
    """
    task = task_for_config(config)  # task csv: built from the schema at csv.schema-path
    hospitals = task.hospital_names(config.hospitals)
    resumed = load_latest_checkpoint(run_dir / CHECKPOINT_DIR) if config.resume else None
    if resumed is not None:
        _check_same_settings(config, resumed)
    run_id = resumed.run_id if resumed else uuid.uuid4().hex
    if hasattr(grid, "pull_interval"):
        # Flower's in-memory (simulation) grid sleeps this long between polls for replies
        # (0.1 s by default, a documented constructor argument); a round makes 2 to 5 such
        # exchanges, so a finer poll trims each round's idle time.
        grid.pull_interval = PULL_INTERVAL_SECONDS
    _write_config(run_dir, config, run_id, hospitals, resumed)
    model = build_model(task, seed=config.seed)
    weights = [w.copy() for w in model.get_weights()]
    strategy = FedcareStrategy(
        hospitals=config.hospitals,
        optimizer=ServerOptimizer(config.server_optimizer, config.server_learning_rate),
        # DP replies carry no example counts: a weighted mean would need them.
        weighted=config.weighting == "examples" and not config.private,
        aggregator=config.aggregator, trim_fraction=config.trim_fraction,
    )
    strategy.update_norm_bound = update_norm_bound(config)
    writer = MetricsWriter(run_dir / "metrics.csv", metrics_columns(task.metric_names, hospitals),
                           rows=resumed.metrics_rows if resumed else [])
    headline = ("pooled_loss", *(f"client_avg_{m}" for m in task.metric_names),
                *(("epsilon_patient_max",) if config.dp_mode == "patient" else ()),
                *(("epsilon_hospital_max",) if config.dp_mode == "hospital" else ()))
    stop_reason = ""
    aborted_rounds: list[str] = []
    settings = round_settings(config, run_id)
    # Under secure aggregation a round's evaluation rides on the next round's first message
    # (it carries the very weights to evaluate): its row waits here until then.
    pending: dict[str, Any] | None = None
    first_round = 1
    if resumed:
        weights, first_round = resumed.weights, resumed.round + 1
        strategy.optimizer.state = resumed.optimizer_state
        strategy.epsilon_spent = resumed.extra.get("epsilon_spent", {})
        aborted_rounds = resumed.extra.get("aborted_rounds", [])
        pending = resumed.extra.get("pending")
        logger.warning("resuming run %s after round %d of %d", run_id, resumed.round,
                       config.num_server_rounds)

    def finish(row: dict[str, Any], evaluation: dict[str, Any]) -> None:
        row.update(summarize_round(task, evaluation))
        writer.append(row)
        progress.round_done(row)

    with RoundProgress(config.num_server_rounds, headline=headline, title=task.name,
                       completed=first_round - 1) as progress:
        for server_round in range(first_round, config.num_server_rounds + 1):
            started = time.perf_counter()
            defer = config.secagg_enabled and server_round < config.num_server_rounds
            try:
                timeout = config.round_timeout + (
                    STARTUP_ALLOWANCE_SECONDS if server_round == first_round else 0.0)
                row = _run_round(grid, strategy, server_round, weights, settings, config,
                                 evaluate=not defer, timeout=timeout)
            except FederationStopped as stop:
                stop_reason = str(stop)
                logger.warning("%s", stop_reason)
                break
            finally:
                if pending is not None and strategy.received_evaluation:
                    if "started" in pending:
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
            save_checkpoint(run_dir / CHECKPOINT_DIR, Checkpoint(
                round=server_round, run_id=run_id, run_config=config.to_run_config(),
                weights=weights, optimizer_state=strategy.optimizer.state,
                metrics_rows=writer.rows,
                extra={"epsilon_spent": strategy.epsilon_spent, "aborted_rounds": aborted_rounds,
                       # A resumed run cannot time the deferred round: its seconds stay empty.
                       "pending": None if pending is None else
                       {k: v for k, v in pending.items() if k != "started"}},
            ))
    model.set_weights(weights)
    model.save(run_dir / "model.keras")
    write_report(run_dir, task=task, hospitals=hospitals, config=config.as_dict(),
                 epsilon=strategy.epsilon_spent, stop_reason=stop_reason,
                 aborted_rounds=aborted_rounds)
    return weights


def _write_config(run_dir: Path, config: RunConfig, run_id: str, hospitals: list[str],
                  resumed: Checkpoint | None) -> None:
    """Write config.json; a resumed run keeps the original and records when it resumed."""
    path = run_dir / "config.json"
    now = datetime.now(UTC).isoformat()
    if resumed is not None and path.exists():
        payload = json.loads(path.read_text())
        payload.setdefault("resumed", []).append({"utc": now, "after_round": resumed.round})
    else:
        payload = {"run_id": run_id, "started_utc": now, "settings": config.as_dict(),
                   "run_config": {k: v for k, v in config.to_run_config().items() if k != "resume"},
                   "hospitals": hospitals, "versions": package_versions()}
    write_json_atomic(path, payload)


def _check_same_settings(config: RunConfig, resumed: Checkpoint) -> None:
    """Refuse to resume a run with settings other than its own (naming each difference)."""
    ignored = {"resume", "out-dir"}
    now = config.to_run_config()
    differ = [f"{key}={now.get(key)!r} (the run has {value!r})"
              for key, value in sorted(resumed.run_config.items())
              if key not in ignored and now.get(key) != value]
    if differ:
        raise FederationError("cannot resume with other settings: " + "; ".join(differ))


def update_norm_bound(config: RunConfig) -> float | None:
    """The norm every visible update must respect (before any noise), or None if unbounded.

    Patient-level DP and ``clip-updates`` clip each update to ``dp.update-clipping-norm``;
    hospital-level DP clips it to ``dp.clipping-norm`` before its noise. Secure aggregation
    shows the server no single update.
    """
    if config.secagg_enabled:
        return None
    if config.dp_mode == "patient" or (config.dp_mode == "none" and config.clip_updates):
        return config.dp_update_clipping_norm
    if config.dp_mode == "hospital":
        return config.dp_clipping_norm
    return None


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


@dataclass(frozen=True, slots=True)
class TrainOutcome:
    """A round's training: new weights (None if nothing usable), who took part, and why not."""

    weights: NDArrays | None
    participants: int
    aborted: str = ""
    missing: int = 0  # hospitals that sent nothing before the round's deadline


def _train(
    grid: Grid, strategy: FedcareStrategy, server_round: int, weights: NDArrays,
    settings: ConfigRecord, config: RunConfig, timeout: float,
) -> TrainOutcome:
    """Run the round's training once, waiting at most `timeout` seconds per exchange."""
    if config.secagg_enabled:
        secure = run_secure_round(
            grid, strategy, server_round, weights, settings,
            threshold=config.effective_threshold, clip_bound=config.secagg_clip_bound,
            scale=secagg_scale(config), timeout=timeout,
            advertised=strategy.advertised_keys,
            last_round=server_round == config.num_server_rounds)
        strategy.advertised_keys = secure.next_keys
        return TrainOutcome(secure.weights, secure.survivors, secure.aborted)
    messages = list(strategy.configure_train(server_round, ArrayRecord(weights), settings, grid))
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    arrays, train_metrics = strategy.aggregate_train(server_round, replies)
    participants = int(train_metrics["participants"]) if train_metrics else 0
    missing = len(messages) - len(replies)
    if missing:
        logger.warning("round %d: %d hospital(s) sent nothing within %.0f s", server_round,
                       missing, timeout)
    return TrainOutcome(arrays.to_numpy_ndarrays() if arrays is not None else None,
                        participants, missing=missing)


def _shortfall(strategy: FedcareStrategy, outcome: TrainOutcome) -> str:
    """Why hospitals are missing from a round, one reason per hospital or failure."""
    reasons = [f"{name} declined: {why}" for name, why in sorted(strategy.last_declined.items())]
    reasons += [f"{name} rejected: {why}" for name, why in sorted(strategy.last_rejected.items())]
    reasons += [f"failed: {why}" for why in strategy.last_errors]
    if outcome.missing:
        reasons.append(f"{outcome.missing} sent nothing before the deadline")
    if outcome.aborted:
        reasons.append(f"secure aggregation aborted: {outcome.aborted}")
    return "; ".join(reasons) or "no replies"


def _run_round(
    grid: Grid, strategy: FedcareStrategy, server_round: int, weights: NDArrays,
    settings: ConfigRecord, config: RunConfig, *, evaluate: bool = True,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Train (retrying once when too few hospitals replied), then evaluate unless deferred.

    A hospital that fails, hangs past ``round-timeout`` or sends a rejected update is left out
    of the round; the round counts if at least ``min-hospitals`` updates are usable. Otherwise
    the round is tried once more (hospitals that already replied resend the same update; their
    ledgers are not charged twice), then the run stops with the reasons.
    """
    started = time.perf_counter()
    timeout = config.round_timeout if timeout is None else timeout
    min_hospitals = config.min_hospitals
    for attempt in (1, 2):
        outcome = _train(grid, strategy, server_round, weights, settings, config, timeout)
        if outcome.participants >= min_hospitals and outcome.weights is not None:
            break
        transient = outcome.missing or strategy.last_errors or outcome.aborted
        if attempt == 1 and transient:
            logger.warning("round %d: %d usable update(s), fewer than the minimum of %d (%s); "
                           "trying the round once more", server_round, outcome.participants,
                           min_hospitals, _shortfall(strategy, outcome))
            continue
        if outcome.aborted:
            # Secure aggregation aborted twice: nothing was unmasked and the global model stays.
            raise FederationStopped(f"stopped in round {server_round}: "
                                    f"{_shortfall(strategy, outcome)}")
        if outcome.weights is None and not strategy.last_declined and not outcome.missing:
            raise FederationError(f"round {server_round}: no hospital returned a usable update "
                                  f"({_shortfall(strategy, outcome)})")
        raise FederationStopped(
            f"stopped in round {server_round}: {outcome.participants} hospital(s) took part, "
            f"fewer than the minimum of {min_hospitals} ({_shortfall(strategy, outcome)})"
        )
    new_weights = outcome.weights
    row = {"round": server_round, "participants": outcome.participants, "weights": new_weights,
           "aborted": ""}
    if evaluate:
        replies = grid.send_and_receive(
            strategy.configure_evaluate(server_round, ArrayRecord(new_weights), settings, grid),
            timeout=timeout,
        )
        if strategy.aggregate_evaluate(server_round, replies) is None:
            raise FederationError(
                f"round {server_round}: no hospital returned an evaluation "
                f"({'; '.join(strategy.last_errors) or 'no replies'})"
            )
    row["seconds"] = time.perf_counter() - started
    return row
