"""The ``fedcare`` command line: one typer app composed of role-specific sub-commands.

Simulation and research commands live in ``simulations/``; admin commands in ``server/``;
hospital commands in ``client/``. Heavy imports (TensorFlow, Flower) happen inside commands,
so ``fedcare --help`` is instant.
"""

import os
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn

# Skip TensorFlow's GPU probe on these CPU-only machines (its log chatter is common.quiet's).
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import click
import typer
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape

from common.config import DEFAULTS, RunConfig
from common.config_sources import ConfigFileError, SettingSources, read_config_file
from common.errors import RunConfigError
from common.task_catalog import SIMULATED_TASKS, SPLIT_TASKS, TASK_FACTS, TaskFacts
from common.wire.modes import (
    AccountantName,
    Aggregator,
    DpMode,
    NoiseMode,
    Partition,
    ServerOptimizerName,
    Weighting,
)
from simulations.typer_compat import keep_argument_help

keep_argument_help()  # before any command is built (positional arguments' help)

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
from simulations.audit_cli import audit  # noqa: E402
app.command("audit")(audit)


def fail(message: str) -> NoReturn:
    """Print an error in red and exit with status 2."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code=2)


def set_verbose(verbose: bool) -> None:
    """--verbose: let third-party logs through (read by common.quiet before heavy imports)."""
    if verbose:
        os.environ["FEDCARE_VERBOSE"] = "1"


CSV_IN_DEPLOYMENT = (
    "task csv runs in deployment only: each hospital trains on its own CSV file, which a "
    "simulation does not have; run it with `fedcare deploy-local --task csv --out DIR` (example "
    "hospitals made from the heart-disease data, or --data DIR with schema.json and "
    "hospital-<i>.csv; README: \"Your hospital's own data\")")


class SimulatedTaskChoice(click.Choice):  # type: ignore[type-arg]
    """``--task``: the tasks a simulation runs; ``csv`` is pointed at ``deploy-local``."""

    def __init__(self) -> None:
        super().__init__(SIMULATED_TASKS)

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> object:
        """Refuse task csv with how to run it; anything else as a plain choice."""
        if value == "csv":
            self.fail(CSV_IN_DEPLOYMENT, param, ctx)
        return super().convert(value, param, ctx)


def _plain(value: object) -> object:
    return value.value if isinstance(value, Enum) else value


def _check_task_fit(sources: SettingSources, task: TaskFacts) -> None:
    """Refuse a Dirichlet alpha the run would ignore (partition is checked by RunConfig)."""
    if not sources.given("dirichlet-alpha"):
        return
    where = sources.where("dirichlet-alpha")
    if task.real_hospitals:
        fail(f"{where} does not apply to task {task.name!r}: its hospitals are real ones "
             f"({', '.join(task.real_hospitals)}), each with its own data, so nothing is split; "
             f"only {', '.join(SPLIT_TASKS)} are split (--partition dirichlet --alpha A)")
    if sources.values.get("partition", DEFAULTS["partition"]) != Partition.DIRICHLET:
        fail(f"{where} applies to a Dirichlet split only: add --partition dirichlet (the "
             "partition is 'iid', which deals rows evenly)")


def resolve_config(sources: SettingSources) -> RunConfig:
    """Validate the gathered settings (the same path as a Flower run config); exit 2 naming
    the flag, or the --config file and key, of a bad value.

    Light: no task module is imported (``common.task_catalog`` holds what is checked).
    """
    task = TASK_FACTS.get(str(sources.values.get("task", DEFAULTS["task"])))
    if task is not None and not task.simulated:  # from a --config file (--task refuses it)
        fail(f"{sources.where('task')}: {CSV_IN_DEPLOYMENT}")
    if task is not None:
        sources.add_default("hospitals", task.default_hospitals)
        _check_task_fit(sources, task)
    try:
        return RunConfig.from_run_config(sources.values)
    except RunConfigError as error:
        fail(sources.describe(error))


def check_out_dir(out: Path | None, *, task: str, force: bool) -> None:
    """Refuse a non-empty --out before anything heavy (it is made after the split check)."""
    from server.run_directory import check_run_dir

    try:
        check_run_dir(out, task=task, force=force)
    except FileExistsError as error:
        fail(str(error))


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
# Run-config key -> the flag that sets it (errors name the flag the user would type).
SIMULATE_FLAGS = {key: "--" + name.replace("_", "-") for name, key in SIMULATE_KEYS.items()}
SIMULATE_FLAGS["out-dir"] = "--out"
# Keys a --config file may not set for `fedcare simulate`, and why.
SIMULATE_REFUSED_KEYS = {
    "resume": "continue a run with `fedcare simulate --resume DIR`",
    "secagg.roster-path": "fedcare simulate makes an ephemeral roster in the run directory",
    "secagg.roster-sha256": "fedcare simulate makes an ephemeral roster in the run directory",
    "csv.schema-path": CSV_IN_DEPLOYMENT,
    "csv.schema-sha256": CSV_IN_DEPLOYMENT,
}
# Keys fedcare simulate sets itself when the run needs them (config.json's sources say so).
SIMULATOR_SET = {"secagg.roster-path": "fedcare simulate (ephemeral roster)",
                 "secagg.roster-sha256": "fedcare simulate (ephemeral roster)"}

TASK, FEDERATION, PRIVACY, SECAGG = "Task", "Federation", "Privacy", "Secure aggregation"
RELIABILITY, OUTPUT = "Reliability", "Output"


def _sources(ctx: typer.Context, config_file: Path | None, flags: dict[str, str],
             keys: dict[str, str], refused: dict[str, str]) -> SettingSources:
    """The --config file's keys, then every flag the user typed (flags win)."""
    sources = SettingSources(flags=flags)
    if config_file is not None:
        flag_keys = {flag.removeprefix("--"): key for key, flag in flags.items()}
        try:
            values = read_config_file(config_file, refused=refused, flag_keys=flag_keys)
        except ConfigFileError as error:
            fail(str(error))
        sources.add_file(config_file.expanduser().resolve(), values)
    for name, key in keys.items():
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            sources.add_flag(key, _plain(ctx.params[name]))
    return sources


