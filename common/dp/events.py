"""The accounting event a Gaussian mechanism emits, so the ledger charges exactly what ran.

Mechanism: ``steps`` compositions of the Poisson-subsampled Gaussian mechanism with noise
multiplier z = noise stddev / L2 sensitivity and sample rate q (Mironov et al. 2019,
arXiv:1908.10530, Section 3). The adversary sees every released output. Unit of privacy:
``level``, "patient" (DP-SGD in a hospital) or "hospital" (a clipped, noised update).

A hospital-level event also records its ``noise_mode``: "local" (the hospital adds all the
noise) or "distributed" (a share, under secure aggregation). Both modes account the same
adjacency, replacing one hospital's data (L2 sensitivity 2C for an update clipped to C), so
``noise_multiplier`` means the same in both and carries over unchanged into the patient-level
composition (``common.dp.ledger``).
"""

import math
from dataclasses import dataclass
from numbers import Integral, Real

from common.wire.modes import NoiseMode, PrivacyLevel

__all__ = ["LEVELS", "NOISE_MODES", "GaussianRoundEvent", "Level", "NoiseMode", "PrivacyLevel"]

# The enums of common.wire.modes; ``Level`` is PrivacyLevel's short name in accounting code.
Level = PrivacyLevel
LEVELS: tuple[str, ...] = tuple(level.value for level in PrivacyLevel)
NOISE_MODES: tuple[str, ...] = tuple(mode.value for mode in NoiseMode)


@dataclass(frozen=True, slots=True)
class GaussianRoundEvent:
    """One round's privacy cost at one level, as Opacus's accountants consume it.

    Attributes
    ----------
    noise_multiplier : float
        z = noise stddev / L2 sensitivity of what the noise protects, >= 0 (0 means no
        privacy: epsilon is infinite). At hospital level the sensitivity is 2C in both
        noise modes (replace one hospital's clipped update).
    sample_rate : float
        q in (0, 1]: the Poisson inclusion probability of one unit of privacy per step
        (batch size / local records for DP-SGD; 1.0 at hospital level, no amplification).
    steps : int
        Compositions in this round, >= 1 (all local optimizer steps for DP-SGD; 1 per round
        at hospital level).
    level : {"patient", "hospital"}
        The unit of privacy this event protects. Patient-level epsilon composes every event
        of a ledger; hospital-level epsilon only hospital-level ones.
    noise_mode : {"local", "distributed"} or None
        Hospital level only: who adds the noise. None on construction means "local" (the
        value old ledgers imply); patient-level events must leave it None.

    Raises
    ------
    ValueError
        On construction, naming the field, its value and the rule it breaks.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    level: Level
    noise_mode: NoiseMode | None = None

    def __post_init__(self) -> None:
        """Validate the fields and normalise ints given for floats (TOML ``1`` is an int)."""
        for name in ("noise_multiplier", "sample_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise ValueError(f"{name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.noise_multiplier < 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {self.noise_multiplier!r}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {self.sample_rate!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, Integral):
            raise ValueError(f"steps must be an integer, got {self.steps!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps!r}")
        object.__setattr__(self, "steps", int(self.steps))
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}")
        object.__setattr__(self, "level", PrivacyLevel(self.level))
        if self.level == PrivacyLevel.PATIENT:
            if self.noise_mode is not None:
                raise ValueError(f"noise_mode is for hospital-level events only, got "
                                 f"{self.noise_mode!r} at patient level")
        elif self.noise_mode is None:
            object.__setattr__(self, "noise_mode", NoiseMode.LOCAL)
        elif self.noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {self.noise_mode!r}")
        else:
            object.__setattr__(self, "noise_mode", NoiseMode(self.noise_mode))

    def as_opacus_entry(self) -> tuple[float, float, int]:
        """Return ``(noise_multiplier, sample_rate, steps)``, one entry of an Opacus history."""
        return (self.noise_multiplier, self.sample_rate, self.steps)
