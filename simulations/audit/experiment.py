"""``fedcare audit``'s experiment: the DP run and its non-private control, each attacked.

Per arm (the run as configured, then the same run with ``dp.mode none``):

1. M canary records (``canaries.make_tabular_canaries``, "far" rows with random labels, in the
   preprocessed feature space) are drawn once; each is included with probability 1/2
   (``canaries.draw_inclusion``, seeded by the run seed) in the training rows of the hospital
   with the fewest rows, after that hospital's preprocessing was fitted
   (``client.app.build_client_app``'s ``training_data`` hook). At hospital level, M canary
   hospitals (``run.CanaryHospitals``, their own coins from seed + 1) also run fedcare's
   hospital-level round on a crafted update.
2. One federation (``run.federate``) records every round's global weights and that hospital's
   released updates.
3. Two views, each at confidence ``1 - (1 - confidence) / 2`` so that the larger is a bound at
   ``confidence``: the server view (patient level: each canary record's clipped gradient at
   each round's weights against that hospital's update; hospital level: the canary hospitals'
   releases against their directions) and the final-model view (each canary record's gain in
   confidence from the initial to the final model).
4. Membership inference on the largest other hospital's real rows (train vs held-out test rows): the
   loss-threshold attack and online LiRA with S shadow federations in which each of that
   hospital's rows is in exactly half of the shadows' training data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from client.hospital import task_split
from client.training import get_trainer
from common.config import RunConfig
from common.tasks import HospitalData, get_task
from common.tasks.base import TaskSpec
from common.wire.modes import DpMode
from simulations.audit.canaries import (
    CanaryInclusion,
    CanaryRecords,
    OneRunAudit,
    audit_scores,
    default_grid,
    draw_inclusion,
    make_tabular_canaries,
)
from simulations.audit.lower_bound import eps_lower_bound_bonferroni
from simulations.audit.membership import (
    DEFAULT_FPRS,
    MIAMetrics,
    dp_tpr_bound,
    lira_online,
    loss_threshold_score,
    mia_metrics,
)
from simulations.audit.model_view import ModelView, flatten
from simulations.audit.run import (
    CanaryHospitals,
    FederationTrace,
    TrainerFactory,
    federate,
    unit_directions,
    with_rows,
)
from simulations.audit.scores import (
    STACKED_ENTRIES_MAX,
    final_model_scores,
    server_view_scores,
)

__all__ = ["ArmResult", "AuditPlan", "control_config", "control_has_power", "run_audit"]

SHADOW_STREAM = 0x5AD0
VIEWS = ("server", "final_model")

Say = Callable[[str], None]


@dataclass(frozen=True)
class AuditPlan:
    """What ``fedcare audit`` was asked to do.

    Attributes
    ----------
    config : RunConfig
        The audited run's settings (the control is the same with ``dp.mode none``).
    canaries : int
        M, the number of canary records (and, at hospital level, of canary hospitals).
    confidence : float
        Joint confidence of each arm's bound.
    shadows : int
        Shadow federations per arm for LiRA (even, >= 2).
    canary_kind : str
        ``"far"`` or ``"random"`` canary records.
    """

    config: RunConfig
    canaries: int
    confidence: float = 0.95
    shadows: int = 4
    canary_kind: str = "far"

    @property
    def view_confidence(self) -> float:
        """Each view's confidence: the larger of the two bounds holds at ``confidence``."""
        return 1.0 - (1.0 - self.confidence) / 2

    @property
    def canary_hospital(self) -> int:
        """The hospital that trains on the canary records: the one with the fewest rows."""
        return canary_hospital(self.config)

    @property
    def mia_hospital(self) -> int:
        """The hospital whose real rows the membership attacks target: the one with the most
        training rows other than the canaries' (the canaries' own if it is the only one).
        """
        sizes = [h.num_train for h in _hospitals(self.config)]
        others = [i for i in range(len(sizes)) if i != self.canary_hospital]
        return max(others, key=lambda i: (sizes[i], -i)) if others else self.canary_hospital

    @property
    def federations(self) -> int:
        """Federations the audit runs: two arms, each its run and its shadows."""
        return 2 * (1 + self.shadows)


