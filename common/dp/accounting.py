"""Privacy accounting with Opacus's accountants: (z, q, steps) history -> epsilon at delta.

Mechanism: composition of Poisson-subsampled Gaussians by Renyi DP (Mironov et al. 2019,
arXiv:1908.10530) or PRV numerical composition (Gopi et al. NeurIPS 2021). Sensitivity: z is
noise stddev / L2 sensitivity; the adversary sees every released output. Unit of privacy: one
history per level, "patient" or "hospital" (the ledger builds them: the patient-level history
includes every hospital-level release). The only module importing Opacus.
"""

import functools
import importlib
import importlib.util
import math
import sys
from collections.abc import Iterable, Sequence
from numbers import Real
from pathlib import Path
from types import ModuleType
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
    "within_budget",
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


@functools.cache
def _rdp_analysis() -> ModuleType:
    """Opacus's RDP analysis (``opacus.accountants.analysis.rdp``), without importing torch.

    Importing it by name runs ``opacus/__init__``, which imports torch and Opacus's training
    machinery (2.5-3 s of CPU, most of a simulated hospital's first round) though the analysis
    needs only numpy and scipy. So the installed Opacus's own file runs here, under its own
    name (Opacus's warning filters apply) but outside ``sys.modules`` (Opacus's package, if
    imported later, is untouched): the functions, and every epsilon they give, are Opacus's.
    If the file is not where Opacus 1.x keeps it, or Opacus is already imported, it is the
    ordinary import.
    """
    name = "opacus.accountants.analysis.rdp"
    if name not in sys.modules:
        try:
            module = _run_opacus_file(name, "accountants", "analysis", "rdp.py")
        except (ImportError, OSError, SyntaxError):
            module = None
        if module is not None:
            return module
    return importlib.import_module(name)


def _run_opacus_file(name: str, *parts: str) -> ModuleType | None:
    """Run one file of the installed Opacus package as module `name`, not registered in
    ``sys.modules`` (None if the package or the file's loader is absent).
    """
    spec = importlib.util.find_spec("opacus")  # locates the package; runs none of it
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        return None
    file_spec = importlib.util.spec_from_file_location(name, Path(locations[0], *parts))
    if file_spec is None or file_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=64)
def _unit_rdp(z: float, q: float) -> np.ndarray:
    # RDPAccountant's orders (DEFAULT_ALPHAS; tests/common/dp/test_fast_rdp.py checks them).
    from common.dp.fast_rdp import DEFAULT_ORDERS

    return np.asarray(_rdp_analysis().compute_rdp(q=q, noise_multiplier=z, steps=1,
                                                   orders=list(DEFAULT_ORDERS)))


def _fast_rdp_epsilon(merged: tuple[Entry, ...], delta: float) -> float:
    # Same arithmetic as RDPAccountant.get_privacy_spent (sum of rdp(z, q) * steps), with
    # rdp(z, q) cached, so a search over repetitions costs one evaluation per distinct (z, q).
    from common.dp.fast_rdp import DEFAULT_ORDERS

    if not merged:
        return 0.0
    rdp = sum(_unit_rdp(z, q) * steps for z, q, steps in merged)
    return float(_rdp_analysis().get_privacy_spent(orders=list(DEFAULT_ORDERS), rdp=rdp,
                                                   delta=delta)[0])


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


