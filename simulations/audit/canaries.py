"""Canaries of the one-run audit: seeded inclusion, tabular canary records, the guessing rule.

Steinke, Nasr, Jagielski, "Privacy Auditing with One (1) Training Run" (NeurIPS 2023,
arXiv:2305.08846), Algorithm 1: each of m canaries is included independently with probability
1/2; after training the auditor scores every canary, guesses "in" for the k+ highest scores and
"out" for the k- lowest, abstains on the rest, and counts the correct guesses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from simulations.audit.lower_bound import eps_lower_bound_bonferroni

__all__ = [
    "CANARY_KINDS",
    "CanaryInclusion",
    "CanaryRecords",
    "GuessOutcome",
    "OneRunAudit",
    "audit_scores",
    "count_correct",
    "default_grid",
    "draw_inclusion",
    "guess",
    "make_tabular_canaries",
]

# Stream tags mixed into the run seed, so that the inclusion coins are independent of every
# other draw the run makes from the same seed (partitioning, weights, canary records).
INCLUSION_STREAM = 0xA0D17
RECORD_STREAM = 0xA0D18

CANARY_KINDS = ("far", "random", "axis")
AXIS_DISTANCE = 1000.0  # "axis" canaries: a multiple of the data's largest row norm


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
    return int(seed)


def _check_count(name: str, value: int, minimum: int = 0) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


@dataclass(frozen=True, eq=False)
class CanaryInclusion:
    """Which canaries are in the training data, with the seed that decided it.

    Attributes
    ----------
    seed : int
        The run seed; the coins come from ``numpy.random.default_rng([seed, INCLUSION_STREAM])``.
    included : numpy.ndarray
        bool, shape (m,): ``included[i]`` is True when canary ``i`` is in.
    """

    seed: int
    included: np.ndarray = field(repr=False)

    @property
    def m(self) -> int:
        """Number of canaries."""
        return int(self.included.size)

    @property
    def n_in(self) -> int:
        """Number of canaries included."""
        return int(np.count_nonzero(self.included))

    @property
    def n_out(self) -> int:
        """Number of canaries left out."""
        return self.m - self.n_in

    @property
    def in_indices(self) -> np.ndarray:
        """Indices (int64, ascending) of the included canaries."""
        return np.flatnonzero(self.included)

    def to_dict(self) -> dict:
        """JSON-able record: seed, counts and the indices of the included canaries."""
        return {
            "seed": self.seed,
            "m": self.m,
            "n_in": self.n_in,
            "n_out": self.n_out,
            "in_indices": [int(i) for i in self.in_indices],
        }

    @classmethod
    def from_dict(cls, record: Mapping) -> CanaryInclusion:
        """Rebuild from :meth:`to_dict`'s output; refuses a record whose counts disagree."""
        m = _check_count("m", record["m"])
        included = np.zeros(m, dtype=bool)
        indices = np.asarray(record["in_indices"], dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= m):
            raise ValueError(f"in_indices out of range for m={m}")
        included[indices] = True
        inclusion = cls(seed=_check_seed(record["seed"]), included=included)
        if (inclusion.n_in, inclusion.n_out) != (record["n_in"], record["n_out"]):
            raise ValueError("inconsistent canary record: counts do not match the indices")
        return inclusion


def draw_inclusion(m: int, seed: int) -> CanaryInclusion:
    """Include each of ``m`` canaries independently with probability 1/2.

    Parameters
    ----------
    m : int
        Number of canaries, ``>= 1``.
    seed : int
        The run seed (``>= 0``). The same (m, seed) always gives the same inclusion.

    Returns
    -------
    CanaryInclusion
        The coins and their counts (``n_in + n_out == m``; ``n_in`` is Binomial(m, 1/2), so
        the split is balanced in expectation, not forced to m/2: forcing it would break the
        independence the bound assumes).
    """
    m = _check_count("m", m, minimum=1)
    rng = np.random.default_rng([_check_seed(seed), INCLUSION_STREAM])
    return CanaryInclusion(seed=int(seed), included=rng.random(m) < 0.5)


