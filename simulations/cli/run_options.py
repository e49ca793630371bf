"""Run-config keys as command-line options, declared once for the researcher's commands.

A command names the options it takes (parameter name -> ``RunOption``) and receives their
values in ``**run_options``; :func:`with_run_options` adds them to the Typer command's
signature as keyword options typed like the ``RunConfig`` field each sets (a mode is its
StrEnum, so ``--help`` lists its choices), defaulting to ``common.config.DEFAULTS``. The
command turns them into a ``RunConfig``: simulate and baseline read only what the user typed
(``run_settings._sources``), the audit every value (:func:`run_config_values`).
"""

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Annotated, Any, TypeVar, get_type_hints

import click
import typer

from common.config import DEFAULTS, RunConfig

Command = TypeVar("Command", bound=Callable[..., Any])

TASK, FEDERATION, PRIVACY, SECAGG = "Task", "Federation", "Privacy", "Secure aggregation"
RELIABILITY, OUTPUT = "Reliability", "Output"

_FIELD_TYPES: dict[str, Any] = {
    f.metadata["key"]: get_type_hints(RunConfig)[f.name] for f in fields(RunConfig)}
_FROM_DEFAULTS = object()


@dataclass(frozen=True, slots=True)
class RunOption:
    """One run-config key as a command-line option.

    Parameters
    ----------
    key
        The run-config key it sets (``"num-server-rounds"``).
    help, panel
        Its ``--help`` line, and the ``--help`` panel it is listed in (None: "Options").
    default
        Its default; by default the key's in ``common.config.DEFAULTS``.
    kind
        Its Python type; by default the ``RunConfig`` field's (``int | None`` for an option
        whose default the command derives, such as ``--hospitals``).
    flag
        A boolean's one flag (``"--secure-aggregation"``), with no ``--no-`` form.
    click_type, metavar
        A click type that checks the value itself, and how ``--help`` names the value.
    """

    key: str
    help: str
    panel: str | None = None
    default: Any = _FROM_DEFAULTS
    kind: Any = None
    flag: str | None = None
    click_type: click.ParamType | None = None
    metavar: str | None = None

    def parameter(self, name: str) -> inspect.Parameter:
        """The keyword parameter ``name`` that Typer reads as this option."""
        kind = self.kind if self.kind is not None else _FIELD_TYPES[self.key]
        default = DEFAULTS[self.key] if self.default is _FROM_DEFAULTS else self.default
        if isinstance(kind, type) and issubclass(kind, StrEnum) and default is not None:
            default = kind(default)
        extra = {"rich_help_panel": self.panel, "click_type": self.click_type,
                 "metavar": self.metavar}
        option = typer.Option(*([self.flag] if self.flag else []), help=self.help,
                              **{k: v for k, v in extra.items() if v is not None})
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                 annotation=Annotated[kind, option])


def with_run_options(options: Mapping[str, RunOption]) -> Callable[[Command], Command]:
    """Give a Typer command the keyword options `options` (listed after its ``ctx``, before
    its own); Typer passes their values to the command's ``**run_options``.
    """

    def add(command: Command) -> Command:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        context = [p for p in own if p.name == "ctx"]
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own
                if p.name != "ctx"]
        generated = [option.parameter(name) for name, option in options.items()]
        command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [*context, *generated, *rest])
        return command

    return add


def run_config_values(options: Mapping[str, RunOption],
                      values: Mapping[str, Any]) -> dict[str, Any]:
    """The run-config dict of the options' values (``values``: parameter name -> value, as
    ``ctx.params`` holds them; a StrEnum becomes its string).
    """
    return {option.key: values[name].value if isinstance(values[name], StrEnum)
            else values[name] for name, option in options.items()}


def option_keys(options: Mapping[str, RunOption]) -> dict[str, str]:
    """Parameter name -> run-config key."""
    return {name: option.key for name, option in options.items()}


def option_flags(options: Mapping[str, RunOption]) -> dict[str, str]:
    """Run-config key -> the flag that sets it (errors name the flag the user would type)."""
    return {option.key: option.flag or "--" + name.replace("_", "-")
            for name, option in options.items()}


def _privacy(key: str, text: str) -> RunOption:
    return RunOption(key, text, PRIVACY)


