"""The run configuration: every knob, its default, and its validation, in one frozen object.

``pyproject.toml``'s ``[tool.flwr.app.config]`` carries the same defaults for ``flwr run``
(a test keeps the two equal). Validation happens once, here, at the boundary: each bad value
raises ``ValueError`` naming the key, the value and the rule.
"""

import re
from dataclasses import asdict, dataclass
from typing import Any

SERVER_OPTIMIZERS = ("fedavg", "fedadam", "fedyogi")
PARTITIONS = ("iid", "dirichlet")
# "uniform": every hospital's update counts the same (the default, and the only choice under
# DP, which must not reveal record counts); "examples": weighted by training rows (McMahan 2017).
WEIGHTINGS = ("uniform", "examples")
DP_MODES = ("patient", "hospital", "none")
NOISE_MODES = ("local", "distributed")
ACCOUNTANTS = ("rdp", "prv")
# "mean": the (weighted) mean; "median" / "trimmed-mean": coordinate-wise, robust to a few
# arbitrary updates but they need every update in the clear, so not with secure aggregation.
AGGREGATORS = ("mean", "median", "trimmed-mean")

DEFAULTS: dict[str, Any] = {
    "task": "heart-disease",
    "num-server-rounds": 20,
    "hospitals": 4,
    "seed": 0,
    "partition": "iid",
    "dirichlet-alpha": 0.5,
    "local-epochs": 1,
    "batch-size": 12,
    "learning-rate": 0.1,
    "server-optimizer": "fedavg",
    "server-learning-rate": 1.0,
    "weighting": "uniform",
    "local-steps": 0,
    "min-hospitals": 1,
    "out-dir": "",
    "resume": False,
    "round-timeout": 600.0,
    "aggregator": "mean",
    "trim-fraction": 0.1,
    "clip-updates": False,
    "dp.mode": "patient",
    "dp.epsilon": 1.0,
    "dp.delta": 1e-5,
    "dp.clipping-norm": 0.5,
    "dp.update-clipping-norm": 5.0,
    "dp.noise-mode": "local",
    "dp.accountant": "rdp",
    "secagg.enabled": False,
    "secagg.threshold": 0,
    "secagg.clip-bound": 100.0,
    "csv.schema-path": "",
    "csv.schema-sha256": "",
}


def _field_name(key: str) -> str:
    """Map a run-config key to its field: "dp.clipping-norm" -> "dp_clipping_norm"."""
    return key.replace(".", "_").replace("-", "_")


def _text(run_config: dict[str, Any], key: str) -> str:
    value = run_config.get(key, DEFAULTS[key])
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {value!r}")
    return value


