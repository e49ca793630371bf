"""A crafted evaluation gets a noised answer charged on the test track, or a decline.

Real Flower Messages into the real ClientApp, as a deviating server would send them: weights
that turn the score histogram into one feature's per-label distribution, or the correct count
into the test set's positive count. Every answer is the hospital's DP release (never exact
sums), charged on its ledger's test track before it leaves.
"""

import json

import numpy as np
import pytest
from opacus.accountants import RDPAccountant
from typer.testing import CliRunner

from client.app import build_client_app
from client.evaluation_round import exact_metrics_path
from client.hospital import load_hospital
from client.training import get_trainer
from common.config import RunConfig
from common.dp.evaluation_release import exact_release, release_layout
from common.dp.ledger import PrivacyLedger
from common.metrics import evaluation_statistics, metrics_from_statistics
from common.models import build_model
from common.tasks import get_task
from common.tasks.heart_disease import feature_names
from common.wire.modes import LedgerTrack, PrivacyLevel
from common.wire.replies import DeclinedReply, EvaluateReply, TrainReply
from server.federation import round_settings
from simulations.cli.main import app as fedcare_cli
from tests.wire_messages import context_for, reply_from, request_message

TASK = get_task("heart-disease")
NODE = {"partition-id": 0, "num-partitions": 4}  # cleveland: 104 test rows
WEIGHTS = build_model(TASK, seed=0).get_weights()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Cleveland's own FEDCARE_HOME; its ledger made by `fedcare budget init`."""
    monkeypatch.setenv("FEDCARE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _init(home, *options):
    done = CliRunner().invoke(fedcare_cli, ["budget", "init", str(home / "ledgers" /
                                                                  "cleveland.json"), *options])
    assert done.exit_code == 0, done.output
    return home / "ledgers" / "cleveland.json"


def _settings(server_round, *, run_id="run-1", **run_config):
    config = RunConfig.from_run_config({"local-steps": 2, "num-server-rounds": 3, **run_config})
    return round_settings(config, run_id, server_round), config


def _ask(app, kind, weights, server_round, *, run_id="run-1", node=NODE, private=True,
         **run_config):
    settings, config = _settings(server_round, run_id=run_id, **run_config)
    message = request_message(settings, weights, kind)
    return reply_from(app(message=message, context=context_for(node, config.to_run_config())),
                      private=private)


def _age_weights():
    """A model whose score is a steep function of age alone: its score histogram per label is
    the test patients' age distribution per label.
    """
    kernel = np.zeros_like(WEIGHTS[0])
    kernel[feature_names().index("age"), 0] = 3.0
    return [kernel, np.zeros_like(WEIGHTS[1])]


def _positive_weights():
    """A model that says "positive" for everyone: its correct count is the positive count."""
    return [np.zeros_like(WEIGHTS[0]), np.full_like(WEIGHTS[1], 20.0)]


def _exact(weights, index=0):
    hospital = load_hospital("heart-disease", 4, index, seed=0, partition="iid", alpha=0.5)
    outputs = get_trainer(TASK).predict(weights, hospital.x_test)
    return hospital, outputs, exact_release(release_layout(TASK), hospital.y_test, outputs,
                                            level=PrivacyLevel.PATIENT)


def _test_entries(ledger_path):
    return [e for e in PrivacyLedger.read(ledger_path).entries if e.track == LedgerTrack.TEST]


@pytest.mark.parametrize("weights", [_age_weights(), _positive_weights()],
                         ids=["one feature's per-label distribution", "the positive rate"])
def test_a_crafted_evaluation_gets_a_noised_release_charged_on_the_test_track(home, weights):
    ledger_path = _init(home)
    hospital, outputs, exact = _exact(weights)

    reply = _ask(build_client_app(), "evaluate", weights, 3)

    assert isinstance(reply, EvaluateReply)
    assert set(reply.statistics) == {"outcome", "score_hist", "noise_stddev"}  # no loss sum
    assert reply.statistics["score_hist"].shape == (1, 2, 4)  # 4 score bins per label
    (entry,) = _test_entries(ledger_path)
    stddev = entry.event.noise_multiplier * np.sqrt(2)  # L2 sensitivity sqrt(2)
    assert float(reply.statistics["noise_stddev"]) == pytest.approx(stddev)
    noise = np.concatenate([(reply.statistics[k] - exact[k]).ravel() for k in exact])
    assert np.all(np.abs(noise) > 1e-9) and np.max(np.abs(noise)) > 1.0  # noised, every cell
    # Charged before it left: the test track's epsilon is Opacus on the ledger's history.
    accountant = RDPAccountant()
    accountant.step(noise_multiplier=entry.event.noise_multiplier, sample_rate=1.0)
    assert reply.privacy.epsilon_test == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    assert reply.privacy.epsilon_test <= reply.privacy.test_budget_epsilon == 1.0
    # The exact metrics stay at home, beside the ledger.
    home_metrics = json.loads(exact_metrics_path(ledger_path).read_text().splitlines()[-1])
    exact_accuracy = metrics_from_statistics("binary", evaluation_statistics(
        "binary", hospital.y_test, outputs))["accuracy"]
    assert home_metrics["round"] == 3 and home_metrics["accuracy"] == exact_accuracy


def test_the_noise_std_over_2000_draws_is_the_ledgers(home):
    # A test ledger with a large test budget: 200 evaluations of one run (eval-every 1), each
    # a release of 10 cells (correct, incorrect, 2 labels x 4 bins): 2,000 noise draws.
    ledger_path = _init(home, "--test-epsilon", "200")
    app, weights = build_client_app(), _age_weights()
    _, _, exact = _exact(weights)
    standardized = []
    for server_round in range(1, 201):
        reply = _ask(app, "evaluate", weights, server_round, **{"num-server-rounds": 200,
                                                                "eval-every": 1})
        assert isinstance(reply, EvaluateReply), reply
        stddev = float(reply.statistics["noise_stddev"])
        standardized += [((reply.statistics[k] - exact[k]) / stddev).ravel() for k in exact]
    draws = np.concatenate(standardized)
    entries = _test_entries(ledger_path)
    z = {e.event.noise_multiplier for e in entries}
    assert len(draws) == 2000 and len(entries) == 200 and len(z) == 1  # one z for the run
    assert float(reply.statistics["noise_stddev"]) == pytest.approx(z.pop() * np.sqrt(2))
    assert abs(np.std(draws) - 1.0) < 0.1 and abs(np.mean(draws)) < 0.1


def test_once_the_test_budget_is_spent_evaluation_is_declined_and_training_goes_on(home):
    ledger_path = _init(home)  # the default: test budget = training budget = epsilon 1
    app = build_client_app()
    assert isinstance(_ask(app, "evaluate", WEIGHTS, 3, run_id="run-a"), EvaluateReply)

    again = _ask(app, "evaluate", WEIGHTS, 3, run_id="run-b")
    trained = _ask(app, "train", WEIGHTS, 1, run_id="run-b")

    assert isinstance(again, DeclinedReply) and "its test budget" in again.reason
    assert again.statistics is None
    assert len(_test_entries(ledger_path)) == 1  # the declined one charged nothing
    assert isinstance(trained, TrainReply) and trained.update is not None
    assert trained.privacy.epsilon_test == again.privacy.epsilon_test > 0.99


def test_an_unplanned_evaluation_is_declined_and_charges_nothing(home):
    ledger_path = _init(home)
    reply = _ask(build_client_app(), "evaluate", _age_weights(), 2)  # eval-every 0: only round 3
    assert isinstance(reply, DeclinedReply) and "not one of the run's planned" in reply.reason
    assert _test_entries(ledger_path) == []


def test_a_run_with_another_split_is_declined(home):
    node = {"partition-id": 0, "num-partitions": 4}
    ledger = home / "ledgers" / "hospital-0.json"
    assert CliRunner().invoke(fedcare_cli, ["budget", "init", str(ledger)]).exit_code == 0
    app, split = build_client_app(), {"task": "breast-cancer", "hospitals": 4}
    weights = build_model(get_task("breast-cancer"), seed=0).get_weights()
    first = _ask(app, "train", weights, 1, node=node, seed=0, **split)
    # Seed 1 deals hospital-0 other rows: its test patients could have been trained on.
    train = _ask(app, "train", weights, 1, run_id="run-2", node=node, seed=1, **split)
    evaluate = _ask(app, "evaluate", weights, 3, run_id="run-2", node=node, seed=1, **split)

    assert isinstance(first, TrainReply)
    for reply in (train, evaluate):
        assert isinstance(reply, DeclinedReply) and "pinned the split" in reply.reason
    entries = PrivacyLedger.read(ledger).entries
    assert [(e.run, e.track) for e in entries] == [("run-1", "train")]


def test_without_dp_the_hospital_answers_exactly_as_it_chose(home):
    node = {**NODE, "dp-mode": "none"}
    reply = _ask(build_client_app(), "evaluate", WEIGHTS, 3, node=node, private=False,
                 **{"dp.mode": "none"})
    hospital, outputs, _ = _exact(WEIGHTS)
    assert isinstance(reply, EvaluateReply) and reply.privacy is None
    exact = evaluation_statistics("binary", hospital.y_test, outputs)
    assert float(reply.statistics["correct"]) == float(exact["correct"])
