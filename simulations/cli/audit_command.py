"""``fedcare audit``: attack a DP run and its non-private control; put a proven lower bound on
epsilon beside the accountant's (issue 14). The experiment is ``simulations.audit``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from common.config import DEFAULTS, RunConfig

DEFAULT_CANARIES = 100
DEFAULT_SHADOWS = 4
DEFAULT_ROUNDS = 20
DEFAULT_HOSPITALS = {"breast-cancer": 3, "digits": 3}  # else the task's own
AUDIT_TASKS = ("heart-disease", "breast-cancer", "digits")


# Each run-config key the audit sets, and the flag that sets it (errors name the flag).
AUDIT_FLAGS = {
    "task": "--task", "num-server-rounds": "--rounds", "hospitals": "--hospitals",
    "seed": "--seed", "partition": "--partition", "dirichlet-alpha": "--alpha",
    "local-epochs": "--local-epochs", "batch-size": "--batch-size", "learning-rate": "--lr",
    "local-steps": "--local-steps", "dp.mode": "--dp", "dp.epsilon": "--epsilon",
    "dp.delta": "--delta", "dp.clipping-norm": "--clip", "dp.noise-mode": "--noise-mode",
    "dp.accountant": "--accountant", "dp.update-clipping-norm": "--update-clip",
}


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


def audit(
    task: Annotated[str, typer.Option(help="heart-disease, breast-cancer or digits (classification).")] = "breast-cancer",
    rounds: Annotated[int, typer.Option(help="Federated rounds of each federation.")] = DEFAULT_ROUNDS,
    hospitals: Annotated[int | None, typer.Option(help="Hospitals (default: 3 for split tasks, else the task's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the model, split, canaries and coins.")] = DEFAULTS["seed"],
    out: Annotated[Path | None, typer.Option(help="Directory for audit.md, audit.json, plots and runs (default runs/<UTC time>-<task>).")] = None,
    force: Annotated[bool, typer.Option(help="Write into a non-empty --out.")] = False,
    partition: Annotated[str, typer.Option(help="iid or dirichlet (split tasks).")] = DEFAULTS["partition"],
    alpha: Annotated[float, typer.Option(help="Dirichlet alpha (smaller: more skew).")] = DEFAULTS["dirichlet-alpha"],
    local_epochs: Annotated[int, typer.Option(help="Local epochs per round.")] = DEFAULTS["local-epochs"],
    batch_size: Annotated[int, typer.Option(help="Local batch size.")] = DEFAULTS["batch-size"],
    lr: Annotated[float, typer.Option(help="Local SGD learning rate.")] = DEFAULTS["learning-rate"],
    local_steps: Annotated[int, typer.Option(help="Local steps per round (0: use --local-epochs).")] = DEFAULTS["local-steps"],
    dp: Annotated[str, typer.Option(help="patient (DP-SGD) or hospital (DP-FedAvg, local noise).")] = DEFAULTS["dp.mode"],
    epsilon: Annotated[float, typer.Option(help="Each hospital's privacy budget epsilon.")] = DEFAULTS["dp.epsilon"],
    delta: Annotated[float, typer.Option(help="Each hospital's delta.")] = DEFAULTS["dp.delta"],
    clip: Annotated[float, typer.Option(help="Clip C: per-example (patient) or per-update (hospital).")] = DEFAULTS["dp.clipping-norm"],
    noise_mode: Annotated[str, typer.Option(help="local (each update private); distributed is not audited.")] = DEFAULTS["dp.noise-mode"],
    accountant: Annotated[str, typer.Option(help="rdp or prv (Opacus accountants).")] = DEFAULTS["dp.accountant"],
    update_clip: Annotated[float, typer.Option(help="Norm each update is clipped to (patient DP).")] = DEFAULTS["dp.update-clipping-norm"],
    canaries: Annotated[int, typer.Option(help="M canary records (and canary hospitals at hospital level).")] = DEFAULT_CANARIES,
    confidence: Annotated[float, typer.Option(help="Confidence of the lower bound.")] = 0.95,
    shadows: Annotated[int, typer.Option(help="Shadow federations per arm for LiRA (even).")] = DEFAULT_SHADOWS,
    canary_kind: Annotated[str, typer.Option(help="far (outside the data), random (in-distribution) or axis (one per feature axis, for small models such as heart-disease's).")] = "far",
) -> None:
    """Audit a DP run: canaries, membership inference and a non-private control (audit.md)."""
    from common.quiet import quiet_third_party

    quiet_third_party()  # before TensorFlow is imported: its start-up chatter stays hidden
    from common.console import error_console as console
    from common.console import fail
    from simulations.audit.canaries import CANARY_KINDS

    if task not in AUDIT_TASKS:
        fail(f"--task {task!r}: the audit needs one of {', '.join(AUDIT_TASKS)} (a "
             "classification task bundled with fedcare)")
    if dp not in ("patient", "hospital"):
        fail(f"--dp {dp!r}: the audit attacks a DP run, so --dp must be patient or hospital "
             "(its non-private control is run as well)")
    if dp == "hospital" and noise_mode != "local":
        fail(f"--noise-mode {noise_mode!r}: the audit sees each hospital's update on its own, "
             "so it audits local noise only")
    if isinstance(canaries, bool) or canaries < 2:
        fail(f"--canaries must be >= 2, got {canaries}")
    if not 0.0 < confidence < 1.0:
        fail(f"--confidence must be in (0, 1), got {confidence}")
    if shadows < 2 or shadows % 2:
        fail(f"--shadows must be an even number >= 2, got {shadows}")
    if canary_kind not in CANARY_KINDS:
        fail(f"--canary-kind must be one of {', '.join(CANARY_KINDS)}, got {canary_kind!r}")
    from common.tasks import get_task

    features = get_task(task).num_features
    if canary_kind == "axis" and canaries > features:
        fail(f"--canaries must be <= {features} with --canary-kind axis on {task} (one canary "
             f"per feature axis), got {canaries}")
    count = hospitals if hospitals is not None else DEFAULT_HOSPITALS.get(
        task, get_task(task).default_hospitals)
    values = {
        "task": task, "num-server-rounds": rounds, "hospitals": count, "seed": seed,
        "partition": partition, "dirichlet-alpha": alpha, "local-epochs": local_epochs,
        "batch-size": batch_size, "learning-rate": lr, "local-steps": local_steps,
        "dp.mode": dp, "dp.epsilon": epsilon, "dp.delta": delta, "dp.clipping-norm": clip,
        "dp.noise-mode": noise_mode, "dp.accountant": accountant,
        "dp.update-clipping-norm": update_clip,
    }
    config = validated(values, fail)
    from common.tasks import load_task_hospitals

    try:
        load_task_hospitals(get_task(task), config.hospitals, seed=config.seed,
                            partition=config.partition.value, alpha=config.dirichlet_alpha)
    except ValueError as error:
        fail(str(error))
    from server.run_directory import prepare_run_dir

    try:
        out_dir = prepare_run_dir(out, task=config.task, force=force)
    except FileExistsError as error:
        fail(str(error))
    from simulations.audit.experiment import AuditPlan, run_audit
    from simulations.audit.report import verdict, write_audit

    plan = AuditPlan(config, canaries, confidence, shadows, canary_kind)
    console.print(f"fedcare audit: {config.task}, {config.hospitals} hospitals, dp {dp}, "
                  f"epsilon {epsilon:g}, {canaries} canaries, {plan.federations} "
                  f"federations of {rounds} rounds -> {out_dir}")
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
