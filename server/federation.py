"""The round driver: the one place that runs a federation's rounds and writes its outputs.

Each round runs (``server.plain_round`` or ``server.secure_round``) and returns a
``RoundOutcome``; the driver retries a plain round once when too few hospitals could take
part (a secure round is never re-run: an aborted one is filed as such, in metrics.csv's
``aborted`` column and the report, and the run goes on with the next round number), turns
outcomes into metrics.csv rows, checkpoints, and moves the progress bar. Round r's model is
evaluated by round r+1's train message (``fold-evaluation``, always under secure aggregation),
so its row waits here until then, and is saved with the checkpoint; the last round gets an
evaluate exchange of its own. A folded row's ``seconds`` is the time from its round's start to
the next round's start (the last round's: to the end of its own evaluation); row r is always the
model after round r. However the run ends — all rounds,
too few hospitals, a failure — it saves ``model.keras`` (the last completed round's weights;
loads with plain Keras), keeps the metrics so far and writes the report with the reason, and
``identities.json`` (which node was which hospital, and whether the SuperLink's registered
name, an identity proof with the roster key or, unproved, the first reply fixed it).
"""

import json
import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from flwr.app import MessageType
from flwr.serverapp import Grid

from common.config import RunConfig
from common.models import build_model
from common.secagg.messages import MIN_PARTICIPANTS
from common.secagg.roster import Roster, load_roster
from common.server_optimizers import ServerOptimizer
from common.tasks import scaling_digest, task_for_config
from common.tasks.base import TaskSpec
from common.types import NDArrays
from common.version import fedcare_version
from common.wire.modes import AccountantName, DpMode, NoiseMode, Weighting
from common.wire.records import pack_request
from common.wire.replies import DeclinedReply, EvaluateReply, PrivacyReport
from common.wire.settings import RoundSettings
from common.wire.statistics import StatisticsSpec
from server.checkpoint import Checkpoint, load_latest_checkpoint, save_checkpoint
from server.collusion import secure_trust, with_roster_honest
from server.evaluation import epsilon_columns, evaluates, summarize_round
from server.explanation import explanation_settings, feature_names_of, run_explanation
from server.identity import IdentityBook, registered_names
from server.plain_round import run_plain_round
from server.progress import REPORTS_KEY, RoundProgress
from server.report import write_report
from server.round_channel import RoundChannel
from server.round_outcome import RoundOutcome
from server.run_directory import (
    MetricsWriter,
    metrics_columns,
    package_versions,
    read_config_sources,
    write_json_atomic,
)
from server.screening import ReplyRules
from server.secure_round import AdvertisedKeys, run_secure_round
from server.strategy import FedcareStrategy, FederationError
from server.tensorboard_log import TENSORBOARD_DIR, TensorBoardLog
from server.validation import noise_tolerance

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
# The first round a server process runs also waits for the hospitals' apps to start (Ray
# workers or SuperNode app processes import TensorFlow: 10-30 s here); its deadline gets this
# much on top of round-timeout.
STARTUP_ALLOWANCE_SECONDS = 300.0
PULL_INTERVAL_SECONDS = 0.01
# Why a resumed secure run files the round its checkpoint was followed by as aborted.
INTERRUPTED = "interrupted by the server's restart: a secure round is never re-run"


class FederationStopped(FederationError):
    """The run ends early, cleanly: too few hospitals can still take part."""