ConfigOption = Annotated[Path | None, typer.Option(
    "--config", help="TOML file of run-config keys, as `flwr run . --run-config FILE` takes "
                     "(num-server-rounds = 5, \"dp.epsilon\" = 2.0 or a \\[dp] table); flags "
                     "override it.")]
VerboseOption = Annotated[bool, typer.Option(
    "--verbose", help="Show third-party logs and warnings (TensorFlow, Flower, Ray).",
    rich_help_panel=OUTPUT)]


@app.command()
def simulate(
    ctx: typer.Context,
    task: Annotated[str, typer.Option(click_type=SimulatedTaskChoice(), metavar="TASK", help=f"{', '.join(SIMULATED_TASKS)} (csv: see deploy-local).", rich_help_panel=TASK)] = DEFAULTS["task"],
    hospitals: Annotated[int | None, typer.Option(help="Hospitals (default: the task's).", rich_help_panel=TASK)] = None,
    partition: Annotated[Partition, typer.Option(help="Split tasks (not heart-disease): how rows are dealt to hospitals.", rich_help_panel=TASK)] = Partition(DEFAULTS["partition"]),
    alpha: Annotated[float, typer.Option(help="--partition dirichlet: alpha (smaller: more label skew).", rich_help_panel=TASK)] = DEFAULTS["dirichlet-alpha"],
    seed: Annotated[int, typer.Option(help="Seed of the model, split, shuffles and simulated noise.", rich_help_panel=TASK)] = DEFAULTS["seed"],
    rounds: Annotated[int, typer.Option(help="Federated rounds (>= 1).", rich_help_panel=FEDERATION)] = DEFAULTS["num-server-rounds"],
    local_epochs: Annotated[int, typer.Option(help="Local epochs per round.", rich_help_panel=FEDERATION)] = DEFAULTS["local-epochs"],
    local_steps: Annotated[int, typer.Option(help="Local steps per round (0: use --local-epochs).", rich_help_panel=FEDERATION)] = DEFAULTS["local-steps"],
    batch_size: Annotated[int, typer.Option(help="Local batch size.", rich_help_panel=FEDERATION)] = DEFAULTS["batch-size"],
    lr: Annotated[float, typer.Option(help="Local SGD learning rate.", rich_help_panel=FEDERATION)] = DEFAULTS["learning-rate"],
    server_optimizer: Annotated[ServerOptimizerName, typer.Option(help="How the server applies the mean update.", rich_help_panel=FEDERATION)] = ServerOptimizerName(DEFAULTS["server-optimizer"]),
    server_lr: Annotated[float, typer.Option(help="Server learning rate.", rich_help_panel=FEDERATION)] = DEFAULTS["server-learning-rate"],
    weighting: Annotated[Weighting, typer.Option(help="uniform: each hospital equal; examples: by training rows (not with DP).", rich_help_panel=FEDERATION)] = Weighting(DEFAULTS["weighting"]),
    aggregator: Annotated[Aggregator, typer.Option(help="mean, or the robust median / trimmed-mean (not with secure aggregation).", rich_help_panel=FEDERATION)] = Aggregator(DEFAULTS["aggregator"]),
    trim_fraction: Annotated[float, typer.Option(help="trimmed-mean: fraction cut from each end per coordinate, in [0, 0.5).", rich_help_panel=FEDERATION)] = DEFAULTS["trim-fraction"],
    dp: Annotated[DpMode, typer.Option(help="patient (DP-SGD), hospital (DP-FedAvg) or none.", rich_help_panel=PRIVACY)] = DpMode(DEFAULTS["dp.mode"]),
    epsilon: Annotated[float, typer.Option(help="Each hospital's privacy budget epsilon (> 0).", rich_help_panel=PRIVACY)] = DEFAULTS["dp.epsilon"],
    delta: Annotated[float, typer.Option(help="Each hospital's delta, in (0, 1).", rich_help_panel=PRIVACY)] = DEFAULTS["dp.delta"],
    clip: Annotated[float, typer.Option(help="Clip C: per-example (patient) or per-update (hospital).", rich_help_panel=PRIVACY)] = DEFAULTS["dp.clipping-norm"],
    noise_mode: Annotated[NoiseMode, typer.Option(help="local (each update private) or distributed (--dp hospital --secure-aggregation).", rich_help_panel=PRIVACY)] = NoiseMode(DEFAULTS["dp.noise-mode"]),
    accountant: Annotated[AccountantName, typer.Option(help="Opacus accountant.", rich_help_panel=PRIVACY)] = AccountantName(DEFAULTS["dp.accountant"]),
    update_clip: Annotated[float, typer.Option(help="Norm each update is clipped to (patient DP, --clip-updates).", rich_help_panel=PRIVACY)] = DEFAULTS["dp.update-clipping-norm"],
    clip_updates: Annotated[bool, typer.Option("--clip-updates", help="--dp none: hospitals clip updates to --update-clip; larger ones are rejected.", rich_help_panel=PRIVACY)] = DEFAULTS["clip-updates"],
    secure_aggregation: Annotated[bool, typer.Option("--secure-aggregation", help="The server sees only the sum of the updates.", rich_help_panel=SECAGG)] = DEFAULTS["secagg.enabled"],
    secagg_threshold: Annotated[int, typer.Option(help="Shares needed to unmask (0: smallest majority).", rich_help_panel=SECAGG)] = DEFAULTS["secagg.threshold"],
    min_hospitals: Annotated[int, typer.Option(help="Stop when fewer hospitals can take part.", rich_help_panel=RELIABILITY)] = DEFAULTS["min-hospitals"],
    round_timeout: Annotated[float, typer.Option(help="Seconds a round waits for hospitals before going on without them.", rich_help_panel=RELIABILITY)] = DEFAULTS["round-timeout"],
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory from its last checkpoint, with its own settings.", rich_help_panel=RELIABILITY)] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/<UTC time>-<task>).", rich_help_panel=OUTPUT)] = None,
    force: Annotated[bool, typer.Option(help="Write into a non-empty --out.", rich_help_panel=OUTPUT)] = False,
    verbose: VerboseOption = False,
    config_file: ConfigOption = None,
) -> None:
    """Simulate a federation of hospitals on this machine and write a run directory."""
    set_verbose(verbose)
    sources = _sources(ctx, config_file, SIMULATE_FLAGS, SIMULATE_KEYS, SIMULATE_REFUSED_KEYS)
    if resume is not None:
        return resume_run(resume, {k: v for k, v in sources.values.items() if k != "out-dir"},
                          other_flags=out is not None or force, name=sources.where)
    if out is not None:
        sources.add_flag("out-dir", str(out))
    config = resolve_config(sources)
    run_out = Path(config.out_dir) if config.out_dir else None
    check_out_dir(run_out, task=config.task, force=force)
    if not config.private:
        console.print("[bold yellow]warning:[/] --dp none: the hospitals' updates are NOT "
                      "differentially private")
    warn_delta_vs_rows(config)  # before the run directory exists: a bad split makes none
    from server.run_directory import prepare_run_dir, write_config_sources

    try:
        run_dir = prepare_run_dir(run_out, task=config.task, force=force)
    except FileExistsError as error:
        fail(str(error))
    recorded = sources.record([k for k in config.to_run_config() if k != "resume"])
    if config.secagg_enabled:
        recorded.update({k: v for k, v in SIMULATOR_SET.items() if not sources.given(k)})
    write_config_sources(run_dir, recorded)
    from simulations.simulate import simulate as run

    console.print(f"fedcare: {config.hospitals} hospitals, {config.num_server_rounds} rounds of "
                  f"{config.task}, dp {config.dp_mode} -> {run_dir}")
    run(config, run_dir)
    console.print(f"[green]done[/]: {run_dir}/report.md")