# Every run-config option of ``fedcare simulate``, in --help order; the other commands take
# some of them (``dataclasses.replace`` to say it in their own terms).
RUN_OPTIONS: dict[str, RunOption] = {
    "task": RunOption("task", "The task.", TASK),
    "hospitals": RunOption("hospitals", "Hospitals (default: the task's).", TASK,
                           default=None, kind=int | None),
    "partition": RunOption("partition", "Split tasks (not heart-disease): how rows are dealt "
                           "to hospitals.", TASK),
    "alpha": RunOption("dirichlet-alpha", "--partition dirichlet: alpha (smaller: more label "
                       "skew).", TASK),
    "seed": RunOption("seed", "Seed of the model, split, shuffles and simulated noise.", TASK),
    "rounds": RunOption("num-server-rounds", "Federated rounds (>= 1).", FEDERATION),
    "local_epochs": RunOption("local-epochs", "Local epochs per round.", FEDERATION),
    "local_steps": RunOption("local-steps", "Local steps per round (0: use --local-epochs).",
                             FEDERATION),
    "batch_size": RunOption("batch-size", "Local batch size.", FEDERATION),
    "lr": RunOption("learning-rate", "Local SGD learning rate.", FEDERATION),
    "server_optimizer": RunOption("server-optimizer", "How the server applies the mean update.",
                                  FEDERATION),
    "server_lr": RunOption("server-learning-rate", "Server learning rate.", FEDERATION),
    "weighting": RunOption("weighting", "uniform: each hospital equal; examples: by training "
                           "rows (not with DP).", FEDERATION),
    "aggregator": RunOption("aggregator", "mean, or the robust median / trimmed-mean (not with "
                            "secure aggregation).", FEDERATION),
    "trim_fraction": RunOption("trim-fraction", "trimmed-mean: fraction cut from each end per "
                               "coordinate, in [0, 0.5).", FEDERATION),
    "dp": _privacy("dp.mode", "patient (DP-SGD), hospital (DP-FedAvg) or none."),
    "epsilon": _privacy("dp.epsilon", "Each hospital's privacy budget epsilon (> 0)."),
    "delta": _privacy("dp.delta", "Each hospital's delta, in (0, 1)."),
    "clip": _privacy("dp.clipping-norm", "Clip C: per-example (patient) or per-update "
                     "(hospital)."),
    "noise_mode": _privacy("dp.noise-mode", "local (each update private) or distributed (--dp "
                           "hospital --secure-aggregation)."),
    "accountant": _privacy("dp.accountant", "Opacus accountant."),
    "update_clip": _privacy("dp.update-clipping-norm", "Norm each update is clipped to "
                            "(patient DP, --clip-updates)."),
    "clip_updates": RunOption("clip-updates", "--dp none: hospitals clip updates to "
                              "--update-clip; larger ones are rejected.", PRIVACY,
                              flag="--clip-updates"),
    "secure_aggregation": RunOption("secagg.enabled", "The server sees only the sum of the "
                                    "updates.", SECAGG, flag="--secure-aggregation"),
    "secagg_threshold": RunOption("secagg.threshold", "Shares needed to unmask (0: smallest "
                                  "majority).", SECAGG),
    "eval_every": _privacy("eval-every", "DP runs: also evaluate every k-th round's model "
                           "(each one more release on the test track; 0: the final model "
                           "only). Its cost is printed before the run starts."),
    "normalisation": RunOption("normalisation", "public: the task's shared constants (no "
                               "epsilon); per-hospital: each hospital's own z-scores (not "
                               "covered by the privacy guarantee).", TASK),
    "missing_indicator": RunOption("missing-indicator", "Missing values get an indicator "
                                   "column (off: the data's magic value, e.g. chol 0).", TASK),
    "min_hospitals": RunOption("min-hospitals", "Stop when fewer hospitals can take part.",
                               RELIABILITY),
    "round_timeout": RunOption("round-timeout", "Seconds a round waits for hospitals before "
                               "going on without them.", RELIABILITY),
}


def pick(*names: str) -> dict[str, RunOption]:
    """The RUN_OPTIONS `names`, in that order."""
    return {name: RUN_OPTIONS[name] for name in names}


def reworded(name: str, text: str, **changes: Any) -> RunOption:
    """RUN_OPTIONS[name] with another --help line (and any other field changed)."""
    return replace(RUN_OPTIONS[name], help=text, **changes)
