"""Privacy accounting with Opacus's accountants: (z, q, steps) history -> epsilon at delta.

Mechanism: composition of Poisson-subsampled Gaussians by Renyi DP (Mironov et al. 2019,
arXiv:1908.10530) or PRV numerical composition (Gopi et al. NeurIPS 2021). Sensitivity: z is
noise stddev / L2 sensitivity; the adversary sees every released output. Unit of privacy: one
history per level, "patient" or "hospital" (the ledger builds them: the patient-level history
includes every hospital-level release). The only module importing Opacus.
"""

import functools
import math
from collections.abc import Iterable, Sequence
from numbers import Real
from typing import Any

import numpy as np

from common.dp.events import GaussianRoundEvent
from common.wire.modes import AccountantName, PrivacyLevel

__all__ = [
    "ACCOUNTANTS",
    "AccountantName",
    "calibrate_noise_multiplier",
    "effective_noise_multiplier",
    "epsilon_from_history",
    "max_repetitions",
    "merge_history",
    "validate_delta",
    "validate_epsilon",
]

ACCOUNTANTS: tuple[str, ...] = tuple(name.value for name in AccountantName)
HistoryItem = GaussianRoundEvent | tuple[float, float, int]
Entry = tuple[float, float, int]


def _require_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def validate_epsilon(value: object, name: str = "epsilon") -> float:
    """Return ``value`` as a float if it is a finite epsilon > 0, else raise ValueError."""
    epsilon = _require_number(name, value)
    if epsilon <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return epsilon


def validate_delta(value: object, name: str = "delta") -> float:
    """Return ``value`` as a float if it is a delta in the open interval (0, 1), else raise."""
    delta = _require_number(name, value)
    if not 0 < delta < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return delta


def _validate_accountant(accountant: object) -> AccountantName:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    return AccountantName(accountant)


def merge_history(history: Iterable[HistoryItem]) -> tuple[Entry, ...]:
    """Validate a history and sum the steps of entries with equal (z, q).

    Composition is commutative and, for RDP, additive in steps (Opacus's ``compute_rdp``
    returns ``rdp(z, q) * steps``), so merging changes no epsilon; Opacus's own ``step()``
    merges consecutive equal entries the same way. Order of first appearance is kept.

    Parameters
    ----------
    history : iterable of GaussianRoundEvent or (noise_multiplier, sample_rate, steps)
        Entries of one level; tuples are validated like ``GaussianRoundEvent`` fields.

    Returns
    -------
    tuple of (float, float, int)
        The merged Opacus history.
    """
    items = tuple(history)
    try:
        return _merge_cached(items)
    except TypeError:  # an unhashable item (e.g. a list): validate it the long way
        return _merge(items)


@functools.lru_cache(maxsize=256)
def _merge_cached(items: tuple[HistoryItem, ...]) -> tuple[Entry, ...]:
    # A ledger's history is asked for several times a round: validate and merge it once.
    return _merge(items)


def _merge(items: tuple[HistoryItem, ...]) -> tuple[Entry, ...]:
    totals: dict[tuple[float, float], int] = {}
    for item in items:
        if not isinstance(item, GaussianRoundEvent):
            z, q, steps = item
            item = GaussianRoundEvent(
                noise_multiplier=z, sample_rate=q, steps=steps, level=PrivacyLevel.PATIENT
            )
        key = (item.noise_multiplier, item.sample_rate)
        totals[key] = totals.get(key, 0) + item.steps
    return tuple((z, q, steps) for (z, q), steps in totals.items())


def _make_accountant(accountant: str) -> Any:
    from opacus.accountants import PRVAccountant, RDPAccountant

    return RDPAccountant() if accountant == AccountantName.RDP else PRVAccountant()


@functools.lru_cache(maxsize=512)
def _epsilon(merged: tuple[Entry, ...], delta: float, accountant: str) -> float:
    if not merged:
        return 0.0
    if any(z == 0 for z, _, _ in merged):
        return math.inf
    if accountant == AccountantName.RDP:
        # Bit-for-bit RDPAccountant.get_epsilon, with each (z, q) curve computed once.
        return _fast_rdp_epsilon(merged, delta)
    engine = _make_accountant(accountant)
    engine.history = list(merged)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(engine.get_epsilon(delta))


def epsilon_from_history(
    history: Iterable[HistoryItem], *, delta: float,
    accountant: AccountantName = AccountantName.RDP
) -> float:
    """Return the epsilon that Opacus's accountant gives for a history at ``delta``.

    Equivalent to ``RDPAccountant()`` (or ``PRVAccountant()``) with ``.history`` set to the
    entries, then ``get_epsilon(delta)``; PRV returns its upper bound. Entries with equal
    (z, q) are merged first (``merge_history``), which changes no epsilon. An empty history
    costs 0; an entry with noise multiplier 0 makes epsilon ``inf``.

    Raises
    ------
    ValueError
        If ``delta`` is outside (0, 1), ``accountant`` is unknown, or an entry is invalid.
    """
    merged = merge_history(history)
    return _epsilon(merged, validate_delta(delta), _validate_accountant(accountant))


@functools.lru_cache(maxsize=64)
def _unit_rdp(z: float, q: float) -> np.ndarray:
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp

    orders = RDPAccountant.DEFAULT_ALPHAS
    return np.asarray(compute_rdp(q=q, noise_multiplier=z, steps=1, orders=orders))