def resume_run(run_dir: Path, given: dict[str, object], *, other_flags: bool,
               name: Callable[[str], str] = str) -> None:
    """Continue the run in `run_dir` from its last intact checkpoint, with its own settings
    (a given setting that differs is named by `name`: the flag typed, or the file and key)."""
    from simulations.resume import plan_resume

    if other_flags:
        fail("--resume continues the run in its own directory: drop --out and --force")
    run_dir = run_dir.expanduser().resolve()
    try:
        plan = plan_resume(run_dir, given, name)
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


BASELINE_KEYS = {"task": "task", "rounds": "num-server-rounds", "hospitals": "hospitals"}
BASELINE_FLAGS = {key: f"--{name}" for name, key in BASELINE_KEYS.items()}


@app.command()
def baseline(
    ctx: typer.Context,
    task: Annotated[str, typer.Option(click_type=SimulatedTaskChoice(), metavar="TASK", help=f"{', '.join(SIMULATED_TASKS)}.")] = DEFAULTS["task"],
    out: Annotated[Path, typer.Option(help="Directory for baseline.csv and baseline.md.")] = Path("runs/baseline"),
    hospitals: Annotated[int | None, typer.Option(help="Hospitals (default: the task's).")] = None,
    seeds: Annotated[int, typer.Option(help="Seeds 0..N-1 to average over (>= 1).")] = 5,
    rounds: Annotated[int, typer.Option(help="Epochs = rounds x local epochs, as the federation.")] = DEFAULTS["num-server-rounds"],
    force: Annotated[bool, typer.Option(help="Write into a non-empty --out.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show third-party logs and warnings (TensorFlow, Flower, Ray).")] = False,
) -> None:
    """Pooled and local-only training, evaluated on every hospital's test set (as FLamby)."""
    set_verbose(verbose)
    if seeds < 1:
        fail(f"--seeds must be >= 1, got {seeds}")
    sources = _sources(ctx, None, BASELINE_FLAGS, BASELINE_KEYS, {})
    sources.add_default("task", task)
    config = resolve_config(sources)
    check_out_dir(out, task=config.task, force=force)
    from common.tasks import get_task
    from server.run_directory import prepare_run_dir
    from simulations.baseline import run_baselines, write_baselines

    try:
        out_dir = prepare_run_dir(out, task=config.task, force=force)
    except FileExistsError as error:
        fail(str(error))
    rows = run_baselines(config, seeds=list(range(seeds)), out_dir=out_dir)
    table = write_baselines(rows, out_dir, get_task(config.task).metric_names)
    typer.echo(table)
    console.print(f"[green]done[/]: {out_dir}/baseline.md")


def main() -> None:
    """Entry point of the ``fedcare`` console script."""
    app()
