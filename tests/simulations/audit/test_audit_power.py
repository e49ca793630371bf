"""The audit's verdict counts as power only a control bound above the accounted epsilon.

Arms are built from real one-run audits (``audit_scores``) of scores whose separation is
chosen: a control attack that proves epsilon > 0.66 (clearly positive, the old threshold was
0.5) against a run that accounts 1.0 could not have caught a non-private build.
"""

import math

import numpy as np
import pytest

from common.config import RunConfig
from simulations.audit.canaries import (
    audit_scores,
    default_grid,
    draw_inclusion,
    make_tabular_canaries,
)
from simulations.audit.experiment import (
    ArmResult,
    AuditPlan,
    AuditResult,
    control_config,
    control_has_power,
)
from simulations.audit.lower_bound import canaries_needed, eps_lower_bound_bonferroni
from simulations.audit.report import verdict

M = 40


def _arm(name, config, scores, inclusion, accounted, confidence):
    views = {view: audit_scores(scores, inclusion, confidence=confidence,
                                delta=config.dp_delta) for view in ("server", "final_model")}
    ceiling = eps_lower_bound_bonferroni(
        M, [(kp + km, kp + km) for kp, km in default_grid(M)], confidence,
        config.dp_delta).epsilon
    return ArmResult(name=name, config=config, accounted_epsilon=accounted, views=views,
                     view_epsilon={v: accounted for v in views},
                     scores={v: scores for v in views}, ceiling=ceiling, mia={},
                     mia_scores={}, seconds=0.0)


def _audit(accounted, flipped):
    """Return an audit of a patient-level run accounting `accounted`.

    Its control's attack gets all but `flipped` canaries right; the DP arm's is blind.
    """
    config = RunConfig.from_run_config({"dp.mode": "patient", "dp.epsilon": 1.0})
    plan = AuditPlan(config=config, canaries=M)
    inclusion = draw_inclusion(M, 0)
    control_scores = inclusion.included.astype(float)
    control_scores[:flipped] = 1 - control_scores[:flipped]
    blind = np.random.default_rng(1).normal(size=M)
    arms = (_arm("dp", config, blind, inclusion, accounted, plan.view_confidence),
            _arm("control", control_config(config), control_scores, inclusion, math.inf,
                 plan.view_confidence))
    records = make_tabular_canaries(M, 13, 2, 0)
    return AuditResult(plan, records, inclusion, None, arms)


def test_a_control_bound_below_the_accounted_epsilon_is_no_power():
    # Arrange: the control proves a clearly positive bound, but less than the accounted 1.0
    result = _audit(accounted=1.0, flipped=4)
    control = result.control.epsilon_lower_bound
    assert 0.5 <= control < 1.0  # the old rule (>= 0.5) called this "had power"
    # Act
    said = verdict(result)
    # Assert
    assert not result.has_power
    assert said.startswith("NO POWER")
    assert f"proves only epsilon > {control:.2f}" in said and "accounted 1.00" in said
    needed = canaries_needed(1.0, result.plan.view_confidence, 1e-5)
    assert f"at least {needed:,} canaries (here {M})" in said  # what power would take


def test_a_control_bound_above_the_accounted_epsilon_gives_power():
    result = _audit(accounted=0.5, flipped=0)
    assert result.control.epsilon_lower_bound > 0.5
    assert result.has_power
    assert verdict(result).startswith("consistent")


def test_an_accounted_epsilon_beyond_what_these_canaries_can_prove_is_no_power():
    # Every control guess right, but 40 canaries cannot prove epsilon 6 at any confidence.
    result = _audit(accounted=6.0, flipped=0)
    said = verdict(result)
    assert said.startswith("NO POWER")
    assert "no confidence of 50.0% or more lets these 40 canaries get there" in said


@pytest.mark.parametrize(("bound", "accounted", "power"), [
    (1.2, 1.0, True), (1.0, 1.0, False), (0.9, 1.0, False), (5.0, math.inf, False),
])
def test_power_needs_a_control_bound_strictly_above_a_finite_accounted_epsilon(bound, accounted,
                                                                               power):
    assert control_has_power(bound, accounted) is power
