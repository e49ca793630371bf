"""The run configuration: every knob, its run-config key, default and rule, declared once.

Each field of ``RunConfig`` carries its kebab-case run-config key in its metadata; ``DEFAULTS``
(what ``flwr run`` and the CLI show) and the parser are derived from those fields.
``pyproject.toml``'s ``[tool.flwr.app.config]`` restates the defaults for ``flwr run`` (Flower
needs them there; a test keeps the two equal). Validation happens once, here, at the boundary:
each bad value raises ``RunConfigError`` (a ValueError) naming the key, the value and the rule.
It imports no task module (``common.task_catalog`` holds the facts it checks), so a command
line validates its flags in well under a second.

The run config is the server's. A hospital never takes a privacy setting from it: ``dp.epsilon``
and ``dp.delta`` are the budgets ``fedcare simulate`` gives its simulated hospitals.
"""

import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, get_type_hints

from common.errors import RunConfigError
from common.task_catalog import SPLIT_TASKS, TASK_FACTS, TaskFacts
from common.wire.modes import (
    AccountantName,
    Aggregator,
    DpMode,
    NoiseMode,
    Normalisation,
    Partition,
    ServerOptimizerName,
    Weighting,
)

SERVER_OPTIMIZERS = tuple(m.value for m in ServerOptimizerName)
PARTITIONS = tuple(m.value for m in Partition)
# "uniform": every hospital's update counts the same (the default, and the only choice under
# DP, which must not reveal record counts); "examples": weighted by training rows (McMahan 2017).
WEIGHTINGS = tuple(m.value for m in Weighting)
DP_MODES = tuple(m.value for m in DpMode)
NOISE_MODES = tuple(m.value for m in NoiseMode)
ACCOUNTANTS = tuple(m.value for m in AccountantName)
# "mean": the (weighted) mean; "median" / "trimmed-mean": coordinate-wise, robust to a few
# arbitrary updates but they need every update in the clear, so not with secure aggregation.
AGGREGATORS = tuple(m.value for m in Aggregator)


def _key(key: str, default: Any) -> Any:
    """A RunConfig field: its run-config key and default."""
    return field(default=default, metadata={"key": key})