def _fast_rdp_epsilon(merged: tuple[Entry, ...], delta: float) -> float:
    # Same arithmetic as RDPAccountant.get_privacy_spent (sum of rdp(z, q) * steps), with
    # rdp(z, q) cached, so a search over repetitions costs one evaluation per distinct (z, q).
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import get_privacy_spent

    if not merged:
        return 0.0
    rdp = sum(_unit_rdp(z, q) * steps for z, q, steps in merged)
    return float(get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)[0])


def max_repetitions(
    history: Sequence[HistoryItem],
    event: GaussianRoundEvent,
    *,
    budget_epsilon: float,
    delta: float,
    accountant: AccountantName = AccountantName.RDP,
    limit: int = 10_000,
) -> int:
    """Return how many more copies of ``event`` fit in the budget, at most ``limit``.

    The result k is the largest integer in [0, limit] with
    ``epsilon_from_history(history + k * [event]) <= budget_epsilon`` (epsilon grows with k).
    RDP searches with cached per-(z, q) RDP curves and confirms the boundary with the accountant.
    """
    budget = validate_epsilon(budget_epsilon, "budget_epsilon")
    delta = validate_delta(delta)
    accountant = _validate_accountant(accountant)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an integer >= 0, got {limit!r}")
    base = merge_history(history)
    z, q = event.noise_multiplier, event.sample_rate

    def history_with(k: int) -> tuple[Entry, ...]:
        return merge_history([*base, (z, q, event.steps * k)] if k else base)

    def exact(k: int) -> float:
        return _epsilon(history_with(k), delta, accountant)

    def probe(k: int) -> float:
        if accountant == AccountantName.RDP and z > 0:
            return _fast_rdp_epsilon(history_with(k), delta)
        return exact(k)

    if limit == 0 or exact(0) > budget or probe(1) > budget:
        return 0
    low, high = 1, 2
    while high <= limit and probe(high) <= budget:
        low, high = high, high * 2
    high = min(high, limit + 1)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if probe(middle) <= budget else (low, middle)
    while low > 0 and exact(low) > budget:
        low -= 1
    while low < limit and exact(low + 1) <= budget:
        low += 1
    return low


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    target_delta: float,
    sample_rate: float,
    steps: int,
    accountant: AccountantName = AccountantName.RDP,
    epsilon_tolerance: float = 0.01,
) -> float:
    """Return the smallest noise multiplier (to Opacus's search precision) meeting a target.

    Wraps ``opacus.accountants.utils.get_noise_multiplier(steps=...)``: the result z satisfies
    ``epsilon(z, sample_rate, steps) <= target_epsilon`` and is within ``epsilon_tolerance``
    of it in epsilon (Opacus's binary search keeps the upper end, so it never overshoots).

    Raises
    ------
    ValueError
        If a target is out of range (epsilon <= 0, delta outside (0, 1)), ``sample_rate``
        outside (0, 1], ``steps`` < 1, or the budget is too small for any z <= 1e6.
    """
    epsilon = validate_epsilon(target_epsilon, "target_epsilon")
    delta = validate_delta(target_delta, "target_delta")
    # The event's own checks name sample_rate and steps in their messages.
    shape = GaussianRoundEvent(
        noise_multiplier=1.0, sample_rate=sample_rate, steps=steps,
        level=PrivacyLevel.PATIENT,
    )
    tolerance = validate_epsilon(epsilon_tolerance, "epsilon_tolerance")
    name = _validate_accountant(accountant)
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = get_noise_multiplier(
                target_epsilon=epsilon,
                target_delta=delta,
                sample_rate=shape.sample_rate,
                steps=shape.steps,
                accountant=name,
                epsilon_tolerance=tolerance,
            )
    except ValueError as error:
        raise ValueError(
            f"target_epsilon={epsilon!r} at target_delta={delta!r} cannot be met with "
            f"sample_rate={shape.sample_rate!r} and steps={shape.steps!r}: {error}"
        ) from error
    return float(z)


def effective_noise_multiplier(*, noise_stddev: float, sensitivity: float) -> float:
    """Return the noise multiplier to account: ``noise_stddev / sensitivity``.

    Opacus defines z relative to the L2 sensitivity of the released quantity, so z must be
    recomputed whenever sensitivity differs from the clipping norm C:

    - hospital level, both noise modes: the adjacency is replacing one hospital's data, so an
      update clipped to C has sensitivity 2C. "local": each hospital adds stddev z * 2C, the
      accounted z is ``2zC / 2C = z``; "distributed": the shares of at least h honest
      hospitals must sum to at least z times that same sensitivity (including the encoding's
      rounding bound), so the accounted z is again z. ``client.privacy`` sets the stddev.

    Raises
    ------
    ValueError
        If ``noise_stddev`` < 0 or ``sensitivity`` <= 0.
    """
    stddev = _require_number("noise_stddev", noise_stddev)
    if stddev < 0:
        raise ValueError(f"noise_stddev must be >= 0, got {noise_stddev!r}")
    bound = _require_number("sensitivity", sensitivity)
    if bound <= 0:
        raise ValueError(f"sensitivity must be > 0, got {sensitivity!r}")
    return stddev / bound
