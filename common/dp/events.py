"""The accounting event a Gaussian mechanism emits, so the ledger charges exactly what ran.

Mechanism: ``steps`` compositions of the Poisson-subsampled Gaussian mechanism with noise
multiplier z = noise stddev / L2 sensitivity and sample rate q (Mironov et al. 2019,
arXiv:1908.10530, Section 3). The adversary sees every released output. Unit of privacy:
``level``, "patient" (DP-SGD in a hospital) or "hospital" (a clipped, noised update).
"""

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Literal, get_args

__all__ = ["LEVELS", "GaussianRoundEvent", "Level"]

Level = Literal["patient", "hospital"]
LEVELS: tuple[str, ...] = get_args(Level)


@dataclass(frozen=True, slots=True)
class GaussianRoundEvent:
    """One round's privacy cost at one level, as Opacus's accountants consume it.

    Attributes
    ----------
    noise_multiplier : float
        z = noise stddev / L2 sensitivity of what the noise protects, >= 0 (0 means no
        privacy: epsilon is infinite). For hospital-level "local" mode this is the
        *effective* value z / 2 (see ``common.dp.accounting.effective_noise_multiplier``).
    sample_rate : float
        q in (0, 1]: the Poisson inclusion probability of one unit of privacy per step
        (batch size / local records for DP-SGD; 1.0 at hospital level, no amplification).
    steps : int
        Compositions in this round, >= 1 (all local optimizer steps for DP-SGD; 1 per round
        at hospital level).
    level : {"patient", "hospital"}
        The unit of privacy this event protects; each level has its own accountant.

    Raises
    ------
    ValueError
        On construction, naming the field, its value and the rule it breaks.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    level: Level

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

    def as_opacus_entry(self) -> tuple[float, float, int]:
        """Return ``(noise_multiplier, sample_rate, steps)``, one entry of an Opacus history."""
        return (self.noise_multiplier, self.sample_rate, self.steps)
