"""Bounded influence: the encoding carries no weight coordinate, its per-coordinate range is
C + k sigma_share with an honest cut below 1e-9 per round, and an input at the range limit moves
the securely aggregated mean by at most range/n per coordinate.
"""

import math

import numpy as np
import pytest
from secagg_harness import Consortium, run_round

from common.errors import SecAggProtocolError
from common.secagg.update_vector import (
    coordinate_range,
    decode_unweighted_mean,
    encode_unweighted,
    noise_share_stddev,
    tail_multiplier,
    unweighted_scale,
)

D = 1000


@pytest.mark.parametrize("d", [1, 10**4, 10**6])
def test_tail_multiplier_keeps_the_union_bound_below_1e_9(d):
    k = tail_multiplier(d)

    # d * P(|Z| > k) = d * erfc(k / sqrt(2)), at the target and no looser than needed
    assert d * math.erfc(k / math.sqrt(2)) == pytest.approx(1e-9, rel=1e-6)
    assert d * math.erfc((k - 0.05) / math.sqrt(2)) > 1e-9
    if d == 10**4:
        assert k == pytest.approx(7.44, abs=0.01)


def test_range_is_clip_plus_k_noise_shares():
    sigma = noise_share_stddev(clip_norm=2.0, noise_multiplier=1.1, honest=4)

    assert sigma == pytest.approx(1.1)
    assert coordinate_range(clip_norm=2.0, noise_stddev=sigma, num_parameters=D) == pytest.approx(
        2.0 + tail_multiplier(D) * 1.1)
    assert coordinate_range(clip_norm=2.0, noise_stddev=0.0, num_parameters=D) == 2.0


def test_honest_noisy_updates_are_not_cut_and_a_crafted_one_is_cut_and_counted():
    rng = np.random.default_rng(0)
    clip, sigma = 1.0, 0.5
    limit = coordinate_range(clip_norm=clip, noise_stddev=sigma, num_parameters=D)
    scale = unweighted_scale(coordinate_range=limit, num_hospitals=5)
    clipped = rng.normal(size=D)
    clipped *= clip / np.linalg.norm(clipped)  # at the clip norm exactly
    honest = [clipped + rng.normal(0.0, sigma, size=D)]
    crafted = [np.full(D, 50.0)]

    assert encode_unweighted(honest, coordinate_range=limit, scale=scale, rng=rng).num_clipped == 0
    assert encode_unweighted(crafted, coordinate_range=limit, scale=scale, rng=rng
                             ).num_clipped == D


def test_an_input_at_the_range_limit_moves_the_mean_by_at_most_range_over_n():
    # Arrange: 5 hospitals through the real protocol; one sends the largest input the encoding
    # admits (+range in every coordinate, on the quantisation grid's edge)
    con = Consortium(5, c=1, threshold=4)
    rng = np.random.default_rng(1)
    limit = coordinate_range(clip_norm=1.0, noise_stddev=0.3, num_parameters=D)
    scale = unweighted_scale(coordinate_range=limit, num_hospitals=5)
    like = [np.zeros(D)]
    honest = {name: [rng.normal(0.0, 0.3, size=D)] for name in con.names[1:]}
    attacker = con.names[0]
    at_limit = np.full(D, math.ceil(limit * scale), dtype=np.int64).view(np.uint64)

    def mean_with(attack):
        updates = {name: encode_unweighted(u, coordinate_range=limit, scale=scale,
                                           rng=np.random.default_rng(2)).values
                   for name, u in honest.items()}
        updates[attacker] = attack
        result, _ = run_round(con.server(vector_length=D), con.clients(), updates,
                              settings=con.settings)
        return decode_unweighted_mean(result.total, num_summands=5, coordinate_range=limit,
                                      scale=scale, like=like)[0]

    # Act
    attacked = mean_with(at_limit)
    absent = mean_with(np.zeros(D, dtype=np.uint64))

    # Assert: at most range/n, up to the one quantisation step the edge adds (and float64's
    # rounding of the decoded mean)
    shift = np.abs(attacked - absent)
    slack = 1 / scale + 1e-12 * limit
    assert np.max(shift) <= limit / 5 + slack
    assert np.min(shift) >= limit / 5 - slack  # and the bound is what it reaches


def test_decoding_errors_are_secagg_protocol_errors():
    limit, scale = 1.0, 2.0**20
    masked = np.random.default_rng(4).integers(0, 2**63, size=D, dtype=np.uint64) * 2

    with pytest.raises(SecAggProtocolError, match="masks were not removed"):
        decode_unweighted_mean(masked, num_summands=3, coordinate_range=limit, scale=scale,
                               like=[np.zeros(D)])
    with pytest.raises(SecAggProtocolError, match="expected \\(1000,\\)"):
        decode_unweighted_mean(masked[:-1], num_summands=3, coordinate_range=limit, scale=scale,
                               like=[np.zeros(D)])
