"""Admin command ``fedcare deploy-local``: a real SuperLink and SuperNodes on this machine."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import click
import typer

from common.console import error_console as console
from common.task_catalog import TASK_FACTS
from common.wire.modes import DpMode, NoiseMode

if TYPE_CHECKING:
    from simulations.deployment.deploy_local import DeploySettings


def default_app_dir() -> Path:
    """The fedcare checkout this command runs from (its pyproject.toml is the Flower app)."""
    return Path(__file__).resolve().parents[2]


OutOption = Annotated[Path, typer.Option(
    help="New directory for certificates, Flower homes, ledgers, logs and the run directory "
         "(run/).")]
HospitalsOption = Annotated[int, typer.Option(min=1,
                                              help="Hospitals: one SuperNode process each.")]
TaskOption = Annotated[str, typer.Option(click_type=click.Choice(tuple(TASK_FACTS)),
                                         help="csv: each hospital's own CSV file.")]
RoundsOption = Annotated[int, typer.Option(min=1, help="Federated rounds.")]
CertsOption = Annotated[Path | None, typer.Option(
    help="Use this directory's ca.crt, server.crt, server.key and <hospital>.key/.pub instead "
         "of making new ones.")]
DataOption = Annotated[Path | None, typer.Option(
    help="Task csv: directory with schema.json and hospital-<i>.csv (default: example "
         "hospitals from the heart-disease data).")]
InsecureOption = Annotated[bool, typer.Option(
    "--insecure", help="No TLS and no SuperNode authentication (Flower needs TLS for it). "
                       "Testing only.")]
SeedOption = Annotated[int, typer.Option(
    help="Seed of the model and splits (hospitals' noise always comes from OS entropy).")]
DpOption = Annotated[DpMode, typer.Option(
    help="patient (DP-SGD), hospital (DP-FedAvg) or none.")]
EpsilonOption = Annotated[float, typer.Option(
    click_type=click.FloatRange(0, min_open=True),
    help="Each hospital's budget epsilon (its node config budget-epsilon).")]
DeltaOption = Annotated[float, typer.Option(
    click_type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Each hospital's budget delta.")]
PinOption = Annotated[bool, typer.Option(
    help="Pin each hospital to this checkout's code digest (node config app-sha256).")]
TimeoutOption = Annotated[float, typer.Option(click_type=click.FloatRange(0, min_open=True),
                                              help="Seconds to wait for the run to finish.")]
SecureAggregationOption = Annotated[bool, typer.Option(
    "--secure-aggregation",
    help="Secure aggregation: each hospital gets a roster signing key and its copy of the "
         "consortium roster (c = 1 colluding hospital assumed from 4 hospitals on, else 0; "
         "min threshold = the run's t).")]
NoiseModeOption = Annotated[NoiseMode, typer.Option(
    help="--dp hospital: local (each update private) or distributed (needs "
         "--secure-aggregation; each hospital adds 1/sqrt(h) of the noise, h = t - c).")]
AppOption = Annotated[Path | None, typer.Option(
    help="Flower app directory to submit (default: this fedcare checkout).")]
ForceOption = Annotated[bool, typer.Option(
    help="Use a non-empty --out: keep its certificates, keys, roster and ledgers (the "
         "hospitals' budgets carry on); its previous run/, app snapshot and logs are kept in "
         "previous-<UTC time>/.")]


def deploy_local(
    out: OutOption,
    hospitals: HospitalsOption = 3,
    task: TaskOption = "heart-disease",
    rounds: RoundsOption = 3,
    certs: CertsOption = None,
    data: DataOption = None,
    insecure: InsecureOption = False,
    seed: SeedOption = 0,
    dp: DpOption = DpMode.PATIENT,
    epsilon: EpsilonOption = 1.0,
    delta: DeltaOption = 1e-5,
    pin: PinOption = True,
    timeout: TimeoutOption = 1800.0,
    secure_aggregation: SecureAggregationOption = False,
    noise_mode: NoiseModeOption = NoiseMode.LOCAL,
    app: AppOption = None,
    force: ForceOption = False,
) -> None:
    """Deploy for real on this machine: a SuperLink and one SuperNode per hospital, TLS and
    node authentication.
    """
    from simulations.deployment.deploy_local import DeploySettings

    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        _refuse(f"--out {out.resolve()} exists and is not empty; choose another directory or "
                "pass --force")  # as fedcare simulate: exit 2, before anything starts
    most = TASK_FACTS[task].max_hospitals  # before anything heavy: exit 2 naming the flag
    if most is not None and hospitals > most:
        _refuse(f"--hospitals must be between 1 and {most} for task {task!r}, got {hospitals}")
    app_dir = app if app is not None else default_app_dir()
    if not (app_dir / "pyproject.toml").is_file():
        _refuse(f"{app_dir} has no pyproject.toml: deploy-local submits a fedcare source "
                "checkout; pass --app DIR")
    if insecure:
        console.print("[bold yellow]warning:[/] --insecure: plain-text connections and NO "
                      "SuperNode authentication; any process on this host could join")
    if dp == DpMode.NONE:
        console.print("[bold yellow]warning:[/] --dp none: the hospitals' updates are NOT "
                      "differentially private")
    if noise_mode == NoiseMode.DISTRIBUTED and not (dp == DpMode.HOSPITAL and secure_aggregation):
        _refuse("--noise-mode distributed needs --dp hospital and --secure-aggregation (only "
                "the secure sum carries the whole noise)")
    _print_cost({"task": task, "hospitals": hospitals, "num-server-rounds": rounds,
                 "dp.mode": dp.value, "dp.epsilon": epsilon, "dp.delta": delta})
    deploy_with_progress(DeploySettings(
        hospitals=hospitals, task=task, rounds=rounds, out=out, app_dir=app_dir, certs=certs,
        data=data, insecure=insecure, seed=seed, dp_mode=dp.value, budget_epsilon=epsilon,
        budget_delta=delta, pin_app=pin, timeout_seconds=timeout,
        secure_aggregation=secure_aggregation, force=force,
        extra_run_config=({"dp.noise-mode": noise_mode.value}
                          if noise_mode != NoiseMode.LOCAL else {})))


def _print_cost(run_config: dict[str, object]) -> None:
    """Print what each option spends, before anything starts (task csv: the schema's task is
    built by the server, so its evaluation's noise is printed in the server's log).
    """
    from common.config import RunConfig
    from server.privacy_cost import privacy_cost_lines

    try:
        lines = privacy_cost_lines(RunConfig.from_run_config(run_config))
    except ValueError:
        lines = ["privacy cost: printed by the server when the run starts (its log)"]
    for line in lines:
        console.print(line, highlight=False)


def _refuse(message: str) -> NoReturn:
    """Exit 2 with `message` (a flag the user gave cannot work)."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def deploy_with_progress(settings: "DeploySettings") -> None:
    """Run the deployment with a progress bar of its rounds; exit 1 (or the signal's status)
    naming the logs when it fails or is interrupted.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from simulations.deployment.deploy_local import DeploymentError, DeploymentInterrupted
    from simulations.deployment.deploy_local import deploy_local as run

    out = settings.out
    progress = Progress(TextColumn("[bold]rounds"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.description}"), TimeElapsedColumn(), console=console)
    bar = progress.add_task("starting", total=settings.rounds)

    def on_round(rows: list[dict[str, str]]) -> None:
        if rows:  # a round without an evaluation (DP: not a planned one) has no pooled loss
            loss = rows[-1].get("pooled_loss") or ""
            progress.update(bar, completed=len(rows),
                            description=f"pooled_loss {float(loss):.4f}" if loss else "")

    try:
        with progress:
            outcome = run(settings, report=progress.console.print, on_round=on_round)
    except DeploymentInterrupted as interruption:
        console.print(f"fedcare deploy-local: {interruption}; every process it started is "
                      f"stopped. {_what_was_kept(out)}")
        raise typer.Exit(code=interruption.exit_code) from None
    except (DeploymentError, ValueError, FileExistsError) as error:
        console.print(f"[bold red]error:[/] {error}")
        console.print(f"every process deploy-local started is stopped; logs: {out / 'logs'}")
        raise typer.Exit(code=1) from None
    console.print(f"[green]run {outcome.run_id} {outcome.status}[/]: {outcome.rounds_completed} "
                  f"rounds; report {outcome.run_dir / 'report.md'}, ledgers {out / 'ledgers'}")


def _what_was_kept(out: Path) -> str:
    """After an interruption: the rounds the run directory keeps, or that none completed (and
    no run directory is named when there is none); the logs, if any were written.
    """
    from simulations.deployment.deploy_local import completed_rounds

    run_dir, logs = out / "run", out / "logs"
    rounds = len(completed_rounds(run_dir))
    kept = (f"The run directory {run_dir} keeps the {rounds} round(s) completed (metrics.csv, "
            "checkpoints)." if rounds else "No round was completed, so there is no run to "
            "resume.")
    return kept + (f" Logs: {logs}" if logs.is_dir() else "")
