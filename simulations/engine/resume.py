"""Resuming a run from its directory: its stored settings, what conflicts, whether it finished."""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import RunConfig
from server.checkpoint import CheckpointError, load_latest_checkpoint


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """What ``--resume DIR`` will do: the run's own config, and the rounds already done."""

    config: RunConfig
    completed_rounds: int
    finished: bool


def stored_run_config(run_dir: Path) -> dict[str, Any]:
    """The run config a run directory was started with (from its config.json).

    Raises
    ------
    ValueError
        If `run_dir` has no readable config.json (not a fedcare run directory).
    """
    path = run_dir / "config.json"
    try:
        return dict(json.loads(path.read_text())["run_config"])
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{path}: not a fedcare run directory ({error})") from error


def conflicting_settings(stored: dict[str, Any], given: dict[str, Any],
                         name: Callable[[str], str] = str) -> list[str]:
    """Settings given that differ from the run's, as ``NAME VALUE (the run has VALUE)``;
    `name` says how the user set a key (its flag, or the config file and key).
    """
    return [f"{name(key)} {value!r} (the run has {stored.get(key)!r})"
            for key, value in sorted(given.items()) if stored.get(key) != value]


def plan_resume(run_dir: Path, given: dict[str, Any],
                name: Callable[[str], str] = str) -> ResumePlan:
    """Check that `run_dir` can be resumed with the explicitly `given` settings (a conflict is
    named by `name`, e.g. the flag that gave it).

    Raises
    ------
    ValueError
        If the directory is not a run, a given setting conflicts with the run's, or there is
        no intact checkpoint to resume from.
    """
    stored = stored_run_config(run_dir)
    conflicts = conflicting_settings(stored, given, name)
    if conflicts:
        raise ValueError("--resume takes every setting from the run directory; these differ: "
                         + "; ".join(conflicts))
    try:
        checkpoint = load_latest_checkpoint(run_dir / "checkpoint")
    except CheckpointError as error:
        raise ValueError(f"cannot resume {run_dir}: {error}") from error
    config = RunConfig.from_run_config({**stored, "resume": True, "out-dir": str(run_dir)})
    finished = (checkpoint.round >= config.num_server_rounds
                and (run_dir / "model.keras").exists())
    return ResumePlan(config=config, completed_rounds=checkpoint.round, finished=finished)
