"""Calibrate a hospital's noise to what is left of its own budget, over a planned run.

A hospital that already spent part of its budget in earlier runs must add more noise in the
next one. The noise multiplier z is the smallest (to a relative precision of 1e-3) such that
Opacus's epsilon of (earlier history + the planned steps at z) stays within the budget; with
no earlier history this is exactly ``opacus.accountants.utils.get_noise_multiplier``.
``calibrate_for_ledger`` applies this to a ledger's composed histories (one patient, one
budget: see ``common.dp.ledger``).
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

from common.dp.accounting import (
    AccountantName,
    HistoryItem,
    calibrate_noise_multiplier,
    epsilon_from_history,
    within_budget,
)
from common.dp.events import LEVELS
from common.errors import PrivacyBudgetExceededError
from common.wire.modes import PrivacyLevel

if TYPE_CHECKING:
    from common.dp.ledger import PrivacyLedger

# Beyond this the update is noise: a hospital declines rather than dilute the federation.
MAX_NOISE_MULTIPLIER = 30.0


def calibrate_to_remaining_budget(
    prior_history: Sequence[HistoryItem],
    *,
    budget_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: AccountantName = AccountantName.RDP,
) -> float:
    """Return z such that epsilon(prior_history + [(z, sample_rate, steps)]) <= budget_epsilon.

    Parameters
    ----------
    prior_history : sequence of (z, q, steps) or GaussianRoundEvent
        What this hospital already spent at this level (earlier runs).
    steps : int
        All compositions the run plans at this level (rounds x steps per round).

    Raises
    ------
    PrivacyBudgetExceededError
        If the earlier history already uses the budget, or the run needs z > 30 (its update
        would be noise that only dilutes the federation's mean).
    """
    if not prior_history:
        z = calibrate_noise_multiplier(target_epsilon=budget_epsilon, target_delta=delta,
                                       sample_rate=sample_rate, steps=steps,
                                       accountant=accountant)
        if z > MAX_NOISE_MULTIPLIER:
            raise PrivacyBudgetExceededError(
                f"a budget of epsilon {budget_epsilon:.4g} needs noise multiplier {z:.4g} > "
                f"{MAX_NOISE_MULTIPLIER:g} for {steps} steps: the update would be pure noise"
            )
        return z

    def fits(z: float) -> bool:  # Opacus's answer; fast curves decide the clear cases
        return within_budget([*prior_history, (z, sample_rate, steps)],
                             budget_epsilon=budget_epsilon, delta=delta, accountant=accountant)

    spent = epsilon_from_history(list(prior_history), delta=delta, accountant=accountant)
    if spent >= budget_epsilon or not fits(MAX_NOISE_MULTIPLIER):
        raise PrivacyBudgetExceededError(
            f"epsilon {spent:.4g} already spent of a budget of {budget_epsilon:.4g}: no noise "
            f"multiplier up to {MAX_NOISE_MULTIPLIER:g} leaves room for another run"
        )
    low, high = 0.0, 1.0
    while not fits(high):
        low, high = high, high * 2
    while high - low > 1e-3 * high:
        middle = (low + high) / 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high


def calibrate_for_ledger(
    ledger: "PrivacyLedger",
    *,
    level: PrivacyLevel,
    sample_rate: float,
    steps: int,
    exclude_run: str | int | None = None,
) -> float:
    """Return the smallest z that a planned run at ``level`` may use on this ledger.

    One patient, one budget: a patient-level run is calibrated against the patient-level
    history, which composes every entry of the ledger (hospital-level ones as (z, 1, steps));
    a hospital-level run against both levels (its steps count at patient level with sample
    rate 1) and the larger z is returned. ``exclude_run`` leaves out the run's own entries,
    since ``steps`` already plans all of its rounds (so z stays fixed within a run).

    Parameters
    ----------
    ledger : PrivacyLedger
        The hospital's ledger (reread here).
    level : {"patient", "hospital"}
        The run's level.
    sample_rate, steps : float, int
        The run's q at its own level and all its planned compositions (rounds x steps).

    Raises
    ------
    PrivacyBudgetExceededError
        If nothing fits, or a hospital-level run meets a ledger with patient-level entries
        (``common.dp.ledger.UNBOUNDED_REASON``).
    """
    from common.dp.ledger import UNBOUNDED_REASON

    if level not in LEVELS:
        raise ValueError(f"level must be 'patient' or 'hospital', got {level!r}")
    if level == PrivacyLevel.HOSPITAL and ledger.is_hospital_level_unbounded():
        raise PrivacyBudgetExceededError(UNBOUNDED_REASON)
    levels = ((PrivacyLevel.PATIENT,) if level == PrivacyLevel.PATIENT
              else (PrivacyLevel.HOSPITAL, PrivacyLevel.PATIENT))
    return max(
        calibrate_to_remaining_budget(
            ledger.history(at, exclude_run=exclude_run),
            budget_epsilon=ledger.budget_epsilon, delta=ledger.budget_delta,
            sample_rate=sample_rate if at == level else 1.0, steps=steps,
            accountant=ledger.accountant,  # type: ignore[arg-type]
        )
        for at in levels
    )