@dataclass(frozen=True, slots=True)
class RunConfig:
    """A validated run configuration; each field's metadata names its run-config key."""

    task: str = _key("task", "heart-disease")
    num_server_rounds: int = _key("num-server-rounds", 20)
    hospitals: int = _key("hospitals", 4)
    seed: int = _key("seed", 0)
    partition: Partition = _key("partition", Partition.IID)
    dirichlet_alpha: float = _key("dirichlet-alpha", 0.5)
    local_epochs: int = _key("local-epochs", 1)
    batch_size: int = _key("batch-size", 12)
    learning_rate: float = _key("learning-rate", 0.1)
    server_optimizer: ServerOptimizerName = _key("server-optimizer", ServerOptimizerName.FEDAVG)
    server_learning_rate: float = _key("server-learning-rate", 1.0)
    weighting: Weighting = _key("weighting", Weighting.UNIFORM)
    local_steps: int = _key("local-steps", 0)
    min_hospitals: int = _key("min-hospitals", 1)
    # Non-DP weighted runs: the most training rows a hospital may claim (its count is fixed at
    # its first reply); one hospital cannot steer the mean by claiming 10^12.
    max_examples: int = _key("max-examples", 1_000_000)
    resume: bool = _key("resume", False)
    round_timeout: float = _key("round-timeout", 600.0)
    aggregator: Aggregator = _key("aggregator", Aggregator.MEAN)
    trim_fraction: float = _key("trim-fraction", 0.1)
    clip_updates: bool = _key("clip-updates", False)
    out_dir: str = _key("out-dir", "")
    # Round r's model is evaluated with round r+1's train message (one exchange per steady
    # round); false: a separate evaluate exchange every round (for comparison).
    fold_evaluation: bool = _key("fold-evaluation", True)
    # Under DP only the final model is evaluated (one release of each hospital's test rows,
    # charged on its test track); eval-every k also evaluates every k-th round's model, each
    # evaluation one more release (its cost is printed before the run starts). 0: final only.
    eval_every: int = _key("eval-every", 0)
    # "public": every hospital scales with the task's (or schema's) public constants (no
    # epsilon); "per-hospital": each z-scores with its own training statistics (not covered by
    # the privacy guarantee). Missing values get an indicator column unless missing-indicator
    # is false (then they pass as the magic value the data uses, e.g. heart-disease's chol 0).
    normalisation: Normalisation = _key("normalisation", Normalisation.PUBLIC)
    missing_indicator: bool = _key("missing-indicator", True)
    dp_mode: DpMode = _key("dp.mode", DpMode.PATIENT)
    dp_epsilon: float = _key("dp.epsilon", 1.0)
    dp_delta: float = _key("dp.delta", 1e-5)
    dp_clipping_norm: float = _key("dp.clipping-norm", 0.5)
    dp_update_clipping_norm: float = _key("dp.update-clipping-norm", 5.0)
    dp_noise_mode: NoiseMode = _key("dp.noise-mode", NoiseMode.LOCAL)
    dp_accountant: AccountantName = _key("dp.accountant", AccountantName.RDP)
    # Hospital level: the largest noise multiplier a hospital may apply; its update's norm
    # bound on the server follows from it (a hospital that would need more declines).
    dp_max_noise_multiplier: float = _key("dp.max-noise-multiplier", 30.0)
    # Distributed noise: the run's z, the same for every hospital (0: calibrated from dp.epsilon
    # and dp.delta over the planned rounds); each hospital checks it can afford it.
    dp_noise_multiplier: float = _key("dp.noise-multiplier", 0.0)
    secagg_enabled: bool = _key("secagg.enabled", False)
    secagg_threshold: int = _key("secagg.threshold", 0)
    secagg_clip_bound: float = _key("secagg.clip-bound", 100.0)
    # Distributed noise: h, the honest contributors every round is assumed to have; each
    # hospital divides its noise share by sqrt(h) (0: the threshold t, i.e. no collusion).
    secagg_honest_contributors: int = _key("secagg.honest-contributors", 0)
    # The consortium roster the server holds (names, signing keys, c, smallest threshold) and
    # its SHA-256; ``fedcare simulate`` makes an ephemeral one in the run directory.
    secagg_roster_path: str = _key("secagg.roster-path", "")
    secagg_roster_sha256: str = _key("secagg.roster-sha256", "")
    csv_schema_path: str = _key("csv.schema-path", "")
    csv_schema_sha256: str = _key("csv.schema-sha256", "")
    # The consortium explanation, under patient-level DP: once after training, each hospital
    # releases its clipped sum of absolute attributions (each row's L2 norm cut to
    # explain.bound, in logits), charged on its training track; explain.share of each
    # hospital's budget epsilon prices it, and training is calibrated around it.
    explain_enabled: bool = _key("explain.enabled", True)
    explain_bound: float = _key("explain.bound", 1.0)
    explain_share: float = _key("explain.share", 0.25)

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> "RunConfig":
        """Validate a Flower run config (kebab-case keys; missing keys take their defaults).

        Raises
        ------
        RunConfigError
            A ValueError naming the first key whose value is of the wrong type, out of range
            or at odds with the others (its ``key`` attribute).
        """
        unknown = set(run_config) - set(DEFAULTS)
        if unknown:
            raise RunConfigError(min(unknown), f"unknown run-config keys: {sorted(unknown)}")
        values = {f.name: _parse(f.metadata["key"], _TYPES[f.name],
                                 run_config.get(f.metadata["key"], f.default))
                  for f in fields(cls)}
        config = cls(**values)
        task = TASK_FACTS.get(config.task)  # facts only: loading the task imports scikit-learn
        if task is None:
            raise RunConfigError("task", f"unknown task {config.task!r}; known tasks: "
                                         f"{', '.join(TASK_FACTS)}")
        config._check_ranges(task)
        if not task.simulated:  # task csv: no fixed shape (its schema file gives it)
            config._check_csv()
        return config

    def _check_ranges(self, task: TaskFacts) -> None:
        rules = [
            (self.num_server_rounds >= 1, "num-server-rounds", "must be >= 1"),
            (self.hospitals >= 1, "hospitals", "must be >= 1"),
            (self.local_epochs >= 1, "local-epochs", "must be >= 1"),
            (self.batch_size >= 1, "batch-size", "must be >= 1"),
            (self.learning_rate > 0, "learning-rate", "must be > 0"),
            (self.server_learning_rate > 0, "server-learning-rate", "must be > 0"),
            (self.dirichlet_alpha > 0, "dirichlet-alpha", "must be > 0"),
            (self.local_steps >= 0, "local-steps", "must be >= 0 (0: use local-epochs)"),
            (1 <= self.min_hospitals <= self.hospitals, "min-hospitals",
             f"must be between 1 and hospitals={self.hospitals}"),
            (self.max_examples >= 1, "max-examples", "must be >= 1"),
            (self.round_timeout > 0, "round-timeout", "must be > 0 seconds"),
            (0 <= self.trim_fraction < 0.5, "trim-fraction", "must be in [0, 0.5)"),
            (self.dp_epsilon > 0, "dp.epsilon", "must be > 0"),
            (0 < self.dp_delta < 1, "dp.delta", "must be in (0, 1)"),
            (self.dp_clipping_norm > 0, "dp.clipping-norm", "must be > 0"),
            (self.dp_update_clipping_norm > 0, "dp.update-clipping-norm", "must be > 0"),
            (self.dp_max_noise_multiplier > 0, "dp.max-noise-multiplier", "must be > 0"),
            (self.dp_noise_multiplier >= 0, "dp.noise-multiplier",
             "must be >= 0 (0: calibrated from dp.epsilon)"),
            (self.secagg_honest_contributors >= 0, "secagg.honest-contributors",
             "must be >= 0 (0: the threshold)"),
            (self.secagg_threshold >= 0, "secagg.threshold",
             "must be >= 0 (0: the smallest majority)"),
            (self.explain_bound > 0, "explain.bound", "must be > 0"),
            (0 < self.explain_share < 1, "explain.share", "must be in (0, 1)"),
            (0 <= self.eval_every <= self.num_server_rounds, "eval-every",
             f"must be between 0 (only the final model) and num-server-rounds="
             f"{self.num_server_rounds}"),
        ]
        for ok, key, rule in rules:
            if not ok:
                raise RunConfigError(key, f"{key} {rule}, got {getattr(self, _FIELD_OF[key])!r}")
        if self.normalisation == Normalisation.PER_HOSPITAL and not task.per_hospital_scaling:
            raise RunConfigError(
                "normalisation", f"normalisation 'per-hospital' does not apply to task "
                f"{self.task!r}: its features have a fixed public scale (only "
                f"{', '.join(n for n, f in TASK_FACTS.items() if f.per_hospital_scaling)} "
                "can z-score per hospital)")
        if self.partition != Partition.IID and task.real_hospitals:
            raise RunConfigError(
                "partition", f"partition {self.partition.value!r} does not apply to task "
                f"{self.task!r}: its hospitals are real ones ({', '.join(task.real_hospitals)}), "
                f"each with its own data, so there is nothing to split; only "
                f"{', '.join(SPLIT_TASKS)} are split (and take dirichlet-alpha)")
        if self.dp_noise_mode == NoiseMode.DISTRIBUTED and not (
                self.secagg_enabled and self.dp_mode == DpMode.HOSPITAL):
            raise RunConfigError(
                "dp.noise-mode", "dp.noise-mode 'distributed' is only private under secure "
                "aggregation at hospital level (each hospital adds a 1/sqrt(n) share of the "
                "noise, so a single update is not private on its own); it needs --dp hospital "
                "--secure-aggregation")
        self._check_applies()
        if self.aggregator != Aggregator.MEAN and self.secagg_enabled:
            raise RunConfigError(
                "aggregator", f"aggregator {self.aggregator.value!r} needs every update in the "
                "clear (a coordinate-wise median or trimmed mean sorts the hospitals' values); "
                "secure aggregation reveals only their sum: use aggregator 'mean' with "
                "--secure-aggregation"
            )
        if self.aggregator != Aggregator.MEAN and self.weighting != Weighting.UNIFORM:
            raise RunConfigError("aggregator", f"aggregator {self.aggregator.value!r} is "
                                 "unweighted; it needs weighting 'uniform'")
        if self.secagg_enabled:
            self._check_secagg()
        if task.max_hospitals is not None and self.hospitals > task.max_hospitals:
            raise RunConfigError(
                "hospitals", f"hospitals must be between 1 and {task.max_hospitals} for task "
                f"{self.task!r}, got {self.hospitals}")

    def _check_applies(self) -> None:
        """A setting moved from its default where it would do nothing is refused, naming the
        setting it needs (it would otherwise be recorded as if it had been used).
        """
        needs = [
            ("secagg.threshold", self.secagg_enabled, "secure aggregation (secagg.enabled)"),
            ("secagg.honest-contributors", self.secagg_enabled,
             "secure aggregation (secagg.enabled)"),
            ("trim-fraction", self.aggregator == Aggregator.TRIMMED_MEAN,
             "aggregator 'trimmed-mean'"),
        ]
        for key, applies, needed in needs:
            field_name = _FIELD_OF[key]
            if not applies and getattr(self, field_name) != DEFAULTS[key]:
                raise RunConfigError(key, f"{key} applies only with {needed}; got "
                                     f"{getattr(self, field_name)!r} without it")

    def _check_csv(self) -> None:
        if not self.csv_schema_path:
            raise RunConfigError("csv.schema-path", "csv.schema-path is required for task "
                                 "'csv': the schema file on the server host, from which the "
                                 "server builds the model")
        if not re.fullmatch(r"[0-9a-f]{64}", self.csv_schema_sha256):
            raise RunConfigError(
                "csv.schema-sha256", "csv.schema-sha256 must be the schema's 64-hex-digit "
                "SHA-256 for task 'csv' (every hospital compares it with its own schema; "
                f"`fedcare validate-data` prints it), got {self.csv_schema_sha256!r}")

    def _check_secagg(self) -> None:
        from common.secagg.protocol import threshold_problem

        if self.secagg_clip_bound <= 0:
            raise RunConfigError("secagg.clip-bound", f"secagg.clip-bound must be > 0, got "
                                                      f"{self.secagg_clip_bound!r}")
        problem = threshold_problem(threshold=self.effective_threshold,
                                    num_participants=self.hospitals)
        if problem is not None:  # with t = 0 (the smallest majority) only n can be at fault
            key = "secagg.threshold" if self.secagg_threshold else "hospitals"
            raise RunConfigError(key, f"{key}: {problem}")
        if self.weighting != Weighting.UNIFORM:
            raise RunConfigError("weighting", "weighting 'examples' is not available with "
                                 "secure aggregation: a weight the hospital encodes itself "
                                 "could steer the mean; use weighting 'uniform'")
        if self.honest_contributors > self.effective_threshold:
            raise RunConfigError("secagg.honest-contributors",
                                 f"secagg.honest-contributors must be <= the threshold "
                             f"{self.effective_threshold} (a round has at least t contributors, "
                             f"of which at most t - h collude), got {self.honest_contributors}")

    @property
    def honest_contributors(self) -> int:
        """Distributed noise's h: the configured one, or the threshold t."""
        return self.secagg_honest_contributors or self.effective_threshold

    @property
    def effective_threshold(self) -> int:
        """Secure aggregation's t: the configured one, or the smallest majority of hospitals."""
        return self.secagg_threshold or self.hospitals // 2 + 1

    def to_run_config(self) -> dict[str, Any]:
        """Return the kebab-case run-config dict (what Flower's Context.run_config holds)."""
        return {f.metadata["key"]: _plain(getattr(self, f.name)) for f in fields(self)}

    @property
    def planned_evaluations(self) -> int:
        """Evaluations of the run's models: every eval-every-th round's and the final one."""
        return planned_evaluations(self.num_server_rounds, self.eval_every)

    @property
    def private(self) -> bool:
        """Whether updates are differentially private (dp.mode is not "none")."""
        return self.dp_mode != DpMode.NONE

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict (for config.json)."""
        return {name: _plain(value) for name, value in asdict(self).items()}


def planned_evaluations(rounds: int, eval_every: int) -> int:
    """How many models a run of `rounds` rounds evaluates: rounds k, 2k, ... and the last."""
    return len(evaluated_rounds(rounds, eval_every))


def evaluated_rounds(rounds: int, eval_every: int) -> frozenset[int]:
    """The rounds whose model a run evaluates: every `eval_every`-th and the last (k = 0:
    only the last).
    """
    every = set(range(eval_every, rounds + 1, eval_every)) if eval_every > 0 else set()
    return frozenset(every | {rounds})


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, StrEnum) else value


def _parse(key: str, kind: Any, value: Any) -> Any:
    """Check one run-config value against its field's type (an int is accepted as a float)."""
    if isinstance(kind, type) and issubclass(kind, StrEnum):
        try:
            return kind(value)
        except ValueError:
            allowed = tuple(m.value for m in kind)
            raise RunConfigError(key, f"{key} must be one of {', '.join(allowed)}, got "
                                      f"{value!r}") from None
    if kind is bool:
        if not isinstance(value, bool):
            raise RunConfigError(key, f"{key} must be true or false, got {value!r}")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # TOML and --run-config give ints where floats are meant
    if kind is str:
        if not isinstance(value, str):
            raise RunConfigError(key, f"{key} must be a string, got {value!r}")
        return value
    if not isinstance(value, kind) or isinstance(value, bool):
        article = "an" if kind is int else "a"
        raise RunConfigError(key, f"{key} must be {article} {kind.__name__}, got {value!r}")
    if kind is float and value != value:
        raise RunConfigError(key, f"{key} must be a number, got {value!r}")
    return value


_TYPES: dict[str, Any] = get_type_hints(RunConfig)
_FIELD_OF: dict[str, str] = {f.metadata["key"]: f.name for f in fields(RunConfig)}
DEFAULTS: dict[str, Any] = {f.metadata["key"]: _plain(f.default) for f in fields(RunConfig)
                            if f.default is not MISSING}