def round_settings(config: RunConfig, run_id: str, server_round: int) -> RoundSettings:
    """The settings every hospital receives with the global weights (a plan, not a budget)."""
    noise = distributed_noise(config)
    return RoundSettings(
        run_id=run_id, server_round=server_round, fedcare_version=fedcare_version(),
        planned_rounds=config.num_server_rounds, task=config.task, hospitals=config.hospitals,
        seed=config.seed, partition=config.partition, dirichlet_alpha=config.dirichlet_alpha,
        local_epochs=config.local_epochs, local_steps=config.local_steps,
        batch_size=config.batch_size, learning_rate=config.learning_rate,
        dp_mode=config.dp_mode, clipping_norm=config.dp_clipping_norm,
        update_clipping_norm=config.dp_update_clipping_norm,
        max_noise_multiplier=config.dp_max_noise_multiplier, clip_updates=config.clip_updates,
        noise_mode=config.dp_noise_mode, weighting=config.weighting,
        secagg_enabled=config.secagg_enabled,
        secagg_threshold=config.effective_threshold if config.secagg_enabled else 0,
        secagg_clip_bound=config.secagg_clip_bound,
        noise_multiplier=noise.noise_multiplier,
        honest_contributors=noise.honest_contributors,
        eval_every=config.eval_every, normalisation=config.normalisation,
        missing_indicator=config.missing_indicator, normalisation_digest=scaling_digest(config),
        explain_share=explanation_settings(config)[0],
        explain_bound=explanation_settings(config)[1],
    )


class DistributedNoise(NamedTuple):
    """Distributed noise's z (noise multiplier, of the sum) and h (honest contributors)."""

    noise_multiplier: float
    honest_contributors: int


def distributed_noise(config: RunConfig) -> DistributedNoise:
    """Distributed noise's z and h, the same for every hospital (zeros in other modes).

    z is ``dp.noise-multiplier``, or the z that spends ``dp.epsilon`` at ``dp.delta`` over the
    planned rounds (one Gaussian release a round, sample rate 1); every hospital checks it
    against its own budget and declines when it cannot afford it.
    """
    if config.dp_noise_mode != NoiseMode.DISTRIBUTED:
        return DistributedNoise(0.0, 0)
    z = config.dp_noise_multiplier or _calibrated_z(config.dp_epsilon, config.dp_delta,
                                                     config.num_server_rounds,
                                                     config.dp_accountant)
    return DistributedNoise(z, config.honest_contributors)


@lru_cache(maxsize=8)
def _calibrated_z(epsilon: float, delta: float, rounds: int,
                  accountant: AccountantName) -> float:
    from common.dp.calibration import calibrate_to_remaining_budget

    return calibrate_to_remaining_budget((), budget_epsilon=epsilon, delta=delta,
                                         sample_rate=1.0, steps=rounds, accountant=accountant)


def update_norm_bound(config: RunConfig, num_parameters: int) -> float | None:
    """The L2 norm no visible update may exceed, from the run's settings alone (None: unbounded).

    Patient-level DP and ``clip-updates`` clip each update to ``dp.update-clipping-norm``.
    Hospital level clips to C, then adds noise of stddev at most the run's largest noise
    multiplier times 2C (local mode's sensitivity); the bound adds that noise's tolerance.
    Secure aggregation shows the server no single update.
    """
    if config.secagg_enabled:
        return None
    if config.dp_mode == DpMode.PATIENT or (config.dp_mode == DpMode.NONE and config.clip_updates):
        return config.dp_update_clipping_norm
    if config.dp_mode == DpMode.HOSPITAL:
        largest_stddev = config.dp_max_noise_multiplier * 2 * config.dp_clipping_norm
        return config.dp_clipping_norm + noise_tolerance(largest_stddev, num_parameters)
    return None


def statistics_spec(task: TaskSpec, private: bool = False) -> StatisticsSpec:
    """The shape of the task's evaluation statistics (``private``: a DP release's)."""
    return StatisticsSpec(kind=task.kind,
                          columns=task.num_outputs if task.kind == "multiclass" else 1,
                          private=private)


