"""The audit's two canary scorers, as plain numpy on what each attacker saw.

Higher scores mean "more likely included"; ``simulations.audit.canaries.audit_scores`` turns
them into guesses and a bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["final_model_scores", "release_scores", "server_view_scores"]


# Largest stacked least-squares system solved at once (float64 entries: 160 MB).
STACKED_ENTRIES_MAX = 20_000_000


def server_view_scores(gradients: Sequence[np.ndarray],
                       updates: Sequence[np.ndarray | None],
                       known: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Server view of canary records: how much of the released updates their gradients explain.

    Parameters
    ----------
    gradients : sequence of numpy.ndarray
        Per round, shape (m, d): each canary's clipped loss gradient at that round's global
        weights (``ModelView.clipped_gradients``).
    updates : sequence of numpy.ndarray or None
        Per round, shape (d,): the update the canaries' hospital released that round (None:
        it released none, the round counts nothing).
    known : sequence of numpy.ndarray, optional
        Per round, shape (n, d): the clipped gradients of the hospital's other training rows.
        DP protects a record against an adversary who knows every other record, so the
        auditor may use them.

    Returns
    -------
    numpy.ndarray
        Shape (m,). Local (DP-)SGD steps against the gradients of the records it trained on,
        so ``-update_r`` is close to ``sum_i a_i g_i(w_r) + sum_j b_j h_j(w_r)`` plus noise,
        with ``a_i > 0`` only for a canary that is in (the same in every round: inclusion does
        not change). The score is canary i's least-squares coefficient ``a_i``, fitted over all
        rounds at once when the rounds give more equations than unknowns (R d > m + n, and the
        system fits in memory), else per round and summed (when m + n < d); it separates each
        canary from the other canaries and from the known rows. A model too small for either
        gets ``-sum_r <g_i, update_r>``.
    """
    if len(gradients) != len(updates) or (known is not None and len(known) != len(updates)):
        raise ValueError("gradients, updates and known gradients need one entry per round")
    if not gradients:
        raise ValueError("need at least one round")
    rows: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for r, (grads, update) in enumerate(zip(gradients, updates, strict=True)):
        if update is None:
            continue
        grads = np.asarray(grads, dtype=np.float64)
        update = np.asarray(update, dtype=np.float64).ravel()
        if grads.ndim != 2 or grads.shape[1] != update.size:
            raise ValueError(f"gradients of shape {grads.shape} do not match an update of "
                             f"{update.size} parameters")
        regressors = grads if known is None else np.concatenate(
            [grads, np.asarray(known[r], dtype=np.float64)])
        rows.append(regressors.T)
        targets.append(-update)
    m = np.asarray(gradients[0]).shape[0]
    if not rows:
        return np.zeros(m)
    d, unknowns = rows[0].shape
    equations = d * len(rows)
    if unknowns < equations and equations * unknowns <= STACKED_ENTRIES_MAX:
        coefficients, *_ = np.linalg.lstsq(np.concatenate(rows), np.concatenate(targets),
                                           rcond=None)
        return np.asarray(coefficients[:m], dtype=np.float64)
    total = np.zeros(m)
    for design, target in zip(rows, targets, strict=True):
        if unknowns < d:
            coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
            total += coefficients[:m]
        else:
            total += design[:, :m].T @ target
    return total


def release_scores(releases: Sequence[np.ndarray], directions: np.ndarray) -> np.ndarray:
    """Server view of canary hospitals: their releases projected on their own directions.

    Parameters
    ----------
    releases : sequence of numpy.ndarray
        Per round, shape (m, d): every canary hospital's released update.
    directions : numpy.ndarray
        Shape (m, d): canary ``i``'s unit direction ``u_i``.

    Returns
    -------
    numpy.ndarray
        Shape (m,): ``sum_r <release_{i,r}, u_i>``, which is ``r C`` plus noise for an included
        canary (its update is ``C u_i``) and noise alone for an excluded one.
    """
    directions = np.asarray(directions, dtype=np.float64)
    total = np.zeros(directions.shape[0])
    for released in releases:
        total += np.einsum("ij,ij->i", np.asarray(released, dtype=np.float64), directions)
    return total


def final_model_scores(final_confidence: np.ndarray,
                       initial_confidence: np.ndarray) -> np.ndarray:
    """Final-model view: how much more confident in its label the final model is than the start.

    Parameters
    ----------
    final_confidence, initial_confidence : numpy.ndarray
        Shape (m,): each canary's logit-scaled confidence ``log(p_y / (1 - p_y))`` under the
        final model and under the (public, seeded) initial model.

    Returns
    -------
    numpy.ndarray
        Shape (m,): the difference. Labels are random, so only training on a canary raises its
        confidence beyond what the model's drift does to every point; subtracting the start
        removes each canary's own offset.
    """
    final_confidence = np.asarray(final_confidence, dtype=np.float64)
    initial_confidence = np.asarray(initial_confidence, dtype=np.float64)
    if final_confidence.shape != initial_confidence.shape:
        raise ValueError("final and initial confidences differ in shape")
    return np.asarray(final_confidence - initial_confidence, dtype=np.float64)
