"""The audit's runs: real federations (fedcare's driver and ClientApp on an in-process grid).

The canaries enter one hospital's training rows after its preprocessing, the scorers find
them in a non-private run, and a build whose noise is missing is caught: its lower bound
exceeds its accounted epsilon, while the correct build's does not.
"""

from dataclasses import replace

import numpy as np
import pytest

from client.training import get_trainer
from common.config import RunConfig
from common.models import build_model
from common.tasks import get_task
from simulations.audit.canaries import draw_inclusion, make_tabular_canaries
from simulations.audit.experiment import (
    _canary_hook,
    _hospitals,
    against_initial_model,
    audit_canaries,
    canary_hospital,
    shadow_assignment,
)
from simulations.audit.membership import roc_auc
from simulations.audit.model_view import ModelView


@pytest.fixture(autouse=True)
def fedcare_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDCARE_HOME", str(tmp_path / "fedcare-home"))


def _config(**changes):
    return RunConfig.from_run_config({"task": "breast-cancer", "hospitals": 3,
                                      "num-server-rounds": 5, "dp.epsilon": 1.0, **changes})


def _canaries(config, m, seed=0):
    task = get_task(config.task)
    records = make_tabular_canaries(m, task.num_features, 2, seed,
                                    reference_x=_hospitals(config)[0].x_train)
    return records, draw_inclusion(m, seed)