@dataclass
class RunState:
    """What lasts across rounds: weights, each hospital's privacy report, pending rows."""

    weights: NDArrays
    epsilon_spent: dict[str, dict[str, float]] = field(default_factory=dict)
    aborted_rounds: list[str] = field(default_factory=list)
    pending: dict[str, Any] | None = None  # a row waiting for its evaluation (secure rounds)
    advertised: AdvertisedKeys | None = None
    short_rounds: int = 0  # secure rounds in a row aborted for too few contributors
    declined_rounds: dict[str, int] = field(default_factory=dict)  # rounds each declined
    rounds_filed: int = 0  # rounds that ran to an outcome (declines counted against them)
    interrupted: int | None = None  # a resumed secure run's round filed aborted, unasked

    def keep_privacy(self, reports: dict[str, PrivacyReport]) -> None:
        """Keep each hospital's latest privacy report (for the columns and the report)."""
        for name, report in reports.items():
            self.epsilon_spent[name] = {
                "patient": report.epsilon_patient, "hospital": report.epsilon_hospital,
                "budget_epsilon": report.budget_epsilon, "budget_delta": report.budget_delta,
                "test": report.epsilon_test, "test_budget_epsilon": report.test_budget_epsilon,
                "test_budget_delta": report.test_budget_delta, "total": report.epsilon_total,
                "parallel": float(report.parallel)}


def run_federation(grid: Grid, config: RunConfig, run_dir: Path) -> NDArrays:
    """Run all rounds, writing config.json, metrics.csv (and its TensorBoard mirror,
    tensorboard/), checkpoint/, model.keras and report.md.

    With ``config.resume`` it continues from the last intact checkpoint in ``run_dir``: same
    run id (so hospitals' ledgers key the repeated round the same way), weights, optimizer
    state and metrics rows. A plain round after the checkpoint is re-run (hospitals resend
    their saved releases); under secure aggregation it is filed as aborted (``INTERRUPTED``:
    its hospitals may have released into its sum, which is never re-run), the model unchanged,
    and the run goes on with the next round number. Returns the final global weights.

    Raises
    ------
    FederationError
        If the hospitals do not connect, or a round gets no usable reply (with the reasons);
        model.keras, metrics.csv and report.md are written all the same.
    CheckpointError
        If resuming and no intact checkpoint exists.
    """
    run, resumed = _open_run(grid, config, run_dir)
    model = build_model(run.task, seed=run.config.seed)
    state = RunState(weights=[w.copy() for w in model.get_weights()])
    first_round = _resume(run, state, resumed)
    if resumed is not None and run.config.secagg_enabled:
        state.interrupted = first_round  # a finished run's: past the last, none runs
    stop_reason = ""
    try:
        with run.progress:
            stop_reason = _run_rounds(run, state, first_round)
    except BaseException as error:  # noqa: B036 - outputs are written, then it propagates
        stop_reason = f"the run failed: {error}" if str(error) else f"the run failed: {error!r}"
        _close_pending(run, state, evaluate_round=None)  # no more exchanges: row as it is
        raise
    finally:
        run.board.close()
        _save_outputs(run, state, model, stop_reason)
    return state.weights


@dataclass(frozen=True)
class FederationRun:
    """What every round of a run shares and none changes (the round's state is ``RunState``).

    Attributes
    ----------
    grid : Grid
        Where the messages go.
    config : RunConfig
        The run's settings (with the roster's honest count for distributed noise).
    task : TaskSpec
        The run's task; `hospitals` its hospitals' names, in index order.
    run_id, run_dir : str, Path
        The run's id (kept on resume) and its directory.
    roster : Roster | None
        The consortium roster, when secure aggregation or identity proofs use one.
    strategy, book : FedcareStrategy, IdentityBook
        Node selection and aggregation; which node is which hospital.
    writer, board, progress : MetricsWriter, TensorBoardLog, RoundProgress
        Where the rows go: metrics.csv, its TensorBoard mirror, the terminal.
    """

    grid: Grid
    config: RunConfig
    task: TaskSpec
    hospitals: list[str]
    run_id: str
    run_dir: Path
    roster: Roster | None
    strategy: FedcareStrategy
    book: IdentityBook
    writer: MetricsWriter
    board: TensorBoardLog
    progress: RoundProgress

    def settings(self, server_round: int) -> RoundSettings:
        """The settings round `server_round`'s messages carry."""
        return round_settings(self.config, self.run_id, server_round)

    def channel(self, server_round: int, state: RunState, timeout: float) -> RoundChannel:
        """Round `server_round`'s way to the hospitals, its replies screened against the
        run's rules for that round (the current weights as the reference).
        """
        return RoundChannel(self.grid, self.strategy, self.book,
                            rules_for(self.config, self.task, self.run_id, server_round, state),
                            timeout)