@dataclass(frozen=True, eq=False)
class CanaryRecords:
    """Canary rows for a tabular task, in the model's (preprocessed) feature space.

    Attributes
    ----------
    x : numpy.ndarray
        float32, shape (m, features).
    y : numpy.ndarray
        float32 class indices, shape (m,) (the convention of ``HospitalData``).
    kind : str
        ``"far"`` or ``"random"`` (see :func:`make_tabular_canaries`).
    seed : int
        The run seed the rows were drawn from.
    """

    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    kind: str
    seed: int

    def to_dict(self) -> dict:
        """JSON-able record of the canary rows (features as nested lists)."""
        return {
            "kind": self.kind,
            "seed": self.seed,
            "x": self.x.astype(float).tolist(),
            "y": self.y.astype(int).tolist(),
        }


def make_tabular_canaries(
    m: int,
    n_features: int,
    n_classes: int,
    seed: int,
    *,
    kind: str = "far",
    reference_x: np.ndarray | None = None,
    distance: float = 2.0,
) -> CanaryRecords:
    """Draw ``m`` canary rows with labels chosen at random.

    Parameters
    ----------
    m : int
        Number of canaries, ``>= 1``.
    n_features : int
        Number of features of the (preprocessed) rows.
    n_classes : int
        Number of classes, ``>= 2`` (2 for a binary task); classification tasks only.
    seed : int
        The run seed; rows come from ``numpy.random.default_rng([seed, RECORD_STREAM])``,
        independent of the inclusion coins.
    kind : {"far", "random", "axis"}, default "far"
        ``"far"``: each row is a uniformly random direction scaled to one common norm
        ``distance * max ||reference_x row||`` (or ``distance * sqrt(n_features)``, the typical
        norm of a z-scored row, without ``reference_x``), so with ``distance > 1`` every canary
        lies outside the ball holding all the data, at least ``(distance - 1) * max norm``
        from any real row. ``"random"``: rows drawn from N(0, I), like z-scored data.
        ``"axis"``: for a model with fewer parameters than canaries can share (a logistic
        model), canary ``i`` lies on feature axis ``i mod n_features`` (random sign) at
        ``AXIS_DISTANCE`` times the data's largest row norm (``distance`` is not used): each
        canary's gradient then moves its own weight, and moves it far more than the real rows
        do in a non-private run, so at most ``n_features`` canaries are told apart.
    reference_x : numpy.ndarray, optional
        The hospital's preprocessed training rows, shape (rows, n_features), to place
        ``"far"`` canaries beyond.
    distance : float, default 2.0
        Norm of the ``"far"`` canaries as a multiple of the data's largest row norm.

    Returns
    -------
    CanaryRecords
        The rows and labels.

    Notes
    -----
    Labels are uniform over the classes and independent of the features, for both kinds, so
    nothing but memorising a canary lets a model fit it: a member's loss drops, a non-member's
    does not. The default is ``"far"``: such a row is explained by no real row, so its
    (clipped) gradient points where the data's do not, which gives an attack the most signal
    per canary; ``"random"`` rows are in-distribution mislabeled rows, a weaker, more realistic
    canary. Draw the canaries in the space the model trains on, i.e. after the hospital's
    preprocessing is fitted, so they do not move its statistics.
    """
    m = _check_count("m", m, minimum=1)
    n_features = _check_count("n_features", n_features, minimum=1)
    n_classes = _check_count("n_classes", n_classes, minimum=2)
    seed = _check_seed(seed)
    if kind not in CANARY_KINDS:
        raise ValueError(f"kind must be one of {CANARY_KINDS}; got {kind!r}")
    rng = np.random.default_rng([seed, RECORD_STREAM])
    gaussian = rng.standard_normal((m, n_features))
    if kind == "axis":
        x = _axis_rows(gaussian, reference_x)
    elif kind == "far":
        x = _far_rows(gaussian, reference_x, distance)
    else:
        x = gaussian
    y = rng.integers(0, n_classes, size=m)
    return CanaryRecords(x=x.astype(np.float32), y=y.astype(np.float32), kind=kind, seed=seed)


def _axis_rows(gaussian: np.ndarray, reference_x: np.ndarray | None) -> np.ndarray:
    """Axis canaries, shape (m, n_features): canary i on axis i mod n_features, with the sign
    of its Gaussian draw, at AXIS_DISTANCE times the data's largest row norm.
    """
    m, n_features = gaussian.shape
    scale = (float(np.max(np.linalg.norm(np.asarray(reference_x, dtype=np.float64), axis=1)))
             if reference_x is not None else float(np.sqrt(n_features)))
    x = np.zeros((m, n_features))
    x[np.arange(m), np.arange(m) % n_features] = (
        np.sign(gaussian[:, 0]) + (gaussian[:, 0] == 0)) * AXIS_DISTANCE * scale
    return x