def within_budget(history: Iterable[HistoryItem], *, budget_epsilon: float, delta: float,
                  accountant: AccountantName = AccountantName.RDP) -> bool:
    """Whether ``epsilon_from_history(history, delta=delta) <= budget_epsilon``, as Opacus
    decides it, for searches that ask many times.

    RDP: ``_decided_epsilon`` (the fast curve, Opacus's epsilon near the budget), so the
    answer is always Opacus's at a fraction of its cost. PRV: Opacus's, directly.
    """
    merged = merge_history(history)
    delta = validate_delta(delta)
    name = _validate_accountant(accountant)
    if name != AccountantName.RDP:
        return _epsilon(merged, delta, name) <= budget_epsilon
    return _decided_epsilon(merged, delta, (budget_epsilon,)) <= budget_epsilon


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

    The value of ``opacus.accountants.utils.get_noise_multiplier(steps=...)`` (PRV: its call;
    RDP: its search with a faster epsilon for the steps far from a threshold,
    ``_rdp_noise_multiplier``): the result z satisfies ``epsilon(z, sample_rate, steps) <=
    target_epsilon`` and is within ``epsilon_tolerance`` of it in epsilon (Opacus's binary
    search keeps the upper end, so it never overshoots).

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
    if name == AccountantName.RDP:
        return _rdp_noise_multiplier(target_epsilon=epsilon, delta=delta, sample_rate=sample_rate,
                                     steps=steps, tolerance=tolerance)
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


# Opacus's get_noise_multiplier: its largest noise multiplier before "budget too low".
_MAX_SIGMA = 1e6
# A search step compares an epsilon with a threshold; a fast epsilon this close to one (in
# relative terms; the fast curve agrees with Opacus's to about 1e-12) is recomputed by Opacus.
_DECISION_MARGIN = 1e-7


def _decided_epsilon(merged: tuple[Entry, ...], delta: float,
                     thresholds: tuple[float, ...]) -> float:
    """The RDP epsilon of `merged` as a search comparing it with `thresholds` needs it.

    The fast curve's (``common.dp.fast_rdp``: about 1 ms against Opacus's 10-30 ms per new
    (z, q)) where it lies farther than ``_DECISION_MARGIN`` from every threshold, so each
    comparison comes out as with Opacus's; Opacus's own epsilon otherwise, or where the fast
    curve lost precision.
    """
    from common.dp.fast_rdp import epsilon_of, rdp_curve

    if not merged:
        return 0.0
    curve = sum(rdp_curve(q=q, noise_multiplier=z, steps=steps) for z, q, steps in merged)
    fast = epsilon_of(np.asarray(curve), delta=delta)
    if math.isnan(fast) or any(abs(fast - threshold) <= _DECISION_MARGIN * max(
            1.0, abs(threshold)) for threshold in thresholds):
        return _epsilon(merged, delta, AccountantName.RDP)
    return fast


def _rdp_noise_multiplier(*, target_epsilon: float, delta: float, sample_rate: float, steps: int,
                          tolerance: float) -> float:
    """Opacus's ``get_noise_multiplier`` (RDP): its search, its sigmas, its result.

    The same doubling then bisection as ``opacus.accountants.utils.get_noise_multiplier``
    (Opacus 1.x), so the same sequence of sigmas and the same returned value; each step's
    epsilon comes from ``common.dp.fast_rdp`` (one vectorized evaluation, about 1 ms against
    Opacus's 10-30 ms) unless it lies within ``_DECISION_MARGIN`` of a threshold the step
    compares it with, where Opacus's own epsilon decides. tests/common/dp/test_fast_rdp.py
    checks the results equal Opacus's.
    """
    thresholds = (target_epsilon, target_epsilon - tolerance)

    def epsilon(sigma: float) -> float:
        return _decided_epsilon(((sigma, sample_rate, steps),), delta, thresholds)

    eps_high, sigma_low, sigma_high = math.inf, 0.0, 10.0
    while eps_high > target_epsilon:
        sigma_high = 2 * sigma_high
        eps_high = epsilon(sigma_high)
        if sigma_high > _MAX_SIGMA:
            raise ValueError(
                f"target_epsilon={target_epsilon!r} at target_delta={delta!r} cannot be met with "
                f"sample_rate={sample_rate!r} and steps={steps!r}: The privacy budget is too low.")
    while target_epsilon - eps_high > tolerance:
        sigma = (sigma_low + sigma_high) / 2
        eps = epsilon(sigma)
        if eps < target_epsilon:
            sigma_high, eps_high = sigma, eps
        else:
            sigma_low = sigma
    return sigma_high


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
