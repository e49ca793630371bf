"""Membership-inference metrics, the DP bound on TPR and LiRA, on synthetic data."""

import json
import math

import numpy as np
import pytest
from scipy.stats import norm

from simulations.audit.membership import (
    dp_tpr_bound,
    lira_offline,
    lira_online,
    logit_confidence_from_logits,
    logit_confidence_from_loss,
    loss_threshold_score,
    mia_metrics,
    roc,
    roc_auc,
    tpr_at_fpr,
)


def _auc_null_sd(n1, n2):
    """Standard deviation of the AUC (Mann-Whitney U / n1 n2) when both samples match."""
    return math.sqrt((n1 + n2 + 1) / (12 * n1 * n2))


def test_separable_scores_give_auc_one_and_full_tpr():
    members, nonmembers = np.linspace(2, 3, 50), np.linspace(0, 1, 80)
    assert roc_auc(members, nonmembers) == 1.0
    assert roc_auc(nonmembers, members) == 0.0
    metrics = mia_metrics(members, nonmembers)
    assert metrics.auc == 1.0
    assert all(v == 1.0 for v in metrics.tpr_at_fpr.values())
    # Reversed scores: no member is caught before every non-member is.
    assert tpr_at_fpr(nonmembers, members, 0.05) == 0.0


def test_identical_distributions_give_auc_near_half():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(size=2000), rng.normal(size=2000)
    # Within 4 null standard deviations (about 0.037 here).
    assert abs(roc_auc(members, nonmembers) - 0.5) < 4 * _auc_null_sd(2000, 2000)


def test_gaussian_shift_auc_matches_theory():
    # Members N(d, 1), non-members N(0, 1): AUC = Phi(d / sqrt 2).
    rng = np.random.default_rng(1)
    for d in (0.5, 1.0, 2.0):
        members, nonmembers = rng.normal(d, 1, 3000), rng.normal(0, 1, 3000)
        assert roc_auc(members, nonmembers) == pytest.approx(norm.cdf(d / math.sqrt(2)), abs=0.03)


def _brute_force_tpr_at_fpr(members, nonmembers, target):
    best = 0.0
    for t in np.concatenate([members, nonmembers, [np.inf]]):
        if np.mean(nonmembers >= t) <= target:
            best = max(best, np.mean(members >= t))
    return best


def test_tpr_at_fpr_matches_brute_force():
    rng = np.random.default_rng(2)
    for _ in range(10):
        members = rng.normal(1.0, 1, int(rng.integers(20, 200))).round(1)  # with ties
        nonmembers = rng.normal(0.0, 1, int(rng.integers(20, 200))).round(1)
        for target in (0.0, 0.001, 0.01, 0.05, 0.3, 1.0):
            assert tpr_at_fpr(members, nonmembers, target) == pytest.approx(
                _brute_force_tpr_at_fpr(members, nonmembers, target)
            )


def test_tpr_at_fpr_on_a_known_ranking():
    # 1000 non-members 0..999; member scores chosen so that exactly 7 beat the top 1%.
    nonmembers = np.arange(1000.0)
    members = np.concatenate([np.full(7, 995.5), np.full(93, 500.5)])
    assert tpr_at_fpr(members, nonmembers, 0.01) == pytest.approx(0.07)
    assert tpr_at_fpr(members, nonmembers, 0.001) == 0.0  # 995.5 passes 4 non-members > 0.1%
    assert tpr_at_fpr(members, nonmembers, 0.5) == pytest.approx(1.0)


def test_roc_is_a_monotone_curve_from_origin_to_corner():
    rng = np.random.default_rng(3)
    fpr, tpr = roc(rng.normal(1, 1, 100), rng.normal(0, 1, 120))
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_metrics_record_is_json_able():
    metrics = mia_metrics(np.arange(10.0) + 0.5, np.arange(200.0))
    record = json.loads(json.dumps(metrics.to_dict()))
    assert set(record["tpr_at_fpr"]) == {"0.001", "0.01", "0.05"}
    assert record["n_members"] == 10 and record["n_nonmembers"] == 200
    assert record["min_resolved_fpr"] == pytest.approx(1 / 200)


def test_dp_bound_basic_values():
    assert dp_tpr_bound(0.0, 1.0, 1e-5) == pytest.approx(1e-5)
    assert dp_tpr_bound(0.01, 1.0, 0.0) == pytest.approx(math.e * 0.01)
    assert dp_tpr_bound(0.5, 1.0, 0.0, symmetric=False) == 1.0
    assert dp_tpr_bound(0.5, 1.0, 0.0) == pytest.approx(1 - 0.5 / math.e)
    assert dp_tpr_bound(1.0, 3.0, 1e-5) == 1.0
    fprs = np.linspace(0, 1, 101)
    np.testing.assert_allclose(dp_tpr_bound(fprs, 0.0, 0.0), fprs, atol=1e-12)


def test_dp_bound_is_tight_for_randomized_response():
    # Randomized response with accuracy q = e^eps/(1+e^eps) is eps-DP and reaches
    # TPR = q at FPR = 1 - q, exactly the bound there.
    for eps in (0.5, 1.0, 4.0):
        q = math.exp(eps) / (1 + math.exp(eps))
        assert dp_tpr_bound(1 - q, eps, 0.0) == pytest.approx(q)
        assert dp_tpr_bound(1 - q, eps, 0.0, symmetric=False) == pytest.approx(q)


