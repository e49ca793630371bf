"""The run configuration: every knob, its default, and its validation, in one frozen object.

``pyproject.toml``'s ``[tool.flwr.app.config]`` carries the same defaults for ``flwr run``
(a test keeps the two equal). Validation happens once, here, at the boundary: each bad value
raises ``ValueError`` naming the key, the value and the rule.
"""

from dataclasses import asdict, dataclass, fields
from typing import Any

SERVER_OPTIMIZERS = ("fedavg", "fedadam", "fedyogi")
PARTITIONS = ("iid", "dirichlet")
# "uniform": every hospital's update counts the same (the default, and the only choice under
# DP, which must not reveal record counts); "examples": weighted by training rows (McMahan 2017).
WEIGHTINGS = ("uniform", "examples")

DEFAULTS: dict[str, Any] = {
    "task": "heart-disease",
    "num-server-rounds": 20,
    "hospitals": 4,
    "seed": 0,
    "partition": "iid",
    "dirichlet-alpha": 0.5,
    "local-epochs": 1,
    "batch-size": 16,
    "learning-rate": 0.1,
    "server-optimizer": "fedavg",
    "server-learning-rate": 1.0,
    "weighting": "uniform",
    "out-dir": "",
}


def _number(run_config: dict[str, Any], key: str, kind: type) -> Any:
    value = run_config.get(key, DEFAULTS[key])
    # TOML and --run-config give ints where floats are meant (`learning-rate = 1`): accept them.
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{key} must be a {kind.__name__}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class RunConfig:
    """A validated run configuration; field names are the run-config keys in snake_case."""

    task: str
    num_server_rounds: int
    hospitals: int
    seed: int
    partition: str
    dirichlet_alpha: float
    local_epochs: int
    batch_size: int
    learning_rate: float
    server_optimizer: str
    server_learning_rate: float
    weighting: str
    out_dir: str

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> "RunConfig":
        """Validate a Flower run config (kebab-case keys; missing keys take their defaults).

        Raises
        ------
        ValueError
            Naming the first key whose value is of the wrong type or out of range.
        """
        from common.tasks import get_task  # the task registry imports the task modules

        unknown = set(run_config) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown run-config keys: {sorted(unknown)}")
        task = get_task(str(run_config.get("task", DEFAULTS["task"])))
        config = cls(
            task=task.name,
            num_server_rounds=_number(run_config, "num-server-rounds", int),
            hospitals=_number(run_config, "hospitals", int),
            seed=_number(run_config, "seed", int),
            partition=str(run_config.get("partition", DEFAULTS["partition"])),
            dirichlet_alpha=_number(run_config, "dirichlet-alpha", float),
            local_epochs=_number(run_config, "local-epochs", int),
            batch_size=_number(run_config, "batch-size", int),
            learning_rate=_number(run_config, "learning-rate", float),
            server_optimizer=str(run_config.get("server-optimizer", DEFAULTS["server-optimizer"])),
            server_learning_rate=_number(run_config, "server-learning-rate", float),
            weighting=str(run_config.get("weighting", DEFAULTS["weighting"])),
            out_dir=str(run_config.get("out-dir", DEFAULTS["out-dir"])),
        )
        config._check_ranges(task.max_hospitals)
        return config

    def _check_ranges(self, max_hospitals: int | None) -> None:
        rules = [
            (self.num_server_rounds >= 1, "num-server-rounds", "must be >= 1"),
            (self.hospitals >= 1, "hospitals", "must be >= 1"),
            (self.local_epochs >= 1, "local-epochs", "must be >= 1"),
            (self.batch_size >= 1, "batch-size", "must be >= 1"),
            (self.learning_rate > 0, "learning-rate", "must be > 0"),
            (self.server_learning_rate > 0, "server-learning-rate", "must be > 0"),
            (self.dirichlet_alpha > 0, "dirichlet-alpha", "must be > 0"),
            (self.partition in PARTITIONS, "partition", f"must be one of {PARTITIONS}"),
            (self.weighting in WEIGHTINGS, "weighting", f"must be one of {WEIGHTINGS}"),
            (self.server_optimizer in SERVER_OPTIMIZERS, "server-optimizer",
             f"must be one of {SERVER_OPTIMIZERS}"),
        ]
        for ok, key, rule in rules:
            if not ok:
                value = getattr(self, key.replace("-", "_"))
                raise ValueError(f"{key} {rule}, got {value!r}")
        if max_hospitals is not None and self.hospitals > max_hospitals:
            raise ValueError(
                f"hospitals must be between 1 and {max_hospitals} for task {self.task!r}, "
                f"got {self.hospitals}"
            )

    def to_run_config(self) -> dict[str, Any]:
        """Return the kebab-case run-config dict (what Flower's Context.run_config holds)."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict (for config.json)."""
        return asdict(self)