def _open_run(grid: Grid, config: RunConfig,
              run_dir: Path) -> tuple[FederationRun, Checkpoint | None]:
    """Load the task, the roster and (to resume) the checkpoint; write config.json; open the
    outputs (metrics.csv, tensorboard/, the progress display, not yet started).
    """
    task = task_for_config(config)  # task csv: built from the schema at csv.schema-path
    hospitals = task.hospital_names(config.hospitals)
    # The roster's keys also prove which hospital an unnamed (simulated) node is.
    roster = (consortium_roster(config, hospitals)
              if config.secagg_enabled or config.secagg_roster_path else None)
    config = with_roster_honest(config, roster)  # distributed noise: h = t - c, as a number
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
    strategy = FedcareStrategy(
        hospitals=config.hospitals,
        optimizer=ServerOptimizer(config.server_optimizer, config.server_learning_rate),
        # DP replies carry no example counts: a weighted mean would need them.
        weighted=config.weighting == Weighting.EXAMPLES and not config.private,
        aggregator=config.aggregator, trim_fraction=config.trim_fraction,
    )
    board = TensorBoardLog(run_dir / TENSORBOARD_DIR, metric_names=task.metric_names,
                           hospitals=hospitals)
    writer = MetricsWriter(run_dir / "metrics.csv", metrics_columns(task.metric_names, hospitals),
                           rows=resumed.metrics_rows if resumed else [], on_row=board.write_round)
    progress = RoundProgress(config.num_server_rounds, headline=_headline(task, config),
                             title=task.name, completed=resumed.round if resumed else 0,
                             epsilon_budget=None)  # each hospital's own, from its replies
    book = IdentityBook(hospitals=list(hospitals), roster=roster)
    return FederationRun(grid, config, task, hospitals, run_id, run_dir, roster, strategy, book,
                         writer, board, progress), resumed


def _resume(run: FederationRun, state: RunState, resumed: Checkpoint | None) -> int:
    """Restore the checkpoint's weights, optimizer state and run state; the first round to run."""
    if resumed is None:
        return 1
    state.weights = resumed.weights
    run.strategy.optimizer.state = resumed.optimizer_state
    state.epsilon_spent = resumed.extra.get("epsilon_spent", {})
    state.aborted_rounds = resumed.extra.get("aborted_rounds", [])
    state.pending = resumed.extra.get("pending")
    state.declined_rounds = dict(resumed.extra.get("declined_rounds", {}))
    state.rounds_filed = int(resumed.extra.get("rounds_filed", 0))
    state.short_rounds = int(resumed.extra.get("short_rounds", 0))
    logger.warning("resuming run %s after round %d of %d", run.run_id, resumed.round,
                   run.config.num_server_rounds)
    return resumed.round + 1


def _run_rounds(run: FederationRun, state: RunState, first_round: int) -> str:
    """Run rounds `first_round` to the last, checkpointing each; why the run stopped early
    ('' when it ran them all).
    """
    config = run.config
    # The first rounds that exchange messages wait for the hospitals' apps to start.
    starting = first_round + (1 if state.interrupted == first_round else 0)
    for server_round in range(first_round, config.num_server_rounds + 1):
        timeout = config.round_timeout + (
            STARTUP_ALLOWANCE_SECONDS if server_round <= starting else 0.0)
        run.book.registered = registered_names(run.grid.get_nodes())
        try:
            _run_round(run, state, server_round, timeout)
        except FederationStopped as stop:
            logger.warning("%s", stop)
            # The last completed round's row still waits for its evaluation.
            _close_pending(run, state, evaluate_round=server_round)
            return str(stop)
        save_checkpoint(run.run_dir / CHECKPOINT_DIR, Checkpoint(
            round=server_round, run_id=run.run_id, run_config=config.to_run_config(),
            weights=state.weights, optimizer_state=run.strategy.optimizer.state,
            metrics_rows=run.writer.rows, extra=checkpoint_extra(state)))
    return ""