class NoNoiseTrainer:
    """A broken build: DP-SGD adds no noise, but reports the noise multiplier it was given."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def fit_dp_sgd(self, weights, x, y, *, noise_multiplier, **kwargs):
        local, event = self.inner.fit_dp_sgd(weights, x, y, noise_multiplier=0.0, **kwargs)
        return local, replace(event, noise_multiplier=noise_multiplier)


def test_canaries_join_only_hospital_0s_training_rows_after_its_preprocessing():
    # Arrange
    config = _config()
    records, inclusion = _canaries(config, 30)
    hospitals = _hospitals(config)
    hook = _canary_hook(records, inclusion, 0)
    # Act
    with_canaries = hook(hospitals[0], 0)
    other = hook(hospitals[1], 1)
    # Assert: the real rows are untouched (already scaled), the included canaries appended
    # as drawn, the test rows and the other hospitals unchanged.
    n = hospitals[0].num_train
    assert with_canaries.num_train == n + inclusion.n_in
    np.testing.assert_array_equal(with_canaries.x_train[:n], hospitals[0].x_train)
    np.testing.assert_array_equal(with_canaries.x_train[n:], records.x[inclusion.included])
    np.testing.assert_array_equal(with_canaries.y_train[n:], records.y[inclusion.included])
    np.testing.assert_array_equal(with_canaries.x_test, hospitals[0].x_test)
    assert other is hospitals[1]


def test_shadow_assignment_puts_each_row_in_exactly_half_the_shadows():
    assignment = shadow_assignment(rows=57, shadows=4, seed=3)
    assert assignment.shape == (4, 57)
    assert (assignment.sum(axis=0) == 2).all()
    np.testing.assert_array_equal(assignment, shadow_assignment(57, 4, seed=3))
    assert not np.array_equal(assignment, shadow_assignment(57, 4, seed=4))
    with pytest.raises(ValueError, match="even"):
        shadow_assignment(10, 3, seed=0)


def test_the_scorers_rank_present_canaries_above_absent_ones_in_a_non_private_run(tmp_path):
    # Arrange
    config = _config(**{"dp.mode": "none", "num-server-rounds": 4})
    records, inclusion = _canaries(config, 30)
    # Act
    result = audit_canaries(config, tmp_path / "run", records=records, inclusion=inclusion,
                            hospital_inclusion=None, confidence=0.975)
    # Assert
    scores, present = result.scores["server"], inclusion.included
    assert roc_auc(scores[present], scores[~present]) > 0.95
    assert result.views["server"].epsilon > 0.5
    # What the server saw is what the hospital sent: one release per round, in order.
    assert [seen.server_round for seen in result.trace.rounds] == [1, 2, 3, 4]
    assert all(seen.update is not None for seen in result.trace.rounds)


def test_axis_canaries_give_a_14_parameter_model_power_in_a_non_private_run(tmp_path):
    # heart-disease's logistic model (13 features + bias): "far" canaries share too few
    # parameters to be told apart; one canary per feature axis, each starting misclassified by
    # the initial model, moves its own weight far more than the real rows do.
    config = RunConfig.from_run_config({"task": "heart-disease", "dp.mode": "none",
                                        "num-server-rounds": 3})
    task = get_task(config.task)
    smallest = canary_hospital(config)  # as the audit does: the fewest rows, the least drift
    records = against_initial_model(make_tabular_canaries(
        task.num_features, task.num_features, 2, 0, kind="axis",
        reference_x=_hospitals(config)[smallest].x_train), task, config.seed)
    assert (np.count_nonzero(records.x, axis=1) == 1).all()
    assert sorted(np.argmax(np.abs(records.x), axis=1)) == list(range(task.num_features))
    initial = build_model(task, seed=config.seed).get_weights()
    assert (ModelView(task).confidence(initial, records.x, records.y) < 0).all()
    inclusion = draw_inclusion(task.num_features, 0)
    result = audit_canaries(config, tmp_path / "run", records=records, inclusion=inclusion,
                            hospital_inclusion=None, confidence=0.975, hospital=smallest)
    scores, present = result.scores["server"], inclusion.included
    # A canary whose axis starts with a near-zero weight can be fitted by the real rows' drift
    # before it is visited, and then never pushes: most, not all, separate in 3 rounds.
    assert roc_auc(scores[present], scores[~present]) > 0.85
    assert result.views["server"].epsilon > 0.2


@pytest.mark.slow
def test_missing_noise_in_dp_sgd_is_caught_and_the_correct_build_is_not_flagged(tmp_path):
    # Arrange: patient level, accounted epsilon <= 1, 50 canaries.
    config = _config()
    records, inclusion = _canaries(config, 50)
    # Act
    broken = audit_canaries(config, tmp_path / "broken", records=records, inclusion=inclusion,
                            hospital_inclusion=None, confidence=0.975,
                            trainer_for=lambda task: NoNoiseTrainer(get_trainer(task)))
    correct = audit_canaries(config, tmp_path / "correct", records=records,
                             inclusion=inclusion, hospital_inclusion=None, confidence=0.975)
    # Assert: both builds account the same epsilon <= 1; only the broken one is refuted.
    assert broken.accounted_epsilon == pytest.approx(correct.accounted_epsilon)
    assert 0 < broken.accounted_epsilon <= 1.0
    assert max(v.epsilon for v in broken.views.values()) > broken.accounted_epsilon
    assert max(v.epsilon for v in correct.views.values()) <= correct.accounted_epsilon


@pytest.mark.slow
def test_missing_noise_at_hospital_level_is_caught_by_the_canary_hospitals(tmp_path,
                                                                          monkeypatch):
    # Arrange: canary hospitals run fedcare's own hospital-level round; the broken build's
    # noise stddev is 0 while its ledger charges the calibrated z.
    config = _config(**{"dp.mode": "hospital"})
    records, inclusion = _canaries(config, 50)
    hospital_inclusion = draw_inclusion(50, seed=1)
    monkeypatch.setattr("client.local_round.hospital_noise_stddev", lambda *a, **k: 0.0)
    # Act
    broken = audit_canaries(config, tmp_path / "broken", records=records, inclusion=inclusion,
                            hospital_inclusion=hospital_inclusion, confidence=0.975)
    # Assert
    assert 0 < broken.accounted_epsilon <= 1.0
    assert broken.views["server"].epsilon > broken.accounted_epsilon
    assert not broken.declined
