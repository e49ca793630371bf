"""The consortium explanation (issue 25): one DP release per hospital after training.

The real driver and ClientApp over the in-process grid of real Flower Messages: every
hospital's ledger holds its explanation entry on the training track, Opacus on each ledger
reproduces the epsilon printed before the run and stated in the report, the released noise has
the ledger's stddev, a hospital whose budget cannot afford it declines, and a malformed request
is declined naming the input.
"""

import json

import numpy as np
import pytest
from opacus.accountants import RDPAccountant
from typer.testing import CliRunner

from client.app import build_client_app
from client.explanation_round import draw_release, explanation_store
from common.config import RunConfig
from common.dp.events import GaussianRoundEvent
from common.dp.ledger import PrivacyLedger
from common.explain.consortium import exact_release, sensitivity
from common.models import build_model
from common.tasks import get_task
from common.wire.modes import LedgerTrack, PrivacyLevel
from common.wire.records import pack_request
from common.wire.replies import DeclinedReply, ExplainReply
from server.explanation import EXPLAIN_ACTION, planned_noise
from server.federation import round_settings, run_federation
from server.privacy_cost import privacy_cost_lines
from simulations.cli.main import app as fedcare_cli
from simulations.engine.in_process_grid import InProcessGrid
from simulations.engine.simulate import SimulatedHospitalPrivacy
from tests.wire_messages import context_for, reply_from, request_message

NODES = {100 + i: {"partition-id": i, "num-partitions": 4} for i in range(4)}
ROUNDS = 2


def _opacus(history, delta=1e-5):
    accountant = RDPAccountant()
    accountant.history = [(z, q, steps) for z, q, steps in history]
    return accountant.get_epsilon(delta)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("explained-run")
    config = RunConfig.from_run_config({"dp.mode": "patient", "local-steps": 2,
                                        "num-server-rounds": ROUNDS})
    app = build_client_app(SimulatedHospitalPrivacy(config, run_dir / "ledgers"))
    run_federation(InProcessGrid(app, NODES, config.to_run_config()), config, run_dir)
    ledgers = {path.stem: PrivacyLedger.read(path)
               for path in sorted((run_dir / "ledgers").glob("*.json"))}
    return config, run_dir, ledgers


def _explanation_entry(ledger):
    (entry,) = [e for e in ledger.entries if e.round == ROUNDS + 1]
    return entry


def test_every_hospitals_ledger_has_its_entry_and_opacus_reproduces_the_printed_epsilon(run):
    config, run_dir, ledgers = run
    z, _ = planned_noise(config)
    printed = " ".join(privacy_cost_lines(config))
    assert f"noise multiplier {z:.3g}" in printed
    assert f"epsilon {config.explain_share * config.dp_epsilon:.3g} alone" in printed
    document = json.loads((run_dir / "explanation.json").read_text())
    assert sorted(document["released"]) == sorted(ledgers) and len(ledgers) == 4
    for name, ledger in ledgers.items():
        entry = _explanation_entry(ledger)
        assert entry.track == LedgerTrack.TRAIN and entry.event.level == PrivacyLevel.PATIENT
        assert (entry.event.sample_rate, entry.event.steps) == (1.0, 1)
        assert entry.event.noise_multiplier == pytest.approx(z, rel=1e-9)
        # Alone, the release costs the printed share (to the calibration's 0.01 tolerance).
        alone = _opacus([entry.event.as_opacus_entry()])
        assert config.explain_share * config.dp_epsilon - 0.011 <= alone <= (
            config.explain_share * config.dp_epsilon)
        # Composed with training by Opacus: the ledger's figure, the report's, within budget.
        train = [e.event.as_opacus_entry() for e in ledger.entries
                 if e.track == LedgerTrack.TRAIN]
        assert len(train) == ROUNDS + 1
        spent = ledger.epsilon_spent(PrivacyLevel.PATIENT, LedgerTrack.TRAIN)
        assert spent == pytest.approx(_opacus(train), rel=1e-6)
        assert alone < spent <= config.dp_epsilon
        assert document["epsilon_after"][name] == pytest.approx(spent, rel=1e-9)
    report = (run_dir / "report.md").read_text()
    assert "## Consortium explanation (DP)" in report and "What it does not cover" in report
    assert (run_dir / "explanation.png").is_file()
    for name, spent in document["epsilon_after"].items():
        assert f"- {name}: training-track epsilon {spent:.3f} after the explanation" in report
    low, high = np.array(document["low"]), np.array(document["high"])
    assert (low < np.array(document["importance"])).all() and (low < high).all()


