"""What ``fedcare simulate`` and ``fedcare baseline`` share: reading and checking a run's settings.

Flags, a ``--config`` file and the defaults are gathered into ``SettingSources`` and validated
by the same ``RunConfig`` a Flower run config goes through; a bad value exits 2 naming the flag
(or the file and key) the user gave. Nothing heavy is imported here.
"""

import os
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated

import click
import typer
from click.core import ParameterSource

from common.config import DEFAULTS, RunConfig
from common.config_sources import ConfigFileError, SettingSources, read_config_file
from common.console import error_console as console
from common.console import fail
from common.errors import RunConfigError
from common.task_catalog import SIMULATED_TASKS, SPLIT_TASKS, TASK_FACTS, TaskFacts
from common.wire.modes import DpMode, Partition
from simulations.cli.run_options import OUTPUT, RunOption, option_flags, option_keys


def set_verbose(verbose: bool) -> None:
    """--verbose: let third-party logs through (read by common.quiet before heavy imports)."""
    if verbose:
        os.environ["FEDCARE_VERBOSE"] = "1"


CSV_IN_DEPLOYMENT = (
    "task csv runs in deployment only: each hospital trains on its own CSV file, which a "
    "simulation does not have; run it with `fedcare deploy-local --task csv --out DIR` (example "
    "hospitals made from the heart-disease data, or --data DIR with schema.json and "
    "hospital-<i>.csv; docs/tasks.md: \"A hospital's own data\")")


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
    >= 1/rows at a hospital: then delta no longer protects each patient.
    """
    from common.tasks import get_task, load_task_hospitals

    task = get_task(config.task)
    try:
        hospitals = load_task_hospitals(task, config.hospitals, seed=config.seed,
                                        partition=config.partition, alpha=config.dirichlet_alpha)
    except ValueError as error:  # a split the data cannot give (named by the task)
        fail(str(error))
    for hospital in hospitals:
        if config.dp_mode == DpMode.PATIENT and config.dp_delta >= 1.0 / hospital.num_train:
            console.print(f"[bold yellow]warning:[/] delta={config.dp_delta:g} >= 1/rows at "
                          f"{hospital.name} ({hospital.num_train} rows): a mechanism could "
                          "then reveal a whole patient record with probability delta")


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


def gather_sources(ctx: typer.Context, options: Mapping[str, RunOption], *,
                   config_file: Path | None = None, refused: Mapping[str, str] | None = None,
                   flags: Mapping[str, str] | None = None) -> SettingSources:
    """The --config file's keys (but the `refused` ones), then every one of the `options` the
    user typed (flags win); `flags` names the command's other flags that set a key.
    """
    sources = SettingSources(flags={**option_flags(options), **(flags or {})})
    if config_file is not None:
        flag_keys = {flag.removeprefix("--"): key for key, flag in sources.flags.items()}
        try:
            values = read_config_file(config_file, refused=refused or {}, flag_keys=flag_keys)
        except ConfigFileError as error:
            fail(str(error))
        sources.add_file(config_file.expanduser().resolve(), values)
    for name, key in option_keys(options).items():
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


