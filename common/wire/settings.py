"""The round settings the server sends with every train and evaluate message.

A plan, never a budget: a hospital takes its privacy settings from its own configuration and
checks these against them (``client.privacy``). Every field is validated on unpacking, so a
hospital never acts on a value of the wrong type or out of range; anything else in the record
is refused too (a misspelt or foreign key is a server bug, not something to ignore).
"""

from collections.abc import Mapping
from dataclasses import dataclass, fields

from common.wire.fields import (
    WireFormatError,
    read_bool,
    read_enum,
    read_float,
    read_int,
    read_text,
)
from common.wire.modes import DpMode, NoiseMode, Normalisation, Partition, Weighting

RUN_ID_PATTERN = r"[0-9A-Za-z_-]{1,64}"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
MAX_ROUNDS = 1_000_000
MAX_HOSPITALS = 100_000
# Upper bounds far above any sensible run, low enough that nothing derived from them (noise
# stddev 2 z C, the encoding's range C + k sigma and scale) overflows or loses all precision.
MAX_NORM = 1e6  # an L2 norm in model-weight units (clips, secure aggregation's clip bound)
MAX_LEARNING_RATE = 1e3
MAX_DIRICHLET_ALPHA = 1e6
MAX_NOISE_MULTIPLIER = 1e6
MAX_SEED = 2**62  # numpy's generators take seeds >= 0


@dataclass(frozen=True, slots=True)
class RoundSettings:
    """What the server asks of every hospital in one round (server -> hospital).

    Norms are L2 norms in model-weight units; ``secagg_threshold`` is t (0 without secure
    aggregation). The encoding's range and scale are not sent: every hospital derives them from
    these settings (``common.secagg.round_settings``).
    """

    run_id: str
    server_round: int
    fedcare_version: str
    planned_rounds: int
    task: str
    hospitals: int
    seed: int
    partition: Partition
    dirichlet_alpha: float
    local_epochs: int
    local_steps: int
    batch_size: int
    learning_rate: float
    dp_mode: DpMode
    clipping_norm: float
    update_clipping_norm: float
    max_noise_multiplier: float
    clip_updates: bool
    noise_mode: NoiseMode
    weighting: Weighting
    secagg_enabled: bool
    secagg_threshold: int
    secagg_clip_bound: float
    noise_multiplier: float = 0.0  # distributed noise: the run's z (0 otherwise)
    honest_contributors: int = 0  # distributed noise: h, the divisor's count (0 otherwise)
    evaluate_received: bool = False  # also evaluate the weights this message carries
    eval_every: int = 0  # the run's evaluated models: every k-th round's and the last (0: last)
    normalisation: Normalisation = Normalisation.PUBLIC
    missing_indicator: bool = True
    # SHA-256 (hex) of the shared normalisation's public constants ("" for per-hospital); each
    # hospital computes its own from its copy of the task or schema and declines another.
    normalisation_digest: str = ""
    # The consortium explanation (``common.explain.consortium``): its share of each hospital's
    # budget epsilon and the L2 bound B of each row's absolute attributions (0: none planned).
    explain_share: float = 0.0
    explain_bound: float = 0.0


FIELD_KEYS: dict[str, str] = {f.name: f.name.replace("_", "-") for f in fields(RoundSettings)}


def settings_to_fields(settings: RoundSettings) -> dict[str, int | float | str | bool]:
    """Return the settings as flat wire fields (kebab-case keys, enums as their text)."""
    out: dict[str, int | float | str | bool] = {}
    for name, key in FIELD_KEYS.items():
        value = getattr(settings, name)
        out[key] = value.value if hasattr(value, "value") else value
    return out


