"""The report's privacy statement gives t, c and h as numbers and what a curious participant
faces, for real runs (the real driver and ClientApp over the in-process grid).

With c = 0 (h = t) a participant that subtracts its own share from a round's sum faces the
noise multiplier z * sqrt((h - 1) / h): the statement's epsilon for it equals Opacus's
RDPAccountant, called here directly on the hospitals' recorded ledger history with that
multiplier. With c = 1 (the default from 4 hospitals on) h = t - c and the statement says the
ledger's epsilon holds against up to c curious participants.
"""

import json
import math
import re

import pytest
from opacus.accountants import RDPAccountant

from client.app import build_client_app
from common.config import RunConfig
from common.dp.ledger import PrivacyLedger
from server.federation import run_federation
from simulations.engine.in_process_grid import InProcessGrid
from simulations.engine.simulate import SimulatedHospitalPrivacy, with_ephemeral_roster

NODES = {100 + i: {"partition-id": i, "num-partitions": 4} for i in range(4)}
RUN = {"dp.mode": "hospital", "dp.noise-mode": "distributed", "secagg.enabled": True,
       "secagg.threshold": 3, "dp.epsilon": 4.0, "local-steps": 2, "num-server-rounds": 2}


def _run(run_dir, **extra):
    """A 4-hospital distributed-noise run, t = 3; return (report text, config.json settings)."""
    run_dir.mkdir()
    config = with_ephemeral_roster(RunConfig.from_run_config({**RUN, **extra}), run_dir)
    app = build_client_app(SimulatedHospitalPrivacy(config, run_dir / "ledgers"))
    run_federation(InProcessGrid(app, NODES, config.to_run_config()), config, run_dir)
    settings = json.loads((run_dir / "config.json").read_text())["settings"]
    return (run_dir / "report.md").read_text(), settings


@pytest.fixture(scope="module")
def no_collusion(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("collusion") / "c0"
    return run_dir, *_run(run_dir, **{"secagg.honest-contributors": 3})


@pytest.fixture(scope="module")
def default_collusion(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("collusion") / "c1"
    return run_dir, *_run(run_dir)


def _flat(text):
    return " ".join(text.split())


def test_with_c_0_a_curious_participant_faces_opacus_on_the_reduced_noise(no_collusion):
    # Arrange
    run_dir, report, settings = no_collusion
    text = _flat(report)
    t, c, h = 3, 0, 3
    assert f"(t = {t}, c = {c}, h = {h})" in text and settings["secagg_honest_contributors"] == h
    stated = float(re.search(r"contributed to each faces epsilon ([0-9.]+) against such a "
                             r"participant", text).group(1))
    # Act: Opacus directly, on each hospital's recorded history, each z times sqrt((h-1)/h)
    expected = []
    for ledger_file in sorted((run_dir / "ledgers").glob("*.json")):
        ledger = PrivacyLedger.read(ledger_file)
        accountant = RDPAccountant()
        for z, q, steps in ledger.history("hospital"):
            for _ in range(steps):
                accountant.step(noise_multiplier=z * math.sqrt((h - 1) / h), sample_rate=q)
        expected.append(accountant.get_epsilon(delta=ledger.budget_delta))
    # Assert: every hospital took part in both rounds, so each faces the stated epsilon,
    # which is more than its ledger's
    assert len(expected) == 4
    assert all(e == pytest.approx(stated, abs=5e-5) for e in expected)
    ledger_eps = PrivacyLedger.read(run_dir / "ledgers" / "va.json").epsilon_spent("hospital")
    assert stated > ledger_eps
    assert f"where its ledger accounts {ledger_eps:.4f} for the same rounds" in text


def test_with_the_default_c_1_the_ledger_holds_against_c_curious_participants(
        default_collusion):
    run_dir, report, settings = default_collusion
    text = _flat(report)
    assert "(t = 3, c = 1, h = 2)" in text and settings["secagg_honest_contributors"] == 2
    assert "the ledger's epsilon above holds against up to c = 1 curious participants" in text
    assert "faces epsilon" not in text  # no weaker epsilon to state
    roster = json.loads((run_dir / "secagg" / "roster.json").read_text())
    assert roster["colluders"] == 1
    # every hospital took part in both rounds (h = 2 <= t - c passed its check), charged once
    # a round at the one z of the run
    for ledger_file in (run_dir / "ledgers").glob("*.json"):
        history = PrivacyLedger.read(ledger_file).history("hospital")
        assert len({z for z, _, _ in history}) == 1 and sum(s for _, _, s in history) == 2
