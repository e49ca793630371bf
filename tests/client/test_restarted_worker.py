"""A restarted hospital worker answers a repeated request with its saved release, no new noise.

deploy-local (and a hospital's own supervisor) starts a worker again after it exits. The new
process has nothing in memory: a fresh ClientApp and, if its SuperNode restarted too, a fresh
Context.state. Everything it knows of the round is on disk (ledger and saved releases). Real
Messages go through the real worker's ``handle`` into a fresh ``build_client_app()`` for each
"process"; a crash is an exception that ends the first process mid-round.
"""

from pathlib import Path

import numpy as np
import pytest
from flwr.app import RecordDict

from client.app import build_client_app
from client.privacy import HospitalPrivacy
from client.worker import handle
from common.config import RunConfig
from common.dp.ledger import PrivacyLedger
from common.models import build_model
from common.tasks import get_task
from common.wire.replies import TrainReply
from server.federation import round_settings
from tests.wire_messages import context_for, reply_from, request_message

TASK = get_task("heart-disease")
WEIGHTS = build_model(TASK, seed=0).get_weights()
RUN = RunConfig.from_run_config({"local-steps": 2, "num-server-rounds": 3})


@pytest.fixture
def node(tmp_path, monkeypatch):
    """Hospital va's node config: patient-level DP, its ledger (budget 2) with the head apart."""
    monkeypatch.setenv("FEDCARE_HOME", str(tmp_path / "home"))
    ledger, head = tmp_path / "ledgers" / "va.json", tmp_path / "heads" / "va.head"
    PrivacyLedger.create(ledger, hospital="va", budget_epsilon=2.0, budget_delta=1e-5,
                         head_path=head)
    return {"partition-id": 3, "num-partitions": 4, "dp-mode": "patient",
            "ledger-path": str(ledger), "ledger-head-path": str(head)}


@pytest.fixture
def draws(monkeypatch):
    """The noise generators the hospital makes (every noise draw needs one)."""
    made = []
    original = HospitalPrivacy.noise_rng

    def counting(self, **kwargs):
        made.append(kwargs)
        return original(self, **kwargs)

    monkeypatch.setattr(HospitalPrivacy, "noise_rng", counting)
    return made


def _ask_new_process(node, server_round=1):
    """The round-`server_round` request, answered by a freshly started worker (new app, new
    Context.state), through the worker's own ``handle`` with its node config.
    """
    message = request_message(round_settings(RUN, "run-1", server_round), WEIGHTS)
    context = context_for(node, RUN.to_run_config(), state=RecordDict())
    reply, _, error = handle(build_client_app(), message, context, node)
    return reply, error


def _entries(node):
    return PrivacyLedger.read(node["ledger-path"], head_path=node["ledger-head-path"]).entries


def test_a_restarted_worker_resends_the_charged_release_and_draws_no_noise(node, draws):
    first, error = _ask_new_process(node)
    assert error is None
    drawn_by_first = len(draws)
    assert drawn_by_first >= 1 and len(_entries(node)) == 1

    again, error = _ask_new_process(node)  # the worker was killed and started again

    assert error is None
    assert len(draws) == drawn_by_first, "the restarted worker drew new noise"
    sent, resent = reply_from(first), reply_from(again)
    assert isinstance(sent, TrainReply) and isinstance(resent, TrainReply)
    for a, b in zip(sent.update, resent.update, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [(e.run, e.round) for e in _entries(node)] == [("run-1", 1)]
    assert resent.privacy.epsilon_patient == sent.privacy.epsilon_patient


def test_a_worker_killed_between_save_and_charge_is_charged_once_by_its_successor(
        node, draws, monkeypatch):
    def killed(*args, **kwargs):
        raise RuntimeError("SIGKILL between the save and the charge")

    with monkeypatch.context() as patch:
        patch.setattr(PrivacyLedger, "charge", killed)
        reply, error = _ask_new_process(node)
    assert error is not None and reply.has_error() and _entries(node) == ()
    releases = _releases_dir(node)
    assert any(p.is_file() for p in releases.rglob("*")), f"no release was saved in {releases}"
    drawn = len(draws)

    again, error = _ask_new_process(node)

    assert error is None and len(draws) == drawn, "the successor drew new noise"
    resent = reply_from(again)
    assert isinstance(resent, TrainReply)
    assert [(e.run, e.round) for e in _entries(node)] == [("run-1", 1)]
    # The next round is a new release: one more draw, one more entry.
    _ask_new_process(node, server_round=2)
    assert len(draws) > drawn and [e.round for e in _entries(node)] == [1, 2]


def _releases_dir(node):
    """Where the hospital saves its releases: ``<ledger>.releases/`` beside the ledger."""
    ledger = Path(node["ledger-path"])
    return ledger.with_name(ledger.name + ".releases")