def checkpoint_extra(state: RunState) -> dict[str, Any]:
    """The run state a checkpoint keeps beside the weights (``_resume`` restores it)."""
    return {"epsilon_spent": state.epsilon_spent,
            "aborted_rounds": state.aborted_rounds,
            "declined_rounds": state.declined_rounds,
            "rounds_filed": state.rounds_filed,
            # A resumed server must not give a second try to a secure round short of
            # contributors right after one that already had it.
            "short_rounds": state.short_rounds,
            # A resumed run cannot time the deferred round: its seconds stay empty.
            "pending": None if state.pending is None else
            {k: v for k, v in state.pending.items() if k != "started"}}


def _explain(run: FederationRun, state: RunState) -> None:
    """Ask the hospitals for the consortium explanation (``server.explanation``); a failure
    is logged, never the run's end.
    """
    last = run.config.num_server_rounds
    try:
        run_explanation(run.channel(last, state, run.config.round_timeout), run.settings(last),
                        state.weights, run.task, run.config, run.run_dir,
                        feature_names_of(run.task), state.keep_privacy)
    except (FederationError, OSError, ValueError) as error:
        logger.warning("the consortium explanation failed: %s", error)


def _save_outputs(run: FederationRun, state: RunState, model: "keras.Model",
                  stop_reason: str) -> None:
    """Write model.keras (the last completed round's weights), identities.json and report.md."""
    model.set_weights(state.weights)
    model.save(run.run_dir / "model.keras")
    write_json_atomic(run.run_dir / "identities.json", run.book.describe())
    config = run.config
    write_report(run.run_dir, task=run.task, hospitals=run.hospitals, config=config.as_dict(),
                 epsilon=state.epsilon_spent, stop_reason=stop_reason,
                 aborted_rounds=state.aborted_rounds,
                 declined_every_round=sorted(
                     name for name, count in state.declined_rounds.items()
                     if state.rounds_filed and count >= state.rounds_filed),
                 trust=secure_trust(config, run.roster,
                                    float(distributed_noise(config).noise_multiplier)))


def _headline(task: TaskSpec, config: RunConfig) -> tuple[str, ...]:
    return ("pooled_loss", *(f"client_avg_{m}" for m in task.metric_names),
            *(("epsilon_patient_max",) if config.dp_mode == DpMode.PATIENT else ()),
            *(("epsilon_hospital_max",) if config.dp_mode == DpMode.HOSPITAL else ()))