def _far_rows(gaussian: np.ndarray, reference_x: np.ndarray | None,
              distance: float) -> np.ndarray:
    """Far canaries, shape (m, n_features): the Gaussian draws' directions at ``distance``
    times the data's largest row norm (sqrt(n_features) without ``reference_x``).
    """
    n_features = gaussian.shape[1]
    if not (np.isfinite(distance) and distance > 0):
        raise ValueError(f"distance must be finite and > 0; got {distance!r}")
    if reference_x is not None:
        reference_x = np.asarray(reference_x, dtype=np.float64)
        if reference_x.ndim != 2 or reference_x.shape[1] != n_features:
            raise ValueError(
                f"reference_x must have shape (rows, {n_features}); got {reference_x.shape}"
            )
        scale = float(np.max(np.linalg.norm(reference_x, axis=1)))
    else:
        scale = float(np.sqrt(n_features))
    norms = np.linalg.norm(gaussian, axis=1, keepdims=True)
    return gaussian / np.where(norms > 0, norms, 1.0) * (distance * scale)


def guess(scores: np.ndarray, k_plus: int, k_minus: int) -> np.ndarray:
    """The guessing rule: "in" for the ``k_plus`` highest scores, "out" for the ``k_minus`` lowest.

    Parameters
    ----------
    scores : numpy.ndarray
        Shape (m,), finite; higher means "more likely included".
    k_plus, k_minus : int
        Numbers of "in" and "out" guesses, ``k_plus + k_minus <= m``; fix them (or a small
        grid of them) before looking at the scores.

    Returns
    -------
    numpy.ndarray
        int8, shape (m,): +1 guessed in, -1 guessed out, 0 abstained. Ties are broken by
        canary index (a stable sort), which does not depend on the inclusion, so tied scores
        cannot produce correct guesses beyond chance.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be one-dimensional; got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    m = scores.size
    k_plus = _check_count("k_plus", k_plus)
    k_minus = _check_count("k_minus", k_minus)
    if k_plus + k_minus > m:
        raise ValueError(f"k_plus + k_minus = {k_plus + k_minus} exceeds the {m} canaries")
    order = np.argsort(scores, kind="stable")  # ascending
    guesses = np.zeros(m, dtype=np.int8)
    guesses[order[:k_minus]] = -1
    guesses[order[m - k_plus :]] = 1
    return guesses


@dataclass(frozen=True)
class GuessOutcome:
    """Counts of one guessing rule against the true inclusion.

    Attributes
    ----------
    k_plus, k_minus : int
        "In" and "out" guesses made.
    correct_in, correct_out : int
        Correct "in" and "out" guesses.
    """

    k_plus: int
    k_minus: int
    correct_in: int
    correct_out: int

    @property
    def r(self) -> int:
        """Number of guesses (``k_plus + k_minus``)."""
        return self.k_plus + self.k_minus

    @property
    def v(self) -> int:
        """Number of correct guesses."""
        return self.correct_in + self.correct_out

    def to_dict(self) -> dict:
        """JSON-able dict including ``r`` and ``v``."""
        return {
            "k_plus": self.k_plus,
            "k_minus": self.k_minus,
            "correct_in": self.correct_in,
            "correct_out": self.correct_out,
            "r": self.r,
            "v": self.v,
        }


def count_correct(guesses: np.ndarray, included: np.ndarray) -> GuessOutcome:
    """Count correct guesses.

    Parameters
    ----------
    guesses : numpy.ndarray
        Output of :func:`guess`: +1, -1 or 0 per canary.
    included : numpy.ndarray
        bool, same shape: the true inclusion.

    Returns
    -------
    GuessOutcome
        A "+1" on an included canary and a "-1" on an excluded one are correct; abstentions
        count neither way.
    """
    guesses = np.asarray(guesses)
    included = np.asarray(included, dtype=bool)
    if guesses.shape != included.shape:
        raise ValueError(f"shapes differ: guesses {guesses.shape}, included {included.shape}")
    if not np.all(np.isin(guesses, (-1, 0, 1))):
        raise ValueError("guesses must be -1, 0 or +1")
    return GuessOutcome(
        k_plus=int(np.count_nonzero(guesses == 1)),
        k_minus=int(np.count_nonzero(guesses == -1)),
        correct_in=int(np.count_nonzero((guesses == 1) & included)),
        correct_out=int(np.count_nonzero((guesses == -1) & ~included)),
    )


def default_grid(m: int) -> list[tuple[int, int]]:
    """A small grid of ``(k+, k-)`` pairs, fixed by m alone (before any score is seen).

    Parameters
    ----------
    m : int
        Number of canaries, ``>= 2``.

    Returns
    -------
    list of (int, int)
        Symmetric pairs ``(k, k)`` with ``k = max(1, round(f * m / 2))`` for f in
        (0.1, 0.25, 0.5, 1.0), duplicates removed: from confident guesses on the extremes to
        guessing every canary (``k = m // 2``). At most 4 pairs, so Bonferroni costs at most a
        factor 4 in significance.
    """
    m = _check_count("m", m, minimum=2)
    pairs: list[tuple[int, int]] = []
    for fraction in (0.1, 0.25, 0.5, 1.0):
        k = min(max(1, round(fraction * m / 2)), m // 2)
        if (k, k) not in pairs:
            pairs.append((k, k))
    return pairs


@dataclass(frozen=True)
class OneRunAudit:
    """A one-run audit's result.

    Attributes
    ----------
    epsilon : float
        Lower bound on the run's epsilon at ``confidence`` (Bonferroni over the grid).
    confidence, delta : float
        Joint confidence of ``epsilon`` and the delta of the tested claims.
    per_test_confidence : float
        Confidence each grid point was evaluated at.
    m, n_in, n_out : int
        Canaries and their split.
    outcomes : tuple of GuessOutcome
        One per grid point, in grid order.
    per_candidate : tuple of float
        Each grid point's bound at ``per_test_confidence``.
    best_index : int
        The grid point that gave ``epsilon``.
    """

    epsilon: float
    confidence: float
    delta: float
    per_test_confidence: float
    m: int
    n_in: int
    n_out: int
    outcomes: tuple[GuessOutcome, ...]
    per_candidate: tuple[float, ...]
    best_index: int

    def to_dict(self) -> dict:
        """JSON-able dict of every field, one entry per grid point."""
        return {
            "epsilon": self.epsilon,
            "confidence": self.confidence,
            "delta": self.delta,
            "per_test_confidence": self.per_test_confidence,
            "m": self.m,
            "n_in": self.n_in,
            "n_out": self.n_out,
            "best_index": self.best_index,
            "grid": [
                {**o.to_dict(), "epsilon": e}
                for o, e in zip(self.outcomes, self.per_candidate, strict=True)
            ],
        }


def audit_scores(
    scores: np.ndarray,
    included: np.ndarray | CanaryInclusion,
    grid: Sequence[tuple[int, int]] | None = None,
    confidence: float = 0.95,
    delta: float = 1e-5,
) -> OneRunAudit:
    """Guess with every grid point, count, and return the Bonferroni-corrected best bound.

    Parameters
    ----------
    scores : numpy.ndarray
        Shape (m,): each canary's score, higher meaning "more likely included".
    included : numpy.ndarray or CanaryInclusion
        The true inclusion (bool, shape (m,)).
    grid : sequence of (k+, k-), optional
        Guessing rules, fixed before the scores are seen; :func:`default_grid` when omitted.
    confidence : float, default 0.95
        Joint confidence of the returned bound (each grid point at
        ``1 - (1 - confidence) / len(grid)``).
    delta : float, default 1e-5
        Delta of the tested (eps, delta)-DP claims.

    Returns
    -------
    OneRunAudit
        The bound, every grid point's counts and bound, and the canary split.
    """
    if isinstance(included, CanaryInclusion):
        included = included.included
    included = np.asarray(included, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != included.shape:
        raise ValueError(f"shapes differ: scores {scores.shape}, included {included.shape}")
    m = included.size
    grid = default_grid(m) if grid is None else list(grid)
    if not grid:
        raise ValueError("grid must hold at least one (k+, k-) pair")
    outcomes = tuple(count_correct(guess(scores, kp, km), included) for kp, km in grid)
    bound = eps_lower_bound_bonferroni(m, [(o.r, o.v) for o in outcomes], confidence, delta)
    n_in = int(np.count_nonzero(included))
    return OneRunAudit(
        epsilon=bound.epsilon,
        confidence=bound.confidence,
        delta=float(delta),
        per_test_confidence=bound.per_test_confidence,
        m=m,
        n_in=n_in,
        n_out=m - n_in,
        outcomes=outcomes,
        per_candidate=bound.per_candidate,
        best_index=bound.best_index,
    )