def settings_from_fields(raw: Mapping[str, object]) -> RoundSettings:
    """Validate and return round settings.

    Raises
    ------
    WireFormatError
        Naming the first missing, unknown, mistyped or out-of-range field.
    """
    unknown = sorted(set(raw) - set(FIELD_KEYS.values()))
    if unknown:
        raise WireFormatError(unknown[0], "is not a round setting")
    k = FIELD_KEYS
    settings = RoundSettings(
        run_id=read_text(raw, k["run_id"], pattern=RUN_ID_PATTERN),
        server_round=read_int(raw, k["server_round"], minimum=1, maximum=MAX_ROUNDS),
        fedcare_version=read_text(raw, k["fedcare_version"], max_length=64),
        planned_rounds=read_int(raw, k["planned_rounds"], minimum=1, maximum=MAX_ROUNDS),
        task=read_text(raw, k["task"], pattern=NAME_PATTERN, max_length=64),
        hospitals=read_int(raw, k["hospitals"], minimum=1, maximum=MAX_HOSPITALS),
        seed=read_int(raw, k["seed"], minimum=0, maximum=MAX_SEED),
        partition=read_enum(raw, k["partition"], Partition),
        dirichlet_alpha=read_float(raw, k["dirichlet_alpha"], minimum=0, strict_minimum=True,
                                   maximum=MAX_DIRICHLET_ALPHA),
        local_epochs=read_int(raw, k["local_epochs"], minimum=1, maximum=10_000),
        local_steps=read_int(raw, k["local_steps"], minimum=0, maximum=10_000_000),
        batch_size=read_int(raw, k["batch_size"], minimum=1, maximum=10_000_000),
        learning_rate=read_float(raw, k["learning_rate"], minimum=0, strict_minimum=True,
                                 maximum=MAX_LEARNING_RATE),
        dp_mode=read_enum(raw, k["dp_mode"], DpMode),
        clipping_norm=read_float(raw, k["clipping_norm"], minimum=0, strict_minimum=True,
                                 maximum=MAX_NORM),
        update_clipping_norm=read_float(raw, k["update_clipping_norm"], minimum=0,
                                        strict_minimum=True, maximum=MAX_NORM),
        max_noise_multiplier=read_float(raw, k["max_noise_multiplier"], minimum=0,
                                        strict_minimum=True, maximum=MAX_NOISE_MULTIPLIER),
        clip_updates=read_bool(raw, k["clip_updates"]),
        noise_mode=read_enum(raw, k["noise_mode"], NoiseMode),
        weighting=read_enum(raw, k["weighting"], Weighting),
        secagg_enabled=read_bool(raw, k["secagg_enabled"]),
        secagg_threshold=read_int(raw, k["secagg_threshold"], minimum=0, maximum=MAX_HOSPITALS),
        secagg_clip_bound=read_float(raw, k["secagg_clip_bound"], minimum=0, strict_minimum=True,
                                     maximum=MAX_NORM),
        noise_multiplier=read_float(raw, k["noise_multiplier"], minimum=0,
                                    maximum=MAX_NOISE_MULTIPLIER),
        honest_contributors=read_int(raw, k["honest_contributors"], minimum=0,
                                     maximum=MAX_HOSPITALS),
        evaluate_received=read_bool(raw, k["evaluate_received"]),
        eval_every=read_int(raw, k["eval_every"], minimum=0, maximum=MAX_ROUNDS),
        normalisation=read_enum(raw, k["normalisation"], Normalisation),
        missing_indicator=read_bool(raw, k["missing_indicator"]),
        normalisation_digest=read_text(raw, k["normalisation_digest"],
                                       pattern="[0-9a-f]{64}", allow_empty=True),
        explain_share=read_float(raw, k["explain_share"], minimum=0, maximum=0.99),
        explain_bound=read_float(raw, k["explain_bound"], minimum=0, maximum=MAX_NORM),
    )
    if settings.server_round > settings.planned_rounds:
        raise WireFormatError(k["server_round"], f"{settings.server_round} is beyond the "
                              f"planned {settings.planned_rounds} rounds")
    if settings.secagg_enabled and settings.secagg_threshold < 1:
        raise WireFormatError(k["secagg_threshold"], "secure aggregation needs a threshold >= 1")
    return settings
