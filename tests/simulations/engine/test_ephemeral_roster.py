"""``fedcare simulate``'s ephemeral roster assumes collusion from 4 hospitals on.

The roster it makes has c >= 1 with 4 or more hospitals (h = t - c), c = 0 with 3, and
c = t - h when the run states h; every simulated hospital states the roster's c as its own
minimum.
"""

import pytest

from client.hospital import task_split
from common.config import RunConfig
from common.secagg.roster import load_roster
from simulations.engine.simulate import SimulatedHospitalPrivacy, with_ephemeral_roster


def _roster_and_hospital(tmp_path, run_config):
    config = with_ephemeral_roster(RunConfig.from_run_config(
        {"secagg.enabled": True, **run_config}), tmp_path)
    roster = load_roster(config.secagg_roster_path, expected_sha256=config.secagg_roster_sha256)
    hospital = task_split(config.task, config.hospitals, seed=config.seed,
                          partition=config.partition.value, alpha=config.dirichlet_alpha)[0]
    privacy = SimulatedHospitalPrivacy(config, tmp_path / "ledgers")(None, hospital)
    return config, roster, privacy


@pytest.mark.parametrize(("run_config", "c"), [
    ({"task": "heart-disease", "hospitals": 4}, 1),
    ({"task": "breast-cancer", "hospitals": 7}, 1),
    ({"task": "heart-disease", "hospitals": 3}, 0),
], ids=["4-hospitals", "7-hospitals", "3-hospitals"])
def test_collusion_is_assumed_from_four_hospitals_on(tmp_path, run_config, c):
    config, roster, privacy = _roster_and_hospital(tmp_path, run_config)
    assert roster.colluders == c and roster.size == config.hospitals
    assert roster.min_threshold == config.effective_threshold > c
    assert roster.built_by == "fedcare simulate"
    assert privacy.colluding == c  # each simulated hospital's own stated minimum


@pytest.mark.parametrize(("honest", "c"), [(3, 0), (2, 1), (1, 2)])
def test_a_run_that_states_h_gets_c_equal_to_t_minus_h(tmp_path, honest, c):
    _, roster, privacy = _roster_and_hospital(tmp_path, {
        "hospitals": 4, "secagg.threshold": 3, "secagg.honest-contributors": honest})
    assert roster.colluders == privacy.colluding == c
    assert roster.honest_contributors(3) == honest