def test_dp_bound_shape():
    fprs = np.logspace(-5, 0, 200)
    for eps, delta in ((0.3, 0.0), (1.0, 1e-5), (8.0, 1e-5)):
        sym = dp_tpr_bound(fprs, eps, delta)
        one = dp_tpr_bound(fprs, eps, delta, symmetric=False)
        assert np.all(sym <= one + 1e-15) and np.all(sym <= 1) and np.all(sym >= fprs - 1e-12)
        assert np.all(np.diff(sym) >= -1e-15)
        assert np.all(np.diff(dp_tpr_bound(fprs, eps + 1, delta)) >= -1e-15)
        assert np.all(dp_tpr_bound(fprs, eps + 1, delta) >= sym)


def test_loss_threshold_score_ranks_low_loss_first():
    scores = loss_threshold_score([0.1, 2.0, 0.5])
    assert np.argsort(-scores).tolist() == [0, 2, 1]


def test_logit_confidence_transforms_agree():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 3, (50, 4))
    labels = rng.integers(0, 4, 50)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p_true = p[np.arange(50), labels]
    direct = np.log(p_true) - np.log(1 - p_true)
    np.testing.assert_allclose(logit_confidence_from_logits(logits, labels), direct, rtol=1e-9)
    np.testing.assert_allclose(logit_confidence_from_loss(-np.log(p_true)), direct, rtol=1e-7)
    # Sigmoid models: the logit itself, signed by the label.
    z = np.array([2.0, -1.0, 0.5])
    np.testing.assert_allclose(logit_confidence_from_logits(z, [1, 1, 0]), [2.0, -1.0, -0.5])
    # Extreme logits stay finite.
    extreme = logit_confidence_from_logits(np.array([[800.0, -800.0]]), [0])
    assert np.isfinite(extreme).all() and extreme[0] == pytest.approx(1600.0)
    assert np.isfinite(logit_confidence_from_loss([0.0, 1e-300, 50.0])).all()


def test_lira_online_exact_on_a_hand_built_case():
    # Two examples, four shadows, in values mu_in +- 1 and out values mu_out +- 1:
    # medians mu_in, mu_out; pooled std 1. The score is then
    # ((c - mu_out)^2 - (c - mu_in)^2) / 2.
    mu_in, mu_out = np.array([1.0, 3.0]), np.array([0.0, 1.0])
    shadow = np.array([mu_in - 1, mu_in + 1, mu_out - 1, mu_out + 1])
    shadow_in = np.array([[True, True], [True, True], [False, False], [False, False]])
    c = np.array([0.25, 2.5])
    got = lira_online(c, shadow, shadow_in)
    np.testing.assert_allclose(got, ((c - mu_out) ** 2 - (c - mu_in) ** 2) / 2)
    got_off = lira_offline(c, shadow, shadow_in)
    np.testing.assert_allclose(got_off, -norm.logsf(c - mu_out))


def _synthetic_population(rng, n, shadows, shift):
    """Per-example difficulty varies widely; membership adds ``shift`` to the confidence."""
    difficulty = rng.normal(0, 3, n)
    noise = 0.5
    shadow_in = rng.random((shadows, n)) < 0.5
    shadow_conf = difficulty + shift * shadow_in + rng.normal(0, noise, (shadows, n))
    member = rng.random(n) < 0.5
    target = difficulty + shift * member + rng.normal(0, noise, n)
    return target, shadow_conf, shadow_in, member


def test_lira_beats_a_global_threshold_when_difficulty_varies():
    rng = np.random.default_rng(5)
    target, shadow_conf, shadow_in, member = _synthetic_population(rng, 3000, 16, shift=1.0)
    raw = roc_auc(target[member], target[~member])  # theory: Phi(1 / sqrt(2 (9 + 0.25)))
    online = lira_online(target, shadow_conf, shadow_in)
    offline = lira_offline(target, shadow_conf, shadow_in)
    auc_online = roc_auc(online[member], online[~member])
    auc_offline = roc_auc(offline[member], offline[~member])
    ideal = norm.cdf(1.0 / (0.5 * math.sqrt(2)))  # the per-example optimum, about 0.92
    assert raw < 0.65
    assert ideal - 0.05 < auc_online < ideal + 0.03
    assert ideal - 0.07 < auc_offline < ideal + 0.03
    online_low = mia_metrics(online[member], online[~member]).tpr_at_fpr[0.01]
    raw_low = mia_metrics(target[member], target[~member]).tpr_at_fpr[0.01]
    assert online_low > raw_low + 0.1


def test_lira_has_no_power_without_leakage():
    rng = np.random.default_rng(6)
    # 32 shadows: per-example variances need two "in" and two "out" values for every example.
    target, shadow_conf, shadow_in, member = _synthetic_population(rng, 3000, 32, shift=0.0)
    sd = _auc_null_sd(member.sum(), (~member).sum())
    for fix_variance in (True, False):
        s = lira_online(target, shadow_conf, shadow_in, fix_variance=fix_variance)
        assert abs(roc_auc(s[member], s[~member]) - 0.5) < 4 * sd
        s = lira_offline(target, shadow_conf, shadow_in, fix_variance=fix_variance)
        assert abs(roc_auc(s[member], s[~member]) - 0.5) < 4 * sd


def test_lira_refuses_examples_without_shadows_on_one_side():
    shadow = np.zeros((3, 2))
    shadow_in = np.array([[True, False], [True, True], [True, False]])  # example 0 never out
    with pytest.raises(ValueError, match="'out'"):
        lira_online(np.zeros(2), shadow, shadow_in)
    with pytest.raises(ValueError, match="shape"):
        lira_online(np.zeros(3), shadow, shadow_in)
