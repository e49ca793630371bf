"""``fedcare simulate``: a federation of simulated hospitals on this machine (the researcher's)."""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from common.config import DEFAULTS
from common.console import error_console as console
from common.console import fail
from common.task_catalog import SIMULATED_TASKS
from common.wire.modes import (
    AccountantName,
    Aggregator,
    DpMode,
    NoiseMode,
    Partition,
    ServerOptimizerName,
    Weighting,
)
from simulations.cli.run_settings import (
    FEDERATION,
    OUTPUT,
    PRIVACY,
    RELIABILITY,
    SECAGG,
    SIMULATE_FLAGS,
    SIMULATE_KEYS,
    SIMULATE_REFUSED_KEYS,
    SIMULATOR_SET,
    TASK,
    ConfigOption,
    SimulatedTaskChoice,
    VerboseOption,
    _sources,
    check_out_dir,
    resolve_config,
    set_verbose,
    warn_delta_vs_rows,
)


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
    from simulations.engine.simulate import simulate as run

    console.print(f"fedcare: {config.hospitals} hospitals, {config.num_server_rounds} rounds of "
                  f"{config.task}, dp {config.dp_mode} -> {run_dir}")
    run(config, run_dir)
    console.print(f"[green]done[/]: {run_dir}/report.md")


def resume_run(run_dir: Path, given: dict[str, object], *, other_flags: bool,
               name: Callable[[str], str] = str) -> None:
    """Continue the run in `run_dir` from its last intact checkpoint, with its own settings
    (a given setting that differs is named by `name`: the flag typed, or the file and key).
    """
    from simulations.engine.resume import plan_resume

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
    from simulations.engine.simulate import simulate as run

    console.print(f"fedcare: resuming {run_dir} after round {plan.completed_rounds} of "
                  f"{plan.config.num_server_rounds}")
    run(plan.config, run_dir)
    console.print(f"[green]done[/]: {run_dir}/report.md")


