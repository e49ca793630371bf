"""The audit's scorers on synthetic releases: what a canary contributes, they find."""

import numpy as np
import pytest

from simulations.audit.canaries import draw_inclusion
from simulations.audit.membership import roc_auc
from simulations.audit.scores import final_model_scores, release_scores, server_view_scores


def _sgd_rounds(rng, included, *, m=40, n=60, d=300, rounds=5, noise=0.0):
    """Rounds of a toy SGD: -update = sum of the included canaries' and known rows' gradients."""
    gradients, known, updates = [], [], []
    for _ in range(rounds):
        g = rng.standard_normal((m, d))
        h = rng.standard_normal((n, d)) + 2.0  # the real rows share a common direction
        step = g[included].sum(axis=0) + h.sum(axis=0) + noise * rng.standard_normal(d)
        gradients.append(g), known.append(h), updates.append(-step)
    return gradients, known, updates


def test_the_server_view_ranks_every_included_canary_above_every_excluded_one():
    # Arrange
    rng = np.random.default_rng(0)
    included = draw_inclusion(40, seed=1).included
    gradients, known, updates = _sgd_rounds(rng, included)
    # Act
    scores = server_view_scores(gradients, updates, known)
    # Assert
    assert scores[included].min() > scores[~included].max()


def test_knowing_the_other_rows_separates_canaries_that_their_gradients_alone_confuse():
    rng = np.random.default_rng(2)
    included = draw_inclusion(40, seed=3).included
    gradients, known, updates = _sgd_rounds(rng, included, n=200, d=300)
    plain = server_view_scores(gradients, updates)
    regressed = server_view_scores(gradients, updates, known)
    assert roc_auc(regressed[included], regressed[~included]) == 1.0
    assert roc_auc(plain[included], plain[~included]) < 1.0


def test_under_heavy_noise_the_server_view_is_no_better_than_chance():
    rng = np.random.default_rng(4)
    included = draw_inclusion(200, seed=5).included
    gradients, known, updates = _sgd_rounds(rng, included, m=200, n=20, d=400, noise=1e4)
    scores = server_view_scores(gradients, updates, known)
    assert 0.35 < roc_auc(scores[included], scores[~included]) < 0.65


def test_a_round_without_a_release_counts_nothing():
    rng = np.random.default_rng(6)
    included = draw_inclusion(10, seed=7).included
    gradients, known, updates = _sgd_rounds(rng, included, m=10, n=5, d=50, rounds=2)
    alone = server_view_scores(gradients[:1], updates[:1], known[:1])
    with_gap = server_view_scores(gradients, [updates[0], None], known)
    np.testing.assert_allclose(alone, with_gap)


def test_server_view_refuses_mismatched_rounds_and_shapes():
    g = [np.zeros((3, 5))]
    with pytest.raises(ValueError, match="one entry per round"):
        server_view_scores(g, [np.zeros(5), np.zeros(5)])
    with pytest.raises(ValueError, match="do not match"):
        server_view_scores(g, [np.zeros(6)])


def test_release_scores_find_the_canary_hospitals_that_sent_their_direction():
    # Arrange: releases of norm-C directions (in) or nothing (out), plus Gaussian noise.
    rng = np.random.default_rng(8)
    m, d, clip, rounds = 60, 500, 1.0, 4
    directions = rng.standard_normal((m, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    included = draw_inclusion(m, seed=9).included
    releases = [clip * directions * included[:, None] + 0.1 * rng.standard_normal((m, d))
                for _ in range(rounds)]
    # Act
    scores = release_scores(releases, directions)
    # Assert: an included canary scores about rounds * C, an excluded one about 0.
    np.testing.assert_allclose(scores[included], rounds * clip, atol=0.5)
    np.testing.assert_allclose(scores[~included], 0.0, atol=0.5)


def test_final_model_scores_are_the_gain_in_confidence():
    np.testing.assert_allclose(final_model_scores(np.array([3.0, -1.0]), np.array([1.0, 1.0])),
                               [2.0, -2.0])
    with pytest.raises(ValueError, match="shape"):
        final_model_scores(np.zeros(2), np.zeros(3))
