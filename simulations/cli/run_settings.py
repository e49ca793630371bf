"""What ``fedcare simulate`` and ``fedcare baseline`` share: reading and checking a run's settings.

Flags, a ``--config`` file and the defaults are gathered into ``SettingSources`` and validated
by the same ``RunConfig`` a Flower run config goes through; a bad value exits 2 naming the flag
(or the file and key) the user gave. Nothing heavy is imported here.
"""

import os
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
from common.wire.modes import (
    Partition,
)


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


