"""Opacus's RDP of the Poisson-subsampled Gaussian, vectorized over orders: for searches only.

Mechanism: the sampled Gaussian mechanism's Renyi DP (Mironov, Talwar and Zhang 2019,
arXiv:1908.10530, section 3.3), the same terms and the same stopping rule as
``opacus.accountants.analysis.rdp.compute_rdp``, summed with numpy over all orders at once
instead of one Python loop per order (Opacus takes 10-30 ms an evaluation; this well under
1 ms). The sums are taken in another order, so values agree with Opacus to about 1e-12
relative, not bit for bit: nothing here is ever charged or reported. A search uses it to
decide comparisons that are far from their threshold and asks Opacus for the rest
(``common.dp.accounting``), so its result equals the search done with Opacus throughout.
"""

import math

import numpy as np
from scipy import special

# RDPAccountant.DEFAULT_ALPHAS (Opacus 1.x); tests/common/dp/test_fast_rdp.py checks they match.
DEFAULT_ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
_STOP_LOG_TERM = -30.0  # Opacus stops a fractional order's series after its first term below
_MAX_TERMS = 1 << 16
_CHUNK = 32


def _int_order_log_a(q: float, sigma: float, orders: np.ndarray) -> np.ndarray:
    """Log A_alpha for integer orders: the finite binomial sum, i = 0..alpha."""
    i = np.arange(int(orders.max()) + 1, dtype=np.float64)
    alpha = orders[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_terms = (np.log(special.binom(alpha, i)) + i * math.log(q)
                     + (alpha - i) * math.log(1 - q) + (i * i - i) / (2 * sigma**2))
    log_terms = np.where(i <= alpha, log_terms, -np.inf)
    return np.asarray(special.logsumexp(log_terms, axis=1))


def _frac_order_terms(q: float, sigma: float, orders: np.ndarray,
                      i: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Terms `i` of each order's series: log magnitudes of both halves, and their signs."""
    alpha = orders[:, None]
    j = alpha - i
    coef = special.binom(alpha, i)
    with np.errstate(divide="ignore"):
        log_coef = np.log(np.abs(coef))
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    # Opacus's log(0.5) + _log_erfc(x) with x = (i - z0) / (sqrt(2) sigma) is log_ndtr(-(i - z0)
    # / sigma), written out as Opacus writes it.
    root = math.sqrt(2) * sigma
    log_e0 = math.log(0.5) + math.log(2) + special.log_ndtr(-(i - z0) / root * 2**0.5)
    log_e1 = math.log(0.5) + math.log(2) + special.log_ndtr(-(z0 - j) / root * 2**0.5)
    log_s0 = (log_coef + i * math.log(q) + j * math.log(1 - q) + (i * i - i) / (2 * sigma**2)
              + log_e0)
    log_s1 = (log_coef + j * math.log(q) + i * math.log(1 - q) + (j * j - j) / (2 * sigma**2)
              + log_e1)
    return log_s0, log_s1, np.sign(coef)


class _SignedLogSum:
    """Running sums of sign * exp(log_term) per row, kept as top + log(scaled)."""

    def __init__(self, rows: int) -> None:
        self.top = np.full(rows, -np.inf)
        self.scaled = np.zeros(rows)

    def add(self, rows: np.ndarray, log_terms: np.ndarray, signs: np.ndarray) -> None:
        """Add each row's terms (-inf terms add nothing)."""
        old = self.top[rows]
        top = np.maximum(old, np.max(log_terms, axis=1))
        top = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(invalid="ignore"):
            rescaled = np.where(np.isfinite(old), self.scaled[rows] * np.exp(old - top), 0.0)
        self.scaled[rows] = rescaled + np.sum(signs * np.exp(log_terms - top[:, None]), axis=1)
        self.top[rows] = top

    def log(self) -> np.ndarray:
        """The sums' logs (nan where a sum is not positive)."""
        positive = self.scaled > 0
        return np.where(positive, np.log(np.where(positive, self.scaled, 1.0)) + self.top, np.nan)


def _frac_order_log_a(q: float, sigma: float, orders: np.ndarray) -> np.ndarray:
    """Log A_alpha for fractional orders: Opacus's series, cut where Opacus cuts it."""
    half0, half1 = _SignedLogSum(len(orders)), _SignedLogSum(len(orders))
    active = np.arange(len(orders))
    start = 0
    while active.size and start < _MAX_TERMS:
        i = np.arange(start, start + _CHUNK, dtype=np.float64)
        log_s0, log_s1, signs = _frac_order_terms(q, sigma, orders[active], i)
        small = np.maximum(log_s0, log_s1) < _STOP_LOG_TERM
        done = small.any(axis=1)
        # Opacus's do-until loop keeps terms up to and including the first small one.
        last = np.where(done, np.argmax(small, axis=1), _CHUNK - 1)
        kept = np.arange(_CHUNK)[None, :] <= last[:, None]
        signs = np.where(kept, signs, 0.0)
        half0.add(active, np.where(kept, log_s0, -np.inf), signs)
        half1.add(active, np.where(kept, log_s1, -np.inf), signs)
        active, start = active[~done], start + _CHUNK
    if active.size:  # a series longer than any Opacus would sum in reasonable time
        return np.full(len(orders), np.nan)
    return np.asarray(np.logaddexp(half0.log(), half1.log()))


def rdp_curve(*, q: float, noise_multiplier: float, steps: int,
              orders: tuple[float, ...] = DEFAULT_ORDERS) -> np.ndarray:
    """RDP of `steps` compositions of the sampled Gaussian at each order, shape (len(orders),).

    The quantity of Opacus's ``compute_rdp(q=q, noise_multiplier=noise_multiplier,
    steps=steps, orders=orders)``, to about 1e-12 relative; nan where this evaluation lost
    precision (ask Opacus there).
    """
    alphas = np.asarray(orders, dtype=np.float64)
    if q == 0:
        return np.zeros_like(alphas)
    if noise_multiplier == 0:
        return np.full_like(alphas, np.inf)
    if q == 1.0:
        return alphas / (2 * noise_multiplier**2) * steps
    integer = alphas == np.floor(alphas)
    log_a = np.empty_like(alphas)
    log_a[integer] = _int_order_log_a(q, noise_multiplier, alphas[integer])
    if (~integer).any():
        log_a[~integer] = _frac_order_log_a(q, noise_multiplier, alphas[~integer])
    return log_a / (alphas - 1) * steps


def epsilon_of(rdp: np.ndarray, *, delta: float,
               orders: tuple[float, ...] = DEFAULT_ORDERS) -> float:
    """Epsilon at `delta` from an RDP curve: Opacus's ``get_privacy_spent`` conversion (Balle
    et al. 2020, Theorem 21); nan if any order's RDP is nan.
    """
    if np.isnan(rdp).any():
        return math.nan
    alphas = np.asarray(orders, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = rdp - (np.log(delta) + np.log(alphas)) / (alphas - 1) + np.log((alphas - 1) / alphas)
    if np.isnan(eps).all():
        return math.inf
    return float(np.nanmin(eps))