def _run_round(run: FederationRun, state: RunState, server_round: int, timeout: float) -> None:
    """Run one round (a plain one retried once when too few hospitals took part); file its rows.

    A hospital that fails, hangs past ``round-timeout`` or sends a rejected reply is left out
    of the round; the round counts if at least ``min-hospitals`` updates are usable. Otherwise
    a plain round is tried once more (hospitals that already replied resend the same update;
    their ledgers are not charged twice), then the run stops with the reasons. A secure round
    without a usable sum is filed as aborted, the model unchanged, and the run goes on
    (``_secure_round_moves_on`` says when it stops instead); so is the one a resumed server
    found interrupted (``_interrupted``), without asking anyone.
    """
    started = time.perf_counter()
    logger.debug("round %d: started", server_round)  # benchmarks.rounds times start-up by it
    config = run.config
    channel = run.channel(server_round, state, timeout)
    last = server_round == config.num_server_rounds
    # Round r's train message evaluates round r-1's model (folded; secure rounds always are).
    folded = config.fold_evaluation or config.secagg_enabled
    settings = replace(run.settings(server_round), evaluate_received=folded and server_round > 1
                       and evaluates(config, server_round - 1))
    if server_round == state.interrupted:
        outcome = _interrupted(run, state, server_round)
    else:
        outcome = _settled(_attempted(run, state, channel, settings, started), config, state)
        state.rounds_filed += 1
    for name in outcome.declined:
        state.declined_rounds[name] = state.declined_rounds.get(name, 0) + 1
    if outcome.weights is not None:  # else an aborted secure round: the model stays
        state.weights = outcome.weights
    if outcome.aborted:
        state.aborted_rounds.append(f"round {server_round}: {outcome.aborted}")
    row: dict[str, Any] = {"round": server_round, "participants": outcome.participants,
                           "aborted": int(bool(outcome.aborted)),
                           **_privacy_columns(state, outcome, config.dp_mode)}
    if not last and not evaluates(config, server_round):  # DP: not a planned evaluation
        row["seconds"] = time.perf_counter() - started
        run.writer.append(row)
        run.progress.round_done(row)
        return
    if folded and not last:
        state.pending = {**row, "started": started}  # evaluated with the next round's replies
        return
    # Unfolded, or the last round (no next message to carry it): an evaluate exchange now.
    evaluation = _evaluate_now(channel, settings, state.weights, state)
    if last:  # the consortium explanation, once, of the final model; its charge in the row
        _explain(run, state)
        row.update(_privacy_columns(state, outcome, config.dp_mode))
    row["seconds"] = time.perf_counter() - started
    _finish(row, evaluation, run)


def _attempted(run: FederationRun, state: RunState, channel: RoundChannel,
               settings: RoundSettings, started: float) -> RoundOutcome:
    """Run the round: once, or a plain round a second time when too few hospitals took part
    for a transient reason (hospitals that already replied resend the same update).
    """
    config = run.config
    outcome = _attempt(run, state, channel, settings, started)
    if _too_few(outcome, config) and not config.secagg_enabled and (
            outcome.missing or outcome.failed or outcome.aborted or outcome.rejected):
        logger.warning("round %d: %d usable update(s), fewer than the minimum of %d (%s); "
                       "trying the round once more", settings.server_round, outcome.participants,
                       config.min_hospitals, outcome.shortfall())
        outcome = _attempt(run, state, channel, settings, started)
    return outcome


def _interrupted(run: FederationRun, state: RunState, server_round: int) -> RoundOutcome:
    """The outcome of the secure round a resumed server found after its checkpoint: aborted,
    asked of nobody (``INTERRUPTED``); nobody is blamed and the hospitals' charges stand.

    The row still waiting for its folded evaluation (round r-1's, which this round's message
    carried to the server that died) is evaluated now in an exchange of its own under this
    round's number, or filed without its evaluation if that fails.
    """
    logger.warning("round %d: %s (filed as aborted, the model unchanged)", server_round,
                   INTERRUPTED)
    _close_pending(run, state, evaluate_round=server_round)
    return RoundOutcome(server_round=server_round, weights=None, participants=0,
                        aborted=INTERRUPTED)


def _attempt(run: FederationRun, state: RunState, channel: RoundChannel,
             settings: RoundSettings, started: float) -> RoundOutcome:
    """Run the round once (plain or secure); keep its privacy reports and file the folded
    evaluation of the previous round that its replies carried.
    """
    config = run.config
    if config.secagg_enabled:
        if run.roster is None:  # consortium_roster() gave one, or the run did not start
            raise FederationError("secure aggregation needs the consortium roster")
        secure = run_secure_round(channel, settings, state.weights, roster=run.roster,
                                  advertised=state.advertised,
                                  last_round=settings.server_round == config.num_server_rounds)
        outcome, state.advertised = secure.outcome, secure.next_keys
    else:
        outcome = run_plain_round(channel, settings, state.weights)
    state.keep_privacy(outcome.privacy)
    _file_evaluation(outcome, state, run, started)
    return outcome


def _too_few(outcome: RoundOutcome, config: RunConfig) -> bool:
    """Whether the round gave no new weights, or from fewer than ``min-hospitals`` updates."""
    return outcome.participants < config.min_hospitals or outcome.weights is None


