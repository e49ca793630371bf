"""``fedcare audit``: attack a DP run and its non-private control; put a proven lower bound on
epsilon beside the accountant's (issue 14). The experiment is ``simulations.audit``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from common.config import RunConfig
from common.wire.modes import DpMode, NoiseMode
from simulations.cli.run_options import (
    RUN_OPTIONS,
    option_flags,
    pick,
    reworded,
    run_config_values,
    with_run_options,
)

if TYPE_CHECKING:
    from simulations.audit.experiment import AuditPlan

DEFAULT_CANARIES = 100
DEFAULT_SHADOWS = 4
DEFAULT_ROUNDS = 20
DEFAULT_HOSPITALS = {"breast-cancer": 3, "digits": 3}  # else the task's own
AUDIT_TASKS = ("heart-disease", "breast-cancer", "digits")


# The run-config options of an audited run, in the audit's own terms.
AUDIT_OPTIONS = {
    "task": reworded("task", "heart-disease, breast-cancer or digits (classification).",
                     default="breast-cancer"),
    "rounds": reworded("rounds", "Federated rounds of each federation.", default=DEFAULT_ROUNDS),
    "hospitals": reworded("hospitals", "Hospitals (default: 3 for split tasks, else the "
                          "task's)."),
    "seed": reworded("seed", "Seed of the model, split, canaries and coins."),
    **pick("partition", "alpha", "local_epochs", "batch_size", "lr", "local_steps"),
    "dp": reworded("dp", "patient (DP-SGD) or hospital (DP-FedAvg, local noise)."),
    "epsilon": reworded("epsilon", "Each hospital's privacy budget epsilon."),
    "delta": reworded("delta", "Each hospital's delta."),
    "clip": RUN_OPTIONS["clip"],
    "noise_mode": reworded("noise_mode", "local (each update private); distributed is not "
                           "audited."),
    "accountant": reworded("accountant", "Opacus accountant (rdp or prv)."),
    "update_clip": reworded("update_clip", "Norm each update is clipped to (patient DP)."),
}
AUDIT_FLAGS = option_flags(AUDIT_OPTIONS)


def validated(values: dict[str, object], fail: Callable[[str], NoReturn]) -> RunConfig:
    """The run's settings through the same validation as a Flower run config (``RunConfig``);
    a bad value exits 2 with the flag named.
    """
    try:
        return RunConfig.from_run_config(values)
    except ValueError as error:
        text = str(error)
        key = getattr(error, "key", None) or next(
            (k for k in sorted(AUDIT_FLAGS, key=len, reverse=True) if text.startswith(k)), None)
        fail(f"{AUDIT_FLAGS[key]} ({key}): {text}" if key in AUDIT_FLAGS else text)


def stop_on_signals(out_dir: Path) -> dict[int, object]:
    """Ctrl-C (SIGINT) or SIGTERM stops the audit at once, exit status 130 / 143.

    The audit runs its federations in this process (no Ray), so nothing else needs stopping
    beyond any child a library may have started; the half-written directory is left as is.
    """
    from simulations.engine.process_tree import stop_descendants

    def stop(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        sys.stderr.write(f"\nfedcare: interrupted by {name}; the audit stopped. {out_dir} "
                         "holds the federations run so far, no audit.md\n")
        sys.stderr.flush()
        stop_descendants(grace_seconds=1.0)
        os._exit(128 + signum)  # TensorFlow may be mid-op in this thread: do not wait for it

    previous: dict[int, object] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, stop)
    return previous


AUDIT, OUTPUT = "Audit", "Output"
OutOption = Annotated[Path | None, typer.Option(
    help="Directory for audit.md, audit.json, plots and runs (default runs/<UTC time>-<task>).",
    rich_help_panel=OUTPUT)]
ForceOption = Annotated[bool, typer.Option(help="Write into a non-empty --out.",
                                           rich_help_panel=OUTPUT)]
CanariesOption = Annotated[int, typer.Option(
    help="M canary records (and canary hospitals at hospital level).", rich_help_panel=AUDIT)]
ConfidenceOption = Annotated[float, typer.Option(help="Confidence of the lower bound.",
                                                 rich_help_panel=AUDIT)]
ShadowsOption = Annotated[int, typer.Option(help="Shadow federations per arm for LiRA (even).",
                                            rich_help_panel=AUDIT)]
CanaryKindOption = Annotated[str, typer.Option(
    help="far (outside the data), random (in-distribution) or axis (one per feature axis, for "
         "small models such as heart-disease's).", rich_help_panel=AUDIT)]


@with_run_options(AUDIT_OPTIONS)
def audit(
    canaries: CanariesOption = DEFAULT_CANARIES,
    confidence: ConfidenceOption = 0.95,
    shadows: ShadowsOption = DEFAULT_SHADOWS,
    canary_kind: CanaryKindOption = "far",
    out: OutOption = None,
    force: ForceOption = False,
    **run_options: Any,
) -> None:
    """Audit a DP run: canaries, membership inference and a non-private control (audit.md)."""
    from common.quiet import quiet_third_party

    quiet_third_party()  # before TensorFlow is imported: its start-up chatter stays hidden
    from common.console import error_console as console
    from common.console import fail
    from simulations.audit.experiment import AuditPlan, run_audit
    from simulations.audit.report import verdict, write_audit

    config = audited_config(run_options, fail)
    plan = AuditPlan(config, canaries, confidence, shadows, canary_kind)
    check_plan(plan, fail)
    out_dir = run_directory(out, config, force=force, fail=fail)
    console.print(f"fedcare audit: {config.task}, {config.hospitals} hospitals, dp "
                  f"{config.dp_mode}, epsilon {config.dp_epsilon:g}, {canaries} canaries, "
                  f"{plan.federations} federations of {config.num_server_rounds} rounds "
                  f"-> {out_dir}")
    from simulations.audit.report import AUDITED_RELEASES

    console.print(f"covers {AUDITED_RELEASES}", highlight=False)
    previous = stop_on_signals(out_dir)
    try:
        result = run_audit(plan, out_dir, say=console.print)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
    md, _ = write_audit(result, out_dir)
    console.print(f"{verdict(result)}")
    for arm in result.arms:
        accounted = (f"{arm.accounted_epsilon:.2f}" if arm.config.private else "none")
        console.print(f"  {arm.name:8} accounted eps {accounted:>6}  lower bound "
                      f"{arm.epsilon_lower_bound:.2f}  LiRA AUC {arm.mia['lira'].auc:.3f}")
    console.print(f"[green]done[/]: {md}")


def audited_config(run_options: dict[str, Any], fail: Callable[[str], NoReturn]) -> RunConfig:
    """The audited run's settings: refused before anything runs unless the audit can attack
    them (a DP run with local noise on a bundled classification task), then validated.
    """
    from common.tasks import get_task

    task, dp, noise_mode = run_options["task"], run_options["dp"], run_options["noise_mode"]
    if task not in AUDIT_TASKS:
        fail(f"--task {task!r}: the audit needs one of {', '.join(AUDIT_TASKS)} (a "
             "classification task bundled with fedcare)")
    if dp not in (DpMode.PATIENT, DpMode.HOSPITAL):
        fail(f"--dp {dp.value!r}: the audit attacks a DP run, so --dp must be patient or "
             "hospital (its non-private control is run as well)")
    if dp == DpMode.HOSPITAL and noise_mode != NoiseMode.LOCAL:
        fail(f"--noise-mode {noise_mode.value!r}: the audit sees each hospital's update on its "
             "own, so it audits local noise only")
    values = run_config_values(AUDIT_OPTIONS, run_options)
    if run_options["hospitals"] is None:
        values["hospitals"] = DEFAULT_HOSPITALS.get(task, get_task(task).default_hospitals)
    return validated(values, fail)


def check_plan(plan: AuditPlan, fail: Callable[[str], NoReturn]) -> None:
    """Refuse an audit plan the experiment cannot carry out, naming the flag."""
    from common.tasks import get_task
    from simulations.audit.canaries import CANARY_KINDS

    if isinstance(plan.canaries, bool) or plan.canaries < 2:
        fail(f"--canaries must be >= 2, got {plan.canaries}")
    if not 0.0 < plan.confidence < 1.0:
        fail(f"--confidence must be in (0, 1), got {plan.confidence}")
    if plan.shadows < 2 or plan.shadows % 2:
        fail(f"--shadows must be an even number >= 2, got {plan.shadows}")
    if plan.canary_kind not in CANARY_KINDS:
        fail(f"--canary-kind must be one of {', '.join(CANARY_KINDS)}, got {plan.canary_kind!r}")
    features = get_task(plan.config.task).num_features
    if plan.canary_kind == "axis" and plan.canaries > features:
        fail(f"--canaries must be <= {features} with --canary-kind axis on {plan.config.task} "
             f"(one canary per feature axis), got {plan.canaries}")


def run_directory(out: Path | None, config: RunConfig, *, force: bool,
                  fail: Callable[[str], NoReturn]) -> Path:
    """Check the task splits as asked (exit 2 naming why), then make the audit's directory."""
    from common.tasks import get_task, load_task_hospitals
    from server.run_directory import prepare_run_dir

    try:
        load_task_hospitals(get_task(config.task), config.hospitals, seed=config.seed,
                            partition=config.partition, alpha=config.dirichlet_alpha)
    except ValueError as error:
        fail(str(error))
    try:
        return prepare_run_dir(out, task=config.task, force=force)
    except FileExistsError as error:
        fail(str(error))
