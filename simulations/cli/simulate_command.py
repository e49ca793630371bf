"""``fedcare simulate``: a federation of simulated hospitals on this machine (the researcher's)."""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from common.config import RunConfig
from common.config_sources import SettingSources
from common.console import error_console as console
from common.console import fail
from common.task_catalog import SIMULATED_TASKS
from simulations.cli.run_options import (
    FEDERATION,
    OUTPUT,
    RELIABILITY,
    RUN_OPTIONS,
    reworded,
    with_run_options,
)
from simulations.cli.run_settings import (
    SIMULATE_REFUSED_KEYS,
    SIMULATOR_SET,
    ConfigOption,
    SimulatedTaskChoice,
    VerboseOption,
    check_out_dir,
    gather_sources,
    resolve_config,
    set_verbose,
    warn_delta_vs_rows,
)
from simulations.engine.in_process_engine import IN_PROCESS_MAX_HOSPITALS, Engine

# Every run-config option, the task's limited to what a simulation runs.
SIMULATE_OPTIONS = {**RUN_OPTIONS, "task": reworded(
    "task", f"{', '.join(SIMULATED_TASKS)} (csv: see deploy-local).",
    click_type=SimulatedTaskChoice(), metavar="TASK")}

ResumeOption = Annotated[Path | None, typer.Option(
    help="Continue the run in this directory from its last checkpoint, with its own settings.",
    rich_help_panel=RELIABILITY)]
OutOption = Annotated[Path | None, typer.Option(
    help="Run directory (default runs/<UTC time>-<task>).", rich_help_panel=OUTPUT)]
ForceOption = Annotated[bool, typer.Option(help="Write into a non-empty --out.",
                                           rich_help_panel=OUTPUT)]
EngineOption = Annotated[Engine, typer.Option(
    help=f"Where the hospitals run: in this process (no Ray start-up; auto: up to "
         f"{IN_PROCESS_MAX_HOSPITALS} hospitals) or on Flower's Ray simulation engine (auto: "
         f"more). The same apps and messages either way.", rich_help_panel=FEDERATION)]


@with_run_options(SIMULATE_OPTIONS)
def simulate(ctx: typer.Context, resume: ResumeOption = None, out: OutOption = None,
             force: ForceOption = False, verbose: VerboseOption = False,
             config_file: ConfigOption = None, engine: EngineOption = Engine.AUTO,
             **run_options: object) -> None:
    """Simulate a federation of hospitals on this machine and write a run directory."""
    set_verbose(verbose)
    sources = gather_sources(ctx, SIMULATE_OPTIONS, config_file=config_file,
                             refused=SIMULATE_REFUSED_KEYS, flags={"out-dir": "--out"})
    if resume is not None:
        return resume_run(resume, {k: v for k, v in sources.values.items() if k != "out-dir"},
                          other_flags=out is not None or force, name=sources.where,
                          engine=engine)
    if out is not None:
        sources.add_flag("out-dir", str(out))
    config = resolve_config(sources)
    run_out = Path(config.out_dir) if config.out_dir else None
    check_out_dir(run_out, task=config.task, force=force)
    if not config.private:
        console.print("[bold yellow]warning:[/] --dp none: the hospitals' updates are NOT "
                      "differentially private")
    warn_delta_vs_rows(config)  # before the run directory exists: a bad split makes none
    run_dir = _run_directory(run_out, config, sources, force=force)
    from simulations.engine.simulate import simulate as run

    console.print(f"fedcare: {config.hospitals} hospitals, {config.num_server_rounds} rounds of "
                  f"{config.task}, dp {config.dp_mode} -> {run_dir}")
    from server.privacy_cost import privacy_cost_lines

    for line in privacy_cost_lines(config):  # every option that spends epsilon, before the run
        console.print(line, highlight=False)
    run(config, run_dir, engine=engine)
    _hospitals_exact(run_dir)
    console.print(f"[green]done[/]: {run_dir}/report.md")


def _hospitals_exact(run_dir: Path) -> None:
    """Gather the simulated hospitals' own reports into the run directory.

    Exact and simulation-only (``simulations.engine.hospitals_exact``).
    """
    from simulations.engine.hospitals_exact import write_hospitals_exact

    written = write_hospitals_exact(run_dir)
    if written is not None:
        console.print(f"each hospital's exact figures (simulation only): {written}")


def _run_directory(out: Path | None, config: RunConfig, sources: SettingSources, *,
                   force: bool) -> Path:
    """Make the run directory and record where each setting came from (config sources)."""
    from server.run_directory import prepare_run_dir, write_config_sources

    try:
        run_dir = prepare_run_dir(out, task=config.task, force=force)
    except FileExistsError as error:
        fail(str(error))
    recorded = sources.record([k for k in config.to_run_config() if k != "resume"])
    if config.secagg_enabled:
        recorded.update({k: v for k, v in SIMULATOR_SET.items() if not sources.given(k)})
    write_config_sources(run_dir, recorded)
    return run_dir


def resume_run(run_dir: Path, given: dict[str, object], *, other_flags: bool,
               name: Callable[[str], str] = str, engine: Engine = Engine.AUTO) -> None:
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
    run(plan.config, run_dir, engine=engine)
    _hospitals_exact(run_dir)
    console.print(f"[green]done[/]: {run_dir}/report.md")