def _number(run_config: dict[str, Any], key: str, kind: type) -> Any:
    value = run_config.get(key, DEFAULTS[key])
    # TOML and --run-config give ints where floats are meant (`learning-rate = 1`): accept them.
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        return value
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
    local_steps: int
    min_hospitals: int
    out_dir: str
    resume: bool
    round_timeout: float
    aggregator: str
    trim_fraction: float
    clip_updates: bool
    dp_mode: str
    dp_epsilon: float
    dp_delta: float
    dp_clipping_norm: float
    dp_update_clipping_norm: float
    dp_noise_mode: str
    dp_accountant: str
    secagg_enabled: bool
    secagg_threshold: int
    secagg_clip_bound: float
    csv_schema_path: str
    csv_schema_sha256: str

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> "RunConfig":
        """Validate a Flower run config (kebab-case keys; missing keys take their defaults).

        Raises
        ------
        ValueError
            Naming the first key whose value is of the wrong type or out of range.
        """
        from common.tasks import CSV_TASK_NAME, get_task  # the registry imports task modules

        unknown = set(run_config) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown run-config keys: {sorted(unknown)}")
        task_name = str(run_config.get("task", DEFAULTS["task"]))
        # Task csv has no fixed shape (its schema file gives it) and no hospital limit.
        task_max = None if task_name == CSV_TASK_NAME else get_task(task_name).max_hospitals
        config = cls(
            task=task_name,
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
            local_steps=_number(run_config, "local-steps", int),
            min_hospitals=_number(run_config, "min-hospitals", int),
            out_dir=str(run_config.get("out-dir", DEFAULTS["out-dir"])),
            resume=_number(run_config, "resume", bool),
            round_timeout=_number(run_config, "round-timeout", float),
            aggregator=str(run_config.get("aggregator", DEFAULTS["aggregator"])),
            trim_fraction=_number(run_config, "trim-fraction", float),
            clip_updates=_number(run_config, "clip-updates", bool),
            dp_mode=str(run_config.get("dp.mode", DEFAULTS["dp.mode"])),
            dp_epsilon=_number(run_config, "dp.epsilon", float),
            dp_delta=_number(run_config, "dp.delta", float),
            dp_clipping_norm=_number(run_config, "dp.clipping-norm", float),
            dp_update_clipping_norm=_number(run_config, "dp.update-clipping-norm", float),
            dp_noise_mode=str(run_config.get("dp.noise-mode", DEFAULTS["dp.noise-mode"])),
            dp_accountant=str(run_config.get("dp.accountant", DEFAULTS["dp.accountant"])),
            secagg_enabled=_number(run_config, "secagg.enabled", bool),
            secagg_threshold=_number(run_config, "secagg.threshold", int),
            secagg_clip_bound=_number(run_config, "secagg.clip-bound", float),
            csv_schema_path=_text(run_config, "csv.schema-path"),
            csv_schema_sha256=_text(run_config, "csv.schema-sha256"),
        )
        config._check_ranges(task_max)
        if task_name == CSV_TASK_NAME:
            config._check_csv()
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
            (self.local_steps >= 0, "local-steps", "must be >= 0 (0: use local-epochs)"),
            (1 <= self.min_hospitals <= self.hospitals, "min-hospitals",
             f"must be between 1 and hospitals={self.hospitals}"),
            (self.round_timeout > 0, "round-timeout", "must be > 0 seconds"),
            (self.aggregator in AGGREGATORS, "aggregator", f"must be one of {AGGREGATORS}"),
            (0 <= self.trim_fraction < 0.5, "trim-fraction", "must be in [0, 0.5)"),
            (self.dp_mode in DP_MODES, "dp.mode", f"must be one of {DP_MODES}"),
            (self.dp_epsilon > 0, "dp.epsilon", "must be > 0"),
            (0 < self.dp_delta < 1, "dp.delta", "must be in (0, 1)"),
            (self.dp_clipping_norm > 0, "dp.clipping-norm", "must be > 0"),
            (self.dp_update_clipping_norm > 0, "dp.update-clipping-norm", "must be > 0"),
            (self.dp_noise_mode in NOISE_MODES, "dp.noise-mode", f"must be one of {NOISE_MODES}"),
            (self.dp_accountant in ACCOUNTANTS, "dp.accountant", f"must be one of {ACCOUNTANTS}"),
            (self.server_optimizer in SERVER_OPTIMIZERS, "server-optimizer",
             f"must be one of {SERVER_OPTIMIZERS}"),
        ]
        for ok, key, rule in rules:
            if not ok:
                value = getattr(self, _field_name(key))
                raise ValueError(f"{key} {rule}, got {value!r}")
        if self.dp_noise_mode == "distributed" and not (self.secagg_enabled
                                                          and self.dp_mode == "hospital"):
            raise ValueError(
                "dp.noise-mode 'distributed' is only private under secure aggregation at "
                "hospital level (each hospital adds a 1/sqrt(n) share of the noise, so a single "
                "update is not private on its own); it needs --dp hospital --secure-aggregation"
            )
        if self.aggregator != "mean" and self.secagg_enabled:
            raise ValueError(
                f"aggregator {self.aggregator!r} needs every update in the clear (a coordinate-wise "
                "median or trimmed mean sorts the hospitals' values); secure aggregation reveals "
                "only their sum: use aggregator 'mean' with --secure-aggregation"
            )
        if self.aggregator != "mean" and self.weighting != "uniform":
            raise ValueError(f"aggregator {self.aggregator!r} is unweighted; it needs "
                             "weighting 'uniform'")
        if self.secagg_enabled:
            self._check_secagg()
        if max_hospitals is not None and self.hospitals > max_hospitals:
            raise ValueError(
                f"hospitals must be between 1 and {max_hospitals} for task {self.task!r}, "
                f"got {self.hospitals}"
            )

    def _check_csv(self) -> None:
        if not self.csv_schema_path:
            raise ValueError("csv.schema-path is required for task 'csv': the schema file on "
                             "the server host, from which the server builds the model")
        if not re.fullmatch(r"[0-9a-f]{64}", self.csv_schema_sha256):
            raise ValueError(
                "csv.schema-sha256 must be the schema's 64-hex-digit SHA-256 for task 'csv' "
                "(every hospital compares it with its own schema; `fedcare validate-data` "
                f"prints it), got {self.csv_schema_sha256!r}"
            )

    def _check_secagg(self) -> None:
        from common.secagg.protocol import threshold_problem

        if self.secagg_clip_bound <= 0:
            raise ValueError(f"secagg.clip-bound must be > 0, got {self.secagg_clip_bound!r}")
        problem = threshold_problem(threshold=self.effective_threshold,
                                    num_participants=self.hospitals)
        if problem is not None:
            raise ValueError(f"secagg.threshold: {problem}")

    @property
    def effective_threshold(self) -> int:
        """Secure aggregation's t: the configured one, or the smallest majority of hospitals."""
        return self.secagg_threshold or self.hospitals // 2 + 1

    def to_run_config(self) -> dict[str, Any]:
        """Return the kebab-case run-config dict (what Flower's Context.run_config holds)."""
        return {key: getattr(self, _field_name(key)) for key in DEFAULTS}

    @property
    def private(self) -> bool:
        """Whether updates are differentially private (dp.mode is not "none")."""
        return self.dp_mode != "none"

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict (for config.json)."""
        return asdict(self)
