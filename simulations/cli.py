"""The ``fedcare`` command line: one typer app composed of role-specific sub-commands.

Simulation and research commands live in ``simulations/``; admin commands in ``server/``;
hospital commands in ``client/``. Heavy imports (TensorFlow, Flower) happen inside commands,
so ``fedcare --help`` is instant.
"""

import os
from pathlib import Path
from typing import Annotated

# Quiet TensorFlow's C++ start-up chatter and its GPU probe on these CPU-only machines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import typer
from click.core import ParameterSource
from rich.console import Console

from common.config import DEFAULTS, RunConfig

app = typer.Typer(
    help="fedcare: privacy-preserving federated learning for hospitals.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)


@app.callback()
def root() -> None:
    """fedcare: privacy-preserving federated learning for hospitals."""


# Hospital commands (client/) are registered next to the researcher's (this module).
from client.cli import budget_app, hospital_worker, predict, validate_data  # noqa: E402

app.add_typer(budget_app, name="budget")
app.command("validate-data")(validate_data)
app.command()(predict)
app.command("hospital-worker")(hospital_worker)

from server.cli import certs_app  # noqa: E402

app.add_typer(certs_app, name="certs")

from client.roster_cli import roster_app  # noqa: E402

app.add_typer(roster_app, name="roster")

from server.deploy_cli import deploy_local  # noqa: E402
from client.pinning_cli import app_digest  # noqa: E402

app.command("deploy-local")(deploy_local)
app.command("app-digest")(app_digest)


def fail(message: str) -> None:
    """Print an error in red and exit with status 2."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def resolve_config(overrides: dict[str, object]) -> RunConfig:
    """Validate CLI settings through the same path as a Flower run config."""
    try:
        return RunConfig.from_run_config({k: v for k, v in overrides.items() if v is not None})
    except ValueError as error:
        fail(str(error))
        raise  # unreachable; fail() exits


def warn_delta_vs_rows(config: RunConfig) -> None:
    """Check the task can be split so (exit 2 naming why); at patient level, warn when delta
    >= 1/rows at a hospital: then delta no longer protects each patient."""
    from common.tasks import get_task, load_task_hospitals

    task = get_task(config.task)
    try:
        hospitals = load_task_hospitals(task, config.hospitals, seed=config.seed,
                                        partition=config.partition, alpha=config.dirichlet_alpha)
    except ValueError as error:  # a split the data cannot give (named by the task)
        fail(str(error))
    for hospital in hospitals:
        if config.dp_mode == "patient" and config.dp_delta >= 1.0 / hospital.num_train:
            console.print(f"[bold yellow]warning:[/] delta={config.dp_delta:g} >= 1/rows at "
                          f"{hospital.name} ({hospital.num_train} rows): a mechanism could "
                          "then reveal a whole patient record with probability delta")


# Each simulate option's run-config key (what --resume compares with the run's own settings).
SIMULATE_KEYS = {
    "task": "task", "rounds": "num-server-rounds", "hospitals": "hospitals", "seed": "seed",
    "partition": "partition", "alpha": "dirichlet-alpha", "local_epochs": "local-epochs",
    "batch_size": "batch-size", "lr": "learning-rate", "server_optimizer": "server-optimizer",
    "server_lr": "server-learning-rate", "weighting": "weighting", "local_steps": "local-steps",
    "min_hospitals": "min-hospitals", "dp": "dp.mode", "epsilon": "dp.epsilon",
    "delta": "dp.delta", "clip": "dp.clipping-norm", "noise_mode": "dp.noise-mode",
    "accountant": "dp.accountant", "secure_aggregation": "secagg.enabled",
    "secagg_threshold": "secagg.threshold", "aggregator": "aggregator",
    "trim_fraction": "trim-fraction", "round_timeout": "round-timeout",
    "clip_updates": "clip-updates", "update_clip": "dp.update-clipping-norm",
}


@app.command()
def simulate(
    ctx: typer.Context,
    task: Annotated[str, typer.Option(help="heart-disease, breast-cancer, diabetes or digits.")] = DEFAULTS["task"],
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = DEFAULTS["num-server-rounds"],
    hospitals: Annotated[int | None, typer.Option(help="Hospitals (default: the task's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the model, split and shuffles.")] = DEFAULTS["seed"],
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/<UTC time>-<task>).")] = None,
    force: Annotated[bool, typer.Option(help="Write into a non-empty --out.")] = False,
    partition: Annotated[str, typer.Option(help="iid or dirichlet (split tasks).")] = DEFAULTS["partition"],
    alpha: Annotated[float, typer.Option(help="Dirichlet alpha (smaller: more skew).")] = DEFAULTS["dirichlet-alpha"],
    local_epochs: Annotated[int, typer.Option(help="Local epochs per round.")] = DEFAULTS["local-epochs"],
    batch_size: Annotated[int, typer.Option(help="Local batch size.")] = DEFAULTS["batch-size"],
    lr: Annotated[float, typer.Option(help="Local SGD learning rate.")] = DEFAULTS["learning-rate"],
    server_optimizer: Annotated[str, typer.Option(help="fedavg, fedadam or fedyogi.")] = DEFAULTS["server-optimizer"],
    server_lr: Annotated[float, typer.Option(help="Server learning rate.")] = DEFAULTS["server-learning-rate"],
    weighting: Annotated[str, typer.Option(help="uniform (each hospital equal) or examples.")] = DEFAULTS["weighting"],
    local_steps: Annotated[int, typer.Option(help="Local steps per round (0: use --local-epochs).")] = DEFAULTS["local-steps"],
    min_hospitals: Annotated[int, typer.Option(help="Stop when fewer hospitals can take part.")] = DEFAULTS["min-hospitals"],
    dp: Annotated[str, typer.Option(help="patient (DP-SGD), hospital (DP-FedAvg) or none.")] = DEFAULTS["dp.mode"],
    epsilon: Annotated[float, typer.Option(help="Each hospital's privacy budget epsilon.")] = DEFAULTS["dp.epsilon"],
    delta: Annotated[float, typer.Option(help="Each hospital's delta.")] = DEFAULTS["dp.delta"],
    clip: Annotated[float, typer.Option(help="Clip C: per-example (patient) or per-update (hospital).")] = DEFAULTS["dp.clipping-norm"],
    noise_mode: Annotated[str, typer.Option(help="local (each update private) or distributed.")] = DEFAULTS["dp.noise-mode"],
    accountant: Annotated[str, typer.Option(help="rdp or prv (Opacus accountants).")] = DEFAULTS["dp.accountant"],
    secure_aggregation: Annotated[bool, typer.Option("--secure-aggregation", help="The server sees only the sum of the updates.")] = DEFAULTS["secagg.enabled"],
    secagg_threshold: Annotated[int, typer.Option(help="Shares needed to unmask (0: smallest majority).")] = DEFAULTS["secagg.threshold"],
    aggregator: Annotated[str, typer.Option(help="mean, or the robust median / trimmed-mean (not with secure aggregation).")] = DEFAULTS["aggregator"],
    trim_fraction: Annotated[float, typer.Option(help="trimmed-mean: fraction cut from each end per coordinate.")] = DEFAULTS["trim-fraction"],
    round_timeout: Annotated[float, typer.Option(help="Seconds a round waits for hospitals before going on without them.")] = DEFAULTS["round-timeout"],
    clip_updates: Annotated[bool, typer.Option("--clip-updates", help="--dp none: hospitals clip updates to the update clip norm; larger ones are rejected.")] = DEFAULTS["clip-updates"],
    update_clip: Annotated[float, typer.Option(help="Norm each update is clipped to (patient DP, --clip-updates).")] = DEFAULTS["dp.update-clipping-norm"],
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory from its last checkpoint, with its own settings.")] = None,
) -> None:
    """Simulate a federation of hospitals on this machine and write a run directory."""
    from common.tasks import get_task

    if resume is not None:
        given = {key: ctx.params[name] for name, key in SIMULATE_KEYS.items()
                 if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
        return resume_run(resume, given, other_flags=out is not None or force)
    try:
        task_spec = get_task(task)
    except ValueError as error:
        fail(str(error))
    values = {key: ctx.params[name] for name, key in SIMULATE_KEYS.items()}
    values["hospitals"] = hospitals if hospitals is not None else task_spec.default_hospitals
    config = resolve_config({**values, "out-dir": str(out) if out else ""})
    if not config.private:
        console.print("[bold yellow]warning:[/] --dp none: the hospitals' updates are NOT "
                      "differentially private")
    warn_delta_vs_rows(config)  # before the run directory exists: a bad split makes none
    from server.run_directory import prepare_run_dir

    try:
        run_dir = prepare_run_dir(out, task=config.task, force=force)
    except FileExistsError as error:
        fail(str(error))
    from simulations.simulate import simulate as run

    console.print(f"fedcare: {config.hospitals} hospitals, {config.num_server_rounds} rounds of "
                  f"{config.task}, dp {config.dp_mode} -> {run_dir}")
    run(config, run_dir)
    console.print(f"[green]done[/]: {run_dir}/report.md")


def resume_run(run_dir: Path, given: dict[str, object], *, other_flags: bool) -> None:
    """Continue the run in `run_dir` from its last intact checkpoint, with its own settings."""
    from simulations.resume import plan_resume

    if other_flags:
        fail("--resume continues the run in its own directory: drop --out and --force")
    run_dir = run_dir.expanduser().resolve()
    try:
        plan = plan_resume(run_dir, given)
    except ValueError as error:
        fail(str(error))
    if plan.finished:
        console.print(f"{run_dir} already finished all {plan.config.num_server_rounds} rounds; "
                      "nothing to do")
        return
    from simulations.simulate import simulate as run

    console.print(f"fedcare: resuming {run_dir} after round {plan.completed_rounds} of "
                  f"{plan.config.num_server_rounds}")
    run(plan.config, run_dir)
    console.print(f"[green]done[/]: {run_dir}/report.md")


@app.command()
def baseline(
    task: Annotated[str, typer.Option(help="The task.")] = DEFAULTS["task"],
    out: Annotated[Path, typer.Option(help="Directory for baseline.csv and baseline.md.")] = Path("runs/baseline"),
    hospitals: Annotated[int | None, typer.Option(help="Hospitals (default: the task's).")] = None,
    seeds: Annotated[int, typer.Option(help="Seeds 0..N-1 to average over.")] = 5,
    rounds: Annotated[int, typer.Option(help="Epochs = rounds x local epochs, as the federation.")] = DEFAULTS["num-server-rounds"],
    force: Annotated[bool, typer.Option(help="Write into a non-empty --out.")] = False,
) -> None:
    """Pooled and local-only training, evaluated on every hospital's test set (as FLamby)."""
    from common.tasks import get_task

    try:
        task_spec = get_task(task)
    except ValueError as error:
        fail(str(error))
    if seeds < 1:
        fail(f"--seeds must be >= 1, got {seeds}")
    config = resolve_config({
        "task": task, "num-server-rounds": rounds,
        "hospitals": hospitals if hospitals is not None else task_spec.default_hospitals,
    })
    from server.run_directory import prepare_run_dir
    from simulations.baseline import run_baselines, write_baselines

    try:
        out_dir = prepare_run_dir(out, task=config.task, force=force)
    except FileExistsError as error:
        fail(str(error))
    rows = run_baselines(config, seeds=list(range(seeds)))
    table = write_baselines(rows, out_dir, task_spec.metric_names)
    typer.echo(table)
    console.print(f"[green]done[/]: {out_dir}/baseline.md")


def main() -> None:
    """Entry point of the ``fedcare`` console script."""
    app()
