"""``fedcare baseline``: pooled and local-only training, as FLamby reports them."""

from pathlib import Path
from typing import Annotated

import typer

from common.console import error_console as console
from common.console import fail
from common.task_catalog import SIMULATED_TASKS
from simulations.cli.run_options import reworded, with_run_options
from simulations.cli.run_settings import (
    SimulatedTaskChoice,
    check_out_dir,
    gather_sources,
    resolve_config,
    set_verbose,
)

BASELINE_OPTIONS = {
    "task": reworded("task", f"{', '.join(SIMULATED_TASKS)}.", panel=None,
                     click_type=SimulatedTaskChoice(), metavar="TASK"),
    "hospitals": reworded("hospitals", "Hospitals (default: the task's).", panel=None),
    "rounds": reworded("rounds", "Epochs = rounds x local epochs, as the federation.",
                       panel=None),
}


@with_run_options(BASELINE_OPTIONS)
def baseline(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Directory for baseline.csv and baseline.md.")] = (
        Path("runs/baseline")),
    seeds: Annotated[int, typer.Option(help="Seeds 0..N-1 to average over (>= 1).")] = 5,
    force: Annotated[bool, typer.Option(help="Write into a non-empty --out.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", help="Show third-party logs and warnings (TensorFlow, Flower, Ray).")] = False,
    **run_options: object,
) -> None:
    """Pooled and local-only training, evaluated on every hospital's test set (as FLamby)."""
    set_verbose(verbose)
    from common.quiet import quiet_third_party

    quiet_third_party()  # before TensorFlow is imported: its start-up lines stay hidden
    if seeds < 1:
        fail(f"--seeds must be >= 1, got {seeds}")
    sources = gather_sources(ctx, BASELINE_OPTIONS)
    sources.add_default("task", run_options["task"])
    config = resolve_config(sources)
    check_out_dir(out, task=config.task, force=force)
    from common.tasks import get_task
    from server.run_directory import prepare_run_dir
    from simulations.engine.baseline import run_baselines, write_baselines

    try:
        out_dir = prepare_run_dir(out, task=config.task, force=force)
    except FileExistsError as error:
        fail(str(error))
    rows = run_baselines(config, seeds=list(range(seeds)), out_dir=out_dir)
    table = write_baselines(rows, out_dir, get_task(config.task).metric_names)
    typer.echo(table)
    console.print(f"[green]done[/]: {out_dir}/baseline.md")