def _settled(outcome: RoundOutcome, config: RunConfig, state: RunState) -> RoundOutcome:
    """The round's outcome to file: usable, or a secure round filed as aborted.

    Raises
    ------
    FederationStopped
        If too few hospitals took part (the run ends cleanly, with the reasons).
    FederationError
        If no hospital returned a usable update and none declined, went missing or aborted.
    """
    server_round = outcome.server_round
    if not _too_few(outcome, config):
        state.short_rounds = 0
        return outcome
    if config.secagg_enabled and _secure_round_moves_on(outcome, config, state):
        return _as_aborted(outcome, config)
    if outcome.weights is None and not (outcome.declined or outcome.missing
                                        or outcome.aborted):
        raise FederationError(f"round {server_round}: no hospital returned a usable update "
                              f"({outcome.shortfall()})")
    raise FederationStopped(
        f"stopped in round {server_round}: {outcome.participants} hospital(s) took part, "
        f"fewer than the minimum of {config.min_hospitals} ({outcome.shortfall()})")


def _secure_round_moves_on(outcome: RoundOutcome, config: RunConfig, state: RunState) -> bool:
    """Whether a secure round without a usable sum is filed as aborted and the run goes on.

    A secure round is never re-run under its number: its hospitals released (and were charged)
    for it, and a second sum over a subset would give the difference. With enough
    contributors the protocol itself failed (a sum that could not be unmasked or decoded, one
    beyond its norm bound, dropouts below t): the run always goes on. With too few, the next
    round number is their one more try when something transient (a hospital missing, failed or
    rejected) caused it; otherwise, or a second time in a row, the run stops.
    """
    needed = max(config.effective_threshold, MIN_PARTICIPANTS, config.min_hospitals)
    if outcome.contributors >= needed:
        state.short_rounds = 0
        return True
    if (outcome.missing or outcome.failed or outcome.rejected) and state.short_rounds == 0:
        state.short_rounds = 1
        logger.warning("round %d: %d hospital(s) could take part, fewer than the %d needed (%s);"
                       " trying again in round %d", outcome.server_round, outcome.contributors,
                       needed, outcome.shortfall(), outcome.server_round + 1)
        return True
    return False


def _as_aborted(outcome: RoundOutcome, config: RunConfig) -> RoundOutcome:
    """The outcome of a secure round filed as aborted: nothing of it is averaged in."""
    why = outcome.aborted or (
        f"{outcome.participants} hospital(s)' sum, fewer than min-hospitals "
        f"{config.min_hospitals}: not averaged in" if outcome.weights is not None
        else outcome.shortfall())
    return replace(outcome, weights=None, participants=0, aborted=why)


def consortium_roster(config: RunConfig, hospitals: list[str]) -> Roster:
    """The roster the server holds for secure aggregation (pinned by its SHA-256).

    Raises
    ------
    FederationError
        If the run names none, its digest differs, or a hospital of the run is not on it.
    """
    if not config.secagg_roster_path or not config.secagg_roster_sha256:
        raise FederationError(
            "secure aggregation needs the consortium roster: run-config secagg.roster-path and "
            "secagg.roster-sha256 (`fedcare roster build`; `fedcare simulate "
            "--secure-aggregation` and `fedcare deploy-local` make one). `flwr run .`'s "
            "simulated nodes hold no roster, so it refuses secure aggregation")
    try:
        roster = load_roster(config.secagg_roster_path,
                             expected_sha256=config.secagg_roster_sha256)
    except (OSError, ValueError, LookupError) as error:
        raise FederationError(f"secagg.roster-path: {error}") from None
    missing = [name for name in hospitals if name not in roster.names]
    if missing:
        raise FederationError(f"hospitals {missing} are not on the roster "
                              f"{config.secagg_roster_path}")
    return roster