def test_the_released_noise_has_the_ledgers_stddev_over_2000_draws(run):
    config, _, ledgers = run
    event = _explanation_entry(next(iter(ledgers.values()))).event
    task = get_task(config.task)
    values = np.random.default_rng(5).normal(size=(50, task.num_features))
    exact = exact_release(values, config.explain_bound)
    rng = np.random.default_rng(11)
    noise = np.stack([draw_release(exact, event, config.explain_bound, rng)[0] - exact
                      for _ in range(2000)])
    expected = event.noise_multiplier * sensitivity(config.explain_bound)
    assert abs(noise.std() / expected - 1.0) <= 0.10
    assert abs(noise.mean()) < 0.1 * expected


# --- A single hospital (va) with its own ledger, real Messages into the real ClientApp ------

TASK = get_task("heart-disease")
WEIGHTS = build_model(TASK, seed=0).get_weights()
NODE = {"partition-id": 3, "num-partitions": 4}


@pytest.fixture
def fedcare_home(tmp_path, monkeypatch):
    home = tmp_path / "hospital-home"
    monkeypatch.setenv("FEDCARE_HOME", str(home))
    done = CliRunner().invoke(fedcare_cli, ["budget", "init", str(home / "ledgers" / "va.json")])
    assert done.exit_code == 0, done.output
    return home


def _explain(settings, config, content=None):
    message = request_message(settings, WEIGHTS, EXPLAIN_ACTION, content=content)
    reply = build_client_app()(message=message, context=context_for(NODE,
                                                                     config.to_run_config()))
    return reply_from(reply)


def _final(run_id="run-2"):
    config = RunConfig.from_run_config({"local-steps": 2, "num-server-rounds": 3})
    return round_settings(config, run_id, 3), config


def test_a_hospital_that_cannot_afford_it_declines_and_nothing_is_drawn(fedcare_home):
    path = fedcare_home / "ledgers" / "va.json"
    ledger = PrivacyLedger.open(path, hospital="va")
    # An earlier run spent epsilon 0.985 of 1: the explanation would bring it to 1.02.
    ledger.charge("earlier-run", 1, GaussianRoundEvent(noise_multiplier=4.1, sample_rate=1.0,
                                                       steps=1, level=PrivacyLevel.PATIENT))
    before = PrivacyLedger.read(path).entries
    settings, config = _final()

    reply = _explain(settings, config)

    assert isinstance(reply, DeclinedReply)
    assert "its training budget cannot afford the explanation" in reply.reason
    assert PrivacyLedger.read(path).entries == before
    assert not list(explanation_store(path).directory.glob("*.npz"))


def test_an_affordable_request_is_released_once_and_the_same_request_gets_the_same(
        fedcare_home):
    settings, config = _final()
    first, again = _explain(settings, config), _explain(settings, config)
    assert isinstance(first, ExplainReply) and isinstance(again, ExplainReply)
    assert first.attributions.shape == (TASK.num_features + 1,)
    np.testing.assert_array_equal(first.attributions, again.attributions)
    entries = PrivacyLedger.read(fedcare_home / "ledgers" / "va.json").entries
    assert [(e.round, e.track) for e in entries] == [(4, LedgerTrack.TRAIN)]


@pytest.mark.parametrize(("change", "named"), [
    ({"explain-bound": -1.0}, "explain-bound: must be in [0"),
    ({"explain-share": 2.0}, "explain-share: must be in [0"),
    ({"explain-share": "a lot"}, "explain-share: must be a number"),
], ids=["negative-bound", "share-above-one", "share-not-a-number"])
def test_a_malformed_explain_request_is_declined_naming_the_input(fedcare_home, change, named):
    settings, config = _final()
    content = pack_request(settings, WEIGHTS)
    for key, value in change.items():
        content["config"][key] = value
    reply = _explain(settings, config, content=content)
    assert isinstance(reply, DeclinedReply)
    assert named in reply.reason
    assert not PrivacyLedger.read(fedcare_home / "ledgers" / "va.json").entries


@pytest.mark.parametrize(("settings_change", "named"), [
    ({"server_round": 2}, "server-round: the explanation is of the final model (round 3)"),
    ({"explain_share": 0.0}, "explain-share and explain-bound: the run planned no"),
], ids=["not-the-final-model", "none-planned"])
def test_a_request_the_run_did_not_plan_is_declined_naming_the_setting(fedcare_home,
                                                                        settings_change, named):
    from dataclasses import replace

    settings, config = _final()
    reply = _explain(replace(settings, **settings_change), config)
    assert isinstance(reply, DeclinedReply) and named in reply.reason
    assert not PrivacyLedger.read(fedcare_home / "ledgers" / "va.json").entries