@dataclass(frozen=True, eq=False)
class ArmResult:
    """One arm of the audit: accounted epsilon, both views' bounds and the attacks' metrics."""

    name: str
    config: RunConfig
    accounted_epsilon: float
    views: dict[str, OneRunAudit]
    view_epsilon: dict[str, float]
    scores: dict[str, np.ndarray] = field(repr=False)
    ceiling: float
    mia: dict[str, MIAMetrics]
    mia_scores: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)
    seconds: float
    declined: tuple[str, ...] = ()

    @property
    def epsilon_lower_bound(self) -> float:
        """The larger of the two views' bounds (at the plan's confidence)."""
        return max(v.epsilon for v in self.views.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record of every figure of this arm."""
        accounted = self.accounted_epsilon
        bound_at = {f"{f:g}": (dp_tpr_bound(f, accounted, self.config.dp_delta)
                               if math.isfinite(accounted) else None) for f in DEFAULT_FPRS}
        return {
            "name": self.name,
            "dp_mode": self.config.dp_mode.value,
            "accounted_epsilon": accounted if math.isfinite(accounted) else None,
            "delta": self.config.dp_delta,
            "epsilon_lower_bound": self.epsilon_lower_bound,
            "perfect_attack_ceiling": self.ceiling,
            "views": {name: {**audit.to_dict(), "accounted_epsilon": (
                self.view_epsilon[name] if math.isfinite(self.view_epsilon[name]) else None),
                "scores": self.scores[name].tolist()}
                for name, audit in self.views.items()},
            "membership_inference": {
                **{name: metrics.to_dict() for name, metrics in self.mia.items()},
                "dp_tpr_bound": bound_at,
            },
            "seconds": self.seconds,
            "declined": list(self.declined),
        }


def control_has_power(control_bound: float, accounted_epsilon: float) -> bool:
    """Whether an audit whose non-private control proves ``control_bound`` had power.

    Only a control bound above the accounted epsilon of the run it controls counts: then the
    same attack on a build that leaked as much as no DP at all would have refuted that
    epsilon. A control that proves less (say 0.6 against an accounted 1.0) shows that the
    audit could not have told a private build from a non-private one. An infinite or
    undefined accounted epsilon (a non-private run) can never be refuted: no power.
    """
    return math.isfinite(accounted_epsilon) and control_bound > accounted_epsilon


def control_config(config: RunConfig) -> RunConfig:
    """The same run without DP (the audit's control)."""
    return RunConfig.from_run_config({**config.to_run_config(), "dp.mode": DpMode.NONE.value})


def _hospitals(config: RunConfig) -> tuple[HospitalData, ...]:
    return task_split(config.task, config.hospitals, seed=config.seed,
                      partition=config.partition.value, alpha=config.dirichlet_alpha)


def canary_hospital(config: RunConfig) -> int:
    """The hospital with the fewest training rows (the lowest index on ties).

    There each record weighs most, and the server-view attack has the fewest other rows to
    tell the canaries apart from (heart-disease: switzerland, 30 rows, against a 14-parameter
    model that cannot separate the canaries from cleveland's 199).
    """
    sizes = [h.num_train for h in _hospitals(config)]
    return min(range(len(sizes)), key=lambda i: (sizes[i], i))


def shadow_assignment(rows: int, shadows: int, seed: int) -> np.ndarray:
    """Bool (shadows, rows): each row in exactly half of the shadows, the halves seeded."""
    if shadows < 2 or shadows % 2:
        raise ValueError(f"shadows must be an even number >= 2; got {shadows}")
    rng = np.random.default_rng([seed, SHADOW_STREAM])
    assignment = np.zeros((shadows, rows), dtype=bool)
    for j in range(rows):
        assignment[rng.permutation(shadows)[: shadows // 2], j] = True
    return assignment


def _canary_hook(records: CanaryRecords, inclusion: CanaryInclusion,
                 hospital: int) -> Callable[[HospitalData, int], HospitalData]:
    x_in, y_in = records.x[inclusion.included], records.y[inclusion.included]

    def hook(data: HospitalData, index: int) -> HospitalData:
        if index != hospital:
            return data
        return with_rows(data, np.concatenate([data.x_train, x_in]),
                         np.concatenate([data.y_train, y_in]))

    return hook


def _shadow_hook(index: int, x: np.ndarray, y: np.ndarray
                 ) -> Callable[[HospitalData, int], HospitalData]:
    def hook(data: HospitalData, hospital: int) -> HospitalData:
        return with_rows(data, x, y) if hospital == index else data

    return hook


@dataclass(frozen=True, eq=False)
class CanaryAudit:
    """One federation with canaries, and both views' audits of it."""

    trace: FederationTrace
    accounted_epsilon: float
    views: dict[str, OneRunAudit]
    view_epsilon: dict[str, float]
    scores: dict[str, np.ndarray] = field(repr=False)
    ceiling: float
    declined: tuple[str, ...] = ()


def against_initial_model(records: CanaryRecords, task: TaskSpec, seed: int) -> CanaryRecords:
    """The canaries relabelled with the class the (public, seeded) initial model finds least
    likely: every canary then starts with a full-size gradient, which a far "axis" canary
    would not have if the initial model already fitted it (a saturated logit).
    """
    from common.models import build_model

    view, initial = ModelView(task), build_model(task, seed=seed).get_weights()
    classes = 2 if task.kind == "binary" else task.num_outputs
    confidences = np.stack([view.confidence(initial, records.x, np.full(len(records.y), c,
                                                                         dtype=np.float32))
                            for c in range(classes)])
    return replace(records, y=np.argmin(confidences, axis=0).astype(np.float32))


def initial_push_scores(directions: np.ndarray, updates: Sequence[np.ndarray | None]
                        ) -> np.ndarray:
    """Server view of "axis" canaries: each released update projected on the canary's first
    push (its unit descent direction at the initial model), summed over rounds. A canary in
    the training rows moves its own weight far more than the real rows do (unless clipped and
    noised, as DP-SGD does); one that is out moves nothing.
    """
    total = np.zeros(directions.shape[0])
    for update in updates:
        if update is not None:
            total += directions @ np.asarray(update, dtype=np.float64)
    return total


def audit_canaries(
    config: RunConfig,
    run_dir: Path,
    *,
    records: CanaryRecords,
    inclusion: CanaryInclusion,
    hospital_inclusion: CanaryInclusion | None,
    confidence: float,
    hospital: int = 0,
    trainer_for: TrainerFactory = get_trainer,
) -> CanaryAudit:
    """Run one federation with the canaries in and audit it from both views.

    Parameters
    ----------
    config : RunConfig
        The federation's settings.
    run_dir : pathlib.Path
        Its run directory.
    records, inclusion : CanaryRecords, CanaryInclusion
        The canary records and which of them `hospital` trains on.
    hospital_inclusion : CanaryInclusion or None
        Hospital level: which canary hospitals send their crafted update (None: no canary
        hospitals, the server view scores the records).
    confidence : float
        Each view's confidence (the caller splits its confidence between the views).
    hospital : int
        The hospital whose training rows get the canaries (its releases are watched).
    trainer_for : callable
        The hospitals' local trainer (tests: a broken one).
    """
    task = get_task(config.task)
    view = ModelView(task)
    m = inclusion.m
    canary_hospitals = None
    if hospital_inclusion is not None:
        shapes = [tuple(w.shape) for w in get_trainer(task).model.get_weights()]
        canary_hospitals = CanaryHospitals(config, run_dir, unit_directions(
            m, shapes, config.seed), hospital_inclusion.included)
    trace = federate(config, run_dir, watched=hospital, trainer_for=trainer_for,
                     training_data=_canary_hook(records, inclusion, hospital),
                     on_round=[canary_hospitals] if canary_hospitals is not None else [])
    server_scores, server_epsilon = _server_view(config, trace, view, records, m=m,
                                                 hospital=hospital,
                                                 canary_hospitals=canary_hospitals)
    # Final-model view.
    final_scores = final_model_scores(
        view.confidence(trace.final_weights, records.x, records.y),
        view.confidence(trace.initial_weights, records.x, records.y))
    level_epsilon = (trace.epsilon_patient if config.dp_mode == DpMode.PATIENT
                     else trace.epsilon_hospital)
    final_epsilon = level_epsilon if config.private else math.inf
    delta = config.dp_delta
    views = {
        "server": audit_scores(server_scores, (hospital_inclusion or inclusion).included,
                               confidence=confidence, delta=delta),
        "final_model": audit_scores(final_scores, inclusion.included, confidence=confidence,
                                    delta=delta),
    }
    ceiling = eps_lower_bound_bonferroni(  # every guess right: the most M canaries can show
        m, [(kp + km, kp + km) for kp, km in default_grid(m)], confidence, delta).epsilon
    return CanaryAudit(
        trace=trace,
        accounted_epsilon=max(server_epsilon, final_epsilon) if config.private else math.inf,
        views=views, view_epsilon={"server": server_epsilon, "final_model": final_epsilon},
        scores={"server": server_scores, "final_model": final_scores}, ceiling=ceiling,
        declined=tuple(canary_hospitals.declined) if canary_hospitals is not None else ())


def _server_view(config: RunConfig, trace: FederationTrace, view: ModelView,
                 records: CanaryRecords, *, m: int, hospital: int,
                 canary_hospitals: CanaryHospitals | None) -> tuple[np.ndarray, float]:
    """The server view: one score per canary (M,), and the epsilon its releases were
    accounted at (+inf without DP).
    """
    if canary_hospitals is not None:
        epsilon = canary_hospitals.epsilon_hospital if config.private else math.inf
        return canary_hospitals.scores.copy(), epsilon
    epsilon = trace.epsilon_patient if config.private else math.inf
    if records.kind == "axis":
        return _axis_server_scores(trace, view, records), epsilon
    return _record_server_scores(config, trace, view, records, m=m, hospital=hospital), epsilon


def _axis_server_scores(trace: FederationTrace, view: ModelView,
                        records: CanaryRecords) -> np.ndarray:
    """Axis canaries: each released update projected on the canary's first push."""
    descent = -view.clipped_gradients(trace.initial_weights, records.x, records.y,
                                      clipping_norm=math.inf)
    norms = np.linalg.norm(descent, axis=1, keepdims=True)
    return initial_push_scores(descent / np.where(norms > 0, norms, 1.0),
                               [None if seen.update is None else flatten(seen.update)
                                for seen in trace.rounds])


def _record_server_scores(config: RunConfig, trace: FederationTrace, view: ModelView,
                          records: CanaryRecords, *, m: int, hospital: int) -> np.ndarray:
    """Canary records: each round's released update against the canaries' and the watched
    hospital's own clipped gradients (``server_view_scores``).
    """
    own = _hospitals(config)[hospital]
    d = sum(int(w.size) for w in trace.initial_weights)
    # All rounds in one fit when it fits in memory; else round by round (digits: 8,970
    # parameters, hundreds of rows), which server_view_scores sums the same way.
    stacked = len(trace.rounds) * d * (m + own.num_train) <= STACKED_ENTRIES_MAX
    gradients: list[np.ndarray] = []
    known: list[np.ndarray] = []
    updates: list[np.ndarray | None] = []
    scores = np.zeros(m)
    for seen in trace.rounds:
        gradients.append(view.clipped_gradients(seen.global_weights, records.x, records.y,
                                                clipping_norm=config.dp_clipping_norm))
        known.append(view.clipped_gradients(seen.global_weights, own.x_train, own.y_train,
                                            clipping_norm=config.dp_clipping_norm))
        updates.append(None if seen.update is None else flatten(seen.update))
        if not stacked:
            scores += server_view_scores(gradients, updates, known)
            gradients, known, updates = [], [], []
    return server_view_scores(gradients, updates, known) if stacked else scores


def membership_inference(
    config: RunConfig,
    final_weights: list[np.ndarray],
    *,
    hospital: int,
    shadows: int,
    run_dir: Path,
    trainer_for: TrainerFactory = get_trainer,
    federation: Callable[..., FederationTrace] | None = None,
) -> tuple[dict[str, MIAMetrics], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Loss-threshold and online-LiRA attacks on `hospital`'s rows (train vs held-out).

    Runs `shadows` federations of the same settings in which that hospital trains on a seeded
    half of its pooled rows (train and held-out), each row in exactly half of them. Returns
    each attack's metrics and its (member, non-member) scores.
    """
    view = ModelView(get_task(config.task))
    run = federation or (lambda label, path, **kw: federate(config, path,
                                                            trainer_for=trainer_for, **kw))
    target = _hospitals(config)[hospital]
    pooled_x = np.concatenate([target.x_train, target.x_test])
    pooled_y = np.concatenate([target.y_train, target.y_test])
    assignment = shadow_assignment(pooled_x.shape[0], shadows, config.seed)
    shadow_conf = []
    for s in range(shadows):
        rows = assignment[s]
        shadow = run(f"shadow {s + 1} of {shadows}", run_dir / f"shadow-{s}", watched=hospital,
                     training_data=_shadow_hook(hospital, pooled_x[rows], pooled_y[rows]))
        shadow_conf.append(view.confidence(shadow.final_weights, pooled_x, pooled_y))
    scores = {
        "loss": loss_threshold_score(view.losses(final_weights, pooled_x, pooled_y)),
        "lira": lira_online(view.confidence(final_weights, pooled_x, pooled_y),
                            np.stack(shadow_conf), assignment),
    }
    n = target.num_train
    split = {k: (v[:n], v[n:]) for k, v in scores.items()}
    metrics = {k: mia_metrics(members, nonmembers) for k, (members, nonmembers) in split.items()}
    return metrics, split


def run_arm(
    name: str,
    config: RunConfig,
    plan: AuditPlan,
    out_dir: Path,
    *,
    records: CanaryRecords,
    inclusion: CanaryInclusion,
    hospital_inclusion: CanaryInclusion | None,
    trainer_for: TrainerFactory,
    say: Say,
    step: list[int],
) -> ArmResult:
    """Run one arm (its federation with canaries, then its shadows) and attack it."""
    step[0] += 1
    say(f"[{step[0]}/{plan.federations}] {name}: dp {config.dp_mode.value}, "
        f"{config.num_server_rounds} rounds, {inclusion.n_in} of {inclusion.m} canaries in")
    canary = audit_canaries(config, out_dir / name, records=records, inclusion=inclusion,
                            hospital_inclusion=hospital_inclusion,
                            confidence=plan.view_confidence, hospital=plan.canary_hospital,
                            trainer_for=trainer_for)
    say(f"      {len(canary.trace.rounds)} rounds in {canary.trace.seconds:.1f} s; bound "
        f"{max(v.epsilon for v in canary.views.values()):.2f}")

    def federation(label: str, run_dir: Path, **kwargs: Any) -> FederationTrace:
        step[0] += 1
        say(f"[{step[0]}/{plan.federations}] {name}: {label}")
        trace = federate(config, run_dir, trainer_for=trainer_for, **kwargs)
        say(f"      {len(trace.rounds)} rounds in {trace.seconds:.1f} s")
        return trace

    mia, split = membership_inference(config, canary.trace.final_weights,
                                      hospital=plan.mia_hospital, shadows=plan.shadows,
                                      run_dir=out_dir / f"{name}-shadows",
                                      federation=federation)
    return ArmResult(
        name=name, config=config, accounted_epsilon=canary.accounted_epsilon,
        views=canary.views, view_epsilon=canary.view_epsilon, scores=canary.scores,
        ceiling=canary.ceiling, mia=mia, mia_scores=split, seconds=canary.trace.seconds,
        declined=canary.declined)


@dataclass(frozen=True, eq=False)
class AuditResult:
    """The whole audit: the plan, the canaries and both arms."""

    plan: AuditPlan
    records: CanaryRecords
    inclusion: CanaryInclusion
    hospital_inclusion: CanaryInclusion | None
    arms: tuple[ArmResult, ArmResult]

    @property
    def dp(self) -> ArmResult:
        """The audited (DP) arm."""
        return self.arms[0]

    @property
    def control(self) -> ArmResult:
        """The non-private control."""
        return self.arms[1]

    @property
    def has_power(self) -> bool:
        """Whether the control's bound exceeds the audited run's accounted epsilon."""
        return control_has_power(self.control.epsilon_lower_bound, self.dp.accounted_epsilon)


def run_audit(plan: AuditPlan, out_dir: Path, *, trainer_for: TrainerFactory = get_trainer,
              say: Say = lambda _: None) -> AuditResult:
    """Run the audit's federations (DP run, control, their shadows) and attack them.

    Parameters
    ----------
    plan : AuditPlan
        The settings.
    out_dir : pathlib.Path
        Every federation's run directory goes under it (ledgers included).
    trainer_for : callable, default ``client.training.get_trainer``
        The hospitals' local trainer; only tests pass another (e.g. a build whose DP-SGD adds
        no noise, to show that the audit catches it).
    say : callable
        Receives one line of progress per federation.
    """
    config = plan.config
    task = get_task(config.task)
    canary_data = _hospitals(config)[plan.canary_hospital]
    n_classes = 2 if task.kind == "binary" else task.num_outputs
    records = make_tabular_canaries(plan.canaries, task.num_features, n_classes, config.seed,
                                    kind=plan.canary_kind, reference_x=canary_data.x_train)
    if records.kind == "axis":
        records = against_initial_model(records, task, config.seed)
    inclusion = draw_inclusion(plan.canaries, config.seed)
    hospital_inclusion = (draw_inclusion(plan.canaries, config.seed + 1)
                          if config.dp_mode == DpMode.HOSPITAL else None)
    step = [0]
    arms = tuple(
        run_arm(name, arm_config, plan, out_dir, records=records, inclusion=inclusion,
                hospital_inclusion=(None if hospital_inclusion is None
                                    else hospital_inclusion),
                trainer_for=trainer_for, say=say, step=step)
        for name, arm_config in (("dp", config), ("control", control_config(config))))
    return AuditResult(plan, records, inclusion, hospital_inclusion, arms)  # type: ignore[arg-type]