def rules_for(config: RunConfig, task: TaskSpec, run_id: str, server_round: int,
              state: RunState) -> ReplyRules:
    """What the run allows in round `server_round`'s replies (from its own settings)."""
    return ReplyRules(
        run_id=run_id, server_round=server_round, dp_mode=config.dp_mode,
        noise_mode=config.dp_noise_mode, secure=config.secagg_enabled,
        statistics=statistics_spec(task, config.private), global_weights=state.weights,
        norm_bound=update_norm_bound(config, sum(int(w.size) for w in state.weights)),
        max_examples=config.max_examples)


def _close_pending(run: FederationRun, state: RunState, *,
                   evaluate_round: int | None) -> None:
    """Write the row that still waits for its evaluation: evaluated now with round
    `evaluate_round`'s settings if given (a clean stop), else without its evaluation columns
    (a failure; a resume completes it).
    """
    pending, state.pending = state.pending, None
    if pending is None:
        return
    pending.pop("started", None)
    evaluation: dict[str, Any] = {}
    if evaluate_round is not None:
        try:
            channel = run.channel(evaluate_round, state, run.config.round_timeout)
            evaluation = _evaluate_now(channel, run.settings(evaluate_round), state.weights,
                                       state)
        except FederationError as error:
            logger.warning("round %s's model could not be evaluated: %s", pending["round"], error)
    if evaluation:
        pending.update(summarize_round(run.task, evaluation))
    run.writer.append(pending)
    run.progress.round_done(pending)


def _evaluate_now(channel: RoundChannel, settings: RoundSettings,
                  weights: NDArrays, state: RunState | None = None) -> dict[str, Any]:
    """Evaluate `weights` (the current global model) in an exchange of its own; statistics by
    hospital (and, with `state`, each hospital's privacy report after its release kept).
    """
    strategy = channel.strategy
    messages = strategy.messages(pack_request(replace(settings, evaluate_received=False),
                                              weights),
                                 strategy.select_nodes(channel.grid), MessageType.EVALUATE)
    screened, _ = channel.exchange(messages, (EvaluateReply, DeclinedReply))
    if state is not None:
        state.keep_privacy(screened.privacy)
    return screened.statistics


def _file_evaluation(outcome: RoundOutcome, state: RunState, run: FederationRun,
                     started: float) -> None:
    """Complete the pending row with the evaluation that arrived for its round."""
    pending = state.pending
    if pending is None or outcome.evaluated_round != pending["round"] or not outcome.evaluation:
        return
    if "started" in pending:
        pending["seconds"] = started - pending.pop("started")
    _finish(pending, outcome.evaluation, run)
    state.pending = None


def _finish(row: dict[str, Any], evaluation: dict[str, Any], run: FederationRun) -> None:
    """File a round's row with its evaluation (metrics.csv, TensorBoard, the terminal)."""
    if not evaluation and run.config.private:  # every hospital declined (e.g. test budget)
        logger.warning("round %s: no hospital released an evaluation", row["round"])
    elif not evaluation:
        raise FederationError(f"round {row['round']}: no hospital returned a usable evaluation")
    else:
        row.update(summarize_round(run.task, evaluation))
    run.writer.append(row)
    run.progress.round_done(row)


def _privacy_columns(state: RunState, outcome: RoundOutcome, dp_mode: DpMode) -> dict[str, Any]:
    """The round's ``declined`` and ``rejected`` counts, the largest epsilon per level and
    each hospital's epsilon at the run's level.
    """
    spent = state.epsilon_spent.values()
    return {
        **epsilon_columns(state.epsilon_spent, dp_mode.value),
        "declined": len(outcome.declined),
        "rejected": len(outcome.rejected),
        "epsilon_patient_max": max((s["patient"] for s in spent), default=0.0),
        "epsilon_hospital_max": max((s["hospital"] for s in spent), default=0.0),
        REPORTS_KEY: {name: dict(report) for name, report in state.epsilon_spent.items()},
    }


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
        sources = read_config_sources(run_dir)  # fedcare simulate: default, file or flag
        if sources is not None:
            payload["sources"] = sources
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

